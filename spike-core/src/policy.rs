//! Path policies keyed on SPIFFE IDs, and the compiled engine that decides.
//!
//! A policy grants `permissions` to every caller whose SPIFFE ID matches
//! `spiffeid_pattern` on every path matching `path_pattern`. Patterns are
//! regular expressions (the `regex` crate: linear time, no backtracking)
//! matched against the **whole** ID or path: they are anchored implicitly,
//! unlike upstream SPIKE's substring match, so `app` does not match
//! `evil-app-2`. Writing `^…$` explicitly means the same.
//!
//! Decisions never scan all policies: the set of policies whose ID pattern
//! matches a caller is computed once per caller and cached until the
//! policies change; a decision then tests only those policies' path
//! patterns (compiled once, when the policy is stored).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::util::syntax;
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::identity::SpiffeId;
use crate::time::Timestamp;

/// Longest pattern accepted, in bytes (SPEC §10).
pub const MAX_PATTERN_LEN: usize = 500;
/// Longest policy name, in bytes.
pub const MAX_POLICY_NAME_LEN: usize = 250;
/// Upper bound on a compiled pattern's size, so a short pattern cannot
/// expand into a huge automaton (`a{1000}{1000}`).
const COMPILED_SIZE_LIMIT: usize = 256 * 1024;
/// Callers whose matching policies are cached; past it the cache restarts.
const ID_CACHE_CAPACITY: usize = 16 * 1024;

/// Reserved path gating policy administration.
pub const ACL_PATH: &str = "spike/system/acl";
/// Reserved path gating the listing of every secret.
pub const SECRET_LIST_PATH: &str = "spike/system/secret";
/// Reserved path gating the cipher (encryption as a service) API.
pub const CIPHER_PATH: &str = "spike/system/cipher/exec";

/// One permission a policy may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Permission {
    /// Read secret data and metadata.
    Read,
    /// Create, update, delete, undelete, destroy.
    Write,
    /// List paths.
    List,
    /// Use the cipher API.
    Execute,
    /// Every permission.
    Super,
}

impl Permission {
    /// All permissions, in wire order.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::List,
        Permission::Execute,
        Permission::Super,
    ];

    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
            Permission::List => 4,
            Permission::Execute => 8,
            Permission::Super => 16,
        }
    }

    /// The wire name (`read`, `write`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::List => "list",
            Permission::Execute => "execute",
            Permission::Super => "super",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| InputError::Policy {
                field: "permissions",
                reason: "each permission must be one of read, write, list, execute, super"
                    .to_owned(),
            })
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    /// The empty set.
    pub const NONE: Permissions = Permissions(0);

    /// Whether the set holds `p`, directly or through `super`.
    pub fn allows(self, p: Permission) -> bool {
        self.0 & (p.bit() | Permission::Super.bit()) != 0
    }

    /// Whether the set holds `p` itself.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions held, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn from_bits(bits: u8) -> Option<Self> {
        (bits & !0b1_1111 == 0).then_some(Self(bits))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut out = Permissions::NONE;
        for p in iter {
            out.insert(p);
        }
        out
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Permission::as_str))
            .finish()
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Permission>::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
}

/// What a caller sends to create or replace a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Unique name; the policy's key.
    pub name: String,
    /// Regex matched against the caller's whole SPIFFE ID.
    pub spiffeid_pattern: String,
    /// Regex matched against the whole secret path.
    pub path_pattern: String,
    /// What the policy grants.
    pub permissions: Permissions,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Name, pattern and permissions.
    pub spec: PolicySpec,
    /// When it was first created.
    pub created: Timestamp,
    /// When it was last replaced.
    pub updated: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Bumped on every replacement; binds the stored record (rollback check).
    pub(crate) revision: u64,
    /// The key epoch its record is sealed under.
    pub(crate) epoch: u32,
}

impl PolicySpec {
    /// Validates every field and compiles the patterns.
    pub(crate) fn compile(&self) -> Result<(Regex, Regex), InputError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_POLICY_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if !name_ok {
            return Err(InputError::Policy {
                field: "name",
                reason: "1-250 bytes of A-Z a-z 0-9 . _ - / : @".to_owned(),
            });
        }
        if self.permissions.is_empty() {
            return Err(InputError::Policy {
                field: "permissions",
                reason: "at least one permission is required".to_owned(),
            });
        }
        Ok((
            compile_pattern("spiffeidPattern", &self.spiffeid_pattern)?,
            compile_pattern("pathPattern", &self.path_pattern)?,
        ))
    }
}

/// Compiles a pattern, anchored at both ends and bounded in size.
pub fn compile_pattern(field: &'static str, pattern: &str) -> Result<Regex, InputError> {
    if pattern.is_empty() {
        return Err(InputError::Policy {
            field,
            reason: "empty pattern".to_owned(),
        });
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(InputError::Policy {
            field,
            reason: format!("longer than {MAX_PATTERN_LEN} bytes"),
        });
    }
    Regex::builder()
        .configure(
            Regex::config()
                // Matching only: no full DFA, one-pass DFA or backtracker
                // is built (the lazy DFA and the PikeVM do all the work).
                // A full DFA costs about a millisecond per pattern, and
                // any crate in the build that enables regex-automata's
                // `dfa-build` (tracing-subscriber's env filter does) turns
                // it on for `regex::Regex`: 1,000 policies then took 45% of
                // a cold start's instructions.
                .dfa(false)
                .onepass(false)
                .backtrack(false)
                // Nothing reads capture groups: a smaller NFA, built faster.
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(COMPILED_SIZE_LIMIT)),
        )
        .syntax(syntax::Config::new().nest_limit(64))
        .build(&format!("^(?:{pattern})$"))
        .map_err(|e| InputError::Policy {
            field,
            reason: match e.size_limit() {
                Some(_) => "pattern compiles too large".to_owned(),
                None => e.to_string(),
            },
        })
}

/// A policy with its patterns compiled.
pub(crate) struct CompiledPolicy {
    pub(crate) policy: Policy,
    /// Compiled when first needed for a policy loaded from the store (its
    /// patterns were validated when it was written; compiling 1,000 of them
    /// took ~100 ms of every start); at once for a policy being written.
    /// `None`: the stored patterns no longer compile, and the policy
    /// matches nothing (deny by default).
    patterns: OnceLock<Option<(Regex, Regex)>>,
}

impl CompiledPolicy {
    /// Validates and compiles a policy being written.
    pub(crate) fn new(policy: Policy) -> Result<Self, InputError> {
        let compiled = policy.spec.compile()?;
        Ok(Self {
            policy,
            patterns: OnceLock::from(Some(compiled)),
        })
    }

    /// A policy read from the store, compiled on first use.
    pub(crate) fn stored(policy: Policy) -> Self {
        Self {
            policy,
            patterns: OnceLock::new(),
        }
    }

    /// Compiles the patterns now if not yet done (to warm a loaded set up
    /// off the request path).
    pub(crate) fn compile_now(&self) {
        let _ = self.patterns();
    }

    fn patterns(&self) -> Option<&(Regex, Regex)> {
        self.patterns
            .get_or_init(|| match self.policy.spec.compile() {
                Ok(patterns) => Some(patterns),
                Err(e) => {
                    tracing::error!(
                        policy = %self.policy.spec.name,
                        error = %e,
                        "a stored policy no longer compiles; it matches nothing"
                    );
                    None
                }
            })
            .as_ref()
    }

    fn matches_caller(&self, caller: &SpiffeId) -> bool {
        self.patterns()
            .is_some_and(|(id, _)| id.is_match(caller.as_str()))
    }

    fn matches_path(&self, path: &str) -> bool {
        self.patterns().is_some_and(|(_, p)| p.is_match(path))
    }
}

/// An immutable snapshot of every policy plus a per-caller cache. Replaced
/// wholesale when a policy changes, so readers never see a half update.
#[derive(Default)]
pub(crate) struct PolicySet {
    by_name: BTreeMap<String, Arc<CompiledPolicy>>,
    by_caller: RwLock<HashMap<SpiffeId, Arc<[Arc<CompiledPolicy>]>>>,
}

impl PolicySet {
    pub(crate) fn new(policies: impl IntoIterator<Item = Arc<CompiledPolicy>>) -> Self {
        Self {
            by_name: policies
                .into_iter()
                .map(|p| (p.policy.spec.name.clone(), p))
                .collect(),
            by_caller: RwLock::default(),
        }
    }

    /// A new set with `policy` added or replaced.
    pub(crate) fn with(&self, policy: Arc<CompiledPolicy>) -> Self {
        let mut by_name = self.by_name.clone();
        by_name.insert(policy.policy.spec.name.clone(), policy);
        Self {
            by_name,
            by_caller: RwLock::default(),
        }
    }

    /// A new set without `name`.
    pub(crate) fn without(&self, name: &str) -> Self {
        let mut by_name = self.by_name.clone();
        by_name.remove(name);
        Self {
            by_name,
            by_caller: RwLock::default(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<CompiledPolicy>> {
        self.by_name.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.by_name.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The policies whose ID pattern matches `caller`.
    fn for_caller(&self, caller: &SpiffeId) -> Arc<[Arc<CompiledPolicy>]> {
        if let Ok(cache) = self.by_caller.read()
            && let Some(hit) = cache.get(caller)
        {
            return Arc::clone(hit);
        }
        let matching: Arc<[Arc<CompiledPolicy>]> = self
            .by_name
            .values()
            .filter(|p| p.matches_caller(caller))
            .cloned()
            .collect();
        if let Ok(mut cache) = self.by_caller.write() {
            if cache.len() >= ID_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(caller.clone(), Arc::clone(&matching));
        }
        matching
    }

    /// The name of a policy granting `caller` `permission` on `path`, if any.
    pub(crate) fn decide(
        &self,
        caller: &SpiffeId,
        path: &str,
        permission: Permission,
    ) -> Option<Arc<CompiledPolicy>> {
        self.for_caller(caller)
            .iter()
            .find(|p| p.policy.spec.permissions.allows(permission) && p.matches_path(path))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, id: &str, path: &str, perms: &[Permission]) -> Arc<CompiledPolicy> {
        let spec = PolicySpec {
            name: name.into(),
            spiffeid_pattern: id.into(),
            path_pattern: path.into(),
            permissions: perms.iter().copied().collect(),
        };
        Arc::new(
            CompiledPolicy::new(Policy {
                spec,
                created: Timestamp::from_nanos(0),
                updated: Timestamp::from_nanos(0),
                created_by: String::new(),
                revision: 1,
                epoch: 1,
            })
            .unwrap(),
        )
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn stored(name: &str, id: &str, path: &str) -> Arc<CompiledPolicy> {
        Arc::new(CompiledPolicy::stored(Policy {
            spec: PolicySpec {
                name: name.into(),
                spiffeid_pattern: id.into(),
                path_pattern: path.into(),
                permissions: [Permission::Read].into_iter().collect(),
            },
            created: Timestamp::from_nanos(0),
            updated: Timestamp::from_nanos(0),
            created_by: String::new(),
            revision: 1,
            epoch: 1,
        }))
    }

    #[test]
    fn stored_policies_compile_on_first_use_and_a_broken_one_matches_nothing() {
        let set = PolicySet::new([
            stored("ok", "spiffe://spike\\.ist/app", "db/.*"),
            stored("broken", "spiffe://spike\\.ist/app", "(unclosed"),
        ]);
        let app = id("spiffe://spike.ist/app");
        let by = set.decide(&app, "db/creds", Permission::Read).unwrap();
        assert_eq!(by.policy.spec.name, "ok");
        assert!(set.decide(&app, "(unclosed", Permission::Read).is_none());
        assert!(set.decide(&app, "other", Permission::Read).is_none());
        // Compiling ahead of use changes nothing.
        set.iter().for_each(|p| p.compile_now());
        assert!(set.decide(&app, "db/x", Permission::Read).is_some());
    }

    #[test]
    fn patterns_are_anchored() {
        let set = PolicySet::new([policy(
            "p",
            "spiffe://spike.ist/app",
            "db/creds",
            &[Permission::Read],
        )]);
        assert!(
            set.decide(&id("spiffe://spike.ist/app"), "db/creds", Permission::Read)
                .is_some()
        );
        // Substrings do not match either side.
        assert!(
            set.decide(
                &id("spiffe://spike.ist/app/evil"),
                "db/creds",
                Permission::Read
            )
            .is_none()
        );
        assert!(
            set.decide(
                &id("spiffe://spike.ist/app"),
                "db/creds/extra",
                Permission::Read
            )
            .is_none()
        );
        assert!(
            set.decide(
                &id("spiffe://spike.ist/app"),
                "x/db/creds",
                Permission::Read
            )
            .is_none()
        );
        // Explicit anchors mean the same.
        let explicit = PolicySet::new([policy(
            "p",
            "^spiffe://spike.ist/app$",
            "^db/.*$",
            &[Permission::Read],
        )]);
        assert!(
            explicit
                .decide(&id("spiffe://spike.ist/app"), "db/creds", Permission::Read)
                .is_some()
        );
    }

    #[test]
    fn permissions_and_super() {
        let set = PolicySet::new([
            policy("r", "spiffe://td/a", "s/.*", &[Permission::Read]),
            policy("all", "spiffe://td/root", ".*", &[Permission::Super]),
        ]);
        assert!(
            set.decide(&id("spiffe://td/a"), "s/x", Permission::Read)
                .is_some()
        );
        assert!(
            set.decide(&id("spiffe://td/a"), "s/x", Permission::Write)
                .is_none()
        );
        assert!(
            set.decide(&id("spiffe://td/a"), "s/x", Permission::List)
                .is_none()
        );
        for p in Permission::ALL {
            assert!(set.decide(&id("spiffe://td/root"), "any/path", p).is_some());
        }
        assert!(
            set.decide(&id("spiffe://td/b"), "s/x", Permission::Read)
                .is_none()
        );
    }

    #[test]
    fn updates_replace_the_cache() {
        let set = PolicySet::new([policy("p", "spiffe://td/a", "x", &[Permission::Read])]);
        let caller = id("spiffe://td/a");
        assert!(set.decide(&caller, "x", Permission::Read).is_some());
        let set = set.without("p");
        assert!(set.decide(&caller, "x", Permission::Read).is_none());
        let set = set.with(policy("p", "spiffe://td/a", "y", &[Permission::Read]));
        assert!(set.decide(&caller, "x", Permission::Read).is_none());
        assert!(set.decide(&caller, "y", Permission::Read).is_some());
    }

    #[test]
    fn rejects_bad_specs() {
        let ok = PolicySpec {
            name: "n".into(),
            spiffeid_pattern: ".*".into(),
            path_pattern: ".*".into(),
            permissions: [Permission::Read].into_iter().collect(),
        };
        assert!(ok.compile().is_ok());
        let bad = |f: &dyn Fn(&mut PolicySpec)| {
            let mut s = ok.clone();
            f(&mut s);
            s.compile().is_err()
        };
        assert!(bad(&|s| s.name.clear()));
        assert!(bad(&|s| s.name = "a b".into()));
        assert!(bad(&|s| s.name = "x".repeat(MAX_POLICY_NAME_LEN + 1)));
        assert!(bad(&|s| s.spiffeid_pattern = "(".into()));
        assert!(bad(&|s| s.path_pattern = String::new()));
        assert!(bad(&|s| s.path_pattern = "a".repeat(MAX_PATTERN_LEN + 1)));
        assert!(bad(&|s| s.path_pattern = "(a{100}){100}".into()));
        assert!(bad(&|s| s.permissions = Permissions::NONE));
    }

    #[test]
    fn permission_bits_roundtrip() {
        let all: Permissions = Permission::ALL.into_iter().collect();
        assert_eq!(Permissions::from_bits(all.bits()), Some(all));
        assert_eq!(Permissions::from_bits(0x20), None);
        assert_eq!(Permission::parse("write").unwrap(), Permission::Write);
        assert!(Permission::parse("admin").is_err());
    }
}

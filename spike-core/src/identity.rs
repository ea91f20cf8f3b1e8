//! SPIFFE IDs of callers and the built-in roles they may carry.
//!
//! The server extracts the caller's SPIFFE ID from the verified leaf of an
//! mTLS handshake; an embedding application names its caller itself. Either
//! way every call into [`crate::Nexus`] is made *as* a [`SpiffeId`].

use std::fmt;
use std::sync::Arc;

use crate::error::InputError;

/// Longest SPIFFE ID accepted (the SPIFFE spec caps URIs at 2048 bytes).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// A syntactically valid SPIFFE ID: `spiffe://<trust-domain>/<path>`.
///
/// Cheap to clone (shared string). Validation follows the SPIFFE ID spec:
/// lowercase trust domain of `[a-z0-9.-_]`, path segments of
/// `[A-Za-z0-9.-_]` with no empty, `.` or `..` segment, no query, fragment
/// or port.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Byte offset where the path (starting with `/`, possibly empty) begins.
    path_at: usize,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(uri: &str) -> Result<Self, InputError> {
        let bad = |reason: &'static str| InputError::SpiffeId { reason };
        if uri.len() > MAX_SPIFFE_ID_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or(bad("must start with spiffe://"))?;
        let (domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return Err(bad("trust domain is empty"));
        }
        if !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(bad("trust domain may hold only a-z, 0-9, '-', '.', '_'"));
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(bad("path has an empty segment"));
                }
                if segment == "." || segment == ".." {
                    return Err(bad("path has a '.' or '..' segment"));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(bad("path may hold only A-Z, a-z, 0-9, '-', '.', '_'"));
                }
            }
        }
        Ok(Self {
            uri: Arc::from(uri),
            path_at: SCHEME.len() + domain.len(),
        })
    }

    /// The whole ID, `spiffe://td/path`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain name, e.g. `spike.ist`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_at]
    }

    /// The path, starting with `/`, or empty.
    pub fn path(&self) -> &str {
        &self.uri[self.path_at..]
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A built-in role (SPEC §2), recognised from the SPIFFE ID's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `spike/pilot/role/superuser`: everything except recover and restore.
    Superuser,
    /// `spike/pilot/role/recover`: only operator recover.
    Recover,
    /// `spike/pilot/role/restore`: only operator restore.
    Restore,
    /// `spike/nexus`: the shard exchange only.
    Nexus,
    /// `spike/keeper`: the shard exchange only.
    Keeper,
}

impl Role {
    /// Every built-in role.
    pub const ALL: [Role; 5] = [
        Role::Superuser,
        Role::Recover,
        Role::Restore,
        Role::Nexus,
        Role::Keeper,
    ];

    /// The role's path under the trust domain.
    pub fn path(self) -> &'static str {
        match self {
            Role::Superuser => "/spike/pilot/role/superuser",
            Role::Recover => "/spike/pilot/role/recover",
            Role::Restore => "/spike/pilot/role/restore",
            Role::Nexus => "/spike/nexus",
            Role::Keeper => "/spike/keeper",
        }
    }

    /// The role's SPIFFE ID in `trust_domain`.
    pub fn id_in(self, trust_domain: &str) -> Result<SpiffeId, InputError> {
        SpiffeId::parse(&format!("{SCHEME}{trust_domain}{}", self.path()))
    }
}

/// The trust domains whose built-in role IDs are honoured.
///
/// A role is recognised when the caller's trust domain is one of these and
/// its path equals the role path or extends it with a `/`-suffix
/// (`.../superuser/alice`). Any other caller gets only what policies grant.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    domains: Vec<String>,
}

impl TrustRoots {
    /// The default trust root, `spike.ist`.
    pub const DEFAULT: &'static str = "spike.ist";

    /// Trust roots from a list of domain names (e.g. from `SPIKE_TRUST_ROOT`,
    /// comma separated).
    pub fn new<I, S>(domains: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for d in domains {
            let d = d.as_ref().trim();
            // Reuse the ID validator for the domain syntax.
            SpiffeId::parse(&format!("{SCHEME}{d}"))?;
            out.push(d.to_owned());
        }
        if out.is_empty() {
            return Err(InputError::SpiffeId {
                reason: "at least one trust root is required",
            });
        }
        Ok(Self { domains: out })
    }

    /// The trust domains, in configuration order.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// The built-in role `id` holds, if any.
    pub fn role_of(&self, id: &SpiffeId) -> Option<Role> {
        if !self.domains.iter().any(|d| d == id.trust_domain()) {
            return None;
        }
        let path = id.path();
        Role::ALL.into_iter().find(|role| {
            let rp = role.path();
            path == rp || (path.starts_with(rp) && path.as_bytes().get(rp.len()) == Some(&b'/'))
        })
    }

    /// Whether `id` holds `role`.
    pub fn has_role(&self, id: &SpiffeId, role: Role) -> bool {
        self.role_of(id) == Some(role)
    }
}

impl Default for TrustRoots {
    fn default() -> Self {
        Self {
            domains: vec![Self::DEFAULT.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://spike.ist/spike/pilot/role/superuser").unwrap();
        assert_eq!(id.trust_domain(), "spike.ist");
        assert_eq!(id.path(), "/spike/pilot/role/superuser");
        let bare = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(bare.path(), "");
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in [
            "",
            "http://spike.ist/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://Spike.ist/x",
            "spiffe://spike.ist:443/x",
            "spiffe://spike.ist/a//b",
            "spiffe://spike.ist/a/../b",
            "spiffe://spike.ist/a/./b",
            "spiffe://spike.ist/a/",
            "spiffe://spike.ist/a?b",
            "spiffe://spike.ist/a#b",
            "spiffe://spike.ist/a b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("spiffe://a/{}", "x".repeat(MAX_SPIFFE_ID_LEN));
        assert!(SpiffeId::parse(&long).is_err());
    }

    #[test]
    fn roles_match_exactly_or_with_slash_suffix() {
        let roots = TrustRoots::default();
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        assert_eq!(
            roots.role_of(&id("spiffe://spike.ist/spike/pilot/role/superuser")),
            Some(Role::Superuser)
        );
        assert_eq!(
            roots.role_of(&id("spiffe://spike.ist/spike/pilot/role/superuser/alice")),
            Some(Role::Superuser)
        );
        assert_eq!(
            roots.role_of(&id("spiffe://spike.ist/spike/pilot/role/superuserx")),
            None
        );
        assert_eq!(
            roots.role_of(&id("spiffe://other.td/spike/pilot/role/superuser")),
            None
        );
        assert_eq!(
            roots.role_of(&id("spiffe://spike.ist/spike/keeper/1")),
            Some(Role::Keeper)
        );
        assert_eq!(roots.role_of(&id("spiffe://spike.ist/app")), None);
        for role in Role::ALL {
            assert_eq!(roots.role_of(&role.id_in("spike.ist").unwrap()), Some(role));
        }
    }

    #[test]
    fn multiple_trust_roots() {
        let roots = TrustRoots::new(["a.org", "b.org"]).unwrap();
        let id = SpiffeId::parse("spiffe://b.org/spike/pilot/role/recover").unwrap();
        assert_eq!(roots.role_of(&id), Some(Role::Recover));
        assert!(TrustRoots::new(Vec::<String>::new()).is_err());
        assert!(TrustRoots::new(["Bad Domain"]).is_err());
    }
}

//! Secret paths: the keys of the secrets store.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::InputError;

/// Longest secret path, in bytes (SPEC §10).
pub const MAX_PATH_LEN: usize = 500;

/// A validated, normalised secret path such as `tenants/acme/db/creds`.
///
/// 1–500 bytes of `[A-Za-z0-9._-/]`, segments separated by `/`, none empty,
/// `.` or `..`. Normalisation strips leading and trailing `/`, so
/// `/a/b/` and `a/b` name the same secret. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(Arc<str>);

impl SecretPath {
    /// Validates and normalises `raw`.
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        normalize(raw).map(|p| Self(Arc::from(p)))
    }

    /// The normalised path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates `raw` and returns it normalised, without allocating (reads
/// look secrets up by the returned slice).
pub(crate) fn normalize(raw: &str) -> Result<&str, InputError> {
    {
        let bad = |reason: &'static str| InputError::Path { reason };
        if raw.len() > MAX_PATH_LEN {
            return Err(bad("longer than 500 bytes"));
        }
        let path = raw.trim_matches('/');
        if path.is_empty() {
            return Err(bad("empty"));
        }
        for segment in path.split('/') {
            match segment {
                "" => return Err(bad("empty segment ('//')")),
                "." | ".." => return Err(bad("'.' or '..' segment")),
                _ => {}
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad("may hold only A-Z, a-z, 0-9, '.', '_', '-', '/'"));
            }
        }
        Ok(path)
    }
}

impl Borrow<str> for SecretPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({})", self.0)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SecretPath {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Validates a folder prefix for hierarchical listing: empty (the root) or a
/// path, returned with a trailing `/`.
pub(crate) fn parse_folder(raw: &str) -> Result<String, InputError> {
    if raw.trim_matches('/').is_empty() {
        return Ok(String::new());
    }
    let path = SecretPath::parse(raw)?;
    Ok(format!("{}/", path.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_slashes() {
        assert_eq!(SecretPath::parse("/a/b/").unwrap().as_str(), "a/b");
        assert_eq!(SecretPath::parse("a").unwrap().as_str(), "a");
        assert_eq!(
            SecretPath::parse("tenants/acme-1/db_2/creds.v1")
                .unwrap()
                .as_str(),
            "tenants/acme-1/db_2/creds.v1"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "", "/", "//", "a//b", "a/./b", "a/../b", "..", ".", "a/..", "a b", "a\0b", "é",
            "a\\b", "a%2fb", "a?b",
        ] {
            assert!(SecretPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SecretPath::parse(&"a".repeat(MAX_PATH_LEN)).is_ok());
        assert!(SecretPath::parse(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn folders() {
        assert_eq!(parse_folder("").unwrap(), "");
        assert_eq!(parse_folder("/").unwrap(), "");
        assert_eq!(parse_folder("a/b").unwrap(), "a/b/");
        assert_eq!(parse_folder("a/b/").unwrap(), "a/b/");
        assert!(parse_folder("a/../b").is_err());
    }
}

//! Secret routes: `/v1/store/secrets` and `/v1/store/secrets/metadata`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// `{}`: the body of requests and answers that carry nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Put: `{path, values:{k:v}}` → `{}`. Values are strings.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecretPutRequest {
    /// Secret path.
    pub path: String,
    /// The key/value pairs (secret!).
    pub values: BTreeMap<String, String>,
}

impl Drop for SecretPutRequest {
    fn drop(&mut self) {
        for v in self.values.values_mut() {
            v.zeroize();
        }
    }
}

impl fmt::Debug for SecretPutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretPutRequest")
            .field("path", &self.path)
            .field("values", &format_args!("[{} redacted]", self.values.len()))
            .finish()
    }
}

/// `?action=get`: `{path, version?}` → [`SecretGetResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretGetRequest {
    /// Secret path.
    pub path: String,
    /// Version (absent or 0 = current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `{data:{k:v}}`
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SecretGetResponse {
    /// The key/value pairs (secret!). Non-string values written through the
    /// Vault API come back as their JSON text.
    pub data: BTreeMap<String, String>,
}

impl Drop for SecretGetResponse {
    fn drop(&mut self) {
        for v in self.data.values_mut() {
            v.zeroize();
        }
    }
}

impl fmt::Debug for SecretGetResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretGetResponse")
            .field("data", &format_args!("[{} redacted]", self.data.len()))
            .finish()
    }
}

/// `?action=delete`: `{path, versions:[int]}` → `{}` (empty or `[0]` =
/// current).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleteRequest {
    /// Secret path.
    pub path: String,
    /// Versions to delete.
    #[serde(default)]
    pub versions: Vec<u64>,
}

/// `?action=undelete`: `{path, versions:[int]}` → `{}`.
pub type SecretUndeleteRequest = SecretDeleteRequest;

/// `?action=destroy`: `{path, versions:[int]}` → `{}` (spike-rs
/// extension): the versions' data is wiped for good.
pub type SecretDestroyRequest = SecretDeleteRequest;

/// `?action=list`: `{}` → [`SecretListResponse`].
pub type SecretListRequest = Empty;

/// `{keys:[...]}`: every path the caller may list, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretListResponse {
    /// Secret paths.
    pub keys: Vec<String>,
}

/// `/v1/store/secrets/metadata?action=get`: `{path, version?}`.
pub type SecretMetadataRequest = SecretGetRequest;

/// One version's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersionInfo {
    /// RFC 3339.
    pub created_time: String,
    /// The version number.
    pub version: u64,
    /// RFC 3339, if deleted.
    #[serde(default)]
    pub deleted_time: Option<String>,
}

/// The secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetadata {
    /// The newest version.
    pub current_version: u64,
    /// The oldest retained version.
    pub oldest_version: u64,
    /// RFC 3339.
    pub created_time: String,
    /// RFC 3339.
    pub updated_time: String,
    /// Versions kept.
    pub max_versions: u32,
}

/// `{versions:{"n":{...}}, metadata:{...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadataResponse {
    /// Per version, keyed by its number as a string.
    pub versions: BTreeMap<String, SecretVersionInfo>,
    /// The secret's metadata.
    pub metadata: SecretMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_upstream() {
        let get: SecretGetRequest = serde_json::from_str(r#"{"path":"a"}"#).unwrap();
        assert_eq!(get.version, None);
        let del: SecretDeleteRequest = serde_json::from_str(r#"{"path":"a"}"#).unwrap();
        assert!(del.versions.is_empty());
        let meta = SecretMetadataResponse {
            versions: [(
                "1".to_owned(),
                SecretVersionInfo {
                    created_time: "t".into(),
                    version: 1,
                    deleted_time: None,
                },
            )]
            .into(),
            metadata: SecretMetadata {
                current_version: 1,
                oldest_version: 1,
                created_time: "t".into(),
                updated_time: "t".into(),
                max_versions: 10,
            },
        };
        let v: serde_json::Value = serde_json::to_value(&meta).unwrap();
        assert_eq!(v["versions"]["1"]["createdTime"], "t");
        assert_eq!(v["metadata"]["currentVersion"], 1);
        assert_eq!(v["metadata"]["maxVersions"], 10);
        let put = SecretPutRequest {
            path: "p".into(),
            values: [("k".to_owned(), "hunter2".to_owned())].into(),
        };
        assert!(!format!("{put:?}").contains("hunter2"));
    }
}

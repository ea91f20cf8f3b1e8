//! Policy routes: `/v1/acl/policy`.

use serde::{Deserialize, Serialize};

/// Put (upsert): `{name, spiffeidPattern, pathPattern, permissions}` →
/// [`PolicyPutResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPutRequest {
    /// Unique name.
    pub name: String,
    /// Regex on the caller's whole SPIFFE ID.
    pub spiffeid_pattern: String,
    /// Regex on the whole secret path.
    pub path_pattern: String,
    /// `read`, `write`, `list`, `execute`, `super`.
    pub permissions: Vec<String>,
}

/// `{id}` (the policy's name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPutResponse {
    /// The policy's id.
    pub id: String,
}

/// `?action=get`: `{id}` → [`PolicyView`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyGetRequest {
    /// The policy's id (its name).
    pub id: String,
}

/// `?action=delete`: `{id}` → `{}`.
pub type PolicyDeleteRequest = PolicyGetRequest;

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Id (= name).
    pub id: String,
    /// Name.
    pub name: String,
    /// Regex on SPIFFE IDs.
    pub spiffeid_pattern: String,
    /// Regex on paths.
    pub path_pattern: String,
    /// Permissions granted.
    pub permissions: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Who created it.
    pub created_by: String,
}

/// `?action=list`: `{spiffeidPattern?, pathPattern?}` (exact filters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyListRequest {
    /// Keep policies with exactly this SPIFFE ID pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffeid_pattern: Option<String>,
    /// Keep policies with exactly this path pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern: Option<String>,
}

/// One listed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyListItem {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// `{policies:[{id,name}]}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyListResponse {
    /// Policies, by name.
    pub policies: Vec<PolicyListItem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_fields() {
        let p: PolicyPutRequest = serde_json::from_str(
            r#"{"name":"n","spiffeidPattern":"s","pathPattern":"p","permissions":["read"]}"#,
        )
        .unwrap();
        assert_eq!(p.spiffeid_pattern, "s");
        let l: PolicyListRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(l, PolicyListRequest::default());
    }
}

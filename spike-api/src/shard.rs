//! Shares on the wire: 32 integers, as upstream SPIKE sends them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A 32-byte share value on the wire: a JSON array of 32 integers 0–255.
/// Zeroized on drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ShardBytes(pub Zeroizing<[u8; 32]>);

impl ShardBytes {
    /// Wraps share bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ShardBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardBytes([redacted])")
    }
}

impl Serialize for ShardBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShardBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(<[u8; 32]>::deserialize(d)?);
        Ok(Self(bytes))
    }
}

/// Keeper `/v1/store/contribute`: `{shard:[32 ints]}` → `{}` (Nexus only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContributeRequest {
    /// The Keeper's share.
    pub shard: ShardBytes,
}

/// Keeper `/v1/store/shard`: `{}` → [`ShardResponse`] (Nexus only).
pub type ShardRequest = crate::Empty;

/// `{shard:[32 ints]}`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardResponse {
    /// The Keeper's share.
    pub shard: ShardBytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_32_ints() {
        let r = ShardResponse {
            shard: ShardBytes::new([7; 32]),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with(r#"{"shard":[7,7,"#));
        let back: ShardResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(back.shard, r.shard);
        assert!(serde_json::from_str::<ShardResponse>(r#"{"shard":[1,2]}"#).is_err());
        assert!(
            serde_json::from_str::<ShardResponse>(&format!(
                r#"{{"shard":[{}]}}"#,
                ["256"; 32].join(",")
            ))
            .is_err()
        );
        assert!(!format!("{r:?}").contains('7'));
    }
}

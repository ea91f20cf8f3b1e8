//! The key check value: detects a wrong reconstruction of the root key.

use core::fmt;

use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::kdf::{Purpose, hmac_sha256};
use crate::key::RootKey;

/// The message MACed to form a key check value.
const KCV_MESSAGE: &[u8] = b"spike-rs key check value v1";

/// A key check value:
/// `HMAC-SHA256(root.derive(Purpose::KeyCheck), "spike-rs key check value v1")`.
///
/// Not secret (it reveals nothing about the key beyond "this is the key");
/// stored in the backing store so that a root key rebuilt from wrong or
/// stale shares is detected before it is used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyCheckValue([u8; 32]);

impl KeyCheckValue {
    /// The key check value of `root`.
    #[must_use]
    pub fn compute(root: &RootKey) -> Self {
        let subkey = root.derive(Purpose::KeyCheck);
        let mut mac = hmac_sha256(subkey.expose_secret());
        mac.update(KCV_MESSAGE);
        KeyCheckValue(mac.finalize().into_bytes().into())
    }

    /// Whether `root` is the key this value was computed from (constant-time
    /// comparison).
    #[must_use]
    pub fn matches(&self, root: &RootKey) -> bool {
        let other = KeyCheckValue::compute(root);
        self.0.ct_eq(&other.0).into()
    }

    /// The 32 bytes, for storage.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A key check value read back from storage.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyCheckValue(bytes)
    }
}

impl fmt::Debug for KeyCheckValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyCheckValue(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        let mut bytes = [0; 32];
        for (b, v) in bytes.iter_mut().zip(1..) {
            *b = v;
        }
        let root = RootKey::from_bytes(bytes).unwrap();
        // Python: HMAC(HKDF(root, "spike-rs/v1/key-check"), "spike-rs key check value v1").
        assert_eq!(
            format!("{:?}", KeyCheckValue::compute(&root)),
            "KeyCheckValue(8997db646f03dfd6ccd3d7781b707318685ecf7f7634d71b85c9d31cbfe87909)"
        );
    }

    #[test]
    fn matches_the_right_key_only() {
        let root = RootKey::generate();
        let kcv = KeyCheckValue::compute(&root);
        assert!(kcv.matches(&root));
        assert!(!kcv.matches(&RootKey::generate()));
        assert_eq!(kcv, KeyCheckValue::compute(&root));
        let stored = KeyCheckValue::from_bytes(kcv.to_bytes());
        assert!(stored.matches(&root));
        let mut flipped = kcv.to_bytes();
        flipped[31] ^= 1;
        assert!(!KeyCheckValue::from_bytes(flipped).matches(&root));
    }
}

//! Subkey derivation (HKDF-SHA256) and keyed hashing (HMAC-SHA256).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::key::{KEY_LEN, SubKey};

/// What a subkey is for. Each purpose has its own fixed HKDF label, so keys
/// for different purposes are independent.
///
/// The labels are part of the on-disk format: never change one, add a new
/// purpose (or a `v2` label) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Encrypting records in the backing store.
    Records,
    /// Keyed hashes of paths, policy names and patterns (storage keys).
    PathIndex,
    /// The audit log HMAC.
    Audit,
    /// Fingerprints of values (comparisons without the plaintext).
    Fingerprint,
    /// The encryption-as-a-service (cipher API) key.
    Cipher,
    /// The key check value (see [`KeyCheckValue`](crate::KeyCheckValue)).
    KeyCheck,
}

impl Purpose {
    /// Every purpose, in declaration order.
    pub const ALL: [Purpose; 6] = [
        Purpose::Records,
        Purpose::PathIndex,
        Purpose::Audit,
        Purpose::Fingerprint,
        Purpose::Cipher,
        Purpose::KeyCheck,
    ];

    /// The HKDF `info` label of this purpose (fixed ASCII).
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Purpose::Records => "spike-rs/v1/records",
            Purpose::PathIndex => "spike-rs/v1/path-index",
            Purpose::Audit => "spike-rs/v1/audit",
            Purpose::Fingerprint => "spike-rs/v1/fingerprint",
            Purpose::Cipher => "spike-rs/v1/cipher",
            Purpose::KeyCheck => "spike-rs/v1/key-check",
        }
    }
}

/// HKDF-SHA256(ikm = root key, salt = none, info = label) → 32 bytes.
pub(crate) fn derive(root: &[u8; KEY_LEN], purpose: Purpose) -> SubKey {
    let hkdf = Hkdf::<Sha256>::new(None, root);
    let mut okm = [0; KEY_LEN];
    #[allow(
        clippy::expect_used,
        reason = "HKDF-Expand fails only for outputs over 255 * 32 bytes; this is 32"
    )]
    hkdf.expand(purpose.label().as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    // `from_bytes` zeroizes its by-value copy; wipe ours too.
    let key = SubKey::from_bytes(okm);
    okm.zeroize();
    key
}

/// HKDF-SHA256(ikm = root key, salt = none, info = `info`) → 32 bytes,
/// for derivations that are not a [`Purpose`] subkey (Shamir coefficients).
pub(crate) fn expand(root: &[u8; KEY_LEN], info: &[u8]) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
    let hkdf = Hkdf::<Sha256>::new(None, root);
    let mut okm = zeroize::Zeroizing::new([0; KEY_LEN]);
    #[allow(
        clippy::expect_used,
        reason = "HKDF-Expand fails only for outputs over 255 * 32 bytes; this is 32"
    )]
    hkdf.expand(info, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// An HMAC-SHA256 instance keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8; KEY_LEN]) -> Hmac<Sha256> {
    #[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// HMAC-SHA256 under `key` over `parts`, each part prefixed by its length as
/// a big-endian `u32`, so that part boundaries are unambiguous:
/// `["ab", "c"]` and `["a", "bc"]` hash differently.
///
/// Parts longer than `u32::MAX` bytes are not supported (their length prefix
/// would be truncated); callers hash paths and names, far below that.
#[must_use]
pub fn keyed_hash(key: &SubKey, parts: &[&[u8]]) -> [u8; 32] {
    KeyedHasher::new(key).hash(parts)
}

/// [`keyed_hash`] under one key, its HMAC pads hashed once instead of at
/// every call (two of the four or five SHA-256 blocks of a short input):
/// for loops such as checking every record's digest share at unseal.
///
/// The state is as secret as the key: `Debug` is redacted and it is
/// zeroized on drop (hmac's `zeroize` feature).
pub struct KeyedHasher {
    mac: Hmac<Sha256>,
}

impl KeyedHasher {
    /// Keys a hasher with `key`.
    #[must_use]
    pub fn new(key: &SubKey) -> Self {
        Self {
            mac: hmac_sha256(key.expose_secret()),
        }
    }

    /// The keyed hash of `parts`, exactly as [`keyed_hash`].
    #[must_use]
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RootKey;

    /// Root key 0x01 0x02 … 0x20 (a valid scalar).
    fn test_root() -> RootKey {
        let mut bytes = [0; KEY_LEN];
        for (b, v) in bytes.iter_mut().zip(1..) {
            *b = v;
        }
        RootKey::from_bytes(bytes).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_keyed_hasher_reused_many_times_hashes_as_keyed_hash() {
        let key = test_root().derive(Purpose::PathIndex);
        let hasher = KeyedHasher::new(&key);
        for (a, b) in [
            (&b"digest"[..], &b"k1"[..]),
            (b"secret", b"db/creds"),
            (b"", b""),
        ] {
            assert_eq!(hasher.hash(&[a, b]), keyed_hash(&key, &[a, b]));
        }
        assert_ne!(hasher.hash(&[b"a", b"b"]), hasher.hash(&[b"ab"]));
        assert_eq!(format!("{hasher:?}"), "KeyedHasher(<redacted>)");
    }

    #[test]
    fn labels_are_fixed_distinct_and_versioned() {
        let labels: Vec<_> = Purpose::ALL.iter().map(Purpose::label).collect();
        for (i, label) in labels.iter().enumerate() {
            assert!(label.starts_with("spike-rs/v1/"), "{label}");
            assert!(label.is_ascii());
            assert!(!labels[..i].contains(label), "duplicate label {label}");
        }
    }

    /// Pins the on-disk key schedule. Expected values computed independently
    /// (Python `hmac`: PRK = HMAC(32 zero bytes, ikm), OKM = HMAC(PRK, info || 0x01)).
    #[test]
    fn derive_known_answers() {
        let root = test_root();
        let expected = [
            (
                Purpose::Records,
                "af6b7b0fb3cc50eaba118f495e9547ff6743d542457f150d3b9013555ed4e9c4",
            ),
            (
                Purpose::PathIndex,
                "e0350223c149827e8bc7e7caab456bd57eaa5b2fb22c117f9afcf422f6e39939",
            ),
            (
                Purpose::Audit,
                "3d9d1e4aed53a796de08696ce528af044c308a85ccd3d9739615ccc6ca035fb4",
            ),
            (
                Purpose::Fingerprint,
                "8568e3d2ba6e14b4702090d3f128480595ceafe4d57b3838e429e7c64215ec55",
            ),
            (
                Purpose::Cipher,
                "53df50e959d1da964e9858ac25acb70fa9312d6258b3edbf67ec4ee6d568a979",
            ),
            (
                Purpose::KeyCheck,
                "5af40d7204aa5f786a41858d8da7a98d3d0093072ed576c14c22dd4846203dfd",
            ),
        ];
        assert_eq!(expected.len(), Purpose::ALL.len());
        for (purpose, want) in expected {
            assert_eq!(
                hex(root.derive(purpose).expose_secret()),
                want,
                "{purpose:?}"
            );
        }
    }

    #[test]
    fn derive_is_deterministic_and_separates_purposes_and_roots() {
        let root = RootKey::generate();
        let other = RootKey::generate();
        let keys: Vec<[u8; KEY_LEN]> = Purpose::ALL
            .iter()
            .map(|p| *root.derive(*p).expose_secret())
            .collect();
        for (i, purpose) in Purpose::ALL.iter().enumerate() {
            assert_eq!(root.derive(*purpose).expose_secret(), &keys[i]);
            assert_ne!(other.derive(*purpose).expose_secret(), &keys[i]);
            assert_ne!(&keys[i], root.expose_secret());
            for j in 0..i {
                assert_ne!(keys[i], keys[j], "{purpose:?} collides");
            }
        }
    }

    #[test]
    fn keyed_hash_known_answer() {
        let key = test_root().derive(Purpose::PathIndex);
        assert_eq!(
            hex(&keyed_hash(&key, &[b"secret", b"db/creds"])),
            "2385da38cafd6b0adbb71be59a73474d5760ffdf3b280cc366fca3ffe9718d28"
        );
    }

    #[test]
    fn keyed_hash_length_prefix_removes_ambiguity() {
        let key = SubKey::from_bytes([7; KEY_LEN]);
        let inputs: [&[&[u8]]; 7] = [
            &[b"ab", b"c"],
            &[b"a", b"bc"],
            &[b"abc"],
            &[b"abc", b""],
            &[b"", b"abc"],
            &[],
            &[b""],
        ];
        let hashes: Vec<_> = inputs.iter().map(|parts| keyed_hash(&key, parts)).collect();
        for i in 0..hashes.len() {
            for j in 0..i {
                assert_ne!(hashes[i], hashes[j], "{:?} vs {:?}", inputs[i], inputs[j]);
            }
        }
        // Deterministic, and keyed.
        assert_eq!(keyed_hash(&key, &[b"ab", b"c"]), hashes[0]);
        let other = SubKey::from_bytes([8; KEY_LEN]);
        assert_ne!(keyed_hash(&other, &[b"ab", b"c"]), hashes[0]);
    }
}

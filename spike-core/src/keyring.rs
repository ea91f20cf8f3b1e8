//! Keys per epoch, storage keys and the record-set digest.
//!
//! Every root key is an *epoch*. From it come the records cipher and the
//! path-index key (HKDF, `spike-crypto`). Storage keys are keyed hashes of
//! a record's kind and name under the path-index key, so the backing store
//! never sees a path or policy name; they change when the root key rotates.

use spike_crypto::{KeyedHasher, Purpose, RecordCipher, RootKey};

use crate::record::Header;

/// Storage keys of secrets start with this byte.
pub const PREFIX_SECRET: u8 = 1;
/// Storage keys of policies start with this byte.
pub const PREFIX_POLICY: u8 = 2;

/// System records start with byte 0.
///
/// The init record: key check value and share parameters (not sealed).
pub const INIT_KEY: &[u8] = b"\x00init";
/// The manifest record.
pub const MANIFEST_KEY: &[u8] = b"\x00manifest";
/// The KV mount configuration record.
pub const CONFIG_KEY: &[u8] = b"\x00config";
/// The cipher API's data key (kind 6), sealed under the records key.
pub const CIPHER_KEY: &[u8] = b"\x00cipher-key";
/// Rotation: the new key sealed under the old epoch.
pub const ROTATION_FORWARD_KEY: &[u8] = b"\x00rotation-forward";
/// Rotation: the old key sealed under the new epoch.
pub const ROTATION_BACK_KEY: &[u8] = b"\x00rotation-back";

/// The subkeys of one root key.
pub(crate) struct EpochKeys {
    pub(crate) epoch: u32,
    pub(crate) cipher: RecordCipher,
    /// Keyed hashes under the path-index key (keyed once: every record's
    /// digest share is checked at unseal).
    index: KeyedHasher,
    /// Keyed hashes under the audit key, for paths in the audit trail.
    audit: KeyedHasher,
}

impl EpochKeys {
    pub(crate) fn derive(root: &RootKey, epoch: u32) -> Self {
        Self {
            epoch,
            cipher: RecordCipher::new(&root.derive(Purpose::Records)),
            index: KeyedHasher::new(&root.derive(Purpose::PathIndex)),
            audit: KeyedHasher::new(&root.derive(Purpose::Audit)),
        }
    }

    /// What the audit trail shows instead of `value` (a path or policy name)
    /// when paths are HMAC'd. The audit key belongs to the root key, like
    /// every subkey: a rotation (which answers a root key that may have
    /// leaked) starts a new one, so trails correlate within an epoch.
    pub(crate) fn audit_mac(&self, value: &str) -> [u8; 32] {
        self.audit.hash(&[b"audit", value.as_bytes()])
    }

    /// Storage key of the secret at `path`.
    pub(crate) fn secret_key(&self, path: &str) -> Vec<u8> {
        self.hashed_key(PREFIX_SECRET, b"secret", path.as_bytes())
    }

    /// Storage key of the policy named `name`.
    pub(crate) fn policy_key(&self, name: &str) -> Vec<u8> {
        self.hashed_key(PREFIX_POLICY, b"policy", name.as_bytes())
    }

    fn hashed_key(&self, prefix: u8, label: &[u8], name: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(33);
        key.push(prefix);
        key.extend_from_slice(&self.index.hash(&[label, name]));
        key
    }

    /// This record's share of the manifest digest: a keyed hash of where it
    /// is and which revision it holds. Restoring an older copy of a record,
    /// or adding or removing one, changes the XOR of all shares.
    pub(crate) fn digest_share(&self, storage_key: &[u8], header: &Header) -> [u8; 16] {
        let full = self.index.hash(&[b"digest", storage_key, &header.encode()]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// MAC over the init record's fields.
    pub(crate) fn init_mac(&self, fields: &[u8]) -> [u8; 32] {
        self.index.hash(&[b"init", fields])
    }
}

/// XORs `b` into `a`.
pub(crate) fn xor_into(a: &mut [u8; 16], b: &[u8; 16]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Kind;

    #[test]
    fn storage_keys_hide_names_and_change_with_the_key() {
        let a = EpochKeys::derive(&RootKey::generate(), 1);
        let b = EpochKeys::derive(&RootKey::generate(), 2);
        let k = a.secret_key("db/creds");
        assert_eq!(k.len(), 33);
        assert_eq!(k[0], PREFIX_SECRET);
        assert_eq!(k, a.secret_key("db/creds"));
        assert_ne!(k, a.secret_key("db/creds2"));
        assert_ne!(k, b.secret_key("db/creds"));
        assert_ne!(a.policy_key("db/creds")[1..], k[1..]);
        assert!(!k.windows(8).any(|w| w == b"db/creds"));
    }

    #[test]
    fn digest_share_depends_on_revision() {
        let a = EpochKeys::derive(&RootKey::generate(), 1);
        let h = |revision| Header {
            kind: Kind::Secret,
            epoch: 1,
            revision,
        };
        let k = a.secret_key("x");
        assert_eq!(a.digest_share(&k, &h(1)), a.digest_share(&k, &h(1)));
        assert_ne!(a.digest_share(&k, &h(1)), a.digest_share(&k, &h(2)));
    }
}

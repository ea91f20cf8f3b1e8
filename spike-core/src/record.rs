//! The at-rest record format (documented byte by byte in
//! `docs/format.md`, pinned by `tests/durability/format.rs`).
//!
//! ```text
//! record   = header(16) || nonce(12) || ciphertext || tag(16)
//! header   = "SK" || format(1) = 1 || kind(1) || epoch(u32 BE) || revision(u64 BE)
//! aad      = header || storage key
//! ```
//!
//! The AAD binds each record to its kind, key epoch, revision and storage
//! key: a record moved to another key, re-labelled or altered fails
//! authentication. Integers in plaintexts are big-endian; strings and byte
//! strings carry a length prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use spike_crypto::RecordCipher;
use zeroize::Zeroizing;

use crate::policy::{Permissions, Policy, PolicySpec};
use crate::secrets::{KvConfig, Secret, SecretData, SecretSettings, Version};
use crate::time::Timestamp;

/// Magic bytes that start every sealed record.
pub const MAGIC: [u8; 2] = *b"SK";
/// The current record format version.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the cleartext header.
pub const HEADER_LEN: usize = 16;

/// What a record holds; byte 3 of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A secret: settings and retained versions.
    Secret = 1,
    /// A policy.
    Policy = 2,
    /// The manifest: commit sequence and record-set digest.
    Manifest = 3,
    /// An in-progress root key rotation.
    Rotation = 4,
    /// The KV mount configuration.
    Config = 5,
    /// The cipher API's data key.
    CipherKey = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Secret,
            2 => Kind::Policy,
            3 => Kind::Manifest,
            4 => Kind::Rotation,
            5 => Kind::Config,
            6 => Kind::CipherKey,
            _ => return None,
        })
    }
}

/// The cleartext header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the record holds.
    pub kind: Kind,
    /// The key epoch whose subkeys sealed it.
    pub epoch: u32,
    /// The record's revision (bumped on every rewrite).
    pub revision: u64,
}

impl Header {
    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..2].copy_from_slice(&MAGIC);
        out[2] = FORMAT_VERSION;
        out[3] = self.kind as u8;
        out[4..8].copy_from_slice(&self.epoch.to_be_bytes());
        out[8..16].copy_from_slice(&self.revision.to_be_bytes());
        out
    }

    /// Parses the header at the start of `record`.
    pub fn decode(record: &[u8]) -> Result<Self, RecordError> {
        let h = record.get(..HEADER_LEN).ok_or(RecordError::Truncated)?;
        if h[..2] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        if h[2] != FORMAT_VERSION {
            return Err(RecordError::UnknownFormat(h[2]));
        }
        let kind = Kind::from_u8(h[3]).ok_or(RecordError::UnknownKind(h[3]))?;
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&h[4..8]);
        let mut revision = [0u8; 8];
        revision.copy_from_slice(&h[8..16]);
        Ok(Self {
            kind,
            epoch: u32::from_be_bytes(epoch),
            revision: u64::from_be_bytes(revision),
        })
    }
}

/// Why a record could not be opened. Says nothing about its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Shorter than its structure requires.
    #[error("truncated")]
    Truncated,
    /// Does not start with the record magic.
    #[error("bad magic")]
    BadMagic,
    /// A format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownFormat(u8),
    /// A record kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// Sealed under a key epoch that is not loaded.
    #[error("sealed under unknown key epoch {0}")]
    UnknownEpoch(u32),
    /// Authentication failed: altered, moved or sealed with another key.
    #[error("authentication failed")]
    Authentication,
    /// The plaintext does not decode.
    #[error("malformed plaintext: {0}")]
    Malformed(&'static str),
}

/// Seals `plaintext` into a record stored under `storage_key`.
pub fn seal(
    cipher: &RecordCipher,
    header: Header,
    storage_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, spike_crypto::CryptoError> {
    let h = header.encode();
    let mut out = Vec::with_capacity(HEADER_LEN + 28 + plaintext.len());
    out.extend_from_slice(&h);
    with_aad(&h, storage_key, |aad| {
        cipher.seal_into(aad, plaintext, &mut out)
    })?;
    Ok(out)
}

/// Calls `f` with a record's AAD: its header bytes, then its storage key.
/// On the stack for a storage key of the usual length (a prefix byte and a
/// 32-byte hash), so that sealing and opening allocate nothing for it.
fn with_aad<T>(header: &[u8], storage_key: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    const INLINE: usize = HEADER_LEN + 64;
    let len = header.len() + storage_key.len();
    let mut inline = [0u8; INLINE];
    let mut heap = Vec::new();
    let aad: &mut [u8] = if len <= INLINE {
        &mut inline[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let (head, key) = aad.split_at_mut(header.len());
    head.copy_from_slice(header);
    key.copy_from_slice(storage_key);
    f(aad)
}

/// Opens a record read from `storage_key`, with the cipher of its epoch.
pub fn open<'c>(
    cipher_for_epoch: impl FnOnce(u32) -> Option<&'c RecordCipher>,
    storage_key: &[u8],
    record: &[u8],
) -> Result<(Header, Zeroizing<Vec<u8>>), RecordError> {
    let mut plaintext = Zeroizing::new(Vec::new());
    let header = open_into(cipher_for_epoch, storage_key, record, &mut plaintext)?;
    Ok((header, plaintext))
}

/// [`open`] into `plaintext` (cleared first), for loops that open many
/// records with one buffer (unseal).
pub fn open_into<'c>(
    cipher_for_epoch: impl FnOnce(u32) -> Option<&'c RecordCipher>,
    storage_key: &[u8],
    record: &[u8],
    plaintext: &mut Zeroizing<Vec<u8>>,
) -> Result<Header, RecordError> {
    let header = Header::decode(record)?;
    let cipher = cipher_for_epoch(header.epoch).ok_or(RecordError::UnknownEpoch(header.epoch))?;
    let (stored_header, sealed) = record.split_at(HEADER_LEN);
    with_aad(stored_header, storage_key, |aad| {
        cipher.open_into(aad, sealed, plaintext)
    })
    .map_err(|_| RecordError::Authentication)?;
    Ok(header)
}

// ---- plaintext codecs -------------------------------------------------------

struct Enc(Zeroizing<Vec<u8>>);

impl Enc {
    fn new(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Short strings (paths, names, patterns, metadata): u16 length.
    fn str16(&mut self, s: &str) {
        debug_assert!(s.len() <= usize::from(u16::MAX));
        self.0
            .extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    /// Byte strings (secret data): u32 length.
    fn bytes32(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed("truncated field"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn str16(&mut self) -> Result<&'a str, RecordError> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::Malformed("invalid UTF-8"))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], RecordError> {
        let n = usize::try_from(self.u32()?).map_err(|_| RecordError::Malformed("length"))?;
        self.take(n)
    }
    fn end(self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Malformed("trailing bytes"))
        }
    }
}

const FLAG_DESTROYED: u8 = 1;
const FLAG_DELETION_TIME: u8 = 2;

/// Encodes a secret record's plaintext.
pub fn encode_secret(path: &str, s: &Secret) -> Zeroizing<Vec<u8>> {
    let data_len: usize = s
        .versions
        .iter()
        .map(|v| v.data.as_ref().map_or(0, SecretData::len) + 40)
        .sum();
    let mut e = Enc::new(path.len() + data_len + 96);
    e.str16(path);
    e.u64(s.created.as_nanos());
    e.u64(s.updated.as_nanos());
    e.u64(s.current_version);
    e.u64(s.oldest_version);
    e.u32(s.settings.max_versions);
    e.u8(u8::from(s.settings.cas_required));
    e.u64(duration_nanos(s.settings.delete_version_after));
    e.u16_len(s.settings.custom_metadata.len());
    for (k, v) in &s.settings.custom_metadata {
        e.str16(k);
        e.str16(v);
    }
    e.u32(u32::try_from(s.versions.len()).unwrap_or(u32::MAX));
    for v in &s.versions {
        e.u64(v.number);
        e.u64(v.created.as_nanos());
        let mut flags = 0;
        if v.destroyed {
            flags |= FLAG_DESTROYED;
        }
        if v.deletion_time.is_some() {
            flags |= FLAG_DELETION_TIME;
        }
        e.u8(flags);
        if let Some(t) = v.deletion_time {
            e.u64(t.as_nanos());
        }
        if !v.destroyed {
            e.bytes32(v.data.as_ref().map_or(&b"{}"[..], SecretData::expose_json));
        }
    }
    e.0
}

impl Enc {
    fn u16_len(&mut self, n: usize) {
        self.0
            .extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Decodes a secret record's plaintext into its path and state.
pub fn decode_secret(
    plaintext: &[u8],
    revision: u64,
    epoch: u32,
) -> Result<(&str, Secret), RecordError> {
    let mut d = Dec(plaintext);
    let path = d.str16()?;
    let created = Timestamp::from_nanos(d.u64()?);
    let updated = Timestamp::from_nanos(d.u64()?);
    let current_version = d.u64()?;
    let oldest_version = d.u64()?;
    let max_versions = d.u32()?;
    let cas_required = match d.u8()? {
        0 => false,
        1 => true,
        _ => return Err(RecordError::Malformed("cas_required flag")),
    };
    let delete_version_after = Duration::from_nanos(d.u64()?);
    let mut custom_metadata = BTreeMap::new();
    for _ in 0..d.u16()? {
        let k = d.str16()?.to_owned();
        let v = d.str16()?.to_owned();
        custom_metadata.insert(k, v);
    }
    let count = d.u32()?;
    let mut versions = Vec::with_capacity(count.min(1024) as usize);
    let mut previous = 0;
    for _ in 0..count {
        let number = d.u64()?;
        if number <= previous {
            return Err(RecordError::Malformed("versions out of order"));
        }
        previous = number;
        let created = Timestamp::from_nanos(d.u64()?);
        let flags = d.u8()?;
        if flags & !(FLAG_DESTROYED | FLAG_DELETION_TIME) != 0 {
            return Err(RecordError::Malformed("version flags"));
        }
        let deletion_time = if flags & FLAG_DELETION_TIME != 0 {
            Some(Timestamp::from_nanos(d.u64()?))
        } else {
            None
        };
        let destroyed = flags & FLAG_DESTROYED != 0;
        let data = if destroyed {
            None
        } else {
            Some(SecretData::from_trusted_json(d.bytes32()?))
        };
        versions.push(Version {
            number,
            created,
            deletion_time,
            destroyed,
            data,
        });
    }
    d.end()?;
    if previous > current_version {
        return Err(RecordError::Malformed("version beyond current"));
    }
    Ok((
        path,
        Secret {
            created,
            updated,
            current_version,
            oldest_version,
            settings: SecretSettings {
                max_versions,
                cas_required,
                delete_version_after,
                custom_metadata,
            },
            versions,
            revision,
            epoch,
        },
    ))
}

/// Encodes a policy record's plaintext.
pub fn encode_policy(p: &Policy) -> Zeroizing<Vec<u8>> {
    let mut e = Enc::new(256);
    e.str16(&p.spec.name);
    e.str16(&p.spec.spiffeid_pattern);
    e.str16(&p.spec.path_pattern);
    e.u8(p.spec.permissions.bits());
    e.u64(p.created.as_nanos());
    e.u64(p.updated.as_nanos());
    e.str16(&p.created_by);
    e.0
}

/// Decodes a policy record's plaintext.
pub fn decode_policy(plaintext: &[u8], revision: u64, epoch: u32) -> Result<Policy, RecordError> {
    let mut d = Dec(plaintext);
    let name = d.str16()?.to_owned();
    let spiffeid_pattern = d.str16()?.to_owned();
    let path_pattern = d.str16()?.to_owned();
    let permissions =
        Permissions::from_bits(d.u8()?).ok_or(RecordError::Malformed("permission bits"))?;
    let created = Timestamp::from_nanos(d.u64()?);
    let updated = Timestamp::from_nanos(d.u64()?);
    let created_by = d.str16()?.to_owned();
    d.end()?;
    Ok(Policy {
        spec: PolicySpec {
            name,
            spiffeid_pattern,
            path_pattern,
            permissions,
        },
        created,
        updated,
        created_by,
        revision,
        epoch,
    })
}

/// The manifest: how many commits and which records the store should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Commits so far.
    pub seq: u64,
    /// XOR of every data record's keyed digest (see `keyring`).
    pub digest: [u8; 16],
    /// Number of data records.
    pub count: u64,
}

impl Manifest {
    /// Encodes the manifest's plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.count.to_be_bytes());
        out
    }

    /// Decodes the manifest's plaintext.
    pub fn decode(plaintext: &[u8]) -> Result<Self, RecordError> {
        let mut d = Dec(plaintext);
        let seq = d.u64()?;
        let mut digest = [0u8; 16];
        digest.copy_from_slice(d.take(16)?);
        let count = d.u64()?;
        d.end()?;
        Ok(Self { seq, digest, count })
    }
}

/// Encodes the mount configuration.
pub fn encode_config(c: &KvConfig) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.extend_from_slice(&c.max_versions.to_be_bytes());
    out.push(u8::from(c.cas_required));
    out.extend_from_slice(&duration_nanos(c.delete_version_after).to_be_bytes());
    out
}

/// Decodes the mount configuration.
pub fn decode_config(plaintext: &[u8]) -> Result<KvConfig, RecordError> {
    let mut d = Dec(plaintext);
    let max_versions = d.u32()?;
    let cas_required = d.u8()? == 1;
    let delete_version_after = Duration::from_nanos(d.u64()?);
    d.end()?;
    Ok(KvConfig {
        max_versions,
        cas_required,
        delete_version_after,
    })
}

/// An in-progress rotation: the new key, sealed under the old epoch.
pub struct RotationRecord {
    /// The epoch being rotated to.
    pub new_epoch: u32,
    /// The new root key's bytes.
    pub new_key: Zeroizing<[u8; 32]>,
    /// The new key's check value.
    pub new_check: [u8; 32],
}

impl RotationRecord {
    /// Encodes the rotation record's plaintext.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut e = Enc::new(68);
        e.u32(self.new_epoch);
        e.0.extend_from_slice(&*self.new_key);
        e.0.extend_from_slice(&self.new_check);
        e.0
    }

    /// Decodes the rotation record's plaintext.
    pub fn decode(plaintext: &[u8]) -> Result<Self, RecordError> {
        let mut d = Dec(plaintext);
        let new_epoch = d.u32()?;
        let mut new_key = Zeroizing::new([0u8; 32]);
        new_key.copy_from_slice(d.take(32)?);
        let mut new_check = [0u8; 32];
        new_check.copy_from_slice(d.take(32)?);
        d.end()?;
        Ok(Self {
            new_epoch,
            new_key,
            new_check,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{self, KvConfig};
    use spike_crypto::SubKey;

    fn cipher(b: u8) -> RecordCipher {
        RecordCipher::new(&SubKey::from_bytes([b; 32]))
    }

    #[test]
    fn header_roundtrip_and_rejections() {
        let h = Header {
            kind: Kind::Secret,
            epoch: 7,
            revision: 42,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(RecordError::BadMagic));
        let mut bad = h.encode();
        bad[2] = 9;
        assert_eq!(Header::decode(&bad), Err(RecordError::UnknownFormat(9)));
        let mut bad = h.encode();
        bad[3] = 99;
        assert_eq!(Header::decode(&bad), Err(RecordError::UnknownKind(99)));
        assert_eq!(Header::decode(&bad[..5]), Err(RecordError::Truncated));
    }

    #[test]
    fn sealed_records_are_bound_to_their_key_and_header() {
        let c = cipher(1);
        let h = Header {
            kind: Kind::Policy,
            epoch: 1,
            revision: 3,
        };
        let rec = seal(&c, h, b"key-a", b"hello").unwrap();
        let (got, pt) = open(|_| Some(&c), b"key-a", &rec).unwrap();
        assert_eq!((got, &pt[..]), (h, &b"hello"[..]));
        assert_eq!(
            open(|_| Some(&c), b"key-b", &rec).unwrap_err(),
            RecordError::Authentication
        );
        let mut relabelled = rec.clone();
        relabelled[15] ^= 1; // revision
        assert_eq!(
            open(|_| Some(&c), b"key-a", &relabelled).unwrap_err(),
            RecordError::Authentication
        );
        let other = cipher(2);
        assert_eq!(
            open(|_| Some(&other), b"key-a", &rec).unwrap_err(),
            RecordError::Authentication
        );
        assert_eq!(
            open(|_| None, b"key-a", &rec).unwrap_err(),
            RecordError::UnknownEpoch(1)
        );
        assert_eq!(
            open(|_| Some(&c), b"key-a", &rec[..rec.len() - 1]).unwrap_err(),
            RecordError::Authentication
        );
    }

    /// The AAD is built on the stack up to 64 key bytes and on the heap
    /// beyond: both bind the whole key, sealing and opening alike.
    #[test]
    fn storage_keys_of_any_length_are_bound() {
        let c = cipher(1);
        let h = Header {
            kind: Kind::Secret,
            epoch: 1,
            revision: 1,
        };
        for len in [0, 1, 33, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let rec = seal(&c, h, &key, b"v").unwrap();
            let (_, pt) = open(|_| Some(&c), &key, &rec).unwrap();
            assert_eq!(&pt[..], b"v", "key of {len} bytes");
            if let Some(last) = key.len().checked_sub(1) {
                let mut other = key.clone();
                other[last] ^= 1;
                assert_eq!(
                    open(|_| Some(&c), &other, &rec).unwrap_err(),
                    RecordError::Authentication,
                    "key of {len} bytes, last byte changed"
                );
            }
        }
    }

    #[test]
    fn secret_codec_roundtrip() {
        let mount = KvConfig::default();
        let now = Timestamp::from_nanos(1_000);
        let d = |v: &str| SecretData::from_pairs([("k", v)]).unwrap();
        let mut s = secrets::write(None, d("one"), None, &mount, now).unwrap();
        s = secrets::write(Some(&s), d("two"), None, &mount, now).unwrap();
        s = secrets::write(Some(&s), d("three"), None, &mount, now).unwrap();
        s = secrets::delete(&s, &[2], now).unwrap();
        s = secrets::destroy(&s, &[1], now).unwrap();
        s.settings
            .custom_metadata
            .insert("owner".into(), "team-a".into());
        let pt = encode_secret("a/b", &s);
        let (path, back) = decode_secret(&pt, s.revision, s.epoch).unwrap();
        assert_eq!(path, "a/b");
        assert_eq!(back, s);
        for cut in 0..pt.len() {
            assert!(decode_secret(&pt[..cut], 1, 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn small_codecs_roundtrip() {
        let m = Manifest {
            seq: 9,
            digest: [3; 16],
            count: 2,
        };
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        let c = KvConfig {
            max_versions: 4,
            cas_required: true,
            delete_version_after: Duration::from_secs(60),
        };
        assert_eq!(decode_config(&encode_config(&c)).unwrap(), c);
        let r = RotationRecord {
            new_epoch: 2,
            new_key: Zeroizing::new([5; 32]),
            new_check: [6; 32],
        };
        let back = RotationRecord::decode(&r.encode()).unwrap();
        assert_eq!(
            (back.new_epoch, *back.new_key, back.new_check),
            (2, [5; 32], [6; 32])
        );
    }
}

//! The at-rest record codecs on arbitrary bytes, with a fixed record key:
//! nothing panics, and whatever decodes re-encodes to the same value.
//!
//! 1. `Header::decode` and `record::open` of the input as a sealed record
//!    (AEAD rejects almost everything: the path to the plaintext decoders
//!    is exercised by 3.);
//! 2. every plaintext decoder (`decode_secret`, `decode_policy`,
//!    `Manifest::decode`, `decode_config`, `RotationRecord::decode`) fed
//!    the input directly as a plaintext, each checked to round-trip;
//! 3. the input sealed as a record (kind from its first byte), opened back,
//!    decoded per kind; and refused once any one bit is flipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_core::record::{
    self, Header, Kind, Manifest, RotationRecord, decode_config, decode_policy, decode_secret,
    encode_config, encode_policy, encode_secret,
};
use spike_crypto::{RecordCipher, SubKey};

const STORAGE_KEY: &[u8] = b"fuzz/storage-key";

fn cipher() -> &'static RecordCipher {
    static CIPHER: std::sync::OnceLock<RecordCipher> = std::sync::OnceLock::new();
    CIPHER.get_or_init(|| RecordCipher::new(&SubKey::from_bytes([7; 32])))
}

/// Decodes `plaintext` as `kind` (as a loader would) and checks that it
/// re-encodes to the same value.
fn decode_as(kind: Option<Kind>, plaintext: &[u8], revision: u64, epoch: u32) {
    if kind.is_none() || kind == Some(Kind::Secret) {
        if let Ok((path, secret)) = decode_secret(plaintext, revision, epoch) {
            let encoded = encode_secret(path, &secret);
            let again =
                decode_secret(&encoded, revision, epoch).expect("an encoded secret decodes");
            assert_eq!(again.0, path);
            assert_eq!(again.1, secret);
        }
    }
    if kind.is_none() || kind == Some(Kind::Policy) {
        if let Ok(policy) = decode_policy(plaintext, revision, epoch) {
            let again = decode_policy(&encode_policy(&policy), revision, epoch)
                .expect("an encoded policy decodes");
            assert_eq!(again, policy);
        }
    }
    if kind.is_none() || kind == Some(Kind::Manifest) {
        if let Ok(m) = Manifest::decode(plaintext) {
            // Fixed layout: the encoding is canonical.
            assert_eq!(m.encode(), plaintext);
        }
    }
    if kind.is_none() || kind == Some(Kind::Config) {
        if let Ok(c) = decode_config(plaintext) {
            assert_eq!(decode_config(&encode_config(&c)).expect("decodes"), c);
        }
    }
    if kind.is_none() || kind == Some(Kind::Rotation) {
        if let Ok(r) = RotationRecord::decode(plaintext) {
            assert_eq!(&r.encode()[..], plaintext);
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Secret,
    Kind::Policy,
    Kind::Manifest,
    Kind::Rotation,
    Kind::Config,
];

fuzz_target!(|data: &[u8]| {
    let c = cipher();

    // 1. The input as a stored record.
    if let Ok(h) = Header::decode(data) {
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }
    if let Ok((h, pt)) = record::open(|_| Some(c), STORAGE_KEY, data) {
        decode_as(Some(h.kind), &pt, h.revision, h.epoch);
    }

    // 2. The input as a plaintext of every kind.
    decode_as(None, data, 1, 1);

    // 3. Sealed for real, opened back, tampered with.
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let header = Header {
        kind: KINDS[usize::from(first) % KINDS.len()],
        epoch: u32::from(first),
        revision: rest.len() as u64,
    };
    let sealed = record::seal(c, header, STORAGE_KEY, rest).expect("seal");
    let (h, pt) = record::open(|_| Some(c), STORAGE_KEY, &sealed).expect("own record opens");
    assert_eq!((h, &pt[..]), (header, rest));
    decode_as(Some(h.kind), &pt, h.revision, h.epoch);
    let bit = (usize::from(first) * 131 + rest.len()) % (sealed.len() * 8);
    let mut flipped = sealed.clone();
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(record::open(|_| Some(c), STORAGE_KEY, &flipped).is_err());
    assert!(record::open(|_| Some(c), b"fuzz/other-key", &sealed).is_err());
});

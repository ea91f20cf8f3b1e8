//! Cryptography for spike-rs, a SPIFFE-native secrets store.
//!
//! - [`RootKey`]: 32 bytes from the OS CSPRNG, the big-endian encoding of a
//!   non-zero P-256 scalar, as in upstream SPIKE. It encrypts nothing
//!   itself: [`RootKey::derive`] gives one [`SubKey`] per [`Purpose`]
//!   (HKDF-SHA256, fixed labels).
//! - [`seal`] / [`open`] and [`RecordCipher`]: AES-256-GCM-SIV with a fresh
//!   random nonce per seal and associated data binding a record to its place.
//! - [`keyed_hash`]: HMAC-SHA256 over length-prefixed parts, for storage
//!   keys that hide paths and names.
//! - [`KeyCheckValue`]: detects a root key rebuilt from wrong shares.
//! - [`split`] / [`combine`] and [`Share`]: Shamir secret sharing of the
//!   root key over the P-256 scalar field, interoperable with upstream
//!   SPIKE's shares and recovery files. Built on [vsss-rs] 6, **not**
//!   `sharks`: `sharks` draws biased polynomial coefficients
//!   (RUSTSEC-2024-0398), never fixed.
//!
//! Secret types have no `Clone` and a redacted `Debug`, keep their bytes on
//! the heap, and zeroize them on drop; errors never carry secret bytes.
//!
//! ```
//! use spike_crypto::{KeyCheckValue, Purpose, RecordCipher, RootKey, combine, split};
//!
//! # fn main() -> Result<(), spike_crypto::CryptoError> {
//! let root = RootKey::generate();
//! let kcv = KeyCheckValue::compute(&root);
//!
//! // Encrypt a record under the records subkey, bound to where it lives.
//! let cipher = RecordCipher::new(&root.derive(Purpose::Records));
//! let sealed = cipher.seal(b"secret/db/creds@v1", b"hunter2")?;
//! assert_eq!(cipher.open(b"secret/db/creds@v1", &sealed)?.as_slice(), b"hunter2");
//! assert!(cipher.open(b"secret/other@v1", &sealed).is_err());
//!
//! // 2-of-3 shares; any two rebuild the key, checked by the key check value.
//! let shares = split(&root, 2, 3)?;
//! let rebuilt = combine(&[shares[2].try_clone(), shares[0].try_clone()])?;
//! assert!(kcv.matches(&rebuilt));
//! # Ok(())
//! # }
//! ```
//!
//! [vsss-rs]: https://docs.rs/vsss-rs/6

mod aead;
mod check;
mod error;
mod kdf;
mod key;
mod shamir;

pub use aead::{NONCE_LEN, RecordCipher, TAG_LEN, open, seal, seal_into};
pub use check::KeyCheckValue;
pub use error::CryptoError;
pub use kdf::{KeyedHasher, Purpose, keyed_hash};
pub use key::{KEY_LEN, RootKey, SubKey};
pub use shamir::{Share, combine, split};

//! The root key and the subkeys derived from it.

use core::fmt;

use p256::Scalar;
use p256::elliptic_curve::ff::{Field, PrimeField};
use subtle::{Choice, CtOption};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CryptoError;
use crate::kdf::{self, Purpose};

/// Length in bytes of the root key and of every subkey.
pub const KEY_LEN: usize = 32;

/// The 32-byte root key: the big-endian encoding of a uniformly random
/// non-zero P-256 scalar, as in upstream SPIKE (so it can be Shamir-split
/// over the P-256 scalar field and recombined with upstream's shares).
///
/// The root key encrypts nothing directly; [`RootKey::derive`] gives one
/// [`SubKey`] per [`Purpose`].
///
/// Locked down: no `Clone`, a redacted `Debug`, the bytes live on the heap
/// (moves do not leave copies behind) and are zeroized on drop.
pub struct RootKey {
    bytes: Box<[u8; KEY_LEN]>,
}

impl RootKey {
    /// A fresh root key from the OS CSPRNG, rejection-sampled until it
    /// encodes a canonical non-zero scalar (a retry happens with probability
    /// about 2^-32).
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails, which a
    /// running Linux, macOS or Windows system does not do. Use
    /// [`RootKey::try_generate`] to get an error instead.
    #[must_use]
    pub fn generate() -> RootKey {
        #[allow(
            clippy::expect_used,
            reason = "no safe way to continue without an OS CSPRNG; try_generate reports it"
        )]
        RootKey::try_generate().expect("the OS random number generator failed")
    }

    /// Like [`RootKey::generate`], with an error if the OS CSPRNG fails.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Rng`] if the OS random number generator fails.
    pub fn try_generate() -> Result<RootKey, CryptoError> {
        let mut key = RootKey {
            bytes: Box::new([0; KEY_LEN]),
        };
        loop {
            getrandom::fill(&mut key.bytes[..])?;
            if bool::from(is_valid_root_scalar(&key.bytes)) {
                return Ok(key);
            }
        }
    }

    /// A root key from its 32-byte encoding (for example, recombined from
    /// shares). The input array is zeroized.
    ///
    /// # Errors
    ///
    /// [`CryptoError::InvalidKey`] if the bytes are zero or not less than the
    /// P-256 group order.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Result<RootKey, CryptoError> {
        let key = RootKey {
            bytes: Box::new(bytes),
        };
        bytes.zeroize();
        if bool::from(is_valid_root_scalar(&key.bytes)) {
            Ok(key)
        } else {
            Err(CryptoError::InvalidKey)
        }
    }

    /// The key bytes. Keep the borrow short; do not copy them out.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The subkey for `purpose`: HKDF-SHA256 with the root key as input
    /// keying material, no salt, and [`Purpose::label`] as info.
    #[must_use]
    pub fn derive(&self, purpose: Purpose) -> SubKey {
        kdf::derive(&self.bytes, purpose)
    }

    /// The root key as a P-256 scalar (for Shamir splitting).
    pub(crate) fn to_scalar(&self) -> CtOption<Scalar> {
        scalar_from_bytes(&self.bytes)
    }
}

impl Drop for RootKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for RootKey {}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey([redacted])")
    }
}

/// A 32-byte purpose-specific key derived from the [`RootKey`] (see
/// [`RootKey::derive`]).
///
/// Same hygiene as the root key: no `Clone` (use [`SubKey::try_clone`] so
/// duplication is visible at the call site), a redacted `Debug`, heap-held
/// bytes zeroized on drop.
pub struct SubKey {
    bytes: Box<[u8; KEY_LEN]>,
}

impl SubKey {
    /// A subkey from raw bytes (tests, keys unwrapped from elsewhere). The
    /// input array is zeroized.
    #[must_use]
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> SubKey {
        let key = SubKey {
            bytes: Box::new(bytes),
        };
        bytes.zeroize();
        key
    }

    /// The key bytes. Keep the borrow short; do not copy them out.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// An explicit duplicate of this key.
    #[must_use]
    pub fn try_clone(&self) -> SubKey {
        SubKey {
            bytes: self.bytes.clone(),
        }
    }
}

impl Drop for SubKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for SubKey {}

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubKey([redacted])")
    }
}

/// The scalar encoded big-endian by `bytes`, if canonical (less than the
/// group order). Constant time in the value.
pub(crate) fn scalar_from_bytes(bytes: &[u8; KEY_LEN]) -> CtOption<Scalar> {
    let mut repr = p256::FieldBytes::default();
    repr.copy_from_slice(bytes);
    let scalar = Scalar::from_repr(repr);
    repr.zeroize();
    scalar
}

/// The big-endian encoding of `scalar`.
pub(crate) fn scalar_to_bytes(scalar: &Scalar) -> [u8; KEY_LEN] {
    let mut repr = scalar.to_repr();
    let mut bytes = [0; KEY_LEN];
    bytes.copy_from_slice(&repr);
    repr.zeroize();
    bytes
}

/// Whether `bytes` encode a canonical non-zero scalar.
fn is_valid_root_scalar(bytes: &[u8; KEY_LEN]) -> Choice {
    let scalar = scalar_from_bytes(bytes);
    let mut value = scalar.unwrap_or(Scalar::ZERO);
    let valid = scalar.is_some() & !value.is_zero();
    value.zeroize();
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The P-256 group order n, big-endian.
    const ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];

    #[test]
    fn from_bytes_accepts_exactly_the_nonzero_scalars() {
        let mut one = [0; 32];
        one[31] = 1;
        let mut order_minus_one = ORDER;
        order_minus_one[31] -= 1;
        let mut order_plus_one = ORDER;
        order_plus_one[31] += 1;

        assert_eq!(RootKey::from_bytes(one).unwrap().expose_secret(), &one);
        assert!(RootKey::from_bytes(order_minus_one).is_ok());
        for bad in [[0; 32], ORDER, order_plus_one, [0xff; 32]] {
            assert!(matches!(
                RootKey::from_bytes(bad),
                Err(CryptoError::InvalidKey)
            ));
        }
    }

    #[test]
    fn generate_gives_valid_distinct_keys() {
        let a = RootKey::generate();
        let b = RootKey::try_generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        for key in [a, b] {
            assert!(RootKey::from_bytes(*key.expose_secret()).is_ok());
            assert!(bool::from(key.to_scalar().is_some()));
        }
    }

    #[test]
    fn scalar_bytes_roundtrip() {
        let key = RootKey::generate();
        let scalar = Option::<Scalar>::from(key.to_scalar()).unwrap();
        assert_eq!(&scalar_to_bytes(&scalar), key.expose_secret());
    }

    #[test]
    fn subkey_try_clone_and_from_bytes() {
        let key = SubKey::from_bytes([9; 32]);
        assert_eq!(key.try_clone().expose_secret(), &[9; 32]);
    }
}

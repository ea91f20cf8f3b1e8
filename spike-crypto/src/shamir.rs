//! Shamir secret sharing of the root key over the P-256 scalar field.
//!
//! Compatible with upstream SPIKE, which shares its root key with CIRCL's
//! `secretsharing` over P-256: a polynomial `f` of degree `threshold - 1`
//! with `f(0)` = the root key scalar, and share `i` (Keeper `i`,
//! `i = 1..=shares`) is `(i, f(i))`, the value as a 32-byte big-endian
//! scalar. So shares from either implementation recombine in the other.
//!
//! The shares are a deterministic function of the root key (as upstream
//! SPIKE's are): the coefficients come from HKDF-SHA256 of the root key
//! (label `spike-rs/v1/shamir-coefficient`, the threshold, the coefficient
//! index and a counter; rejection-sampled to be uniform in the scalar
//! field). So Nexus can recompute every share whenever it needs one — to
//! re-seed a restarted Keeper, to answer operator recover — without storing
//! shares anywhere, and every split of one key hands out the same set.
//! Secrecy is unchanged: the coefficients are pseudorandom to anyone
//! without the root key.
//!
//! [vsss-rs] 6 does the polynomial evaluation and the Lagrange
//! interpolation. We fill the polynomial ourselves rather than through
//! `vsss_rs::shamir::split_secret` so that the coefficients are derived as
//! above and wiped afterwards (vsss-rs shares are `Copy`, so its own
//! temporary polynomial is never zeroized).
//! vsss-rs also refuses `threshold < 2`; a threshold of 1 (every share is
//! the key itself) is handled here by evaluating the degree-0 polynomial.
//!
//! [vsss-rs]: https://docs.rs/vsss-rs/6

use core::fmt::{self, Write as _};

use p256::Scalar;
use p256::elliptic_curve::ff::Field;
use vsss_rs::{IdentifierPrimeField, Polynomial, PrimeFieldShare, ReadableShareSet};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;
use crate::key::{KEY_LEN, RootKey, scalar_from_bytes, scalar_to_bytes};

/// A share as vsss-rs sees it: identifier and value both P-256 scalars.
type FieldShare = PrimeFieldShare<Scalar>;

/// One Shamir share of the root key: `id` is the Keeper index 1..=255 (the
/// x-coordinate), `value` the 32-byte big-endian P-256 scalar `f(id)`.
///
/// Locked down like the keys: no `Clone` (use [`Share::try_clone`]), a
/// redacted `Debug`, heap-held value zeroized on drop.
pub struct Share {
    id: u8,
    value: Box<[u8; KEY_LEN]>,
}

/// Length of [`Share::to_text`]'s output at most: `spike:255:` + 64 hex digits.
const TEXT_MAX_LEN: usize = "spike:255:".len() + 2 * KEY_LEN;

impl Share {
    /// A share from its id and value. The input array is zeroized.
    ///
    /// # Errors
    ///
    /// [`CryptoError::InvalidShare`] if `id` is 0, or `value` is zero (an
    /// erased share, never a real one in practice) or not less than the
    /// P-256 group order.
    pub fn new(id: u8, mut value: [u8; KEY_LEN]) -> Result<Share, CryptoError> {
        let share = Share {
            id,
            value: Box::new(value),
        };
        value.zeroize();
        share.validate()?;
        Ok(share)
    }

    fn validate(&self) -> Result<(), CryptoError> {
        if self.id == 0 {
            return Err(CryptoError::InvalidShare(
                "share id 0 is reserved for the secret",
            ));
        }
        let scalar = scalar_from_bytes(&self.value);
        let mut value = scalar.unwrap_or(Scalar::ZERO);
        let (canonical, zero) = (bool::from(scalar.is_some()), bool::from(value.is_zero()));
        value.zeroize();
        if !canonical {
            return Err(CryptoError::InvalidShare(
                "share value is not a P-256 scalar",
            ));
        }
        if zero {
            return Err(CryptoError::InvalidShare(
                "share value is zero (an erased share?)",
            ));
        }
        Ok(())
    }

    /// The Keeper index (x-coordinate), 1..=255.
    #[must_use]
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The share value: a 32-byte big-endian scalar. Keep the borrow short.
    #[must_use]
    pub fn value(&self) -> &[u8; KEY_LEN] {
        &self.value
    }

    /// An explicit duplicate of this share.
    #[must_use]
    pub fn try_clone(&self) -> Share {
        Share {
            id: self.id,
            value: self.value.clone(),
        }
    }

    /// The text form used for recovery files, `spike:<id>:<64 lowercase hex
    /// digits>` (for example `spike:1:0a1b…`), exactly what upstream SPIKE's
    /// `spike operator recover` writes and `spike operator restore` reads,
    /// so share files are interchangeable.
    #[must_use]
    pub fn to_text(&self) -> Zeroizing<String> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Allocated once at full size: no reallocation leaves a copy behind.
        let mut text = Zeroizing::new(String::with_capacity(TEXT_MAX_LEN));
        // Writing to a `String` cannot fail.
        let _ = write!(text, "spike:{}:", self.id);
        for byte in self.value.iter() {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        text
    }

    /// Parses [`Share::to_text`]'s form. Surrounding whitespace (a trailing
    /// newline) is accepted, and upper-case hex digits; anything else is
    /// refused. Errors never echo the input.
    ///
    /// # Errors
    ///
    /// [`CryptoError::InvalidShare`] if the text is not
    /// `spike:<id 1..=255>:<64 hex digits>` or the value is not a valid
    /// share value (see [`Share::new`]).
    pub fn from_text(s: &str) -> Result<Share, CryptoError> {
        const FORMAT: &str = "expected `spike:<id>:<64 hex digits>`";
        let rest = s
            .trim()
            .strip_prefix("spike:")
            .ok_or(CryptoError::InvalidShare(FORMAT))?;
        let (id, hex) = rest
            .split_once(':')
            .ok_or(CryptoError::InvalidShare(FORMAT))?;
        if id.is_empty() || id.len() > 3 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::InvalidShare(
                "share id is not a number from 1 to 255",
            ));
        }
        let id = id
            .parse::<u8>()
            .map_err(|_| CryptoError::InvalidShare("share id is not a number from 1 to 255"))?;
        if hex.len() != 2 * KEY_LEN {
            return Err(CryptoError::InvalidShare(
                "share value is not 64 hex digits",
            ));
        }
        let mut share = Share {
            id,
            value: Box::new([0; KEY_LEN]),
        };
        for (byte, pair) in share.value.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            match (hex_digit(pair[0]), hex_digit(pair[1])) {
                (Some(high), Some(low)) => *byte = (high << 4) | low,
                _ => {
                    return Err(CryptoError::InvalidShare(
                        "share value is not 64 hex digits",
                    ));
                }
            }
        }
        share.validate()?;
        Ok(share)
    }

    /// This share as vsss-rs sees it.
    fn to_field_share(&self) -> FieldShare {
        // Every `Share` holds a canonical scalar (checked when it was made).
        let value = scalar_from_bytes(&self.value).unwrap_or(Scalar::ZERO);
        FieldShare {
            identifier: IdentifierPrimeField(Scalar::from(u64::from(self.id))),
            value: IdentifierPrimeField(value),
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl ZeroizeOnDrop for Share {}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share {{ id: {}, value: [redacted] }}", self.id)
    }
}

/// Splits the root key into `shares` shares, any `threshold` of which
/// recombine to it: a polynomial of degree `threshold - 1` with the root key
/// scalar as constant term and the other coefficients derived from the root
/// key (see the module docs), evaluated at `x = 1..=shares` (share `id` =
/// `x`).
///
/// Deterministic: every call with the same key and threshold gives the same
/// shares, so shares from two calls mix freely.
///
/// # Errors
///
/// [`CryptoError::InvalidThreshold`] unless `1 <= threshold <= shares`.
pub fn split(root: &RootKey, threshold: u8, shares: u8) -> Result<Vec<Share>, CryptoError> {
    if threshold == 0 || threshold > shares {
        return Err(CryptoError::InvalidThreshold { threshold, shares });
    }
    let degree_plus_one = usize::from(threshold);
    let secret = Option::<Scalar>::from(root.to_scalar()).ok_or(CryptoError::InvalidKey)?;

    // vsss-rs polynomial layout: the constant term is `[0].value`, the
    // coefficient of x^i (i >= 1) is `[i].identifier`; `[0].identifier` stays 0.
    let mut polynomial = <Vec<FieldShare> as Polynomial<FieldShare>>::create(degree_plus_one);
    let result = fill_and_evaluate(root, &mut polynomial, secret, degree_plus_one, shares);
    for coefficient in &mut polynomial {
        wipe(coefficient);
    }
    result
}

fn fill_and_evaluate(
    root: &RootKey,
    polynomial: &mut Vec<FieldShare>,
    mut secret: Scalar,
    degree_plus_one: usize,
    shares: u8,
) -> Result<Vec<Share>, CryptoError> {
    polynomial[0].value = IdentifierPrimeField(secret);
    secret.zeroize();
    let threshold = u8::try_from(degree_plus_one).unwrap_or(u8::MAX);
    for (index, coefficient) in polynomial.iter_mut().enumerate().skip(1) {
        coefficient.identifier = IdentifierPrimeField(derive_coefficient(root, threshold, index));
    }
    let mut out = Vec::with_capacity(usize::from(shares));
    for id in 1..=shares {
        let x = IdentifierPrimeField(Scalar::from(u64::from(id)));
        let mut y = Polynomial::<FieldShare>::evaluate(polynomial, &x, degree_plus_one);
        let bytes = scalar_to_bytes(&y.0);
        y.0.zeroize();
        out.push(Share::new(id, bytes)?);
    }
    Ok(out)
}

/// Label of the HKDF derivation of polynomial coefficients.
const COEFFICIENT_LABEL: &[u8] = b"spike-rs/v1/shamir-coefficient";

/// The coefficient of `x^index`: the first HKDF output (over counters
/// 0, 1, …) that is a canonical scalar, so it is uniform in the field.
fn derive_coefficient(root: &RootKey, threshold: u8, index: usize) -> Scalar {
    let index = u8::try_from(index).unwrap_or(u8::MAX);
    let mut counter: u32 = 0;
    loop {
        let mut info = Vec::with_capacity(COEFFICIENT_LABEL.len() + 6);
        info.extend_from_slice(COEFFICIENT_LABEL);
        info.push(threshold);
        info.push(index);
        info.extend_from_slice(&counter.to_be_bytes());
        let okm = crate::kdf::expand(root.expose_secret(), &info);
        if let Some(scalar) = Option::<Scalar>::from(scalar_from_bytes(&okm)) {
            return scalar;
        }
        // Happens with probability about 2^-32 per try.
        counter = counter.wrapping_add(1);
    }
}

/// Recombines shares into the root key by Lagrange interpolation at 0.
///
/// Takes any number (at least one) of shares with distinct ids; the caller
/// knows the threshold. Fewer than the threshold, or shares from different
/// splits, give a wrong key rather than an error: check the result against
/// the stored [`KeyCheckValue`](crate::KeyCheckValue).
///
/// # Errors
///
/// [`CryptoError::NotEnoughShares`] for no shares;
/// [`CryptoError::DuplicateShare`] if an id repeats;
/// [`CryptoError::InvalidKey`] if the result is zero (not a root key).
pub fn combine(shares: &[Share]) -> Result<RootKey, CryptoError> {
    if shares.is_empty() {
        return Err(CryptoError::NotEnoughShares { have: 0, need: 1 });
    }
    let mut seen = [false; 256];
    for share in shares {
        let slot = &mut seen[usize::from(share.id)];
        if *slot {
            return Err(CryptoError::DuplicateShare(share.id));
        }
        *slot = true;
    }

    let mut set: Vec<FieldShare> = shares.iter().map(Share::to_field_share).collect();
    let result = match set.as_slice() {
        // One point: the degree-0 polynomial (vsss-rs wants two or more).
        [single] => Ok(single.value),
        _ => set.combine().map_err(CryptoError::from),
    };
    set.iter_mut().for_each(wipe);
    let mut secret = result?;
    let bytes = scalar_to_bytes(&secret.0);
    secret.0.zeroize();
    RootKey::from_bytes(bytes)
}

fn wipe(share: &mut FieldShare) {
    share.identifier.0.zeroize();
    share.value.0.zeroize();
}

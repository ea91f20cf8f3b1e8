//! Integration tests of spike-crypto's public API, one binary in themed modules.

// clippy's allow-*-in-tests covers `#[test]` functions, not their helpers.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is a test failure"
)]

mod debug;
mod props;
mod shamir;
mod share_text;

/// Big-endian bytes from 64 hex digits.
pub fn bytes32(hex: &str) -> [u8; 32] {
    assert_eq!(hex.len(), 64);
    let mut out = [0; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Root key 0x01 0x02 … 0x20.
pub const ROOT_HEX: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";

/// The P-256 group order n.
pub const ORDER_HEX: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

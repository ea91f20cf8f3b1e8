//! The `spike:<id>:<hex>` recovery-file form (upstream SPIKE's format).

use spike_crypto::{CryptoError, Share};

use crate::{ORDER_HEX, ROOT_HEX, bytes32};

#[test]
fn exact_upstream_format() {
    let share = Share::new(1, bytes32(ROOT_HEX)).unwrap();
    assert_eq!(share.to_text().as_str(), format!("spike:1:{ROOT_HEX}"));
    let share = Share::new(255, [0xab; 32]).unwrap();
    assert_eq!(
        share.to_text().as_str(),
        format!("spike:255:{}", "ab".repeat(32))
    );
}

#[test]
fn roundtrip() {
    for id in [1, 2, 9, 10, 99, 100, 255] {
        let share = Share::new(id, bytes32(ROOT_HEX)).unwrap();
        let parsed = Share::from_text(&share.to_text()).unwrap();
        assert_eq!((parsed.id(), parsed.value()), (id, share.value()));
    }
}

#[test]
fn lenient_only_about_surrounding_whitespace_and_hex_case() {
    let want = bytes32(ROOT_HEX);
    for text in [
        format!("spike:3:{ROOT_HEX}\n"),
        format!("  spike:3:{ROOT_HEX}\r\n"),
        format!("\tspike:3:{}", ROOT_HEX.to_uppercase()),
        format!("spike:003:{ROOT_HEX}"),
    ] {
        let share = Share::from_text(&text).unwrap();
        assert_eq!((share.id(), share.value()), (3, &want), "{text:?}");
    }
}

#[test]
fn rejects_anything_else_without_echoing_it() {
    let v = ROOT_HEX;
    let bad = [
        String::new(),
        "spike:".to_owned(),
        format!("spike:1{v}"),
        format!("spike::{v}"),
        format!("spike:0:{v}"),
        format!("spike:256:{v}"),
        format!("spike:1000:{v}"),
        format!("spike:+1:{v}"),
        format!("spike:-1:{v}"),
        format!("spike: 1:{v}"),
        format!("spike:1: {v}"),
        format!("SPIKE:1:{v}"),
        format!("spike-1:{v}"),
        format!("1:{v}"),
        format!("spike:1:{}", &v[..63]),
        format!("spike:1:{v}0"),
        format!("spike:1:{v}:"),
        format!("spike:1:{}g", &v[..63]),
        format!("spike:1:0x{}", &v[2..]),
        format!("spike:1:{} {}", &v[..32], &v[33..]),
        format!("spike:1:{ORDER_HEX}"),
        format!("spike:1:{}", "0".repeat(64)),
        format!("spike:1:{v}\nspike:2:{v}"),
    ];
    for text in bad {
        let err = Share::from_text(&text).unwrap_err();
        assert!(
            matches!(err, CryptoError::InvalidShare(_)),
            "{text:?}: {err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains(&v[..16]),
                "error echoes the secret: {shown}"
            );
            assert!(
                !shown.contains(&ORDER_HEX[..16]),
                "error echoes the input: {shown}"
            );
        }
    }
}

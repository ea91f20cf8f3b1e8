//! `Debug` of secret-holding types shows no key material.

use spike_crypto::{Purpose, RecordCipher, RootKey, Share, SubKey, split};

/// The ways a byte array could leak through formatting.
fn renderings(bytes: &[u8; 32]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex[..16].to_owned(),
        hex.to_uppercase()[..16].to_owned(),
        format!("{:?}", &bytes[..4])
            .trim_end_matches(']')
            .to_owned(),
    ]
}

fn assert_redacted(debug: &str, secret: &[u8; 32]) {
    assert!(debug.contains("redacted"), "{debug}");
    for leak in renderings(secret) {
        assert!(!debug.contains(&leak), "{debug} contains {leak}");
    }
}

#[test]
fn secrets_are_redacted() {
    let mut bytes = [0; 32];
    for (b, v) in bytes.iter_mut().zip(101..) {
        *b = v;
    }
    let root = RootKey::from_bytes(bytes).unwrap();
    assert_eq!(format!("{root:?}"), "RootKey([redacted])");
    assert_redacted(&format!("{root:?} {root:#?}"), &bytes);

    let sub = root.derive(Purpose::Records);
    assert_eq!(format!("{sub:?}"), "SubKey([redacted])");
    assert_redacted(&format!("{sub:?} {sub:#?}"), sub.expose_secret());
    let raw = SubKey::from_bytes(bytes);
    assert_redacted(&format!("{raw:?}"), &bytes);

    let cipher = RecordCipher::new(&sub);
    assert_eq!(format!("{cipher:?}"), "RecordCipher([redacted])");
    assert_redacted(&format!("{cipher:#?}"), sub.expose_secret());

    let share = Share::new(1, bytes).unwrap();
    assert_eq!(format!("{share:?}"), "Share { id: 1, value: [redacted] }");
    for share in split(&root, 2, 3).unwrap() {
        assert_redacted(&format!("{share:?} {share:#?}"), share.value());
        assert_redacted(&format!("{share:?}"), &bytes);
    }
}

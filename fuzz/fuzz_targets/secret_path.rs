//! `SecretPath::parse` and `SpiffeId::parse` on arbitrary strings: never
//! panic; what parses is normalised (re-parsing gives the same value) and
//! obeys the documented limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_core::{MAX_PATH_LEN, MAX_SPIFFE_ID_LEN, SecretPath, SpiffeId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = SecretPath::parse(s) {
        let text = path.as_str();
        assert!(!text.is_empty() && text.len() <= MAX_PATH_LEN);
        assert!(!text.starts_with('/') && !text.ends_with('/'));
        assert!(
            text.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        );
        let again = SecretPath::parse(text).expect("a parsed path re-parses");
        assert_eq!(again, path);
        assert_eq!(again.as_str(), text);
    }
    if let Ok(id) = SpiffeId::parse(s) {
        assert!(id.as_str().len() <= MAX_SPIFFE_ID_LEN);
        assert_eq!(id.as_str(), s);
        assert_eq!(
            format!("spiffe://{}{}", id.trust_domain(), id.path()),
            id.as_str()
        );
        let again = SpiffeId::parse(id.as_str()).expect("a parsed ID re-parses");
        assert_eq!(again, id);
    }
});

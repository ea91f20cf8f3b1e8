//! `Share::from_text` on arbitrary strings: never panics; an accepted share
//! prints (`to_text`) in canonical form, which parses back to the same
//! share and prints the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_crypto::Share;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(share) = Share::from_text(s) else {
        return;
    };
    assert_ne!(share.id(), 0);
    let text = share.to_text();
    let again = Share::from_text(&text).expect("to_text output parses");
    assert_eq!((again.id(), again.value()), (share.id(), share.value()));
    assert_eq!(*again.to_text(), *text);
    // The input named the same share: same id, same digits up to case,
    // surrounding whitespace and leading zeros of the id.
    let (id, hex) = s.trim()["spike:".len()..]
        .split_once(':')
        .expect("accepted");
    assert_eq!(id.parse::<u8>().ok(), Some(share.id()));
    assert_eq!(hex.to_ascii_lowercase(), text[text.len() - 64..]);
});

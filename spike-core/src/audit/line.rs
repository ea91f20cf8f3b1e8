//! One audit record as one JSON line, written by hand.
//!
//! The line is byte for byte what `serde_json` writes for the derived
//! `Serialize` of [`AuditEvent`] (a property test holds the two together),
//! and that derive stays the record's public JSON form. Every request
//! writes a line, and under callgrind `serde_json` spent ~7,600
//! instructions on one, most of them escaping strings byte by byte; here a
//! string without a character to escape is one scan and one copy.

use super::{AuditEvent, Decision};

/// Appends `event` and a newline to `out`.
pub(super) fn write_line(event: &AuditEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":");
    string(out, &event.time);
    out.extend_from_slice(b",\"trail_id\":");
    string(out, &event.trail_id);
    out.extend_from_slice(b",\"caller\":");
    string(out, &event.caller);
    if let Some(addr) = &event.remote_addr {
        out.extend_from_slice(b",\"remote_addr\":");
        string(out, addr);
    }
    out.extend_from_slice(b",\"api\":");
    string(out, event.api);
    out.extend_from_slice(b",\"action\":");
    string(out, event.action);
    if let Some(path) = &event.path {
        out.extend_from_slice(b",\"path\":");
        string(out, path);
    }
    out.extend_from_slice(b",\"decision\":{\"result\":");
    match &event.decision {
        Decision::Allow { by } => {
            out.extend_from_slice(b"\"allow\",\"by\":");
            string(out, by);
        }
        Decision::Deny => out.extend_from_slice(b"\"deny\""),
        Decision::NotApplicable => out.extend_from_slice(b"\"not_applicable\""),
    }
    out.extend_from_slice(b"},\"status\":");
    string(out, event.status);
    out.extend_from_slice(b",\"duration_us\":");
    out.extend_from_slice(super::decimal(&mut [0; 20], event.duration_us));
    out.extend_from_slice(b"}\n");
}

/// `s` as a JSON string: copied when nothing in it needs escaping (IDs,
/// paths, times, addresses: all of them, in practice), else escaped by
/// `serde_json`.
fn string(out: &mut Vec<u8>, s: &str) {
    // A scan without an early exit, which the compiler vectorises.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;

    fn serde_line(event: &AuditEvent) -> Vec<u8> {
        let mut line = serde_json::to_vec(event).unwrap();
        line.push(b'\n');
        line
    }

    /// Strings that stress escaping: every ASCII control character, quotes,
    /// backslashes, DEL, and multi-byte characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9:/._-]{0,40}",
            "[\\x00-\\x7f]{0,40}",
            any::<String>(),
        ]
    }

    fn decision() -> impl Strategy<Value = Decision> {
        prop_oneof![
            text().prop_map(|by| Decision::Allow { by: Cow::Owned(by) }),
            Just(Decision::Deny),
            Just(Decision::NotApplicable),
        ]
    }

    const NAMES: [&str; 4] = ["ok", "secret.get", "vault/kv2", "a\"b\\c\n"];

    proptest! {
        #[test]
        fn lines_are_what_serde_json_writes(
            time in text(),
            trail_id in text(),
            caller in text(),
            remote_addr in proptest::option::of(text()),
            names in (0..4usize, 0..4usize, 0..4usize),
            path in proptest::option::of(text()),
            decision in decision(),
            duration_us in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        ) {
            let event = AuditEvent {
                time,
                trail_id,
                caller,
                remote_addr,
                api: NAMES[names.0],
                action: NAMES[names.1],
                path,
                decision,
                status: NAMES[names.2],
                duration_us,
            };
            let mut line = Vec::new();
            write_line(&event, &mut line);
            let want = serde_line(&event);
            prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
        }
    }

    #[test]
    fn each_ascii_character_is_escaped_as_serde_json_escapes_it() {
        for c in (0u8..0x80).map(char::from) {
            let s = format!("a{c}b");
            let mut out = Vec::new();
            string(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{c:?}");
        }
    }
}

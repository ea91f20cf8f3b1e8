//! One audit record as one JSON line, written by hand.
//!
//! The line is byte for byte what `serde_json` writes for the derived
//! `Serialize` of [`AuditEvent`] (a property test holds the two together),
//! and that derive stays the record's public JSON form. Every request
//! writes a line, and under callgrind `serde_json` spent ~7,600
//! instructions on one, most of them escaping strings byte by byte; here a
//! string without a character to escape (all of them, in practice: IDs,
//! paths, times, addresses) is one scan and one copy.

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
    decimal(out, event.duration_us);
    out.extend_from_slice(b"}\n");
}

/// `s` as a JSON string, escaped as `serde_json` escapes: `"` and `\`,
/// the short forms of five control characters, `\u00xx` for the others,
/// everything else (DEL and non-ASCII included) as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // A scan without an early exit, which the compiler vectorises.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
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
    fn every_byte_below_0x80_is_escaped_as_serde_json_escapes_it() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut out = Vec::new();
        string(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
    }
}

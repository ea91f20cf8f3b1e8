//! `spike_core::compile_pattern` on arbitrary strings: never panics, and
//! compiles within bounded size (libFuzzer's RSS and time limits catch an
//! unbounded automaton). A compiled pattern is anchored at both ends: the
//! escaped literal of a string matches that string and nothing longer.
//!
//! Input: `pattern \0 haystack` (the haystack is optional).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_core::{MAX_PATTERN_LEN, compile_pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, haystack) = s.split_once('\0').unwrap_or((s, ""));
    match compile_pattern("pathPattern", pattern) {
        Ok(re) => {
            assert!(!pattern.is_empty() && pattern.len() <= MAX_PATTERN_LEN);
            let _ = re.is_match(haystack);
        }
        Err(e) => {
            // Errors never echo a long pattern back whole.
            let _ = e.to_string();
        }
    }
    let literal = regex::escape(haystack);
    if !haystack.is_empty() && literal.len() <= MAX_PATTERN_LEN {
        let re = compile_pattern("pathPattern", &literal).expect("an escaped literal compiles");
        assert!(re.is_match(haystack));
        assert!(!re.is_match(&format!("{haystack}x")));
        assert!(!re.is_match(&format!("x{haystack}")));
    }
});

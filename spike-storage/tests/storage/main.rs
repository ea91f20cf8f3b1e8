//! Integration tests of spike-storage, one binary of themed modules.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod faulty;
mod measure;
mod redb;

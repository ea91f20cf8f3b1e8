//! Durability and at-rest integrity of spike-core, one binary of themed
//! modules (see `docs/format.md` for the bytes these tests poke at):
//!
//! - `tamper`: a real redb file is altered record by record behind the
//!   store's back; unsealing must refuse it, never serve altered data.
//! - `crash`: a child process writing concurrently is killed with SIGKILL;
//!   every acknowledged write must be there after the restart.
//! - `format`: a fixture written by an earlier build must keep reading.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crash;
mod format;
mod tamper;
mod util;

//! Integration tests of `spike` (one binary, themed modules).
//!
//! - `args`: every command parses (clap `try_parse_from`), usage errors,
//!   configuration validation.
//! - `output`: human / JSON / YAML of each response type.
//! - `shares`: recovery files (mode 0600, no overwrite), restore input.
//! - `client`: the API client against a stand-in Nexus over real SPIFFE
//!   mTLS, and the mapping of error answers to messages.
//! - `binary`: the built `spike` binary end to end against the stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod args;
mod binary;
mod client;
mod nexus;
mod output;
mod shares;

//! spike-rs end to end: the `spike-server` and `spike` binaries of this
//! build, spawned, over real loopback sockets and SPIFFE mutual TLS.
//!
//! Every test has its own temporary data directory and free ports, and
//! kills every process it started when it ends (also on failure). The
//! binaries must be built first: `cargo test --workspace` does it;
//! with `cargo test -p spike-e2e`, run `cargo build -p spike-server -p
//! spike-cli` before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bad_input;
mod cli;
mod crash;
mod hygiene;
mod lifecycle;
mod policies;
mod roles;
mod rotation;
mod support;
mod trust;

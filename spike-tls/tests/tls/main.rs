//! spike-tls integration tests: real handshakes over loopback TCP with
//! real certificates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;
mod dev_ca;
mod handshake;
mod pem;
mod refusal;
mod workload_api;

//! End-to-end tests of spike-rs (no library code): `tests/e2e/` spawns the
//! `spike-server` and `spike` binaries of this build and drives them over
//! real sockets and SPIFFE mutual TLS. Run `cargo test --workspace`, or
//! `cargo build -p spike-server -p spike-cli && cargo test -p spike-e2e`.

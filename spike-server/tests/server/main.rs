//! spike-server integration tests: routers called in-process with an
//! injected peer identity, Keeper exchanges on loopback, and one real mTLS
//! handshake.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bad_input;
mod keeper;
mod nexus_routes;
mod shards;
mod support;
mod tls;
mod vault_routes;

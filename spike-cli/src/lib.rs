//! `spike`, the Pilot: the command-line client of a spike-rs (or upstream
//! SPIKE) Nexus, over SPIFFE mutual TLS.
//!
//! The binary is three steps (STYLE §12): [`parse`] the command line
//! ([`Cli`], clap derive: help and shell completions come from the same
//! definitions), validate it into a [`Config`] and [`Prepared`] input, then
//! [`run`] it with the SPIKE v1 API [`Client`]. Exit codes:
//! [`EXIT_OK`] 0, [`EXIT_ERROR`] 1, [`EXIT_USAGE`] 2.
//!
//! The pieces are public so that tests (and other tools) can drive them:
//!
//! ```
//! use clap::Parser;
//! use spike_cli::{Cli, Command, SecretCommand};
//!
//! let cli = Cli::try_parse_from(["spike", "secret", "get", "db/creds", "--key", "user"]).unwrap();
//! assert!(matches!(cli.command, Command::Secret(SecretCommand::Get { .. })));
//! ```

mod cli;
mod client;
mod config;
mod error;
mod input;
mod output;
mod run;
mod shares;

pub use cli::{
    CipherArgs, CipherCommand, Cli, Command, DEFAULT_NEXUS_URL, DEFAULT_TRUST_ROOT, Format,
    MetadataCommand, OperatorCommand, PolicyCommand, SecretCommand, VersionsArgs,
};
pub use client::{CONNECT_TIMEOUT, Client, ClientError, REQUEST_TIMEOUT};
pub use config::{Config, Identity, WORKLOAD_API_TIMEOUT};
pub use error::{EXIT_ERROR, EXIT_OK, EXIT_USAGE, Error, Op};
pub use input::{MAX_INPUT_BYTES, RawPair, resolve_pairs};
pub use output::{Done, Recovered, Render, render};
pub use run::{Prepared, execute, parse, parse_policy_yaml, prepare, run};
pub use shares::{
    parse_share, read_share_text, restore_request, share_file_name, shares_of, write_share_files,
};

//! The command line, as clap derive definitions: help text, parsing and shell
//! completions all come from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use spike_core::Permission;

use crate::input::RawPair;

/// Default Nexus URL (upstream SPIKE's default port).
pub const DEFAULT_NEXUS_URL: &str = "https://127.0.0.1:8553";
/// Default trust root (trust domain of Nexus).
pub const DEFAULT_TRUST_ROOT: &str = "spike.ist";

/// `spike`: the Pilot of a SPIKE Nexus, a SPIFFE-native secrets store.
///
/// Every call is mutual TLS with an X.509-SVID: from `--cert/--key/--ca`
/// (or `SPIKE_PILOT_CERT`/`SPIKE_PILOT_KEY`/`SPIKE_PILOT_CA`, also
/// `SPIKE_CERT`/`SPIKE_KEY`/`SPIKE_CA`), else from the SPIFFE Workload API
/// at `SPIFFE_ENDPOINT_SOCKET`. Connection and identity options go before
/// the subcommand; `--format` goes anywhere.
///
/// Exit codes: 0 success, 1 error (Nexus refused, unreachable, I/O), 2 usage
/// error.
#[derive(Debug, Parser)]
#[command(name = "spike", version, max_term_width = 100)]
pub struct Cli {
    /// Output format of command results.
    #[arg(long, value_enum, global = true, default_value_t = Format::Human)]
    pub format: Format,

    /// Nexus base URL (https only).
    #[arg(long, env = "SPIKE_NEXUS_API_URL", default_value = DEFAULT_NEXUS_URL, value_name = "URL")]
    pub nexus: String,

    /// This Pilot's X.509-SVID certificate chain (PEM). Also `SPIKE_CERT`.
    #[arg(long, env = "SPIKE_PILOT_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// The SVID's private key (PEM). Also `SPIKE_KEY`.
    #[arg(long, env = "SPIKE_PILOT_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Trust bundle (PEM) that verifies Nexus. Also `SPIKE_CA`.
    #[arg(long, env = "SPIKE_PILOT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Trust domain(s) of Nexus, comma-separated: Nexus must present
    /// `spiffe://<TD>/spike/nexus`.
    #[arg(long, env = "SPIKE_TRUST_ROOT", default_value = DEFAULT_TRUST_ROOT, value_name = "TD")]
    pub trust_root: String,

    /// Expect exactly this SPIFFE ID from Nexus instead of the one derived
    /// from `--trust-root`.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub nexus_id: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Words and tables for people.
    Human,
    /// The API response object as JSON.
    Json,
    /// The API response object as YAML.
    Yaml,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and write secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage access policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Recover and restore the root key (recover and restore roles).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Encryption as a service.
    #[command(subcommand)]
    Cipher(CipherCommand),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `spike secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Write a new version of a secret.
    ///
    /// Values given as `KEY=VALUE` land in shell history and the process
    /// list: prefer `KEY=@FILE` (the file's contents) or `KEY=-` (read from
    /// stdin). One trailing newline of a file or stdin is dropped.
    Put {
        /// Secret path, e.g. `db/creds`.
        path: String,
        /// `KEY=VALUE`, `KEY=@FILE` or `KEY=-`.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = RawPair::parse)]
        pairs: Vec<RawPair>,
    },
    /// Print a secret's values.
    Get {
        /// Secret path.
        path: String,
        /// Version to read (default: the current one).
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// Print only this key's value, raw.
        #[arg(long, value_name = "K")]
        key: Option<String>,
    },
    /// List the secret paths you may see.
    List,
    /// Soft-delete versions (default: the current one); undelete restores.
    Delete(VersionsArgs),
    /// Restore soft-deleted versions (default: the current one).
    Undelete(VersionsArgs),
    /// Wipe versions' data irreversibly (default: the current one).
    Destroy(VersionsArgs),
    /// Secret metadata.
    #[command(subcommand)]
    Metadata(MetadataCommand),
}

/// A path and the versions to act on.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Secret path.
    pub path: String,
    /// Versions, comma-separated (default: the current one).
    #[arg(long, value_delimiter = ',', value_name = "N,N")]
    pub versions: Vec<u64>,
}

/// `spike secret metadata …`
#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Print a secret's versions and settings.
    Get {
        /// Secret path.
        path: String,
        /// Only this version.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
}

/// `spike policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy.
    Create {
        /// Unique policy name.
        #[arg(long)]
        name: String,
        /// Regex on the caller's whole SPIFFE ID.
        #[arg(long, value_name = "REGEX")]
        spiffeid_pattern: String,
        /// Regex on the whole secret path.
        #[arg(long, value_name = "REGEX")]
        path_pattern: String,
        /// Permissions granted, comma-separated: read, write, list, execute,
        /// super.
        #[arg(long, required = true, value_delimiter = ',', value_parser = parse_permission)]
        permissions: Vec<Permission>,
    },
    /// Create or replace a policy from a YAML file with `name`,
    /// `spiffeidPattern`, `pathPattern` and `permissions`.
    Apply {
        /// The YAML file (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE.yaml")]
        file: PathBuf,
    },
    /// List policies.
    List {
        /// Only policies with exactly this SPIFFE ID pattern.
        #[arg(long, value_name = "REGEX")]
        spiffeid_pattern: Option<String>,
        /// Only policies with exactly this path pattern.
        #[arg(long, value_name = "REGEX")]
        path_pattern: Option<String>,
    },
    /// Print a policy.
    Get {
        /// Policy name.
        name: String,
    },
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
}

/// `spike operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Fetch every root-key share and write one file per share
    /// (`spike.recovery.<id>.txt`, mode 0600) into a directory (recover
    /// role). Existing files are never overwritten.
    Recover {
        /// Directory for the share files (created, mode 0700, if absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Hand Nexus one share (`spike:<id>:<hex>`) towards unsealing it
    /// (restore role). Reads it from a hidden prompt when stdin is a
    /// terminal, else from stdin: `spike operator restore <
    /// spike.recovery.1.txt`. Run once per share.
    Restore,
}

/// `spike cipher …`
#[derive(Debug, Subcommand)]
pub enum CipherCommand {
    /// Encrypt bytes with Nexus's cipher key.
    Encrypt(CipherArgs),
    /// Decrypt bytes encrypted by `spike cipher encrypt`.
    Decrypt(CipherArgs),
}

/// Where cipher bytes come from and go.
#[derive(Debug, Args)]
pub struct CipherArgs {
    /// Read from this file instead of stdin.
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write to this file (mode 0600) instead of stdout.
    #[arg(long = "out", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn parse_permission(s: &str) -> Result<Permission, String> {
    Permission::parse(s.trim())
        .map_err(|_| "expected one of read, write, list, execute, super".to_owned())
}

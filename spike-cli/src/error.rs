//! What can go wrong in a `spike` invocation, said so that the user knows
//! what to do next, and the exit code that goes with it.

use spike_api::ErrorCode;
use spike_core::SpiffeId;

use crate::client::ClientError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (Nexus refused, unreachable, bad input file, I/O).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: a usage error (bad arguments; clap uses it too).
pub const EXIT_USAGE: u8 = 2;

/// A failed `spike` invocation. Messages never include secret values or
/// shares.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments or input found after parsing (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Configuration that cannot work: no identity, a bad URL or ID.
    #[error("{0}")]
    Config(String),
    /// Nexus refused the request or could not be reached; the message says
    /// what to do.
    #[error("{message}")]
    Nexus {
        /// The explanation shown to the user.
        message: String,
        /// The client error behind it.
        #[source]
        source: ClientError,
    },
    /// Loading the identity or building the TLS configuration failed.
    #[error("{0}")]
    Identity(String),
    /// A local file or stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else (bad answer content, a refused operation).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`].
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The process exit code for this error: [`EXIT_USAGE`] for usage
    /// errors, else [`EXIT_ERROR`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }

    /// Explains a failed call of `op` to the user: the code, and what to do.
    pub fn nexus(op: &Op, caller: Option<&SpiffeId>, source: ClientError) -> Error {
        let message = explain(op, caller, &source);
        Error::Nexus { message, source }
    }
}

/// The operation a request performs, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// secret put
    PutSecret(String),
    /// secret get
    GetSecret(String),
    /// secret list
    ListSecrets,
    /// secret delete
    DeleteSecret(String),
    /// secret undelete
    UndeleteSecret(String),
    /// secret destroy
    DestroySecret(String),
    /// secret metadata get
    SecretMetadata(String),
    /// policy create / apply
    PutPolicy(String),
    /// policy get
    GetPolicy(String),
    /// policy delete
    DeletePolicy(String),
    /// policy list
    ListPolicies,
    /// operator recover
    Recover,
    /// operator restore
    Restore,
    /// cipher encrypt
    Encrypt,
    /// cipher decrypt
    Decrypt,
}

impl Op {
    /// "read secret `db/creds`", for "not allowed to …".
    fn action(&self) -> String {
        match self {
            Op::PutSecret(p) => format!("write secret `{p}`"),
            Op::GetSecret(p) => format!("read secret `{p}`"),
            Op::ListSecrets => "list secrets".into(),
            Op::DeleteSecret(p) => format!("delete secret `{p}`"),
            Op::UndeleteSecret(p) => format!("undelete secret `{p}`"),
            Op::DestroySecret(p) => format!("destroy secret `{p}`"),
            Op::SecretMetadata(p) => format!("read the metadata of secret `{p}`"),
            Op::PutPolicy(n) => format!("write policy `{n}`"),
            Op::GetPolicy(n) => format!("read policy `{n}`"),
            Op::DeletePolicy(n) => format!("delete policy `{n}`"),
            Op::ListPolicies => "list policies".into(),
            Op::Recover => "recover the root key shares".into(),
            Op::Restore => "restore Nexus from a share".into(),
            Op::Encrypt => "use the cipher API to encrypt".into(),
            Op::Decrypt => "use the cipher API to decrypt".into(),
        }
    }

    /// What grants it.
    fn grant(&self, td: &str) -> String {
        let policy = |perm: &str, path: &str| {
            format!(
                "ask an admin for a policy granting `{perm}` on `{path}` to your SPIFFE ID \
                 (or use spiffe://{td}/spike/pilot/role/superuser)"
            )
        };
        match self {
            Op::PutSecret(p)
            | Op::DeleteSecret(p)
            | Op::UndeleteSecret(p)
            | Op::DestroySecret(p) => policy("write", p),
            Op::GetSecret(p) | Op::SecretMetadata(p) => policy("read", p),
            Op::ListSecrets => policy("list", spike_core::SECRET_LIST_PATH),
            Op::PutPolicy(_) | Op::DeletePolicy(_) => policy("write", spike_core::ACL_PATH),
            Op::GetPolicy(_) | Op::ListPolicies => policy("read", spike_core::ACL_PATH),
            Op::Encrypt | Op::Decrypt => policy("execute", spike_core::CIPHER_PATH),
            Op::Recover => {
                format!("only spiffe://{td}/spike/pilot/role/recover may recover shares")
            }
            Op::Restore => {
                format!("only spiffe://{td}/spike/pilot/role/restore may restore Nexus")
            }
        }
    }

    /// "secret `db/creds`", for "… not found".
    fn missing(&self) -> String {
        match self {
            Op::GetSecret(p) | Op::SecretMetadata(p) => {
                format!("secret `{p}` (or the version asked for) not found")
            }
            Op::DeleteSecret(p)
            | Op::UndeleteSecret(p)
            | Op::DestroySecret(p)
            | Op::PutSecret(p) => {
                format!("secret `{p}` (or one of the versions) not found")
            }
            Op::PutPolicy(n) | Op::GetPolicy(n) | Op::DeletePolicy(n) => {
                format!("policy `{n}` not found")
            }
            _ => "not found".into(),
        }
    }
}

fn explain(op: &Op, caller: Option<&SpiffeId>, err: &ClientError) -> String {
    let td = caller.map_or("spike.ist", SpiffeId::trust_domain);
    match err {
        ClientError::Api { code, .. } => {
            let c = code.as_str();
            match code {
                ErrorCode::Unauthorized => {
                    let who = caller.map_or_else(
                        || "your SPIFFE ID".to_owned(),
                        |id| format!("your SPIFFE ID {id}"),
                    );
                    format!(
                        "{who} is not allowed to {} ({c}): {}",
                        op.action(),
                        op.grant(td)
                    )
                }
                ErrorCode::NotReady if *op == Op::Restore => format!(
                    "Nexus is not ready to restore ({c}): it may still be starting; try again"
                ),
                ErrorCode::NotReady => format!(
                    "Nexus is sealed ({c}): restore it with `spike operator restore` \
                     (restore role) or wait for Keepers"
                ),
                ErrorCode::NotFound => format!("{} ({c})", op.missing()),
                ErrorCode::BadRequest if *op == Op::Restore => format!(
                    "Nexus refused the share ({c}): it may already be unsealed, or the share \
                     is not one of this Nexus's (wrong id or value)"
                ),
                ErrorCode::BadRequest => format!(
                    "Nexus refused the request as invalid ({c}): check the path (1-500 bytes of \
                     A-Z a-z 0-9 . _ - /, no `.`/`..` segment), keys, versions and patterns"
                ),
                ErrorCode::Internal => format!(
                    "Nexus failed to {} ({c}): a fault on the server side, see its logs",
                    op.action()
                ),
                _ => format!("Nexus refused to {} ({c})", op.action()),
            }
        }
        ClientError::Status { .. } => format!(
            "could not {}: {err}: is --nexus pointing at a SPIKE Nexus?",
            op.action()
        ),
        ClientError::Tls { .. } => format!(
            "could not {}: {err}\nhint: check --cert/--key (this Pilot's SVID), --ca (the trust \
             bundle that verifies Nexus) and --trust-root/--nexus-id (Nexus must present \
             spiffe://<trust root>/spike/nexus)",
            op.action()
        ),
        ClientError::Connect { .. } | ClientError::Timeout { .. } => format!(
            "could not {}: {err}\nhint: is Nexus running? check --nexus or SPIKE_NEXUS_API_URL",
            op.action()
        ),
        _ => format!("could not {}: {err}", op.action()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(Error::Config("x".into()).exit_code(), EXIT_ERROR);
        assert_eq!(EXIT_OK, 0);
    }
}

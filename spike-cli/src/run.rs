//! Running a parsed command line: validate local input, connect, call,
//! print.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::CommandFactory;
use serde::Deserialize;
use spike_api::{
    CipherDecryptRequest, CipherEncryptRequest, PolicyListRequest, PolicyPutRequest,
    SecretPutRequest,
};
use spike_core::{Permission, SpiffeId};
use spike_crypto::Share;
use zeroize::{Zeroize as _, Zeroizing};

use crate::cli::{
    CipherArgs, CipherCommand, Cli, Command, Format, MetadataCommand, OperatorCommand,
    PolicyCommand, SecretCommand,
};
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Op};
use crate::input::{read_input, resolve_pairs};
use crate::output::{Done, Recovered, Render, render};
use crate::shares;

/// Parses the process's arguments; on a usage error, `--help` or
/// `--version` clap prints and exits (code 2 for usage errors, 0 else).
pub fn parse() -> Cli {
    clap::Parser::parse()
}

/// Runs a parsed command line, printing results to stdout.
///
/// # Errors
///
/// Whatever failed, explained for the user; [`Error::exit_code`] gives the
/// process exit code.
pub fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Completions { shell } = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "spike", &mut out);
        return print_bytes(&out);
    }
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::from_cli(&cli, &env)?;
    let prepared = prepare(&cli.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    runtime.block_on(async {
        let (client, me) = config.connect().await?;
        execute(&client, &me, cli.format, &cli.command, prepared).await
    })
}

/// Local input read and checked before anything goes over the wire.
#[derive(Debug)]
#[non_exhaustive]
pub enum Prepared {
    /// Nothing to prepare.
    Nothing,
    /// `secret put`.
    Put(SecretPutRequest),
    /// `policy create` / `policy apply`.
    Policy(PolicyPutRequest),
    /// `operator restore`.
    Restore(Share),
    /// `cipher encrypt|decrypt`: the input bytes.
    Cipher(Zeroizing<Vec<u8>>),
}

/// Reads and validates the local input of `command` (values, files,
/// stdin), so that bad input fails before connecting.
///
/// # Errors
///
/// [`Error::Usage`] for bad input, [`Error::Io`] for unreadable files.
pub fn prepare(command: &Command) -> Result<Prepared, Error> {
    Ok(match command {
        Command::Secret(SecretCommand::Put { path, pairs }) => {
            let values = resolve_pairs(pairs, &mut std::io::stdin().lock())?;
            let mut request = SecretPutRequest {
                path: path.clone(),
                values: BTreeMap::new(),
            };
            for (k, v) in values {
                request.values.insert(k, v.as_str().to_owned());
            }
            Prepared::Put(request)
        }
        Command::Policy(PolicyCommand::Create {
            name,
            spiffeid_pattern,
            path_pattern,
            permissions,
        }) => Prepared::Policy(policy_request(
            name,
            spiffeid_pattern,
            path_pattern,
            permissions,
        )?),
        Command::Policy(PolicyCommand::Apply { file }) => {
            let bytes = read_input(Some(file))?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::Usage(format!("{} is not UTF-8 text", file.display())))?;
            Prepared::Policy(parse_policy_yaml(text).map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("{}: {m}", file.display())),
                e => e,
            })?)
        }
        Command::Operator(OperatorCommand::Recover { out }) => {
            refuse_existing_share_files(out)?;
            Prepared::Nothing
        }
        Command::Operator(OperatorCommand::Restore) => {
            Prepared::Restore(shares::read_share_from_stdin()?)
        }
        Command::Cipher(CipherCommand::Encrypt(args) | CipherCommand::Decrypt(args)) => {
            Prepared::Cipher(read_input(args.input.as_ref())?)
        }
        _ => Prepared::Nothing,
    })
}

/// Performs `command` against Nexus and prints the result.
///
/// # Errors
///
/// The client's errors, explained ([`Error::Nexus`]); output failures.
pub async fn execute(
    client: &Client,
    me: &SpiffeId,
    format: Format,
    command: &Command,
    prepared: Prepared,
) -> Result<(), Error> {
    let fail = |op: Op| move |e| Error::nexus(&op, Some(me), e);
    match (command, prepared) {
        (Command::Secret(cmd), prepared) => match (cmd, prepared) {
            (SecretCommand::Put { path, .. }, Prepared::Put(request)) => {
                client
                    .put_secret(&request)
                    .await
                    .map_err(fail(Op::PutSecret(path.clone())))?;
                show(format, &Done(format!("Secret `{path}` written.")))
            }
            (SecretCommand::Get { path, version, key }, _) => {
                let response = client
                    .get_secret(path, *version)
                    .await
                    .map_err(fail(Op::GetSecret(path.clone())))?;
                match key {
                    Some(key) => {
                        let value = response.data.get(key).ok_or_else(|| {
                            let keys: Vec<&str> =
                                response.data.keys().map(String::as_str).collect();
                            Error::Other(format!(
                                "secret `{path}` has no key `{key}` (its keys: {})",
                                keys.join(", ")
                            ))
                        })?;
                        let mut raw = Zeroizing::new(value.clone().into_bytes());
                        if std::io::stdout().is_terminal() {
                            raw.push(b'\n');
                        }
                        print_bytes(&raw)
                    }
                    None => show(format, &response),
                }
            }
            (SecretCommand::List, _) => {
                let response = client.list_secrets().await.map_err(fail(Op::ListSecrets))?;
                show(format, &response)
            }
            (SecretCommand::Delete(args), _) => {
                client
                    .delete_secret(&args.path, &args.versions)
                    .await
                    .map_err(fail(Op::DeleteSecret(args.path.clone())))?;
                show(
                    format,
                    &Done(format!(
                        "Deleted {} of `{}` (undelete restores).",
                        versions_words(&args.versions),
                        args.path
                    )),
                )
            }
            (SecretCommand::Undelete(args), _) => {
                client
                    .undelete_secret(&args.path, &args.versions)
                    .await
                    .map_err(fail(Op::UndeleteSecret(args.path.clone())))?;
                show(
                    format,
                    &Done(format!(
                        "Undeleted {} of `{}`.",
                        versions_words(&args.versions),
                        args.path
                    )),
                )
            }
            (SecretCommand::Destroy(args), _) => {
                client
                    .destroy_secret(&args.path, &args.versions)
                    .await
                    .map_err(fail(Op::DestroySecret(args.path.clone())))?;
                show(
                    format,
                    &Done(format!(
                        "Destroyed {} of `{}`: the data is gone for good.",
                        versions_words(&args.versions),
                        args.path
                    )),
                )
            }
            (SecretCommand::Metadata(MetadataCommand::Get { path, version }), _) => {
                let response = client
                    .secret_metadata(path, *version)
                    .await
                    .map_err(fail(Op::SecretMetadata(path.clone())))?;
                show(format, &response)
            }
            (SecretCommand::Put { .. }, _) => Err(not_prepared()),
        },
        (Command::Policy(cmd), prepared) => match (cmd, prepared) {
            (PolicyCommand::Create { .. } | PolicyCommand::Apply { .. }, Prepared::Policy(p)) => {
                let response = client
                    .put_policy(&p)
                    .await
                    .map_err(fail(Op::PutPolicy(p.name.clone())))?;
                show(format, &response)
            }
            (
                PolicyCommand::List {
                    spiffeid_pattern,
                    path_pattern,
                },
                _,
            ) => {
                let filter = PolicyListRequest {
                    spiffeid_pattern: spiffeid_pattern.clone(),
                    path_pattern: path_pattern.clone(),
                };
                let response = client
                    .list_policies(&filter)
                    .await
                    .map_err(fail(Op::ListPolicies))?;
                show(format, &response)
            }
            (PolicyCommand::Get { name }, _) => {
                let response = client
                    .get_policy(name)
                    .await
                    .map_err(fail(Op::GetPolicy(name.clone())))?;
                show(format, &response)
            }
            (PolicyCommand::Delete { name }, _) => {
                client
                    .delete_policy(name)
                    .await
                    .map_err(fail(Op::DeletePolicy(name.clone())))?;
                show(format, &Done(format!("Policy `{name}` deleted.")))
            }
            (PolicyCommand::Create { .. } | PolicyCommand::Apply { .. }, _) => Err(not_prepared()),
        },
        (Command::Operator(OperatorCommand::Recover { out }), _) => {
            let response = client.recover().await.map_err(fail(Op::Recover))?;
            let shares = shares::shares_of(&response)?;
            drop(response);
            let files = shares::write_share_files(out, &shares)?;
            show(format, &Recovered { files })
        }
        (Command::Operator(OperatorCommand::Restore), Prepared::Restore(share)) => {
            let request = shares::restore_request(&share);
            drop(share);
            let response = client.restore(&request).await.map_err(fail(Op::Restore))?;
            show(format, &response)
        }
        (Command::Cipher(CipherCommand::Encrypt(args)), Prepared::Cipher(input)) => {
            let mut request = CipherEncryptRequest {
                plaintext: BASE64.encode(&*input),
            };
            let result = client.encrypt(&request).await;
            request.plaintext.zeroize();
            let response = result.map_err(fail(Op::Encrypt))?;
            let bytes = decode(&response.ciphertext, "ciphertext")?;
            cipher_out(format, args, &bytes, &response)
        }
        (Command::Cipher(CipherCommand::Decrypt(args)), Prepared::Cipher(input)) => {
            let request = CipherDecryptRequest {
                ciphertext: BASE64.encode(&*input),
            };
            let mut response = client.decrypt(&request).await.map_err(fail(Op::Decrypt))?;
            let result = decode(&response.plaintext, "plaintext")
                .and_then(|bytes| cipher_out(format, args, &bytes, &response));
            response.plaintext.zeroize();
            result
        }
        (Command::Completions { .. }, _) => Ok(()),
        (Command::Operator(_) | Command::Cipher(_), _) => Err(not_prepared()),
    }
}

fn not_prepared() -> Error {
    Error::Other("internal error: command input was not prepared".into())
}

fn decode(b64: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    BASE64
        .decode(b64)
        .map(Zeroizing::new)
        .map_err(|_| Error::Other(format!("Nexus sent {what} that is not base64")))
}

/// Cipher output: raw bytes to `--out` or (human format) stdout; with
/// `--format json|yaml` the response object goes to stdout.
fn cipher_out<T: Render>(
    format: Format,
    args: &CipherArgs,
    bytes: &[u8],
    response: &T,
) -> Result<(), Error> {
    if let Some(path) = &args.output {
        write_private_file(path, bytes)?;
        if format == Format::Human {
            return Ok(());
        }
        return show(format, response);
    }
    match format {
        Format::Human => print_bytes(bytes),
        _ => show(format, response),
    }
}

/// Writes `bytes` to `path`, created with mode 0600 if new, truncated if it
/// exists.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn versions_words(versions: &[u64]) -> String {
    if versions.is_empty() || versions == [0] {
        return "the current version".into();
    }
    let list: Vec<String> = versions.iter().map(u64::to_string).collect();
    if versions.len() == 1 {
        format!("version {}", list.join(""))
    } else {
        format!("versions {}", list.join(", "))
    }
}

/// Prints a result in `format` to stdout.
fn show<T: Render>(format: Format, value: &T) -> Result<(), Error> {
    print_bytes(render(format, value)?.as_bytes())
}

/// Writes to stdout; a closed pipe (`spike … | head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("cannot write to stdout", e)),
    }
}

/// Before fetching shares, refuses a directory that already holds share
/// files (the final write refuses too, file by file).
fn refuse_existing_share_files(dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // absent: created later; unreadable: the write reports it
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("spike.recovery.") && name.ends_with(".txt") {
            return Err(Error::Other(format!(
                "{} already holds share files ({name}): refusing to overwrite; move them away or \
                 choose another --out",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// A policy file (`policy apply -f`), upstream SPIKE's YAML shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    name: String,
    spiffeid_pattern: String,
    path_pattern: String,
    permissions: Vec<String>,
}

/// Parses a policy YAML file into the request to send.
///
/// # Errors
///
/// [`Error::Usage`] for YAML that is not a policy (missing or unknown
/// fields, an unknown permission).
pub fn parse_policy_yaml(text: &str) -> Result<PolicyPutRequest, Error> {
    let file: PolicyFile = serde_saphyr::from_str(text)
        .map_err(|e| Error::Usage(format!("not a policy file: {e}")))?;
    let permissions = file
        .permissions
        .iter()
        .map(|p| {
            Permission::parse(p.trim()).map_err(|_| {
                Error::Usage(format!(
                    "unknown permission `{p}`: use read, write, list, execute or super"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    policy_request(
        &file.name,
        &file.spiffeid_pattern,
        &file.path_pattern,
        &permissions,
    )
}

/// Checks a policy's fields and builds the request.
fn policy_request(
    name: &str,
    spiffeid_pattern: &str,
    path_pattern: &str,
    permissions: &[Permission],
) -> Result<PolicyPutRequest, Error> {
    for (value, what) in [
        (name, "name"),
        (spiffeid_pattern, "SPIFFE ID pattern"),
        (path_pattern, "path pattern"),
    ] {
        if value.trim().is_empty() {
            return Err(Error::Usage(format!("the policy {what} is empty")));
        }
    }
    if permissions.is_empty() {
        return Err(Error::Usage("the policy grants no permissions".into()));
    }
    let mut names: Vec<String> = Vec::new();
    for p in permissions {
        let p = p.as_str().to_owned();
        if !names.contains(&p) {
            names.push(p);
        }
    }
    Ok(PolicyPutRequest {
        name: name.to_owned(),
        spiffeid_pattern: spiffeid_pattern.to_owned(),
        path_pattern: path_pattern.to_owned(),
        permissions: names,
    })
}

//! Vault KV v2 conformance with the `vaultrs` crate, unmodified, against
//! spike-rs Nexus (SPEC §7.2). conformance/run.sh runs it against the same
//! `spike-server dev` it compares with OpenBao; by hand:
//!
//! ```sh
//! . spike-data/pilot/env   # written by `spike-server dev`
//! spike-server dev mint --id spiffe://spike.ist/workload/nopolicy --out /tmp/np --data-dir spike-data
//! cargo run --manifest-path conformance/vaultrs/Cargo.toml -- \
//!     --nopolicy-cert /tmp/np/svid.pem --nopolicy-key /tmp/np/svid.key
//! ```
//!
//! The server, its CA and the client certificate come from the environment
//! as every Vault client reads them: `VAULT_ADDR`, `VAULT_CACERT`,
//! `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`. No token: the client SVID,
//! presented by vaultrs' own reqwest client (`identity`), is the credential.
//! `VAULT_TOKEN` is ignored on purpose (a stale one would only be accepted
//! as "unknown token, use the SVID" anyway).
//!
//! Writes only under `secret/vaultrs/`, so it can follow vault_kv.py on the
//! same instance. Prints one table row per vaultrs call; exit status 1 when
//! any row fails.

use std::collections::HashMap;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use vaultrs::api::kv2::requests::SetSecretMetadataRequest;
use vaultrs::client::{Identity, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::{auth, kv2};

const MOUNT: &str = "secret";
const DB: &str = "vaultrs/app/db";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Db {
    user: String,
    pass: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (source spike-data/pilot/env)"))
}

/// A vaultrs client for `addr`, trusting `ca` and presenting `cert`/`key`
/// (PEM) as its TLS client certificate, with `token` ("" = none).
fn client(addr: &str, ca: &str, cert: &str, key: &str, token: &str) -> Result<VaultClient, String> {
    let mut pem = std::fs::read(cert).map_err(|e| format!("{cert}: {e}"))?;
    pem.extend(std::fs::read(key).map_err(|e| format!("{key}: {e}"))?);
    let identity = Identity::from_pem(&pem).map_err(|e| format!("identity {cert}: {e}"))?;
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .ca_certs(vec![ca.to_owned()])
        .identity(Some(identity))
        .verify(true)
        .token(token)
        .build()
        .map_err(|e| format!("settings: {e}"))?;
    VaultClient::new(settings).map_err(|e| format!("client: {e}"))
}

struct Table {
    rows: Vec<(String, String, String, Option<String>)>,
}

impl Table {
    /// One row: `want` is what SPEC §7.2 / Vault answer, `got` what the
    /// call returned; `Err` is the failure detail.
    fn row(&mut self, name: &str, want: &str, got: Result<String, String>) {
        let (got, problem) = match got {
            Ok(g) => (g, None),
            // Errors from rustify carry an anyhow backtrace: first line only.
            Err(e) => (
                "FAIL".to_owned(),
                Some(e.lines().next().unwrap_or("").chars().take(400).collect()),
            ),
        };
        self.rows
            .push((name.to_owned(), want.to_owned(), got, problem));
    }

    fn print(&self) -> bool {
        let w = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!(
            "{:<w$}  {:>16}  {:>16}  result",
            "vaultrs call", "expected", "got"
        );
        let mut failed = 0;
        for (name, want, got, problem) in &self.rows {
            let verdict = if problem.is_some() { "FAIL" } else { "OK" };
            println!("{name:<w$}  {want:>16}  {got:>16}  {verdict}");
            if let Some(p) = problem {
                failed += 1;
                println!("{:<w$}      - {p}", "");
            }
        }
        println!(
            "\n{}/{} vaultrs calls OK, {failed} FAIL",
            self.rows.len() - failed,
            self.rows.len()
        );
        failed == 0
    }
}

/// `Ok(desc)` when `cond`, else `Err(detail)`.
fn check(cond: bool, ok: &str, detail: impl std::fmt::Debug) -> Result<String, String> {
    if cond {
        Ok(ok.to_owned())
    } else {
        Err(format!("{detail:?}"))
    }
}

/// The call must fail with Vault's API error `code` (and, when given, these
/// `errors`).
fn api_error<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    code: u16,
    errors: Option<&[&str]>,
) -> Result<String, String> {
    match r {
        Err(ClientError::APIError { code: c, errors: e })
            if c == code && errors.is_none_or(|want| e == want) =>
        {
            Ok(if e.is_empty() {
                format!("{c} []")
            } else {
                c.to_string()
            })
        }
        other => Err(format!("want APIError {code} {errors:?}, got {other:?}")),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vaultrs conformance: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().collect();
    let addr = env("VAULT_ADDR")?;
    let ca = env("VAULT_CACERT")?;
    let cert = env("VAULT_CLIENT_CERT")?;
    let key = env("VAULT_CLIENT_KEY")?;
    let np = match (arg(&args, "--nopolicy-cert"), arg(&args, "--nopolicy-key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--nopolicy-cert and --nopolicy-key go together".into()),
    };

    let su = client(&addr, &ca, &cert, &key, "")?;
    let mut t = Table { rows: Vec::new() };

    let r = vaultrs::sys::health(&su).await;
    // vaultrs 0.8 requires HashiCorp Vault's `performance_standby`, which
    // Nexus sends (OpenBao 2.7 does not: vault_kv.py's known deviation).
    t.row(
        "sys::health",
        "unsealed",
        match r {
            Ok(h) => check(h.initialized && !h.sealed, "unsealed", h),
            Err(e) => Err(format!("{e:?}")),
        },
    );

    let v1 = Db {
        user: "alice".into(),
        pass: "s1".into(),
        port: Some(5432),
    };
    let v2 = Db {
        user: "alice".into(),
        pass: "s2".into(),
        port: None,
    };

    let r = kv2::set(&su, MOUNT, DB, &v1).await;
    t.row(
        "kv2::set (new key)",
        "version 1",
        match r {
            Ok(m) => check(
                m.version == 1
                    && !m.destroyed
                    && m.deletion_time.is_empty()
                    && !m.created_time.is_empty(),
                "version 1",
                m,
            ),
            Err(e) => Err(e.to_string() + &format!(" {e:?}")),
        },
    );
    let r = kv2::set(&su, MOUNT, DB, &v2).await;
    t.row(
        "kv2::set (second version)",
        "version 2",
        match r {
            Ok(m) => check(m.version == 2, "version 2", m),
            Err(e) => Err(format!("{e:?}")),
        },
    );
    let r = kv2::set(
        &su,
        MOUNT,
        "vaultrs/app/deep/y",
        &HashMap::from([("k", "v")]),
    )
    .await;
    t.row(
        "kv2::set (vaultrs/app/deep/y)",
        "version 1",
        match r {
            Ok(m) => check(m.version == 1, "version 1", m),
            Err(e) => Err(format!("{e:?}")),
        },
    );

    let r: Result<Db, _> = kv2::read(&su, MOUNT, DB).await;
    t.row(
        "kv2::read (latest)",
        "v2 data",
        match r {
            Ok(d) => check(d == v2, "v2 data", d),
            Err(e) => Err(format!("{e:?}")),
        },
    );
    let r: Result<Db, _> = kv2::read_version(&su, MOUNT, DB, 1).await;
    t.row(
        "kv2::read_version 1",
        "v1 data",
        match r {
            Ok(d) => check(d == v1, "v1 data", d),
            Err(e) => Err(format!("{e:?}")),
        },
    );

    let r = kv2::list(&su, MOUNT, "vaultrs/app").await;
    t.row(
        "kv2::list vaultrs/app",
        "[db, deep/]",
        match r {
            Ok(k) => check(k == ["db", "deep/"], "[db, deep/]", k),
            Err(e) => Err(format!("{e:?}")),
        },
    );
    let r = kv2::list(&su, MOUNT, "vaultrs/app/").await;
    t.row(
        "kv2::list vaultrs/app/ (slash)",
        "[db, deep/]",
        match r {
            Ok(k) => check(k == ["db", "deep/"], "[db, deep/]", k),
            Err(e) => Err(format!("{e:?}")),
        },
    );

    let custom = HashMap::from([("owner".to_owned(), "vaultrs".to_owned())]);
    let r = kv2::set_metadata(
        &su,
        MOUNT,
        DB,
        Some(
            SetSecretMetadataRequest::builder()
                .max_versions(5u64)
                .custom_metadata(custom.clone()),
        ),
    )
    .await;
    t.row(
        "kv2::set_metadata",
        "204",
        r.map(|()| "204".to_owned()).map_err(|e| format!("{e:?}")),
    );

    let r = kv2::read_metadata(&su, MOUNT, DB).await;
    t.row(
        "kv2::read_metadata",
        "current 2, max 5",
        match r {
            Ok(m) => {
                let mut vs: Vec<&str> = m.versions.keys().map(String::as_str).collect();
                vs.sort_unstable();
                check(
                    m.current_version == 2
                        && m.max_versions == 5
                        && !m.cas_required
                        && m.custom_metadata.as_ref() == Some(&custom)
                        && vs == ["1", "2"]
                        && m.versions
                            .values()
                            .all(|v| !v.destroyed && v.deletion_time.is_empty())
                        && !m.created_time.is_empty()
                        && !m.updated_time.is_empty(),
                    "current 2, max 5",
                    m,
                )
            }
            Err(e) => Err(format!("{e:?}")),
        },
    );

    let r: Result<Db, _> = kv2::read(&su, MOUNT, "vaultrs/nope").await;
    t.row(
        "kv2::read missing -> 404",
        "404 []",
        api_error(r, 404, Some(&[])),
    );
    let r = kv2::read_metadata(&su, MOUNT, "vaultrs/nope").await;
    t.row(
        "kv2::read_metadata missing -> 404",
        "404 []",
        api_error(r, 404, Some(&[])),
    );

    // The token route: `auth/cert/login` answers Vault's auth block; the
    // token then authorises as the SPIFFE ID it was issued to.
    let login = auth::cert::login(&su, "cert", "").await;
    let token = login
        .as_ref()
        .map(|a| a.client_token.clone())
        .unwrap_or_default();
    t.row(
        "auth::cert::login",
        "hvs. token",
        match login {
            Ok(a) => check(a.client_token.starts_with("hvs."), "hvs. token", a),
            Err(e) => Err(format!("{e:?}")),
        },
    );

    if let Some((np_cert, np_key)) = &np {
        let no = client(&addr, &ca, np_cert, np_key, "")?;
        let r: Result<Db, _> = kv2::read(&no, MOUNT, DB).await;
        t.row(
            "no policy: kv2::read -> 403",
            "403",
            api_error(r, 403, Some(&["permission denied"])),
        );
        let r = kv2::set(&no, MOUNT, DB, &v1).await;
        t.row(
            "no policy: kv2::set -> 403",
            "403",
            api_error(r, 403, Some(&["permission denied"])),
        );
        let r = kv2::list(&no, MOUNT, "vaultrs/app").await;
        t.row(
            "no policy: kv2::list -> 403",
            "403",
            api_error(r, 403, Some(&["permission denied"])),
        );
        let r = kv2::read_metadata(&no, MOUNT, DB).await;
        t.row(
            "no policy: kv2::read_metadata -> 403",
            "403",
            api_error(r, 403, Some(&["permission denied"])),
        );
        if !token.is_empty() {
            // The superuser's token on the no-policy SVID's connection.
            let by_token = client(&addr, &ca, np_cert, np_key, &token)?;
            let r: Result<Db, _> = kv2::read(&by_token, MOUNT, DB).await;
            t.row(
                "no policy + superuser token: kv2::read",
                "v2 data",
                match r {
                    Ok(d) => check(d == v2, "v2 data", d),
                    Err(e) => Err(format!("{e:?}")),
                },
            );
        }
    }

    Ok(t.print())
}

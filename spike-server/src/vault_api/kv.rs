//! The KV v2 engine at `secret/`: `data/`, `metadata/`, `delete/`,
//! `undelete/`, `destroy/`, `subkeys/`, `config`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use spike_core::{
    Caller, KvConfig, Secret, SecretData, SecretSettings, SettingsUpdate, Version, VersionRead,
    WriteOptions,
};

use super::{
    MOUNT, VaultError, VaultRequest, VaultResult, VaultState, Verb, body_object, envelope,
    envelope_full, envelope_with, go_duration, json_str, no_content, parse_duration,
};

const PREFIX: &str = "/v1/secret/";

/// Every `/v1/secret/...` request.
pub(super) async fn handle(s: VaultState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match crate::http::read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(crate::http::BodyError::TooLarge) => {
            return VaultError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .into_response();
        }
        Err(crate::http::BodyError::TimedOut) => {
            return VaultError::new(StatusCode::REQUEST_TIMEOUT, "request body not sent in time")
                .into_response();
        }
    };
    let result = match VaultRequest::new(&parts, PREFIX) {
        Ok(r) => route(&s, &r, &body).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(s: &VaultState, r: &VaultRequest, body: &Bytes) -> VaultResult {
    let (op, path) = match r.rest.split_once('/') {
        Some((op, path)) => (op, path),
        None => (r.rest.as_str(), ""),
    };
    // Authenticate before anything reveals what exists.
    let caller = r.caller(s)?;
    match op {
        "data" => data(s, r, &caller, path, body).await,
        "metadata" => metadata(s, r, &caller, path, body).await,
        "delete" | "undelete" | "destroy" => versions(s, r, &caller, op, path, body).await,
        "subkeys" => subkeys(s, r, &caller, path),
        "config" if path.is_empty() => config(s, r, &caller, body).await,
        _ => Ok(invalid_path()),
    }
}

/// What Vault answers for a path the KV v2 engine does not have.
fn invalid_path() -> Response {
    let warnings = [
        "Invalid path for a versioned K/V secrets engine. See the API docs for the \
                     appropriate API endpoints to use. If using the OpenBao CLI, use 'bao kv \
                     get' for this operation."
            .to_owned(),
    ];
    envelope_full(StatusCode::NOT_FOUND, &Value::Null, Some(&warnings), None)
}

/// `custom_metadata` as Vault shows it: `null` when empty.
fn custom_metadata(settings: &SecretSettings) -> Value {
    if settings.custom_metadata.is_empty() {
        Value::Null
    } else {
        json!(settings.custom_metadata)
    }
}

/// A version's metadata as `data/` and `subkeys/` show it (fields in
/// Vault's order).
#[derive(Serialize)]
struct VersionMetadata<'a> {
    created_time: String,
    custom_metadata: Option<&'a BTreeMap<String, String>>,
    deletion_time: String,
    destroyed: bool,
    version: u64,
}

fn version_metadata<'a>(v: &Version, settings: &'a SecretSettings) -> VersionMetadata<'a> {
    VersionMetadata {
        created_time: v.created.to_rfc3339(),
        custom_metadata: Some(&settings.custom_metadata).filter(|m| !m.is_empty()),
        deletion_time: v.deletion_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
        destroyed: v.destroyed,
        version: v.number,
    }
}

/// `m` as its derived `Serialize` writes it, by hand: KV reads and writes
/// answer with it on every request.
fn write_version_metadata(out: &mut Vec<u8>, m: &VersionMetadata<'_>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"created_time\":");
    json_str(out, &m.created_time)?;
    out.extend_from_slice(b",\"custom_metadata\":");
    match m.custom_metadata {
        None => out.extend_from_slice(b"null"),
        Some(map) => serde_json::to_writer(&mut *out, map)?,
    }
    out.extend_from_slice(b",\"deletion_time\":");
    json_str(out, &m.deletion_time)?;
    out.extend_from_slice(b",\"destroyed\":");
    out.extend_from_slice(if m.destroyed { b"true" } else { b"false" });
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(m.version.to_string().as_bytes());
    out.push(b'}');
    Ok(())
}

/// The answer to a read of a live version. The stored data, always a
/// compact JSON object ([`SecretData::expose_json`]), is copied into the
/// answer as it is, not parsed and printed again.
fn read_answer(data: &SecretData, version: &Version, settings: &SecretSettings) -> Response {
    envelope_with(StatusCode::OK, None, None, |out| {
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(data.expose_json());
        out.extend_from_slice(b",\"metadata\":");
        write_version_metadata(out, &version_metadata(version, settings))?;
        out.push(b'}');
        Ok(())
    })
}

/// The `?version=` of a read (0 = current).
fn version_param(r: &VaultRequest) -> Result<u64, VaultError> {
    match r.param("version") {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            VaultError::bad_request(format!(
                "Field validation failed: error converting input for field \"version\": \
                 cannot parse {v:?} as an integer"
            ))
        }),
    }
}

/// The `options.cas` of a write body.
fn cas_option(body: &Map<String, Value>) -> Result<WriteOptions, VaultError> {
    let cas = match body.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_u64(v).ok_or_else(|| VaultError::bad_request("invalid cas"))?),
    };
    Ok(WriteOptions { cas })
}

/// An integer as Vault accepts it: a number or a string of digits.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn write_answer(version: &Version, settings: &SecretSettings) -> Response {
    envelope_with(StatusCode::OK, None, None, |out| {
        write_version_metadata(out, &version_metadata(version, settings))
    })
}

// ---- data/ -----------------------------------------------------------------

async fn data(
    s: &VaultState,
    r: &VaultRequest,
    caller: &Caller,
    path: &str,
    body: &Bytes,
) -> VaultResult {
    let n = &s.nexus;
    match r.verb {
        Verb::Read => {
            if path.trim_matches('/').is_empty() {
                return Err(VaultError::not_found());
            }
            let version = version_param(r)?;
            match n.get_secret_with_metadata(caller, path, version)? {
                (VersionRead::Live { version, data }, secret) => {
                    Ok(read_answer(&data, &version, &secret.settings))
                }
                (VersionRead::Gone(version), secret) => {
                    let meta = version_metadata(&version, &secret.settings);
                    Ok(envelope(
                        StatusCode::NOT_FOUND,
                        &json!({"data": null, "metadata": meta}),
                    ))
                }
            }
        }
        Verb::Write => {
            refuse_folder(path)?;
            let body = body_object(body).ok_or_else(no_data)?;
            let Some(Value::Object(data)) = body.get("data") else {
                return Err(no_data());
            };
            let options = cas_option(&body)?;
            let data = SecretData::from_object(data).map_err(spike_core::Error::from)?;
            let (version, settings) = n
                .put_secret_with_metadata(caller, path, data, options)
                .await?;
            Ok(write_answer(&version, &settings))
        }
        Verb::Patch => {
            r.require_merge_patch()?;
            refuse_folder(path)?;
            let body = body_object(body).ok_or_else(no_data)?;
            let Some(Value::Object(patch)) = body.get("data") else {
                return Err(no_data());
            };
            let options = cas_option(&body)?;
            match n.patch_secret(caller, path, patch, options).await {
                Ok((version, settings)) => Ok(write_answer(&version, &settings)),
                // OpenBao answers a patch of a missing secret 404 with no body.
                Err(e) => Err(empty_if_not_found(VaultError::from(e))),
            }
        }
        Verb::Delete => {
            ok_if_missing(n.delete_secret(caller, path, &[]).await)?;
            Ok(no_content())
        }
        Verb::List | Verb::Other => Err(VaultError::unsupported()),
    }
}

fn no_data() -> VaultError {
    VaultError::bad_request("no data provided")
}

fn refuse_folder(path: &str) -> Result<(), VaultError> {
    if path.ends_with('/') {
        return Err(VaultError::bad_request(
            "cannot write to a path ending in '/'",
        ));
    }
    Ok(())
}

fn empty_if_not_found(mut e: VaultError) -> VaultError {
    if e.is_not_found() {
        e.empty = true;
    }
    e
}

/// Vault answers deletes of what does not exist 204.
fn ok_if_missing(result: Result<(), spike_core::Error>) -> Result<(), VaultError> {
    match result {
        Err(e) if e.code() == spike_core::ErrorCode::NotFound => Ok(()),
        other => Ok(other?),
    }
}

// ---- metadata/ -------------------------------------------------------------

async fn metadata(
    s: &VaultState,
    r: &VaultRequest,
    caller: &Caller,
    path: &str,
    body: &Bytes,
) -> VaultResult {
    let n = &s.nexus;
    match r.verb {
        Verb::List => {
            let keys = n.list_secrets(caller, path)?;
            Ok(envelope(StatusCode::OK, &json!({ "keys": keys })))
        }
        Verb::Read => {
            if path.trim_matches('/').is_empty() {
                return Err(VaultError::not_found());
            }
            let secret = n.secret_metadata(caller, path)?;
            Ok(envelope(StatusCode::OK, &secret_metadata(&secret)))
        }
        Verb::Write => {
            refuse_folder(path)?;
            let body =
                body_object(body).ok_or_else(|| VaultError::bad_request("invalid request body"))?;
            let mut update = settings_update(&body)?;
            match body.get("custom_metadata") {
                Some(Value::Object(m)) => update.custom_metadata = Some(string_map(m)?),
                None | Some(Value::Null) => {}
                // A string, number or list: refused, not ignored.
                Some(_) => return Err(bad_custom_metadata()),
            }
            n.update_secret_metadata(caller, path, update).await?;
            Ok(no_content())
        }
        Verb::Patch => {
            r.require_merge_patch()?;
            refuse_folder(path)?;
            let body =
                body_object(body).ok_or_else(|| VaultError::bad_request("invalid request body"))?;
            let mut update = settings_update(&body)?;
            if !matches!(
                body.get("custom_metadata"),
                None | Some(Value::Null | Value::Object(_))
            ) {
                return Err(bad_custom_metadata());
            }
            let current = n.secret_metadata(caller, path)?;
            if let Some(Value::Object(patch)) = body.get("custom_metadata") {
                let mut merged = current.settings.custom_metadata.clone();
                for (k, v) in patch {
                    match v {
                        Value::Null => {
                            merged.remove(k);
                        }
                        Value::String(v) => {
                            merged.insert(k.clone(), v.clone());
                        }
                        _ => return Err(bad_custom_metadata()),
                    }
                }
                update.custom_metadata = Some(merged);
            }
            n.update_secret_metadata(caller, path, update).await?;
            Ok(no_content())
        }
        Verb::Delete => {
            ok_if_missing(n.delete_secret_metadata(caller, path).await)?;
            Ok(no_content())
        }
        Verb::Other => Err(VaultError::unsupported()),
    }
}

/// A secret's metadata as `metadata/` shows it.
fn secret_metadata(secret: &Secret) -> Value {
    let versions: Map<String, Value> = secret
        .versions
        .iter()
        .map(|v| {
            (
                v.number.to_string(),
                json!({
                    "created_time": v.created.to_rfc3339(),
                    "deletion_time": v.deletion_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    // Vault's `oldest_version` stays 0 until versions are pruned.
    let oldest = match secret.oldest_version {
        1 => 0,
        n => n,
    };
    let s = &secret.settings;
    json!({
        "cas_required": s.cas_required,
        "created_time": secret.created.to_rfc3339(),
        // Metadata versions (Vault's `metadata_cas`) are not kept.
        "current_metadata_version": 0,
        "current_version": secret.current_version,
        "custom_metadata": custom_metadata(s),
        "delete_version_after": go_duration(s.delete_version_after),
        "max_versions": s.max_versions,
        "metadata_cas_required": false,
        "oldest_version": oldest,
        "updated_time": secret.updated.to_rfc3339(),
        "versions": versions,
    })
}

fn bad_custom_metadata() -> VaultError {
    VaultError::bad_request("custom_metadata must be a map of strings")
}

fn string_map(m: &Map<String, Value>) -> Result<BTreeMap<String, String>, VaultError> {
    m.iter()
        .map(|(k, v)| match v {
            Value::String(v) => Ok((k.clone(), v.clone())),
            _ => Err(bad_custom_metadata()),
        })
        .collect()
}

/// `max_versions`, `cas_required`, `delete_version_after` of a metadata
/// write (absent = unchanged).
fn settings_update(body: &Map<String, Value>) -> Result<SettingsUpdate, VaultError> {
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let max_versions = field("max_versions")
        .map(|v| {
            as_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| VaultError::bad_request("invalid max_versions"))
        })
        .transpose()?;
    let cas_required = field("cas_required")
        .map(|v| match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            _ => Err(VaultError::bad_request("invalid cas_required")),
        })
        .transpose()?;
    let delete_version_after = field("delete_version_after")
        .map(|v| {
            parse_duration(v).ok_or_else(|| VaultError::bad_request("invalid delete_version_after"))
        })
        .transpose()?;
    Ok(SettingsUpdate {
        max_versions,
        cas_required,
        delete_version_after,
        custom_metadata: None,
    })
}

// ---- delete/, undelete/, destroy/ ------------------------------------------

async fn versions(
    s: &VaultState,
    r: &VaultRequest,
    caller: &Caller,
    op: &str,
    path: &str,
    body: &Bytes,
) -> VaultResult {
    if r.verb != Verb::Write {
        return Err(VaultError::unsupported());
    }
    let body = body_object(body).ok_or_else(|| VaultError::bad_request("invalid request body"))?;
    let versions: Vec<u64> = match body.get("versions") {
        Some(Value::Array(a)) => a
            .iter()
            .map(as_u64)
            .collect::<Option<_>>()
            .ok_or_else(|| VaultError::bad_request("invalid versions"))?,
        _ => Vec::new(),
    };
    if versions.is_empty() {
        let message = match op {
            "undelete" => "No version number provided",
            _ => "no version number provided",
        };
        return Err(VaultError::bad_request(message));
    }
    let n = &s.nexus;
    let result = match op {
        "delete" => n.delete_secret(caller, path, &versions).await,
        "undelete" => n.undelete_secret(caller, path, &versions).await,
        _ => n.destroy_secret(caller, path, &versions).await,
    };
    ok_if_missing(result)?;
    Ok(no_content())
}

// ---- subkeys/ --------------------------------------------------------------

fn subkeys(s: &VaultState, r: &VaultRequest, caller: &Caller, path: &str) -> VaultResult {
    if r.verb != Verb::Read {
        return Err(VaultError::unsupported());
    }
    if path.trim_matches('/').is_empty() {
        return Err(VaultError::not_found());
    }
    let version = version_param(r)?;
    let depth = match r.param("depth") {
        None | Some("") => 0,
        Some(d) => d
            .parse::<usize>()
            .map_err(|_| VaultError::bad_request("invalid depth"))?,
    };
    match s.nexus.get_secret_with_metadata(caller, path, version)? {
        (VersionRead::Live { version, data }, secret) => {
            let object: Value =
                serde_json::from_slice(data.expose_json()).map_err(|_| VaultError::internal())?;
            Ok(envelope(
                StatusCode::OK,
                &json!({
                    "metadata": version_metadata(&version, &secret.settings),
                    "subkeys": structure(&object, depth, 1),
                }),
            ))
        }
        (VersionRead::Gone(version), secret) => Ok(envelope(
            StatusCode::NOT_FOUND,
            &json!({
                "metadata": version_metadata(&version, &secret.settings),
                "subkeys": null,
            }),
        )),
    }
}

/// The keys of `v`, values replaced by `null` (objects recursed into up to
/// `depth` levels; 0 = no limit).
fn structure(v: &Value, depth: usize, level: usize) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let inner = match v {
                        Value::Object(_) if depth == 0 || level < depth => {
                            structure(v, depth, level + 1)
                        }
                        _ => Value::Null,
                    };
                    (k.clone(), inner)
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

// ---- config ----------------------------------------------------------------

async fn config(s: &VaultState, r: &VaultRequest, caller: &Caller, body: &Bytes) -> VaultResult {
    let n = &s.nexus;
    match r.verb {
        Verb::Read => Ok(envelope(StatusCode::OK, &config_view(&n.kv_config()?))),
        Verb::Write => {
            let body =
                body_object(body).ok_or_else(|| VaultError::bad_request("invalid request body"))?;
            let update = settings_update(&body)?;
            let mut config = n.kv_config()?;
            if let Some(v) = update.max_versions {
                config.max_versions = v;
            }
            if let Some(v) = update.cas_required {
                config.cas_required = v;
            }
            if let Some(v) = update.delete_version_after {
                config.delete_version_after = v;
            }
            n.set_kv_config(caller, config).await?;
            Ok(no_content())
        }
        _ => Err(VaultError::unsupported()),
    }
}

fn config_view(c: &KvConfig) -> Value {
    json!({
        "cas_required": c.cas_required,
        "delete_version_after": go_duration(c.delete_version_after),
        "max_versions": c.max_versions,
        "metadata_cas_required": false,
    })
}

/// The mount's description, as `sys/mounts` and the UI mounts route show it.
pub(super) fn mount_info() -> Value {
    json!({
        "accessor": "kv_spike",
        "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
        "deprecation_status": "supported",
        "description": "key/value secret storage",
        "external_entropy_access": false,
        "local": false,
        "options": {"version": "2"},
        "plugin_version": "",
        "running_plugin_version": concat!("v", env!("CARGO_PKG_VERSION"), "+builtin.spike"),
        "running_sha256": "",
        "seal_wrap": false,
        "type": "kv",
        "uuid": "5b1c0e7a-0000-4000-8000-000000000001",
        "path": MOUNT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_metadata_is_written_as_its_serialize_writes_it() {
        let mut rng = fastrand::Rng::with_seed(7);
        let texts = [
            "",
            "2026-11-30T18:29:42.516759385Z",
            "a\"b\\c\u{1}\n",
            "é✓\u{7f}",
        ];
        let mut pick = || texts[rng.usize(..texts.len())].to_owned();
        for i in 0..400u64 {
            let custom: BTreeMap<String, String> = (0..i % 3).map(|_| (pick(), pick())).collect();
            let m = VersionMetadata {
                created_time: pick(),
                custom_metadata: (i % 5 != 0).then_some(&custom),
                deletion_time: pick(),
                destroyed: i % 2 == 0,
                version: [0, 1, i, u64::MAX][(i % 4) as usize],
            };
            let mut out = Vec::new();
            write_version_metadata(&mut out, &m).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&m).unwrap()
            );
        }
    }

    #[test]
    fn subkeys_structure_honours_depth() {
        let v = json!({"a": "1", "o": {"x": {"y": 1}, "z": 2}});
        assert_eq!(
            structure(&v, 0, 1),
            json!({"a": null, "o": {"x": {"y": null}, "z": null}})
        );
        assert_eq!(structure(&v, 1, 1), json!({"a": null, "o": null}));
        assert_eq!(
            structure(&v, 2, 1),
            json!({"a": null, "o": {"x": null, "z": null}})
        );
    }
}

//! Printing results: `--format human` (words and tables), `json` or `yaml`
//! (the API response object).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use spike_api::{
    CipherDecryptResponse, CipherEncryptResponse, PolicyListResponse, PolicyPutResponse,
    PolicyView, RestoreResponse, SecretGetResponse, SecretListResponse, SecretMetadataResponse,
};

use crate::cli::Format;
use crate::error::Error;

/// A result that can be printed in every [`Format`]: JSON and YAML come
/// from `Serialize`, the human form from [`Render::human`].
pub trait Render: Serialize {
    /// The text shown with `--format human`, ending in a newline.
    fn human(&self) -> String;
}

/// The text of `value` in `format`, ending in a newline.
///
/// # Errors
///
/// [`Error::Other`] if serialization fails (it does not for API types).
pub fn render<T: Render>(format: Format, value: &T) -> Result<String, Error> {
    let mut text = match format {
        Format::Human => value.human(),
        Format::Json => serde_json::to_string_pretty(value)
            .map_err(|e| Error::Other(format!("cannot format JSON: {e}")))?,
        Format::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| Error::Other(format!("cannot format YAML: {e}")))?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// An operation whose answer is `{}`: JSON/YAML print `{}`, the human form
/// a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done(pub String);

impl Serialize for Done {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        spike_api::Empty {}.serialize(s)
    }
}

impl Render for Done {
    fn human(&self) -> String {
        format!("{}\n", self.0)
    }
}

impl Render for SecretGetResponse {
    fn human(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.data {
            let _ = writeln!(out, "{key}: {value}");
        }
        out
    }
}

impl Render for SecretListResponse {
    fn human(&self) -> String {
        if self.keys.is_empty() {
            return "No secrets.\n".into();
        }
        lines(&self.keys)
    }
}

impl Render for SecretMetadataResponse {
    fn human(&self) -> String {
        let m = &self.metadata;
        let mut out = String::new();
        let _ = writeln!(out, "Current version: {}", m.current_version);
        let _ = writeln!(out, "Oldest version:  {}", m.oldest_version);
        let _ = writeln!(out, "Created:         {}", m.created_time);
        let _ = writeln!(out, "Updated:         {}", m.updated_time);
        let _ = writeln!(out, "Max versions:    {}", m.max_versions);
        if !self.versions.is_empty() {
            let mut versions: Vec<_> = self.versions.values().collect();
            versions.sort_by_key(|v| v.version);
            let width = versions
                .iter()
                .map(|v| v.created_time.len())
                .max()
                .unwrap_or(0)
                .max("Created".len());
            let _ = writeln!(out, "\nVersion  {:<width$}  Deleted", "Created");
            for v in versions {
                let _ = writeln!(
                    out,
                    "{:<7}  {:<width$}  {}",
                    v.version,
                    v.created_time,
                    v.deleted_time.as_deref().unwrap_or("-")
                );
            }
        }
        out
    }
}

impl Render for PolicyPutResponse {
    fn human(&self) -> String {
        format!("Policy `{}` saved.\n", self.id)
    }
}

impl Render for PolicyView {
    fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Name:            {}", self.name);
        let _ = writeln!(out, "ID:              {}", self.id);
        let _ = writeln!(out, "SPIFFE ID regex: {}", self.spiffeid_pattern);
        let _ = writeln!(out, "Path regex:      {}", self.path_pattern);
        let _ = writeln!(out, "Permissions:     {}", self.permissions.join(", "));
        let _ = writeln!(out, "Created:         {}", self.created_at);
        let _ = writeln!(out, "Updated:         {}", self.updated_at);
        let _ = writeln!(out, "Created by:      {}", self.created_by);
        out
    }
}

impl Render for PolicyListResponse {
    fn human(&self) -> String {
        if self.policies.is_empty() {
            return "No policies.\n".into();
        }
        let mut out = String::new();
        for p in &self.policies {
            if p.id == p.name {
                let _ = writeln!(out, "{}", p.name);
            } else {
                let _ = writeln!(out, "{} (id {})", p.name, p.id);
            }
        }
        out
    }
}

impl Render for RestoreResponse {
    fn human(&self) -> String {
        if self.restored {
            return format!(
                "Share accepted. Nexus is restored and unsealed ({} share{} used).\n",
                self.collected,
                plural(self.collected)
            );
        }
        format!(
            "Share accepted: {} collected, {} more needed. Run `spike operator restore` again \
             with the next share.\n",
            self.collected, self.remaining
        )
    }
}

/// The result of `operator recover`: the files written (never the shares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// The share files, in id order.
    pub files: Vec<PathBuf>,
}

impl Render for Recovered {
    fn human(&self) -> String {
        let mut out = format!(
            "Wrote {} share file{} (mode 0600):\n",
            self.files.len(),
            plural(self.files.len())
        );
        for f in &self.files {
            let _ = writeln!(out, "  {}", f.display());
        }
        out.push_str("Keep them apart and offline; any threshold of them rebuilds the root key.\n");
        out
    }
}

impl Render for CipherEncryptResponse {
    fn human(&self) -> String {
        format!("{}\n", self.ciphertext)
    }
}

impl Render for CipherDecryptResponse {
    fn human(&self) -> String {
        format!("{}\n", self.plaintext)
    }
}

fn lines(items: &[String]) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(item);
        out.push('\n');
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

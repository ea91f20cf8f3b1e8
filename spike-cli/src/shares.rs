//! Root-key shares on the operator's side: recovery files and restore input.
//!
//! Files hold [`Share::to_text`]'s `spike:<id>:<hex>`, as upstream SPIKE's
//! do, so they work with either implementation. Share text never appears in
//! an error.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use spike_api::{RecoverResponse, RestoreRequest, ShardBytes};
use spike_crypto::Share;
use zeroize::Zeroizing;

use crate::error::Error;

/// The recovery file name of share `id`: `spike.recovery.<id>.txt`.
pub fn share_file_name(id: u8) -> String {
    format!("spike.recovery.{id}.txt")
}

/// The shares of a recover answer, validated, in id order.
///
/// # Errors
///
/// [`Error::Other`] if an id is not 1..=255 or a value is not a valid
/// share.
pub fn shares_of(response: &RecoverResponse) -> Result<Vec<Share>, Error> {
    let mut shares = Vec::with_capacity(response.shards.len());
    for (id, bytes) in &response.shards {
        let id: u8 = id
            .parse()
            .ok()
            .filter(|&i| i != 0)
            .ok_or_else(|| Error::Other(format!("Nexus sent a share with a bad id `{id}`")))?;
        let share = Share::new(id, *bytes.expose())
            .map_err(|e| Error::Other(format!("Nexus sent an invalid share {id}: {e}")))?;
        shares.push(share);
    }
    if shares.is_empty() {
        return Err(Error::Other("Nexus sent no shares".into()));
    }
    shares.sort_by_key(Share::id);
    Ok(shares)
}

/// Writes one file per share into `dir` (created with mode 0700 if absent),
/// each created new with mode 0600. Refuses, before writing anything, if
/// any of the files exists; a file that appears meanwhile is not
/// overwritten either.
///
/// # Errors
///
/// [`Error::Other`] naming an existing file; [`Error::Io`] on I/O failure.
pub fn write_share_files(dir: &Path, shares: &[Share]) -> Result<Vec<PathBuf>, Error> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    } else if !dir.is_dir() {
        return Err(Error::Other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let paths: Vec<PathBuf> = shares
        .iter()
        .map(|s| dir.join(share_file_name(s.id())))
        .collect();
    if let Some(existing) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(Error::Other(format!(
            "{} already exists: refusing to overwrite a share file; move the old files away or \
             choose another --out",
            existing.display()
        )));
    }
    for (share, path) in shares.iter().zip(&paths) {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let mut text = share.to_text();
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(paths)
}

/// Parses one share as typed or read (`spike:<id>:<hex>`, whitespace
/// around it ignored).
///
/// # Errors
///
/// [`Error::Usage`] saying what is wrong, without echoing the input.
pub fn parse_share(text: &str) -> Result<Share, Error> {
    Share::from_text(text).map_err(|e| {
        Error::Usage(format!(
            "not a share: {e}; a share looks like `spike:1:` followed by 64 hex digits \
             (the contents of a spike.recovery.<id>.txt file)"
        ))
    })
}

/// The restore request for a share.
pub fn restore_request(share: &Share) -> RestoreRequest {
    RestoreRequest {
        id: share.id(),
        shard: ShardBytes::new(*share.value()),
    }
}

/// Reads one share: from a hidden prompt if stdin is a terminal, else from
/// stdin (at most one share's worth of text).
///
/// # Errors
///
/// [`Error::Io`] when reading fails, [`Error::Usage`] when the text is not
/// a share.
pub fn read_share_from_stdin() -> Result<Share, Error> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password("Share (spike:<id>:<hex>, hidden): ")
                .map_err(|e| Error::io("cannot read the share from the terminal", e))?,
        )
    } else {
        read_share_text(std::io::stdin().lock())?
    };
    parse_share(&text)
}

/// Reads share text from a non-terminal reader (at most 4 KiB).
///
/// # Errors
///
/// [`Error::Io`] on read failure, [`Error::Usage`] for too much or
/// non-UTF-8 input.
pub fn read_share_text(reader: impl Read) -> Result<Zeroizing<String>, Error> {
    const MAX: u64 = 4096;
    let mut bytes = Zeroizing::new(Vec::new());
    reader
        .take(MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read the share from stdin", e))?;
    if bytes.len() as u64 > MAX {
        return Err(Error::Usage(
            "stdin holds more than one share's worth of text: give one share per run".into(),
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Usage("the share is not UTF-8 text".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

//! Reading what the user hands over: `KEY=VALUE` pairs, files, stdin.
//!
//! Secret values never appear in an error or a `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::Error;

/// Largest value file or stdin read as one secret value or cipher input
/// (the server takes at most 1 MiB of secret data, 2 MiB bodies).
pub const MAX_INPUT_BYTES: u64 = 2 * 1024 * 1024;

/// One `KEY=…` argument of `secret put`, as typed. Parsing never fails, so
/// clap never echoes a mistyped argument (which may be a secret value) in
/// its error; [`resolve_pairs`] validates it without showing the value.
#[derive(Clone)]
pub struct RawPair(Zeroizing<String>);

impl RawPair {
    /// Wraps one argument (a clap value parser: never fails).
    pub fn parse(s: &str) -> Result<RawPair, std::convert::Infallible> {
        Ok(RawPair(Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for RawPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once('=') {
            Some((key, _)) => write!(f, "RawPair({key}=[redacted])"),
            None => f.write_str("RawPair([redacted])"),
        }
    }
}

/// Where a value comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    Literal(&'a str),
    File(&'a Path),
    Stdin,
}

fn split(arg: &str) -> Option<(&str, Source<'_>)> {
    let (key, value) = arg.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    let source = match value {
        "-" => Source::Stdin,
        v if v.len() > 1 && v.starts_with('@') => Source::File(Path::new(&v[1..])),
        v => Source::Literal(v),
    };
    Some((key, source))
}

/// Turns `KEY=VALUE` / `KEY=@FILE` / `KEY=-` arguments into the values to
/// write, reading files and stdin (`stdin` is the reader used for `-`).
///
/// # Errors
///
/// [`Error::Usage`] for an argument without `KEY=`, a key given twice or
/// `-` used twice (never showing a value); [`Error::Io`] when a file or
/// stdin cannot be read.
pub fn resolve_pairs(
    pairs: &[RawPair],
    stdin: &mut dyn Read,
) -> Result<BTreeMap<String, Zeroizing<String>>, Error> {
    let mut values = BTreeMap::new();
    let mut stdin_used = false;
    for (i, pair) in pairs.iter().enumerate() {
        let (key, source) = split(&pair.0).ok_or_else(|| {
            Error::Usage(format!(
                "value argument {} is not KEY=VALUE, KEY=@FILE or KEY=- (not shown: it may be a secret)",
                i + 1
            ))
        })?;
        let value = match source {
            Source::Literal(v) => Zeroizing::new(v.to_owned()),
            Source::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
                read_text(file, &format!("{}", path.display()))?
            }
            Source::Stdin => {
                if stdin_used {
                    return Err(Error::Usage(
                        "only one value can be read from stdin (`KEY=-`)".into(),
                    ));
                }
                stdin_used = true;
                read_text(&mut *stdin, "stdin")?
            }
        };
        if values.insert(key.to_owned(), value).is_some() {
            return Err(Error::Usage(format!("key `{key}` is given twice")));
        }
    }
    Ok(values)
}

/// Reads UTF-8 text (at most [`MAX_INPUT_BYTES`]), dropping one trailing
/// newline (`\n` or `\r\n`).
fn read_text(reader: impl Read, what: &str) -> Result<Zeroizing<String>, Error> {
    let bytes = read_limited(reader, what)?;
    let mut text = Zeroizing::new(
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Usage(format!("{what} is not UTF-8 text")))?,
    );
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Reads all bytes (at most [`MAX_INPUT_BYTES`]).
pub fn read_limited(reader: impl Read, what: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut bytes = Zeroizing::new(Vec::new());
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(Error::Usage(format!(
            "{what} is larger than {MAX_INPUT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Reads a file, or stdin for `None` or `-`.
pub fn read_input(path: Option<&PathBuf>) -> Result<Zeroizing<Vec<u8>>, Error> {
    match path {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
            read_limited(file, &path.display().to_string())
        }
        _ => read_limited(std::io::stdin().lock(), "stdin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sources() {
        assert_eq!(split("a=b"), Some(("a", Source::Literal("b"))));
        assert_eq!(split("a=b=c"), Some(("a", Source::Literal("b=c"))));
        assert_eq!(split("a="), Some(("a", Source::Literal(""))));
        assert_eq!(split("a=@"), Some(("a", Source::Literal("@"))));
        assert_eq!(split("a=-"), Some(("a", Source::Stdin)));
        assert_eq!(split("a=@f"), Some(("a", Source::File(Path::new("f")))));
        assert_eq!(split("=b"), None);
        assert_eq!(split("ab"), None);
    }
}

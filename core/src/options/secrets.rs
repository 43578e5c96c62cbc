//! Build secrets: where a secret's value comes from ([`SecretSource`]: a file, a value given in
//! memory, or an environment variable), the CLI's `--secret id=X,src=FILE|env=VAR` syntax
//! ([`SecretSpec`]) and loading them for a solve ([`load_secrets`], [`read_secrets`]).
//!
//! One meaning in every face: the Rust API, the CLI, Python (`kiln.secret_file` /
//! `kiln.secret_value`), Node (`secretFile` / `secretValue`) and C
//! (`kiln_solve_opts_add_secret_file` / `kiln_solve_opts_add_secret_value`) all build a
//! [`SecretSource`] and load it here, so the size and file-type rules and the error wording are
//! the same everywhere. No error (and no `Debug` output) ever contains a secret's value, nor the
//! path of a file source: a path given where a value was meant would otherwise be printed.

use super::csv;
use super::{path_str, OptionMap};
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// A regular file on the client (`src=` / `source=`, `secret_file(path)`).
    File(PathBuf),
    /// The value itself (`secret_value(bytes)`), any bytes.
    Value(Vec<u8>),
    /// An environment variable of the client (`env=`).
    Env(String),
}

impl std::fmt::Debug for SecretSource {
    /// Names the kind only: `Debug` output ends up in logs and panics, and neither a value nor a
    /// path that may be a mistaken value belongs there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(_) => f.write_str("SecretSource::File(..)"),
            SecretSource::Value(v) => write!(f, "SecretSource::Value({} bytes)", v.len()),
            SecretSource::Env(name) => write!(f, "SecretSource::Env({name:?})"),
        }
    }
}

/// One parsed `--secret` option: `id=X,src=FILE` or `id=X,env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretSpec {
    /// The id a secret mount asks for.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

const SECRET_KEYS: &[&str] = &["id", "type", "src", "source", "env"];

impl SecretSpec {
    /// Parses `id=X,src=FILE` / `id=X,env=VAR` (`source=` is another spelling of `src=`, and
    /// `type=file|env` may be given; with `type=env`, `src=` names the variable like buildctl).
    pub fn parse(s: &str) -> Result<SecretSpec> {
        let map = OptionMap::new(csv::parse_csv(s)?)?;
        map.check_keys("a secret", SECRET_KEYS, SECRET_KEYS, |_| None)?;
        let id = map.required("id", "a secret needs id=ID")?.to_owned();
        let src = match (map.get("src"), map.get("source")) {
            (Some(a), Some(b)) => {
                return Err(Error::option(
                    "source",
                    b,
                    format!("source is another spelling of src, and src={a} is given too; give one"),
                ))
            }
            (a, b) => a.or(b),
        };
        let env = map.get("env");
        let missing = || {
            Error::option(
                "src",
                "",
                format!("secret {id} needs src=FILE (or source=FILE) or env=VAR; neither is given"),
            )
        };
        let source = match map.get("type") {
            Some("file") => match (src, env) {
                (_, Some(e)) => {
                    return Err(Error::option("env", e, "env= does not apply to type=file; give src=FILE or type=env"))
                }
                (Some(f), None) => SecretSource::File(non_empty("src", f)?.into()),
                (None, None) => return Err(missing()),
            },
            Some("env") => match (src, env) {
                (Some(f), Some(e)) => {
                    return Err(Error::option(
                        "src",
                        f,
                        format!("type=env takes the variable from env={e} or src=, not both"),
                    ))
                }
                (_, Some(v)) | (Some(v), None) => SecretSource::Env(non_empty("env", v)?.to_owned()),
                (None, None) => return Err(missing()),
            },
            Some(other) => return Err(Error::option("type", other, "expected file or env")),
            None => match (src, env) {
                (Some(f), Some(e)) => {
                    return Err(Error::option(
                        "env",
                        e,
                        format!("give either src= or env=, not both (src={f} is given too)"),
                    ))
                }
                (Some(f), None) => SecretSource::File(non_empty("src", f)?.into()),
                (None, Some(e)) => SecretSource::Env(non_empty("env", e)?.to_owned()),
                (None, None) => return Err(missing()),
            },
        };
        Ok(SecretSpec { id, source })
    }

    /// The canonical CSV form; [`SecretSpec::parse`] reads it back unchanged (a
    /// [`SecretSource::Value`], which `parse` never makes, has none: it is written as `src=`).
    pub fn to_csv(&self) -> String {
        let (k, v) = match &self.source {
            SecretSource::File(p) => ("src", path_str(p)),
            SecretSource::Env(e) => ("env", e.clone()),
            // A value has no CSV form (a value on a command line would leak into process lists).
            SecretSource::Value(_) => ("src", String::new()),
        };
        csv::to_csv(&[("id", self.id.clone()), (k, v)])
    }
}

/// The largest secret value accepted (BuildKit's limit: 500 KiB).
pub const MAX_SECRET_BYTES: u64 = 500 * 1024;

impl SecretSource {
    /// A secret read from the file at `path` when the solve starts.
    pub fn file(path: impl Into<PathBuf>) -> SecretSource {
        SecretSource::File(path.into())
    }

    /// A secret whose value is `value` (any bytes).
    pub fn value(value: impl Into<Vec<u8>>) -> SecretSource {
        SecretSource::Value(value.into())
    }

    /// What this source is, for errors: `a file`, `a value`, `environment variable NAME`.
    fn kind(&self) -> String {
        match self {
            SecretSource::File(_) => "a file".to_owned(),
            SecretSource::Value(_) => "a value".to_owned(),
            SecretSource::Env(v) => format!("environment variable {v}"),
        }
    }

    /// Reads the secret's value: a regular file (a fifo, device or directory is refused, so a
    /// secret can never hang a build or read without end), a given value or an environment
    /// variable, at most [`MAX_SECRET_BYTES`] in every case. Errors name the secret's `id` and
    /// the source's kind (and a variable's name), never the value or a file's path.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        let too_large = || {
            Error::option(
                "secrets",
                id,
                format!("secret {id:?} ({}) is larger than {MAX_SECRET_BYTES} bytes", self.kind()),
            )
        };
        let value = match self {
            SecretSource::File(p) => {
                let io = |what: &str, e: std::io::Error| {
                    Error::with_source(ErrorKind::Io, format!("secret {id:?} (a file): {what}"), e)
                };
                let meta = std::fs::metadata(p).map_err(|e| io("cannot stat the file", e))?;
                if !meta.is_file() {
                    return Err(Error::option(
                        "secrets",
                        id,
                        format!("secret {id:?} (a file): the path is not a regular file; give a file"),
                    ));
                }
                let f = std::fs::File::open(p).map_err(|e| io("cannot open the file", e))?;
                let mut value = Vec::new();
                f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut value).map_err(|e| io("cannot read the file", e))?;
                value
            }
            SecretSource::Value(v) => v.clone(),
            SecretSource::Env(v) => std::env::var_os(v).map(|s| s.into_encoded_bytes()).ok_or_else(|| {
                Error::option("env", v.as_str(), format!("secret {id:?}: the environment variable {v} is not set"))
            })?,
        };
        if value.len() as u64 > MAX_SECRET_BYTES {
            return Err(too_large());
        }
        Ok(value)
    }
}

/// Loads `(id, source)` pairs into the id → value map a solve takes
/// (`SolveOptions::secrets`); an id given twice is an error (silently keeping one would build
/// with the wrong secret).
pub fn load_secrets<'a>(
    secrets: impl IntoIterator<Item = (&'a str, &'a SecretSource)>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for (id, source) in secrets {
        if id.is_empty() {
            return Err(Error::option("id", "", "a secret id must not be empty"));
        }
        if out.contains_key(id) {
            return Err(Error::option(
                "id",
                id,
                format!("secret id {id:?} is given more than once; give each id once"),
            ));
        }
        out.insert(id.to_owned(), source.read(id)?);
    }
    Ok(out)
}

/// Reads every secret of `specs` (the CLI's `--secret` options) into an id → value map, as
/// [`load_secrets`].
pub fn read_secrets(specs: &[SecretSpec]) -> Result<BTreeMap<String, Vec<u8>>> {
    load_secrets(specs.iter().map(|s| (s.id.as_str(), &s.source)))
}

fn non_empty<'a>(key: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() {
        Err(Error::option(key, v, format!("{key} must not be empty")))
    } else {
        Ok(v)
    }
}

impl std::str::FromStr for SecretSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

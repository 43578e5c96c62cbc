//! Cache and export option parsing: the CSV syntax, legacy forms and validation.
//!
//! Every option string uses one syntax ([`csv`]): `type=local,dest=DIR,mode=max`. [`cache`] turns
//! `--export-cache` / `--import-cache` strings into typed specs, [`output`] does the same for
//! result exporters (`--output`) and [`secrets`] for build secrets. Errors are [`Error::Option`]
//! values naming the key, the rejected value and what is accepted.

pub mod cache;
pub mod csv;
pub(crate) mod destinations;
pub mod grants;
pub mod image_export;
pub mod output;
pub mod secrets;

pub use cache::{
    validate_exports, CacheCompression, CacheExportSpec, CacheImportSource, CacheImportSpec, CacheMode, CacheTarget,
};
pub use csv::parse_csv;
pub use grants::{check_ssh_socket, parse_ssh, Entitlement, DEFAULT_SSH_ID};
pub use image_export::ImageExportAttrs;
pub use output::OutputSpec;
pub use secrets::{load_secrets, read_secrets, SecretSource, SecretSpec, MAX_SECRET_BYTES};

use crate::error::{Error, Result};

/// Parsed `key=value` pairs of one option string, keys lowercased (as buildctl does) and each key
/// given at most once. `what` names the option kind in errors ("a cache export of type=local").
pub(crate) struct OptionMap {
    pairs: Vec<(String, String)>,
}

impl OptionMap {
    /// Lowercases keys and rejects a key given twice (silently keeping one would hide a typo).
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Result<OptionMap> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        // Key -> index in `out`: a linear scan per key made thousands of keys quadratic.
        let mut seen: std::collections::HashMap<String, usize> =
            std::collections::HashMap::with_capacity(out.capacity());
        for (k, v) in pairs {
            let k = k.to_ascii_lowercase();
            if let Some((_, first)) = seen.get(&k).and_then(|&i| out.get(i)) {
                return Err(Error::option(
                    k.clone(),
                    v,
                    format!("{k} is given more than once (first as {k}={first}); give each key once"),
                ));
            }
            seen.insert(k.clone(), out.len());
            out.push((k, v));
        }
        Ok(OptionMap { pairs: out })
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Errors on the first key outside `accepted`. `known` holds keys valid for some other form
    /// of the same option (reported as "not accepted by ..." rather than "unknown"); `hint` may
    /// add a suggestion for a key.
    pub(crate) fn check_keys(
        &self,
        what: &str,
        accepted: &[&str],
        known: &[&str],
        hint: impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        for (k, v) in &self.pairs {
            if accepted.contains(&k.as_str()) {
                continue;
            }
            let list = accepted.join(", ");
            let extra = hint(k).map(|h| format!("; {h}")).unwrap_or_default();
            let msg = if known.contains(&k.as_str()) {
                format!("{k} is not accepted by {what}; accepted keys: {list}{extra}")
            } else {
                format!("unknown key {k} for {what}; accepted keys: {list}{extra}")
            };
            return Err(Error::option(k.clone(), v.clone(), msg));
        }
        Ok(())
    }

    /// A boolean option: absent → `default`.
    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key).map(|v| parse_bool(key, v)).transpose().map(|b| b.unwrap_or(default))
    }

    /// A required non-empty value; `expected` says what to give.
    pub(crate) fn required(&self, key: &str, expected: &str) -> Result<&str> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(v) => Err(Error::option(key, v, format!("{key} must not be empty: {expected}"))),
            None => Err(Error::option(key, "", format!("{key} is required: {expected}"))),
        }
    }
}

/// Parses a boolean like Go's `strconv.ParseBool` (what buildctl uses): `true`/`false`, `1`/`0`,
/// `t`/`f` in any of their usual cases.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::option(key, value, "expected true or false")),
    }
}

/// A path value as a string for canonical output (kiln's option strings are UTF-8).
pub(crate) fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_follow_go_parse_bool() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(parse_bool("k", t).unwrap());
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(!parse_bool("k", f).unwrap());
        }
        let e = parse_bool("push", "yes").unwrap_err().to_string();
        assert!(e.contains("push") && e.contains("yes") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = OptionMap::new(vec![("Mode".into(), "min".into()), ("mode".into(), "max".into())]).err().unwrap();
        let s = e.to_string();
        assert!(s.contains("mode") && s.contains("max") && s.contains("more than once"), "{s}");
    }
}

//! The frontend option `cache-imports` in BuildKit's JSON form
//! (`[{"Type":"local","Attrs":{"src":"DIR"}}]`, as `buildctl` sends it to a gateway frontend),
//! read into kiln's [`CacheImportSpec`]s.

use crate::error::{Error, Result};
use crate::options::CacheImportSpec;
use std::collections::BTreeMap;

/// The frontend option carrying cache imports (BuildKit's `cache-imports`).
pub const CACHE_IMPORTS_ATTR: &str = "cache-imports";

/// One entry of BuildKit's JSON (`CacheOptionsEntry`).
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Attrs", default)]
    attrs: BTreeMap<String, String>,
}

/// Parses BuildKit's JSON list of cache imports; each entry is checked as the CSV form is (an
/// unknown type or attribute is an option error naming it).
pub fn parse_cache_imports(json: &str) -> Result<Vec<CacheImportSpec>> {
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| {
        Error::option(
            CACHE_IMPORTS_ATTR,
            json,
            format!("expected a JSON list such as [{{\"Type\":\"local\",\"Attrs\":{{\"src\":\"DIR\"}}}}] ({e})"),
        )
    })?;
    entries.iter().map(|e| CacheImportSpec::from_attrs(&e.kind, &e.attrs)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_json_becomes_specs() {
        let specs = parse_cache_imports(
            r#"[{"Type":"local","Attrs":{"src":"/c, d"}},{"Type":"registry","Attrs":{"ref":"r.example/a:b"}}]"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0],
            CacheImportSpec::from_attrs("local", &[("src".to_owned(), "/c, d".to_owned())].into()).unwrap()
        );
        assert!(parse_cache_imports("[]").unwrap().is_empty());
        assert_eq!(parse_cache_imports("{").unwrap_err().kind(), crate::ErrorKind::Option);
        assert_eq!(parse_cache_imports(r#"[{"Type":"gcs"}]"#).unwrap_err().kind(), crate::ErrorKind::Option);
    }
}

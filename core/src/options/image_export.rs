//! The image attributes of `type=oci` / `type=image` outputs, as BuildKit v0.11's image exporter
//! takes them: `containerimage.config=<image config JSON>`, `source-date-epoch=N` and the
//! annotation keys of `exporter/containerimage/exptypes/annotations.go`
//! (`annotation[-manifest|-manifest-descriptor][[os/arch]].KEY=VALUE`; index annotations are
//! refused for a single-platform export, as BuildKit refuses them).

use super::OptionMap;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The image attributes of one `type=oci` / `type=image` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageExportAttrs {
    /// `containerimage.config=`: an image config JSON (whole, or its `config` object) replacing
    /// the solve's image config for this output (checked to be a JSON object here; read by
    /// `graph::ImageConfig::from_oci_json` when the solve starts).
    pub config_json: Option<String>,
    /// `annotation.K=V` / `annotation-manifest.K=V`: manifest annotations, added to the image
    /// config's (these win).
    pub manifest_annotations: BTreeMap<String, String>,
    /// `annotation-manifest-descriptor.K=V`: annotations of the manifest's descriptor.
    pub descriptor_annotations: BTreeMap<String, String>,
    /// `annotation-manifest[os/arch].K=V` and `annotation-manifest-descriptor[os/arch].K=V`:
    /// (platform as written, descriptor?, key, value), applied when the export is for that
    /// platform (the platform string is parsed when the solve starts).
    pub platform_annotations: Vec<(String, bool, String, String)>,
    /// `source-date-epoch=N`: overrides the solve's `SOURCE_DATE_EPOCH` for this output.
    pub source_date_epoch: Option<i64>,
    /// The raw key/value pairs, in order, for [`ImageExportAttrs::to_pairs`].
    raw: Vec<(String, String)>,
}

/// The image attribute keys that are not annotations.
pub(crate) const IMAGE_ATTR_KEYS: &[&str] = &["containerimage.config", "source-date-epoch"];

/// Parses a `source-date-epoch` / `SOURCE_DATE_EPOCH` value: whole seconds since the Unix epoch.
pub fn parse_source_date_epoch(key: &str, value: &str) -> Result<i64> {
    value.trim().parse::<i64>().map_err(|_| {
        Error::option(key, value, "SOURCE_DATE_EPOCH is whole seconds since 1970-01-01T00:00:00Z (e.g. 1700000000)")
    })
}

impl ImageExportAttrs {
    /// Takes the image attributes out of `map`, so that the output's own keys can be checked.
    pub(crate) fn take(map: &mut OptionMap) -> Result<ImageExportAttrs> {
        let mut attrs = ImageExportAttrs::default();
        let mut rest = Vec::with_capacity(map.pairs.len());
        for (k, v) in std::mem::take(&mut map.pairs) {
            match k.as_str() {
                "containerimage.config" => {
                    if !serde_json::from_str::<serde_json::Value>(&v).is_ok_and(|j| j.is_object()) {
                        return Err(Error::option(
                            k,
                            v,
                            "a JSON object: an image config, or its config object ({\"Env\": [..], \"Cmd\": [..]})",
                        ));
                    }
                    attrs.config_json = Some(v.clone());
                }
                "source-date-epoch" => attrs.source_date_epoch = Some(parse_source_date_epoch(&k, &v)?),
                _ if k.starts_with("annotation") => attrs.annotation(&k, &v)?,
                _ => {
                    rest.push((k, v));
                    continue;
                }
            }
            attrs.raw.push((k, v));
        }
        map.pairs = rest;
        Ok(attrs)
    }

    /// One `annotation…` key (BuildKit's `^annotation(?:-([a-z-]+))?(?:\[([A-Za-z0-9_/-]+)\])?\.(\S+)$`).
    fn annotation(&mut self, k: &str, v: &str) -> Result<()> {
        let expected =
            "annotation.KEY, annotation-manifest[.|[os/arch].]KEY or annotation-manifest-descriptor[.|[os/arch].]KEY \
                        (annotation-index and annotation-index-descriptor need a multi-platform export)";
        let rest = &k["annotation".len()..];
        let (kind, rest) = match rest.strip_prefix('-') {
            Some(r) => {
                let end = r.find(['[', '.']).unwrap_or(r.len());
                (&r[..end], &r[end..])
            }
            None => ("", rest),
        };
        let (plat, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((p, after)) => (Some(p), after),
                None => return Err(Error::option(k, v, expected)),
            },
            None => (None, rest),
        };
        let key = match rest.strip_prefix('.') {
            Some(key) if !key.is_empty() && !key.chars().any(char::is_whitespace) => key,
            _ => return Err(Error::option(k, v, expected)),
        };
        let descriptor = match kind {
            "" | "manifest" => false,
            "manifest-descriptor" => true,
            "index" | "index-descriptor" => {
                return Err(Error::option(k, v, "index annotations not supported for single platform export"))
            }
            _ => return Err(Error::option(k, v, format!("unrecognized annotation type {kind}; expected {expected}"))),
        };
        match plat {
            Some(_) if kind.is_empty() => {
                Err(Error::option(k, v, format!("a platform applies to manifest annotations; expected {expected}")))
            }
            Some(p) => {
                self.platform_annotations.push((p.to_owned(), descriptor, key.to_owned(), v.to_owned()));
                Ok(())
            }
            None => {
                let target = if descriptor { &mut self.descriptor_annotations } else { &mut self.manifest_annotations };
                target.insert(key.to_owned(), v.to_owned());
                Ok(())
            }
        }
    }

    /// The (manifest, descriptor) annotations for an export whose platform `is_platform`
    /// accepts: the unqualified ones plus the matching qualified ones (BuildKit's
    /// `AnnotationsGroup.Platform`).
    pub fn annotations_for(
        &self,
        is_platform: impl Fn(&str) -> bool,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (mut manifest, mut descriptor) = (self.manifest_annotations.clone(), self.descriptor_annotations.clone());
        for (p, is_descriptor, k, v) in &self.platform_annotations {
            if is_platform(p) {
                let target = if *is_descriptor { &mut descriptor } else { &mut manifest };
                target.insert(k.clone(), v.clone());
            }
        }
        (manifest, descriptor)
    }

    /// The attributes as given (for an output's canonical CSV form).
    pub fn to_pairs(&self) -> &[(String, String)] {
        &self.raw
    }

    /// True when no image attribute was given.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

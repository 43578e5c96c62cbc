//! Result exporter options (buildctl's `--output type=...`) in the shared CSV syntax, with errors
//! naming the key, the value and what is accepted. Build secrets live in [`super::secrets`].

use super::csv;
use super::image_export::{ImageExportAttrs, IMAGE_ATTR_KEYS};
use super::{path_str, OptionMap};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// One parsed `--output` option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutputSpec {
    /// `type=local,dest=DIR`: the result's files copied into a directory.
    Local {
        /// The directory.
        dest: PathBuf,
    },
    /// `type=tar,dest=FILE`: the result's files as a tar stream.
    Tar {
        /// The tar file; `-` means stdout.
        dest: PathBuf,
    },
    /// `type=oci,dest=...`: an OCI image layout, as a tar file or a directory.
    Oci {
        /// The tar file (`-` = stdout) or layout directory.
        dest: PathBuf,
        /// True (the default, like buildctl): `dest` is a tar file. False when `tar=false` is
        /// given or `dest` ends with `/` or is an existing directory: `dest` is a layout directory.
        tar: bool,
        /// `name=`: the image name recorded in the layout's annotations.
        name: Option<String>,
        /// `oci-mediatypes=` (default true).
        oci_mediatypes: bool,
        /// `containerimage.config=`, `source-date-epoch=`, `annotation…=`.
        image: ImageExportAttrs,
    },
    /// `type=image,name=REF[,push=true]`: an image in the engine, optionally pushed.
    Image {
        /// The image reference.
        name: String,
        /// `push=`: push to the registry.
        push: bool,
        /// `registry.insecure=`: plain http, for loopback registries.
        insecure: bool,
        /// `containerimage.config=`, `source-date-epoch=`, `annotation…=`.
        image: ImageExportAttrs,
    },
}

const OUTPUT_TYPES: &str = "local, tar, oci, image";
const LOCAL_KEYS: &[&str] = &["type", "dest"];
const TAR_KEYS: &[&str] = &["type", "dest"];
const OCI_KEYS: &[&str] = &["type", "dest", "tar", "name", "oci-mediatypes"];
const IMAGE_KEYS: &[&str] = &["type", "name", "push", "registry.insecure"];
const ALL_OUTPUT_KEYS: &[&str] = &["type", "dest", "tar", "name", "oci-mediatypes", "push", "registry.insecure"];

impl OutputSpec {
    /// Parses an `--output` value; `type=` is required.
    ///
    /// For `type=oci`, whether `dest` is a directory is checked on disk when `tar=` is not given.
    pub fn parse(s: &str) -> Result<OutputSpec> {
        Self::from_pairs(csv::parse_csv(s)?)
    }

    /// An output from an exporter's type and attributes (BuildKit's `SolveRequest.Exporter` and
    /// `ExporterAttrs`), checked as the CSV form is.
    pub fn from_attrs(kind: &str, attrs: &std::collections::BTreeMap<String, String>) -> Result<OutputSpec> {
        Self::from_pairs(super::cache::type_and_attrs(kind, attrs))
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<OutputSpec> {
        let mut map = OptionMap::new(pairs)?;
        let Some(t) = map.get("type").map(str::to_owned) else {
            return Err(Error::option("type", "", format!("type is required; supported: {OUTPUT_TYPES}")));
        };
        let image = if t == "oci" || t == "image" { ImageExportAttrs::take(&mut map)? } else { Default::default() };
        let hint = |k: &str| match k {
            "dest" => Some("type=image has no dest; use type=oci or type=tar for a file".to_owned()),
            "name" | "push" | "registry.insecure" => Some(format!("{k} applies to type=image")),
            "tar" | "oci-mediatypes" => Some(format!("{k} applies to type=oci")),
            _ if k.starts_with("annotation") || IMAGE_ATTR_KEYS.contains(&k) => {
                Some(format!("{k} applies to type=oci and type=image"))
            }
            _ => None,
        };
        let dest_expected = |t: &str| format!("an output of type={t} needs dest=PATH");
        match t.as_str() {
            "local" => {
                map.check_keys("an output of type=local", LOCAL_KEYS, ALL_OUTPUT_KEYS, hint)?;
                let dest = map.required("dest", &dest_expected("local"))?;
                if dest == "-" {
                    return Err(Error::option("dest", dest, "type=local writes a directory; use type=tar for stdout"));
                }
                Ok(OutputSpec::Local { dest: dest.into() })
            }
            "tar" => {
                map.check_keys("an output of type=tar", TAR_KEYS, ALL_OUTPUT_KEYS, hint)?;
                Ok(OutputSpec::Tar { dest: map.required("dest", &dest_expected("tar"))?.into() })
            }
            "oci" => {
                map.check_keys("an output of type=oci", OCI_KEYS, ALL_OUTPUT_KEYS, hint)?;
                let dest = map.required("dest", &dest_expected("oci"))?;
                let dir_like = dest.ends_with('/') || (dest != "-" && std::path::Path::new(dest).is_dir());
                let tar =
                    match map.get("tar").map(|v| super::parse_bool("tar", v)).transpose()? {
                        Some(true) if dir_like => return Err(Error::option(
                            "dest",
                            dest,
                            "dest is a directory but tar=true; give a file path, or tar=false for a layout directory",
                        )),
                        Some(explicit) => explicit,
                        None => !dir_like,
                    };
                if dest == "-" && !tar {
                    return Err(Error::option("dest", dest, "stdout (-) takes a tar stream; drop tar=false"));
                }
                let name = match map.get("name") {
                    None => None,
                    Some(_) => Some(map.required("name", "expected name=REF")?.to_owned()),
                };
                Ok(OutputSpec::Oci {
                    dest: dest.into(),
                    tar,
                    name,
                    oci_mediatypes: map.bool_or("oci-mediatypes", true)?,
                    image,
                })
            }
            "image" => {
                map.check_keys("an output of type=image", IMAGE_KEYS, ALL_OUTPUT_KEYS, hint)?;
                let name = map.required("name", "an output of type=image needs name=HOST/REPO[:TAG]")?;
                Ok(OutputSpec::Image {
                    name: name.to_owned(),
                    push: map.bool_or("push", false)?,
                    insecure: map.bool_or("registry.insecure", false)?,
                    image,
                })
            }
            other => {
                Err(Error::option("type", other, format!("unknown output type {other:?}; supported: {OUTPUT_TYPES}")))
            }
        }
    }

    /// The canonical CSV form (defaults omitted); [`OutputSpec::parse`] reads it back unchanged.
    pub fn to_csv(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match self {
            OutputSpec::Local { dest } => {
                pairs.push(("type", "local".into()));
                pairs.push(("dest", path_str(dest)));
            }
            OutputSpec::Tar { dest } => {
                pairs.push(("type", "tar".into()));
                pairs.push(("dest", path_str(dest)));
            }
            OutputSpec::Oci { dest, tar, name, oci_mediatypes, image } => {
                pairs.push(("type", "oci".into()));
                pairs.push(("dest", path_str(dest)));
                if !tar {
                    pairs.push(("tar", "false".into()));
                }
                if let Some(n) = name {
                    pairs.push(("name", n.clone()));
                }
                if !oci_mediatypes {
                    pairs.push(("oci-mediatypes", "false".into()));
                }
                pairs.extend(image.to_pairs().iter().map(|(k, v)| (k.as_str(), v.clone())));
            }
            OutputSpec::Image { name, push, insecure, image } => {
                pairs.push(("type", "image".into()));
                pairs.push(("name", name.clone()));
                if *push {
                    pairs.push(("push", "true".into()));
                }
                if *insecure {
                    pairs.push(("registry.insecure", "true".into()));
                }
                pairs.extend(image.to_pairs().iter().map(|(k, v)| (k.as_str(), v.clone())));
            }
        }
        csv::to_csv(&pairs)
    }
}

impl std::str::FromStr for OutputSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

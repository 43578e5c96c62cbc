//! `Platform`: an `os/arch[/variant]` as sources, solves and image configs name it — parsed from
//! the strings users type (`linux/amd64`, `linux/arm/v7`, `local`), normalized the way
//! containerd's `platforms.Normalize` (v1.6) does, and converted to and from the LLB `pb::Platform`.
//! Which platforms a worker can run is the worker's business (`worker::platform`), not this file's.

use super::pb;
use crate::error::{Error, Result};

/// A normalized `os/arch[/variant]` (GOOS/GOARCH spellings: `linux`, `amd64`, `arm64`, `arm`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling (`amd64`, `arm64`, `arm`, ...).
    pub architecture: String,
    /// Variant (`v7`, `v2`, ...) or `""`.
    pub variant: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What [`Platform::from_str`](std::str::FromStr) accepts, for error messages.
pub const PLATFORM_FORMS: &str =
    "os/arch or os/arch/variant (linux/amd64, linux/arm64, linux/arm/v7), or local (this host)";

impl std::str::FromStr for Platform {
    type Err = Error;

    /// Parses `os/arch[/variant]` (normalized: `linux/x86_64` is `linux/amd64`) or `local`.
    fn from_str(s: &str) -> Result<Platform> {
        let t = s.trim();
        if t == "local" {
            return Ok(Platform::host());
        }
        let parts: Vec<&str> = t.split('/').collect();
        let bad = |why: &str| Error::option("platform", s, format!("{why}; expected {PLATFORM_FORMS}"));
        if parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
            return Err(bad("each part must be a non-empty word of letters, digits, _ or -"));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::normalize(os, arch, "")),
            [os, arch, variant] => Ok(Platform::normalize(os, arch, variant)),
            _ => Err(bad("a platform has two or three parts separated by /")),
        }
    }
}

impl Platform {
    /// containerd's `platforms.Normalize` (v1.6): lower-case OS, GOARCH spelling, canonical variant.
    pub fn normalize(os: &str, arch: &str, variant: &str) -> Platform {
        let os = match os.to_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            o => o.to_owned(),
        };
        let arch_l = arch.to_lowercase();
        let (arch, variant) = match arch_l.as_str() {
            "i386" => ("386".to_owned(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                ("amd64".to_owned(), if variant == "v1" { String::new() } else { variant.to_owned() })
            }
            "aarch64" | "arm64" => {
                ("arm64".to_owned(), if variant == "8" || variant == "v8" { String::new() } else { variant.to_owned() })
            }
            "armhf" => ("arm".to_owned(), "v7".to_owned()),
            "armel" => ("arm".to_owned(), "v6".to_owned()),
            "arm" => {
                let v = match variant {
                    "" | "7" => "v7".to_owned(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    v => v.to_owned(),
                };
                ("arm".to_owned(), v)
            }
            a => (a.to_owned(), variant.to_owned()),
        };
        Platform { os, architecture: arch, variant }
    }

    /// The host's platform, normalized (Go's `runtime.GOARCH` spelling; arm hosts report `v7`
    /// as Go's `platforms.DefaultSpec` does).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        let variant = if arch == "arm" { "v7" } else { "" };
        Platform::normalize("linux", arch, variant)
    }

    /// The LLB form (an op's `platform` field).
    pub fn to_pb(&self) -> pb::Platform {
        pb::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }

    /// From the LLB form, normalized.
    pub fn from_pb(p: &pb::Platform) -> Platform {
        Platform::normalize(&p.os, &p.architecture, &p.variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!("linux/x86_64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
        assert_eq!("linux/arm".parse::<Platform>().unwrap().to_string(), "linux/arm/v7");
        assert_eq!("Linux/aarch64/v8".parse::<Platform>().unwrap().to_string(), "linux/arm64");
        assert_eq!("local".parse::<Platform>().unwrap(), Platform::host());
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/v2/x", "linux/am d64"] {
            let e = bad.parse::<Platform>().unwrap_err();
            assert!(e.to_string().contains("os/arch"), "{bad}: {e}");
        }
    }

    #[test]
    fn pb_roundtrip() {
        let p: Platform = "linux/arm/v6".parse().unwrap();
        assert_eq!(Platform::from_pb(&p.to_pb()), p);
    }
}

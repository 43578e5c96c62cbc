//! Platforms an exec can run on natively. BuildKit v0.11.6 normalizes every op's platform
//! (containerd's `platforms.Normalize`) and runs an exec natively when it is one of
//! `archutil.SupportedPlatforms` (the host's, plus `amd64/v2`..`v4` as far as the CPU supports
//! them); otherwise it looks for a QEMU emulator. kiln has no emulator, so a platform that is not
//! native is refused with an error naming both platforms.

use crate::error::{Error, ErrorKind, Result};
use crate::graph::pb;

pub use crate::graph::platform::Platform;

/// containerd's `platforms.Normalize` (v1.6); see [`Platform::normalize`].
pub fn normalize(os: &str, arch: &str, variant: &str) -> Platform {
    Platform::normalize(os, arch, variant)
}

/// The host's platform, normalized; see [`Platform::host`].
pub fn host() -> Platform {
    Platform::host()
}

/// The highest x86-64 micro-architecture level this CPU supports (`""`, `v2`, `v3`, `v4`), as
/// `go-archvariant` decides it.
#[cfg(target_arch = "x86_64")]
fn amd64_level() -> &'static str {
    use std::arch::is_x86_feature_detected as has;
    let v2 = has!("cmpxchg16b") && has!("popcnt") && has!("sse3") && has!("sse4.1") && has!("sse4.2") && has!("ssse3");
    let v3 = v2
        && has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    let v4 = v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
    match (v2, v3, v4) {
        (_, _, true) => "v4",
        (_, true, _) => "v3",
        (true, _, _) => "v2",
        _ => "",
    }
}

/// Platforms this host runs natively, host first (BuildKit's `SupportedPlatforms` without
/// emulators): on amd64 also `amd64/v2`.. up to the CPU's level; on arm also `arm/v6`.
pub fn native() -> Vec<Platform> {
    let h = host();
    let mut out = vec![h.clone()];
    #[cfg(target_arch = "x86_64")]
    {
        let levels: &[&str] = match amd64_level() {
            "v4" => &["v2", "v3", "v4"],
            "v3" => &["v2", "v3"],
            "v2" => &["v2"],
            _ => &[],
        };
        out.extend(levels.iter().map(|v| normalize("linux", "amd64", v)));
    }
    if h.architecture == "arm" && h.variant == "v7" {
        out.push(normalize("linux", "arm", "v6"));
    }
    out
}

/// Refuses an exec whose op platform is not native here. `None` (no platform) means the host's.
pub fn check_exec(op: &str, platform: Option<&pb::Platform>) -> Result<()> {
    let Some(p) = platform else { return Ok(()) };
    check_native(&format!("op {op}"), &Platform::from_pb(p))
}

/// Refuses `want` unless this host runs it natively; the error names `what`, `want` and the
/// host's platforms (kiln has no emulator).
pub fn check_native(what: &str, want: &Platform) -> Result<()> {
    let want = normalize(&want.os, &want.architecture, &want.variant);
    let native = native();
    if native.contains(&want) {
        return Ok(());
    }
    let list: Vec<String> = native.iter().map(ToString::to_string).collect();
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "{what} wants platform {want} but this worker is {} (it runs {}); kiln has no emulator for other platforms",
            native[0],
            list.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(os: &str, arch: &str, variant: &str) -> pb::Platform {
        pb::Platform { os: os.into(), architecture: arch.into(), variant: variant.into(), ..Default::default() }
    }

    #[test]
    fn normalization_follows_containerd() {
        assert_eq!(normalize("Linux", "x86_64", "v1").to_string(), "linux/amd64");
        assert_eq!(normalize("linux", "aarch64", "v8").to_string(), "linux/arm64");
        assert_eq!(normalize("linux", "arm", "").to_string(), "linux/arm/v7");
        assert_eq!(normalize("linux", "armel", "").to_string(), "linux/arm/v6");
        assert_eq!(normalize("linux", "i386", "").to_string(), "linux/386");
    }

    #[test]
    fn host_platform_is_accepted_other_refused() {
        let h = host();
        assert!(check_exec("x", None).is_ok());
        assert!(check_exec("x", Some(&plat("linux", &h.architecture, &h.variant))).is_ok());
        if h.architecture == "amd64" {
            assert!(check_exec("x", Some(&plat("linux", "x86_64", ""))).is_ok());
            assert!(check_exec("x", Some(&plat("linux", "amd64", "v1"))).is_ok());
            let e = check_exec("x", Some(&plat("linux", "arm64", ""))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            let msg = e.to_string();
            assert!(msg.contains("linux/arm64") && msg.contains("linux/amd64"), "{msg}");
            assert!(check_exec("x", Some(&plat("linux", "amd64", "v9"))).is_err());
        }
        assert!(check_exec("x", Some(&plat("windows", &h.architecture, &h.variant))).is_err());
    }
}

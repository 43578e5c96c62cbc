//! `security.insecure`: the privileged container of BuildKit's `security.WithInsecureSpec` plus
//! `oci.WithWriteableSysfs` / `oci.WithWriteableCgroupfs` (executor/oci/spec_unix.go,
//! util/entitlements/security/security_linux.go in BuildKit v0.11.6).

use oci_spec::runtime::{
    Capabilities, Capability, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec,
};

use crate::error::{Error, ErrorKind, Result};

/// Linux capability names by bit number (as containerd's `cap.Current` knows them).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn worker_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Worker, message)
}

/// The capabilities in the effective set of `status` (the text of /proc/self/status).
pub(crate) fn effective_caps(status: &str) -> Result<Capabilities> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .ok_or_else(|| worker_err("security.insecure: /proc/self/status has no CapEff line"))?;
    let bits = u64::from_str_radix(hex, 16)
        .map_err(|e| Error::with_source(ErrorKind::Worker, format!("security.insecure: bad CapEff {hex:?}"), e))?;
    let mut caps = Capabilities::new();
    for (bit, name) in CAP_NAMES.iter().enumerate() {
        if bits & (1u64 << bit) == 0 {
            continue;
        }
        // oci-spec parses capability names through serde (`CAP_X` or `X`).
        let cap: Capability = serde_json::from_value(serde_json::Value::String(format!("CAP_{name}")))
            .map_err(|e| Error::with_source(ErrorKind::Internal, format!("capability CAP_{name}"), e))?;
        caps.insert(cap);
    }
    Ok(caps)
}

/// Index of the first free loop device (`LOOP_CTL_GET_FREE` on /dev/loop-control), 0 when
/// unknown (BuildKit logs and uses 0 too).
fn free_loop_id() -> i64 {
    use std::os::fd::AsRawFd;
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control") else {
        return 0;
    };
    // SAFETY: `f` is an open file descriptor for the duration of the call; LOOP_CTL_GET_FREE takes
    // no argument and only returns an integer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if r < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "failed to get next free loop device");
        return 0;
    }
    i64::from(r)
}

/// Turns `spec` into BuildKit's insecure spec: every capability kiln has (all five sets), no
/// masked or read-only paths, no AppArmor profile, device cgroup allowing every char and block
/// device, /dev/kmsg, cuse, fuse, kvm, net/tun, loop-control and loop0..loop(free+7) nodes, and
/// /sys and /sys/fs/cgroup mounted read-write. (kiln applies no seccomp profile in any mode.)
pub(crate) fn apply(spec: &mut Spec) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("security.insecure: reading", "/proc/self/status", e))?;
    let all = effective_caps(&status)?;
    let in_userns = running_in_userns();
    let process = spec.process_mut().as_mut().ok_or_else(|| worker_err("security.insecure: spec has no process"))?;
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let extend = |set: &Option<Capabilities>| -> Option<Capabilities> {
        let mut s = set.clone().unwrap_or_default();
        s.extend(all.iter().copied());
        Some(s)
    };
    caps.set_bounding(extend(caps.bounding()));
    caps.set_ambient(extend(caps.ambient()));
    caps.set_effective(extend(caps.effective()));
    caps.set_inheritable(extend(caps.inheritable()));
    caps.set_permitted(extend(caps.permitted()));
    process.set_capabilities(Some(caps));
    process.set_apparmor_profile(None);

    let linux = spec.linux_mut().as_mut().ok_or_else(|| worker_err("security.insecure: spec has no linux"))?;
    linux.set_readonly_paths(Some(Vec::new()));
    linux.set_masked_paths(Some(Vec::new()));
    let allow = |typ| {
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access("rwm")
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Worker, "building the OCI runtime spec (devices)", e))
    };
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_devices(Some(vec![allow(LinuxDeviceType::C)?, allow(LinuxDeviceType::B)?]));
    linux.set_resources(Some(resources));
    if !in_userns {
        let mut devices = linux.devices().clone().unwrap_or_default();
        let fixed: [(&str, LinuxDeviceType, i64, i64); 6] = [
            ("/dev/kmsg", LinuxDeviceType::C, 1, 11),
            ("/dev/cuse", LinuxDeviceType::C, 10, 203),
            ("/dev/fuse", LinuxDeviceType::C, 10, 229),
            ("/dev/kvm", LinuxDeviceType::C, 10, 232),
            ("/dev/net/tun", LinuxDeviceType::C, 10, 200),
            ("/dev/loop-control", LinuxDeviceType::C, 10, 237),
        ];
        let loops = (0..=free_loop_id() + 7).map(|i| (format!("/dev/loop{i}"), LinuxDeviceType::B, 7, i));
        for (path, typ, major, minor) in fixed.iter().map(|(p, t, ma, mi)| (p.to_string(), *t, *ma, *mi)).chain(loops) {
            let d = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(major)
                .minor(minor)
                .build()
                .map_err(|e| Error::with_source(ErrorKind::Worker, "building the OCI runtime spec (devices)", e))?;
            devices.push(d);
        }
        linux.set_devices(Some(devices));
    }

    // oci.WithWriteableSysfs / WithWriteableCgroupfs: drop "ro" from the sysfs and cgroup mounts.
    if let Some(mounts) = spec.mounts_mut().as_mut() {
        for m in mounts.iter_mut() {
            if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
                if let Some(opts) = m.options().clone() {
                    m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
                }
            }
        }
    }
    Ok(())
}

/// Whether kiln runs in a user namespace (containerd's `userns.RunningInUserNS`): then device
/// nodes cannot be created and BuildKit adds none.
fn running_in_userns() -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else { return false };
    let fields: Vec<&str> = map.split_whitespace().collect();
    !(fields.len() == 3 && fields[0] == "0" && fields[1] == "0" && fields[2] == "4294967295")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_caps_are_decoded_by_bit() {
        let caps = effective_caps("Name:\tx\nCapEff:\t0000000000200001\n").unwrap();
        assert_eq!(caps.len(), 2);
        assert!(caps.contains(&Capability::Chown));
        assert!(caps.contains(&Capability::SysAdmin));
        let all = effective_caps("CapEff:\t000001ffffffffff\n").unwrap();
        assert_eq!(all.len(), 41);
        assert!(effective_caps("nothing").is_err());
    }
}

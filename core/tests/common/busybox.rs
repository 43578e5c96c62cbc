//! Builds a minimal busybox root filesystem from the host's static `/bin/busybox` (Debian
//! `busybox-static`): the binary, a relative symlink per applet, and minimal /etc files.

#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::process::Command;

/// Where the host's static busybox lives.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fills `dir` with a busybox rootfs: `bin/busybox`, `bin/<applet> -> busybox` for every applet of
/// `busybox --list`, `/etc/passwd` (root, nobody 65534), `/etc/group` (root, nogroup 65534) and an
/// empty `/tmp` (mode 1777). Fails loudly when busybox is missing.
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))
        .map_err(|e| io::Error::new(e.kind(), format!("copying {BUSYBOX} (install busybox-static): {e}")))?;
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("{BUSYBOX} --list failed: {}", out.status)));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    Ok(())
}

//! Local directories both engines get: a busybox rootfs (`rootfs`), a copy-test context (`ctx`)
//! and a secret file. Modes, owners and mtimes are fixed so both engines see the same input.

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mtime every fixture path gets (2020-09-13T12:26:40Z).
pub const FIXTURE_MTIME: i64 = 1_600_000_000;

/// Where the busybox-static binary is looked for.
pub const BUSYBOX: &str = "/bin/busybox";

fn io(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

fn write(p: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(|e| io("mkdir", d, e))?;
    }
    fs::write(p, data).map_err(|e| io("write", p, e))?;
    chmod(p, mode)
}

fn chmod(p: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", p, e))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| io("mkdir", p, e))?;
    chmod(p, mode)
}

fn ln_s(target: &str, p: &Path) -> Result<(), String> {
    symlink(target, p).map_err(|e| io("symlink", p, e))
}

/// Sets every path's mtime (symlinks included) to [`FIXTURE_MTIME`].
fn pin_mtimes(dir: &Path) -> Result<(), String> {
    let st = Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d"])
        .arg(format!("@{FIXTURE_MTIME}"))
        .args(["{}", "+"])
        .status()
        .map_err(|e| format!("find/touch: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("touch -h under {} failed", dir.display()))
    }
}

/// A busybox rootfs: `/bin/busybox` with a relative symlink per applet, `/etc/passwd`,
/// `/etc/group`, `/tmp` (1777), `/root` (700).
pub fn rootfs(dir: &Path) -> Result<(), String> {
    let bb = Path::new(BUSYBOX);
    if !bb.exists() {
        return Err(format!("{BUSYBOX} is missing: install Debian's busybox-static (scripts/setup does)"));
    }
    mkdir(&dir.join("bin"), 0o755)?;
    fs::copy(bb, dir.join("bin/busybox")).map_err(|e| io("copy", bb, e))?;
    chmod(&dir.join("bin/busybox"), 0o755)?;
    let list = Command::new(bb).arg("--list").output().map_err(|e| format!("busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        ln_s("busybox", &dir.join("bin").join(applet))?;
    }
    write(
        &dir.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    write(&dir.join("etc/group"), b"root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n", 0o644)?;
    mkdir(&dir.join("tmp"), 0o1777)?;
    mkdir(&dir.join("root"), 0o700)?;
    chmod(dir, 0o755)?;
    pin_mtimes(dir)
}

/// The copy-test context: files, dirs, symlinks (relative, absolute, dangling), a hard link,
/// setuid/setgid/sticky bits.
pub fn ctx(dir: &Path) -> Result<(), String> {
    mkdir(dir, 0o755)?;
    write(&dir.join("file.txt"), b"hello\n", 0o644)?;
    write(&dir.join("exec.sh"), b"#!/bin/sh\necho run\n", 0o755)?;
    write(&dir.join("private"), b"secret-ish\n", 0o600)?;
    write(&dir.join("dir/a.txt"), b"a\n", 0o644)?;
    write(&dir.join("dir/b.log"), b"b\n", 0o640)?;
    write(&dir.join("dir/sub/c.txt"), b"c\n", 0o644)?;
    write(&dir.join("dir/sub/d.log"), b"d\n", 0o644)?;
    chmod(&dir.join("dir/sub"), 0o750)?;
    ln_s("file.txt", &dir.join("link-rel"))?;
    ln_s("/file.txt", &dir.join("link-abs"))?;
    ln_s("does-not-exist", &dir.join("dangling"))?;
    ln_s("dir", &dir.join("dirlink"))?;
    write(&dir.join("hard1"), b"linked\n", 0o644)?;
    fs::hard_link(dir.join("hard1"), dir.join("hard2")).map_err(|e| io("link", &dir.join("hard2"), e))?;
    write(&dir.join("suid"), b"#!/bin/sh\n", 0o4755)?;
    write(&dir.join("sgid"), b"#!/bin/sh\n", 0o2755)?;
    mkdir(&dir.join("sgid-dir"), 0o2775)?;
    mkdir(&dir.join("sticky-dir"), 0o1777)?;
    mkdir(&dir.join("empty-dir"), 0o755)?;
    pin_mtimes(dir)
}

/// Files owned by non-root users (buildctl resets a local's owners to 0:0 when it sends them).
pub fn owned(dir: &Path) -> Result<(), String> {
    mkdir(&dir.join("sub"), 0o755)?;
    write(&dir.join("sub/owned"), b"owned\n", 0o644)?;
    chown(dir.join("sub/owned"), Some(1234), Some(5678)).map_err(|e| io("chown", &dir.join("sub/owned"), e))?;
    chown(dir.join("sub"), Some(1000), Some(1000)).map_err(|e| io("chown", &dir.join("sub"), e))?;
    pin_mtimes(dir)
}

/// `--local NAME=DIR` pairs and `--secret` CSV values every build gets.
pub type Inputs = (Vec<(String, PathBuf)>, Vec<String>);

/// Creates every fixture under `base`; returns the `--local` pairs and `--secret` values.
pub fn create(base: &Path) -> Result<Inputs, String> {
    let rootfs_dir = base.join("rootfs");
    let ctx_dir = base.join("ctx");
    rootfs(&rootfs_dir)?;
    ctx(&ctx_dir)?;
    owned(&base.join("owned"))?;
    let secret = base.join("secret.txt");
    write(&secret, b"s3cr3t-value\n", 0o600)?;
    Ok((
        vec![("rootfs".to_owned(), rootfs_dir), ("ctx".to_owned(), ctx_dir), ("owned".to_owned(), base.join("owned"))],
        vec![format!("id=mysecret,src={}", secret.display())],
    ))
}

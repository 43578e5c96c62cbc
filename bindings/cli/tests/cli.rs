//! Integration tests of the real `kiln` binary: builds on a temp root with a busybox rootfs (made by
//! `tests/fixtures/make-rootfs`), definitions made with `kiln::graph::State`, progress formats,
//! outputs, locals, secrets, cache commands, workers, `debug dump-llb`, bad input and a held root.

use kiln::graph::{CacheSharing, CopyOptions, ExecOptions, MkfileOptions, MountSpec, State};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temp dir holding an engine root and a busybox rootfs.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/make-rootfs");
        let st = Command::new("sh").arg(&script).arg(dir.path().join("rootfs")).status().expect("run make-rootfs");
        assert!(st.success(), "make-rootfs failed (is busybox-static installed?)");
        Env { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// `kiln --root ROOT ARGS...`, with `stdin` piped in.
    fn kiln(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self.spawn(args);
        let mut input = child.stdin.take().expect("stdin");
        // A command that does not read stdin may exit before we write: ignore EPIPE.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().expect("wait for kiln")
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("KILN_ROOT")
            .env_remove("KILN_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln")
    }

    /// `kiln build --local rootfs=ROOTFS ARGS...` with `st`'s definition on stdin.
    fn build(&self, st: &State, args: &[&str]) -> Output {
        let rootfs = format!("rootfs={}", self.path("rootfs").display());
        let mut all = vec!["build", "--local", rootfs.as_str()];
        all.extend_from_slice(args);
        self.kiln(&all, &def_bytes(st))
    }
}

fn def_bytes(st: &State) -> Vec<u8> {
    st.to_definition().expect("definition").to_bytes()
}

fn base() -> State {
    State::local("rootfs")
}

fn sh(script: &str) -> ExecOptions {
    ExecOptions::shell(script)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kiln failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

#[track_caller]
fn fails(o: &Output) -> String {
    assert!(!o.status.success(), "kiln must fail:\nstdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    text(&o.stderr)
}

/// Whether a plain line is `#N <rest>` with a number N.
fn plain_line(line: &str) -> Option<(usize, &str)> {
    let rest = line.strip_prefix('#')?;
    let (n, tail) = rest.split_once(' ')?;
    Some((n.parse().ok()?, tail))
}

#[test]
fn plain_progress_looks_like_buildctl_and_second_run_is_cached() {
    let env = Env::new();
    let st = base().run(sh("echo hello-from-run; echo to-stderr >&2")).root();
    let err = ok(&env.build(&st, &["--progress", "plain"]));
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("#1 ")), "{err}");
    let run_num = lines
        .iter()
        .filter_map(|l| plain_line(l))
        .find(|(_, t)| t.contains("echo hello-from-run") && !t.contains("DONE"))
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no header line for the RUN vertex:\n{err}"));
    let prefix = format!("#{run_num} ");
    let out_line = lines
        .iter()
        .find(|l| l.starts_with(&prefix) && l.ends_with(" hello-from-run"))
        .unwrap_or_else(|| panic!("container stdout must be prefixed with {prefix:?}:\n{err}"));
    // `#N 0.123 hello-from-run`: the second field is the time since the vertex started.
    let secs = out_line[prefix.len()..].split(' ').next().unwrap();
    assert!(secs.parse::<f64>().is_ok(), "{out_line}");
    assert!(lines.iter().any(|l| l.starts_with(&prefix) && l.ends_with(" to-stderr")), "stderr lines too:\n{err}");
    let done = lines.iter().find(|l| l.starts_with(&format!("#{run_num} DONE "))).expect("DONE line");
    let dur = done.trim_start_matches(&format!("#{run_num} DONE ")).strip_suffix('s').expect("DONE 0.Xs");
    assert!(dur.parse::<f64>().is_ok() && dur.contains('.'), "{done}");
    for l in &lines {
        assert!(plain_line(l).is_some(), "every plain line starts with #N: {l:?}\n{err}");
    }

    let err = ok(&env.build(&st, &["--progress", "plain"]));
    let run_num = err
        .lines()
        .filter_map(plain_line)
        .find(|(_, t)| t.contains("echo hello-from-run"))
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no header for the RUN vertex:\n{err}"));
    assert!(err.lines().any(|l| l == format!("#{run_num} CACHED")), "second run must be cached:\n{err}");
    assert!(!err.contains("hello-from-run\n"), "a cached RUN prints no output:\n{err}");
    assert!(!err.contains(" DONE "), "nothing executes on the second run:\n{err}");
}

#[test]
fn rawjson_progress_is_one_json_object_per_line() {
    let env = Env::new();
    let st = base().run(sh("echo json-out")).root();
    let err = ok(&env.build(&st, &["--progress", "rawjson"]));
    let mut types = Vec::new();
    for l in err.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{err}"));
        let t = v.get("type").and_then(|t| t.as_str()).unwrap_or_else(|| panic!("no type: {l}"));
        types.push(t.to_owned());
    }
    for want in ["vertex_started", "vertex_completed", "log"] {
        assert!(types.iter().any(|t| t == want), "no {want} event in {types:?}");
    }
}

#[test]
fn local_tar_and_oci_outputs_together() {
    let env = Env::new();
    let st = base().run(sh("mkdir -p /app && echo payload > /app/file")).root();
    let local = env.path("out-local");
    let local2 = env.path("out-local2");
    let tar = env.path("out.tar");
    let oci_dir = env.path("oci-layout");
    let oci_tar = env.path("oci.tar");
    let args = [
        format!("type=local,dest={}", local.display()),
        format!("type=local,dest={}", local2.display()),
        format!("type=tar,dest={}", tar.display()),
        format!("type=oci,dest={},tar=false", oci_dir.display()),
        format!("type=oci,dest={}", oci_tar.display()),
    ];
    let mut a = vec!["--progress", "plain"];
    for o in &args {
        a.push("--output");
        a.push(o);
    }
    ok(&env.build(&st, &a));
    assert_eq!(std::fs::read_to_string(local.join("app/file")).unwrap(), "payload\n");
    assert_eq!(std::fs::read_to_string(local2.join("app/file")).unwrap(), "payload\n");
    assert!(local.join("bin/busybox").is_file());

    let listing = Command::new("tar").arg("-tf").arg(&tar).output().expect("tar -tf");
    assert!(listing.status.success());
    let names = text(&listing.stdout);
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "app/file"), "{names}");

    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}", oci_dir.display()))
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo inspect --raw: {}", text(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert!(!manifest["layers"].as_array().unwrap().is_empty(), "{manifest}");
    let out = Command::new("skopeo").arg("inspect").arg(format!("oci:{}", oci_dir.display())).output().expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Os"], "linux", "{info}");

    let listing = Command::new("tar").arg("-tf").arg(&oci_tar).output().expect("tar -tf");
    assert!(listing.status.success());
    let names = text(&listing.stdout);
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "index.json"), "{names}");
    assert!(names.lines().any(|l| l.trim_start_matches("./") == "oci-layout"), "{names}");
}

#[test]
fn repeated_locals_and_definition_file() {
    let env = Env::new();
    let a = env.path("ctx-a");
    let b = env.path("ctx-b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("a.txt"), "from a").unwrap();
    std::fs::write(b.join("b.txt"), "from b").unwrap();
    let st = State::scratch().copy(&State::local("ctx-a"), "/a.txt", "/a.txt", CopyOptions::default()).copy(
        &State::local("ctx-b"),
        "/b.txt",
        "/b.txt",
        CopyOptions::default(),
    );
    let def = env.path("def.pb");
    std::fs::write(&def, def_bytes(&st)).unwrap();
    let out = env.path("out");
    let o = env.kiln(
        &[
            "build",
            "--definition",
            def.to_str().unwrap(),
            "--local",
            &format!("ctx-a={}", a.display()),
            "--local",
            &format!("ctx-b={}", b.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
            "--progress",
            "plain",
        ],
        b"",
    );
    ok(&o);
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "from a");
    assert_eq!(std::fs::read_to_string(out.join("b.txt")).unwrap(), "from b");
}

#[test]
fn secret_reaches_run_and_is_absent_from_output() {
    let env = Env::new();
    let secret_value = "s3cr3t-value-4711";
    let sfile = env.path("token");
    std::fs::write(&sfile, secret_value).unwrap();
    let st = base()
        .run(
            sh(&format!(
                "test \"$(cat /run/secrets/tok)\" = {secret_value} && echo secret-ok > /result && ls /run/secrets > /listing"
            ))
            .mount(MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false)),
        )
        .root();
    let out = env.path("out");
    let tar = env.path("out.tar");
    ok(&env.build(
        &st,
        &[
            "--secret",
            &format!("id=tok,src={}", sfile.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
            "--output",
            &format!("type=tar,dest={}", tar.display()),
            "--progress",
            "plain",
        ],
    ));
    assert_eq!(std::fs::read_to_string(out.join("result")).unwrap(), "secret-ok\n");
    assert!(!out.join("run/secrets/tok").exists(), "the secret file must not be exported");
    for entry in walk(&out) {
        if entry.is_file() {
            let data = std::fs::read(&entry).unwrap();
            assert!(!contains(&data, secret_value.as_bytes()), "secret leaked into {}", entry.display());
        }
    }
    assert!(!contains(&std::fs::read(&tar).unwrap(), secret_value.as_bytes()), "secret leaked into the tar output");

    // Without the secret the RUN fails and says which secret is missing.
    let needs = base()
        .run(sh("cat /run/secrets/tok2").mount(MountSpec::secret("/run/secrets/tok2", "tok2", 0, 0, 0o400, false)))
        .root();
    let err = fails(&env.build(&needs, &["--progress", "plain"]));
    assert!(err.contains("tok2"), "names the missing secret: {err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn total_line(s: &str) -> String {
    s.lines().find(|l| l.starts_with("Total:")).unwrap_or_else(|| panic!("no Total line:\n{s}")).to_owned()
}

#[test]
fn du_and_prune() {
    let env = Env::new();
    let st = base().run(sh("head -c 200000 /dev/zero > /blob")).root();
    ok(&env.build(&st, &["--progress", "plain"]));
    let du = env.kiln(&["du"], b"");
    ok(&du);
    let out = text(&du.stdout);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.lines().count() >= 3, "header, records and total:\n{out}");
    assert_ne!(total_line(&out), "Total:\t0B", "{out}");
    let du = env.kiln(&["du", "--verbose"], b"");
    ok(&du);
    assert!(text(&du.stdout).contains("head -c 200000"), "verbose du names the vertex:\n{}", text(&du.stdout));

    let pr = env.kiln(&["prune", "--keep-storage", "0"], b"");
    ok(&pr);
    let msg = text(&pr.stdout);
    assert!(msg.starts_with("Removed "), "{msg}");
    assert!(!msg.starts_with("Removed 0 "), "{msg}");
    let du = env.kiln(&["du"], b"");
    ok(&du);
    assert_eq!(total_line(&text(&du.stdout)), "Total:\t0B", "{}", text(&du.stdout));

    // Build again (now everything runs), then prune --all.
    let err = ok(&env.build(&st, &["--progress", "plain"]));
    assert!(err.contains(" DONE "), "the pruned RUN runs again:\n{err}");
    let pr = env.kiln(&["prune", "--all"], b"");
    ok(&pr);
    assert!(!text(&pr.stdout).starts_with("Removed 0 "), "{}", text(&pr.stdout));
    let du = env.kiln(&["du"], b"");
    assert_eq!(total_line(&text(&du.stdout)), "Total:\t0B");
    assert_eq!(text(&du.stdout).lines().count(), 2, "only header and total remain:\n{}", text(&du.stdout));
}

#[test]
fn workers_lists_both_snapshotters_with_labels() {
    let env = Env::new();
    let o = env.kiln(&["workers"], b"");
    ok(&o);
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{out}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].starts_with("runc-overlayfs "), "overlayfs is the default worker:\n{out}");
    assert!(rows[1].starts_with("runc-native "), "{out}");
    for (row, sn) in rows.iter().zip(["overlayfs", "native"]) {
        for label in ["executor=runc".to_owned(), format!("snapshotter={sn}"), format!("name=runc-{sn}")] {
            assert!(row.contains(&label), "{row} lacks {label}");
        }
        assert!(row.contains("hostname="), "{row}");
    }
}

#[test]
fn debug_dump_llb_prints_one_json_object_per_op() {
    let env = Env::new();
    let st = base().run(sh("echo x")).root().mkfile("/f", 0o644, "data", MkfileOptions::default());
    let def = st.to_definition().unwrap();
    let o = env.kiln(&["debug", "dump-llb"], &def.to_bytes());
    ok(&o);
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), def.to_pb().def.len(), "one line per op (the terminal op included):\n{out}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.is_object(), "{l}");
    }
    assert!(out.contains("echo x"), "{out}");
    // The file form gives the same.
    let f = env.path("def.pb");
    std::fs::write(&f, def.to_bytes()).unwrap();
    let o2 = env.kiln(&["debug", "dump-llb", f.to_str().unwrap()], b"");
    ok(&o2);
    assert_eq!(text(&o2.stdout), out);
}

#[test]
fn bad_input_fails_clearly_and_root_stays_usable() {
    let env = Env::new();
    let st = base().run(sh("echo fine > /fine")).root();

    let err = fails(&env.kiln(&["build", "--progress", "plain"], b"\xff\x00 this is not a definition"));
    assert!(err.to_lowercase().contains("definition"), "names the definition: {err}");

    let err = fails(&env.kiln(&["build"], b""));
    assert!(err.contains("stdin was empty") && err.contains("--definition"), "{err}");

    let err = fails(&env.kiln(&["build", "--definition", "/nonexistent/def.pb"], b""));
    assert!(err.contains("/nonexistent/def.pb"), "{err}");

    let err = fails(&env.build(&st, &["--output", "type=floppy,dest=x"]));
    assert!(err.contains("floppy") && err.contains("local, tar, oci"), "{err}");

    let err = fails(&env.build(&st, &["--output", "type=local,dst=x"]));
    assert!(err.contains("dst") && err.contains("dest"), "names the bad key and the accepted one: {err}");

    let missing = State::local("nosuchlocal");
    let err = fails(&env.build(&missing, &["--progress", "plain"]));
    assert!(err.contains("nosuchlocal"), "names the missing local: {err}");
    assert!(err.contains("--local") || err.contains("local"), "{err}");

    let err = fails(&env.build(&st, &["--local", "no-equals-sign"]));
    assert!(err.contains("no-equals-sign") && err.contains("NAME=DIR"), "{err}");

    let err = fails(&env.build(&st, &["--secret", "id=x,src=/nonexistent/secret-file"]));
    // Names the id and what was wrong, never the path (a path may be a value given by mistake).
    assert!(err.contains("secret \"x\"") && err.contains("No such file"), "{err}");
    assert!(!err.contains("/nonexistent/secret-file"), "{err}");

    let err = fails(&env.build(&st, &["--progress", "fancy"]));
    assert!(err.contains("fancy") && err.contains("plain"), "{err}");

    let out = env.path("out");
    ok(&env.build(&st, &["--progress", "plain", "--output", &format!("type=local,dest={}", out.display())]));
    assert_eq!(std::fs::read_to_string(out.join("fine")).unwrap(), "fine\n");
}

#[test]
fn failing_run_prints_exit_code_and_log_tail() {
    let env = Env::new();
    let st = base().run(sh("echo first-line; echo oops-on-stderr >&2; exit 3")).root();
    let err = fails(&env.build(&st, &["--progress", "plain"]));
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    assert!(err.lines().any(|l| l.trim() == "| oops-on-stderr"), "the log tail follows the error:\n{err}");
    assert!(err.lines().any(|l| plain_line(l).is_some_and(|(_, t)| t.starts_with("ERROR "))), "{err}");
}

#[test]
fn second_build_on_a_held_root_fails_naming_the_pid() {
    let env = Env::new();
    // The first build's RUN makes a fifo in a cache mount (a host directory under the root) and
    // blocks reading it; the test writes to that fifo to let it finish.
    let waiter = base()
        .run(
            sh("mkfifo /sync/go-kiln-test && echo waiting-on-fifo && timeout 120 cat /sync/go-kiln-test > /got")
                .mount(MountSpec::cache("/sync", "held-root-sync", CacheSharing::Shared)),
        )
        .root();
    let rootfs = format!("rootfs={}", env.path("rootfs").display());
    let mut first = env.spawn(&["build", "--progress", "plain", "--local", &rootfs]);
    {
        let mut input = first.stdin.take().unwrap();
        input.write_all(&def_bytes(&waiter)).unwrap();
    }
    let mut stderr = BufReader::new(first.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "first build ended before its RUN started:\n{seen}");
        seen.push_str(&line);
        if line.trim_end().ends_with(" waiting-on-fifo") {
            break;
        }
    }

    let st = base().run(sh("echo second")).root();
    let err = fails(&env.build(&st, &["--progress", "plain"]));
    let root = env.root().canonicalize().unwrap();
    let want = format!("root {} is in use by pid {}", root.display(), first.id());
    assert!(err.contains(&want), "expected {want:?} in:\n{err}");

    let fifo = find_named(&env.root(), "go-kiln-test").expect("the fifo under the root's cache mounts");
    std::fs::OpenOptions::new().write(true).open(&fifo).unwrap().write_all(b"go\n").unwrap();
    let status = first.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "first build:\n{seen}{rest}");

    // Released: the root is usable again.
    ok(&env.build(&st, &["--progress", "plain"]));
}

#[test]
fn du_lists_cache_mounts_and_prune_all_removes_them() {
    let env = Env::new();
    let st = base()
        .run(sh("head -c 150000 /dev/zero > /cache/blob").mount(MountSpec::cache(
            "/cache",
            "cli-cache",
            CacheSharing::Shared,
        )))
        .root();
    ok(&env.build(&st, &["--progress", "plain"]));
    let du = env.kiln(&["du", "--verbose"], b"");
    ok(&du);
    let out = text(&du.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("cached mount /cache from exec /bin/sh -c head -c 150000"))
        .unwrap_or_else(|| panic!("verbose du lists the cache mount:\n{out}"));
    assert!(line.contains("150.00kB"), "the size of what the run wrote: {line}");
    ok(&env.kiln(&["prune", "--all"], b""));
    let du = env.kiln(&["du", "--verbose"], b"");
    ok(&du);
    assert_eq!(total_line(&text(&du.stdout)), "Total:\t0B", "{}", text(&du.stdout));
    assert!(!text(&du.stdout).contains("cached mount"), "{}", text(&du.stdout));
    assert!(find_named(&env.root(), "blob").is_none(), "the cache mount's files are gone");
}

fn find_named(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().ok()?;
            if e.file_name() == name {
                return Some(e.path());
            }
            if ft.is_dir() && !ft.is_symlink() {
                stack.push(e.path());
            }
        }
    }
    None
}

/// Waits (bounded) for `child` to exit.
fn wait_bounded(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

#[test]
fn sigint_sigterm_and_sighup_cancel_cleanly() {
    for sig in ["INT", "TERM", "HUP"] {
        let env = Env::new();
        let value = format!("staged-secret-{sig}-{}", std::process::id());
        std::fs::write(env.path("tok"), &value).unwrap();
        let st = base()
            .run(sh("echo started-long-run && sleep 300").mount(MountSpec::secret(
                "/run/secrets/tok",
                "tok",
                0,
                0,
                0o400,
                false,
            )))
            .root();
        let rootfs = format!("rootfs={}", env.path("rootfs").display());
        let secret = format!("id=tok,src={}", env.path("tok").display());
        let mut child = env.spawn(&["build", "--progress", "plain", "--local", &rootfs, "--secret", &secret]);
        child.stdin.take().unwrap().write_all(&def_bytes(&st)).unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "build ended before its RUN started:\n{seen}");
            seen.push_str(&line);
            if line.trim_end().ends_with(" started-long-run") {
                break;
            }
        }
        let t0 = std::time::Instant::now();
        assert!(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success());
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(30));
        let status = status.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("SIG{sig}: kiln did not exit within 30 s")
        });
        println!("SIG{sig}: exited in {:?} with {status}", t0.elapsed());
        assert!(!status.success());
        let root = env.root().canonicalize().unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(root.to_str().unwrap())).collect();
        assert!(left.is_empty(), "SIG{sig}: mounts left: {left:#?}");
        let runc =
            Command::new("runc").arg("--root").arg(root.join("runtime/runc")).args(["list", "-q"]).output().unwrap();
        assert_eq!(text(&runc.stdout).trim(), "", "SIG{sig}: containers left");
        for d in std::fs::read_dir("/dev/shm").unwrap().filter_map(|e| e.ok()) {
            if d.file_name().to_string_lossy().starts_with("kiln-secrets-") {
                // Other tests stage secrets concurrently: their dirs may vanish while we look.
                for f in std::fs::read_dir(d.path()).into_iter().flatten().filter_map(|e| e.ok()) {
                    let data = std::fs::read(f.path()).unwrap_or_default();
                    assert!(!contains(&data, value.as_bytes()), "SIG{sig}: secret left in {}", f.path().display());
                }
            }
        }
        // The root opens and builds again.
        ok(&env.build(&base().run(sh("echo again")).root(), &["--progress", "plain"]));
    }
}

#[test]
fn image_config_file_epoch_and_platform_reach_the_exported_image() {
    let env = Env::new();
    let cfg = env.path("config.json");
    // A whole image config: its `config` key is used, the rest is the exporter's.
    std::fs::write(
        &cfg,
        r#"{"architecture":"ignored","config":{"Env":["A=1"],"Cmd":["/bin/sh"],"ExposedPorts":{"80/tcp":{}},
            "Healthcheck":{"Test":["CMD","true"],"Retries":2},"OnBuild":["RUN x"]}}"#,
    )
    .unwrap();
    let st = base().run(sh("echo x > /made")).root();
    let host = kiln::graph::Platform::host().to_string();
    let platform_opt = format!("platform={host}");
    let img = env.path("img");
    let out = format!("type=oci,dest={},tar=false,name=t,annotation.org.example=yes", img.display());
    let cfg_arg = cfg.display().to_string();
    let args = [
        "--image-config",
        &cfg_arg,
        "--opt",
        "build-arg:SOURCE_DATE_EPOCH=86400",
        "--opt",
        &platform_opt,
        "--output",
        &out,
    ];
    let first = ok(&env.build(&st, &args));
    let inspect = |what: &str| {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(if what == "config" { vec!["--config"] } else { vec![] })
            .arg(format!("oci:{}:t", img.display()))
            .output()
            .expect("skopeo");
        assert!(o.status.success(), "skopeo: {}", text(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let c = inspect("config");
    assert_eq!(c["created"], "1970-01-02T00:00:00Z");
    assert_eq!(c["config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(c["config"]["Healthcheck"], serde_json::json!({"Test": ["CMD", "true"], "Retries": 2}));
    assert_eq!(c["config"]["OnBuild"], serde_json::json!(["RUN x"]));
    assert_eq!(c["architecture"], kiln::graph::Platform::host().architecture.as_str());
    assert_eq!(inspect("manifest")["annotations"]["org.example"], "yes");
    // A cached rebuild writes the same manifest (SOURCE_DATE_EPOCH from the environment now).
    let args2 = ["--image-config", &cfg_arg, "--opt", &platform_opt, "--output", &out];
    let rootfs = format!("rootfs={}", env.path("rootfs").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(env.root())
        .args(["build", "--local", &rootfs])
        .args(args2)
        .env("SOURCE_DATE_EPOCH", "86400")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    child.stdin.take().expect("stdin").write_all(&def_bytes(&st)).unwrap();
    let second = ok(&child.wait_with_output().unwrap());
    let digest = |s: &str| s.lines().find(|l| l.starts_with("containerimage.digest")).map(str::to_owned);
    assert!(digest(&first).is_some(), "{first}");
    assert_eq!(digest(&first), digest(&second));
    // A foreign platform is refused, naming both.
    let foreign = if host.contains("s390x") { "linux/arm64" } else { "linux/s390x" };
    let err = fails(&env.build(&st, &["--platform", foreign]));
    assert!(err.contains(foreign) && err.contains(&host), "{err}");
}

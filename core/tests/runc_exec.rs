//! Integration tests of `kiln::worker::RuncExecutor` with the real runc and a busybox rootfs.
//! Every test checks afterwards that no container, bundle, cgroup or mount was left behind.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln::worker::{ExecMount, ExecRequest, MountSource, NetworkMode, OutputSink, OutputStream, RuncExecutor};
use kiln::ErrorKind;

const RUNC: &str = "/usr/sbin/runc";

struct Env {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    exec: RuncExecutor,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    common::busybox::busybox_rootfs(&rootfs).unwrap();
    let exec = RuncExecutor::new(RUNC, dir.path().join("state"), dir.path().join("bundles")).unwrap();
    Env { dir, rootfs, exec }
}

fn unique_id(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("kiln-test-{}-{}-{name}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

impl Env {
    fn request(&self, name: &str, script: &str) -> ExecRequest {
        ExecRequest {
            id: unique_id(name),
            rootfs: self.rootfs.clone(),
            readonly_rootfs: false,
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: String::new(),
            mounts: vec![],
            network: NetworkMode::None,
            extra_hosts: vec![],
            remove_mount_stubs_recursive: true,
            ..Default::default()
        }
    }

    /// Runs `req`, returning (exit code, stdout, stderr), and checks nothing leaked.
    async fn run(&self, req: ExecRequest) -> (i32, String, String) {
        let id = req.id.clone();
        let captured = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let sink_buf = captured.clone();
        let sink: OutputSink = Arc::new(move |stream, data: &[u8]| {
            let mut buf = sink_buf.lock().unwrap();
            match stream {
                OutputStream::Stdout => buf.0.extend_from_slice(data),
                OutputStream::Stderr => buf.1.extend_from_slice(data),
            }
        });
        let code = self.exec.run(req, sink).await.unwrap();
        self.assert_clean(&id);
        let buf = captured.lock().unwrap();
        (code, String::from_utf8_lossy(&buf.0).into_owned(), String::from_utf8_lossy(&buf.1).into_owned())
    }

    fn assert_clean(&self, id: &str) {
        assert!(self.exec.list_containers().unwrap().is_empty(), "containers left in runc state");
        let bundles: Vec<_> = std::fs::read_dir(self.dir.path().join("bundles")).unwrap().collect();
        assert!(bundles.is_empty(), "bundles left: {bundles:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().to_string_lossy().into_owned();
        assert!(!mountinfo.contains(&dir), "mounts left under {dir}:\n{mountinfo}");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
            let cg = hierarchy.unwrap().path().join(id);
            assert!(!cg.exists(), "cgroup {} left behind", cg.display());
        }
        for stub in ["etc/hosts", "etc/resolv.conf"] {
            assert!(!self.rootfs.join(stub).exists(), "mount stub /{stub} left in rootfs");
        }
        // The runtime's own mount points stay, empty, as in BuildKit's results.
        for dir in ["proc", "dev", "sys"] {
            let p = self.rootfs.join(dir);
            if p.exists() {
                assert_eq!(std::fs::read_dir(&p).unwrap().count(), 0, "/{dir} is not empty");
            }
        }
    }
}

fn processes_with_cmdline(cmdline: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cl) = std::fs::read(entry.path().join("cmdline")) {
            if cl.starts_with(cmdline) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[tokio::test]
async fn stdout_stderr_and_exit_code() {
    let env = setup();
    let (code, out, err) = env.run(env.request("echo", "echo out; echo err >&2; exit 7")).await;
    assert_eq!(code, 7);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let (code, _, _) = env.run(env.request("ok", "true")).await;
    assert_eq!(code, 0);
    let (code, _, _) = env.run(env.request("signal", "sh -c 'kill -9 $$'; exit $?")).await;
    assert_eq!(code, 128 + 9);
}

#[tokio::test]
async fn env_cwd_and_user() {
    let env = setup();
    let mut req = env.request("env", "echo $FOO; pwd; echo $PATH; id -u");
    req.env = vec!["FOO=bar".into()];
    req.cwd = "/work/sub".into();
    req.user = "nobody".into();
    let (code, out, err) = env.run(req).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "bar\n/work/sub\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n65534\n");
    assert!(env.rootfs.join("work/sub").is_dir(), "the working directory persists");

    let mut req = env.request("uidgid", "id -u; id -g");
    req.user = "1000:1000".into();
    req.env = vec!["PATH=/bin".into()];
    let (code, out, _) = env.run(req).await;
    assert_eq!(code, 0);
    assert_eq!(out, "1000\n1000\n");

    let mut req = env.request("ghost", "true");
    req.user = "ghost".into();
    let e = env.exec.run(req, Arc::new(|_, _: &[u8]| {})).await.unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
    env.assert_clean("none");
}

#[tokio::test]
async fn hostname_and_hosts() {
    let env = setup();
    let (_, out, _) = env.run(env.request("defhost", "hostname")).await;
    assert_eq!(out, "buildkitsandbox\n");
    let mut req = env.request("host", "hostname; cat /etc/hosts; touch /etc/hosts");
    req.hostname = "builder".into();
    req.extra_hosts = vec![("db.local".into(), "10.1.2.3".into())];
    let (code, out, _) = env.run(req).await;
    assert_ne!(code, 0, "/etc/hosts is read-only");
    assert!(out.starts_with("builder\n"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost builder\n"), "{out}");
    assert!(out.contains("10.1.2.3\tdb.local\n"), "{out}");
}

#[tokio::test]
async fn readonly_rootfs_with_proc_and_tmpfs() {
    let env = setup();
    let mut req = env.request("ro", "touch /x");
    req.readonly_rootfs = true;
    let (code, _, err) = env.run(req).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!env.rootfs.join("x").exists());

    let mut req = env.request("roproc", "grep ^Name: /proc/self/status && touch /scratch/f && ls /scratch");
    req.readonly_rootfs = true;
    req.mounts = vec![ExecMount { dest: "/scratch".into(), source: MountSource::Tmpfs { size_bytes: Some(1 << 20) } }];
    let (code, out, err) = env.run(req).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Name:\tgrep\nf\n");
    assert!(!env.rootfs.join("scratch").exists(), "tmpfs mount point stub removed");
}

#[tokio::test]
async fn bind_mounts_readonly_and_readwrite() {
    let env = setup();
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "hello").unwrap();

    let mut req = env.request("bindro", "cat /data/f; touch /data/g");
    req.mounts =
        vec![ExecMount { dest: "/data".into(), source: MountSource::Bind { path: data.clone(), readonly: true } }];
    let (code, out, err) = env.run(req).await;
    assert_ne!(code, 0);
    assert_eq!(out, "hello");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!data.join("g").exists());

    let mut req = env.request("bindrw", "echo new > /data/g");
    req.mounts =
        vec![ExecMount { dest: "/data".into(), source: MountSource::Bind { path: data.clone(), readonly: false } }];
    let (code, _, err) = env.run(req).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(data.join("g")).unwrap(), "new\n");
    assert!(!env.rootfs.join("data").exists());
}

#[tokio::test]
async fn mount_stubs_are_removed() {
    let env = setup();
    let file = env.dir.path().join("file");
    std::fs::write(&file, "content").unwrap();
    let mut req = env.request("stub", "cat /newdir/file");
    req.mounts =
        vec![ExecMount { dest: "/newdir/file".into(), source: MountSource::Bind { path: file, readonly: true } }];
    let (code, out, _) = env.run(req).await;
    assert_eq!(code, 0);
    assert_eq!(out, "content");
    assert!(!env.rootfs.join("newdir").exists(), "stub directory left in rootfs");
}

#[tokio::test]
async fn network_none_has_only_loopback_and_host_shares() {
    let env = setup();
    let (code, out, _) = env.run(env.request("netnone", "ls /sys/class/net")).await;
    assert_eq!(code, 0);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    let mut req = env.request("nethost", "ls /sys/class/net");
    req.network = NetworkMode::Host;
    let (code, out, _) = env.run(req).await;
    assert_eq!(code, 0);
    let mut host: Vec<String> =
        std::fs::read_dir("/sys/class/net").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    host.sort();
    assert!(host.len() > 1, "the host has only {host:?}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), host);
}

#[tokio::test]
async fn setup_failure_is_a_worker_error() {
    let env = setup();
    let mut req = env.request("nocmd", "");
    req.args = vec!["/no/such/command".into()];
    let id = req.id.clone();
    let e = env.exec.run(req, Arc::new(|_, _: &[u8]| {})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Worker);
    assert!(e.to_string().contains("/no/such/command"), "{e}");
    env.assert_clean(&id);
}

/// A sink that forwards every chunk to a channel.
fn channel_sink() -> (OutputSink, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Arc::new(move |_, data: &[u8]| drop(tx.send(data.to_vec()))), rx)
}

#[tokio::test]
async fn dropping_the_future_kills_and_cleans_up() {
    let env = setup();
    let req = env.request("cancel", "echo ready; sleep 1000; echo never");
    let id = req.id.clone();
    let (sink, mut rx) = channel_sink();
    tokio::select! {
        res = env.exec.run(req, sink) => panic!("run finished before cancellation: {res:?}"),
        first = rx.recv() => assert_eq!(first.unwrap(), b"ready\n"),
    }
    env.assert_clean(&id);
    assert!(processes_with_cmdline(b"sleep\x001000\x00").is_empty(), "sleep 1000 survived");
}

#[tokio::test]
async fn cleanup_stale_removes_crashed_runs() {
    let env = setup();
    let req = env.request("stale", "echo ready; sleep 1001");
    let id = req.id.clone();
    let (sink, mut rx) = channel_sink();
    let mut fut = Box::pin(env.exec.run(req, sink));
    tokio::select! {
        res = &mut fut => panic!("run finished early: {res:?}"),
        first = rx.recv() => assert_eq!(first.unwrap(), b"ready\n"),
    }
    // Simulate a crash: the guard never runs.
    std::mem::forget(fut);
    assert_eq!(env.exec.list_containers().unwrap(), vec![id.clone()]);
    env.exec.cleanup_stale().unwrap();
    assert!(processes_with_cmdline(b"sleep\x001001\x00").is_empty(), "sleep 1001 survived");
    assert!(env.exec.list_containers().unwrap().is_empty());
    let bundles: Vec<_> = std::fs::read_dir(env.dir.path().join("bundles")).unwrap().collect();
    assert!(bundles.is_empty());
}

#[test]
fn missing_runtime_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = RuncExecutor::new("no-such-runc", dir.path().join("s"), dir.path().join("b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Worker);
    assert!(e.to_string().contains("no-such-runc"), "{e}");
    let exec = RuncExecutor::new("runc", dir.path().join("s"), dir.path().join("b")).unwrap();
    assert_eq!(exec.binary(), "runc");
}

//! `kiln build` importing a cache from a registry that accepts connections and never answers
//! (issue 14, defect 5): SIGTERM or SIGINT ends the process within a few seconds, with "solve
//! cancelled", even though the registry request is still waiting (default 60 s idle timeout);
//! and the root is free again afterwards.

#[path = "../../../core/tests/common/fault.rs"]
mod fault;

use kiln::graph::State;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No wait in this test is longer than this.
const BOUND: Duration = Duration::from_secs(60);

/// A registry that reads each request, reports it on the channel, then never answers.
fn silent_registry() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
                let mut r = BufReader::new(conn);
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let _ = tx.send(line.trim().to_owned());
                // Hold the connection until the client closes it.
                let mut sink = [0u8; 4096];
                while r.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
            });
        }
    });
    (addr, rx)
}

fn signal_during_import(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    let (addr, requests) = silent_registry();
    let def = State::local("ctx").to_definition().expect("definition").to_bytes();
    let root = dir.path().join("root");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["build", "--progress", "plain", "--local"])
        .arg(format!("ctx={}", ctx.display()))
        .arg("--import-cache")
        .arg(format!("type=registry,ref={addr}/cache/app:t"))
        .env_remove("KILN_ROOT")
        .env_remove("KILN_REGISTRY_READ_TIMEOUT")
        .env_remove("KILN_REGISTRY_CONNECT_TIMEOUT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    child.stdin.take().expect("stdin").write_all(&def).expect("write definition");
    let req = requests.recv_timeout(BOUND).expect("kiln never asked the registry");
    assert!(req.starts_with("GET /v2/cache/app/manifests/t"), "{req}");
    let t0 = Instant::now();
    let st = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().expect("kill");
    assert!(st.success());
    // Bounded poll for the exit.
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > BOUND {
            let _ = child.kill();
            panic!("kiln still running {BOUND:?} after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let t = t0.elapsed();
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("solve cancelled"), "{err}");
    assert!(t < Duration::from_secs(5), "kiln took {t:?} to exit after SIG{signal}: {err}");
    // The root lock was released: another build on the same root works.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .arg("du")
        .env_remove("KILN_ROOT")
        .output()
        .expect("kiln du");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fault::record(
        "registry_signal",
        &format!("never-answers import SIG{signal}"),
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_exit_ms", t.as_millis().to_string())],
    );
}

#[test]
fn sigterm_during_a_silent_registry_import_exits_promptly() {
    signal_during_import("TERM");
}

#[test]
fn sigint_during_a_silent_registry_import_exits_promptly() {
    signal_during_import("INT");
}

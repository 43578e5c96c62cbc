//! Fault suite, isolation of a RUN (real runc): it sees no host process, no host path outside its
//! mounts, with network `none` reaches nothing (only `lo`; a host listener on 127.0.0.1 refuses
//! nothing because nothing arrives), and a secret — file mount or secret env — reaches no layer,
//! cache blob (mode=max export, decompressed), log line, error message or snapshot.

mod common;

use common::kit::{base, sh, solve_def, Kit};
use kiln::graph::{ExecOptions, MountSpec, Network, State};
use kiln::solver::ProgressEvent;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn record(probe: &str, figures: &[(&str, String)]) {
    common::fault::record("fault_isolation", probe, figures);
}

/// Runs `o` on busybox with a writable `/out` and exports `/out`; returns (dir, events, error).
async fn run_out(
    k: &Kit,
    o: ExecOptions,
    opts: kiln::engine::SolveOptions,
    name: &str,
) -> (PathBuf, Vec<ProgressEvent>, Option<String>) {
    let st = base().run(o.mount(MountSpec::bind("/out", &State::scratch(), false)));
    let out_state = st.mount_output("/out").expect("rw bind output");
    let out = k.path(name);
    let opts = opts.output(&format!("type=local,dest={}", out.display())).expect("output");
    let def = out_state.to_definition().expect("definition");
    let (r, ev) = tokio::time::timeout(Duration::from_secs(120), solve_def(k.engine(), &def, opts))
        .await
        .expect("solve within 2 minutes");
    (out, ev, r.err().map(|e| e.to_string()))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn run_sees_no_host_process_or_path() {
    let k = Kit::new();
    let canary_dir = tempfile::tempdir().expect("canary");
    let canary = canary_dir.path().join("host-canary-file");
    std::fs::write(&canary, "HOST").expect("canary");
    // A host process the RUN must not see.
    let mut sleeper = std::process::Command::new("sleep").arg("300").spawn().expect("sleep");
    let script = format!(
        "ls /proc | grep -E '^[0-9]+$' > /out/pids; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' ' > /out/cmdlines; \
         if [ -e {c} ]; then echo present; else echo absent; fi > /out/canary; \
         ls / > /out/rootls; echo $$ > /out/self",
        c = canary.display()
    );
    let (out, _, err) = run_out(&k, sh(&script), k.opts(), "ps").await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(err, None);
    let pids: Vec<String> = read(&out.join("pids")).lines().map(str::to_owned).collect();
    // Only the shell (pid 1) and its pipeline's own children.
    assert!(pids.iter().all(|p| p.parse::<u32>().map(|n| n < 100).unwrap_or(false)), "host pids visible: {pids:?}");
    assert!(pids.contains(&"1".to_owned()), "{pids:?}");
    let cmdlines = read(&out.join("cmdlines"));
    assert!(!cmdlines.contains("sleep 300"), "host process visible: {cmdlines}");
    assert_eq!(read(&out.join("canary")).trim(), "absent");
    let rootls = read(&out.join("rootls"));
    assert!(!rootls.contains("wt-fuzz") && !rootls.contains("work"), "host dirs visible: {rootls}");
    k.assert_no_leaks();
    record(
        "host_processes_paths",
        &[("pids_seen", pids.len().to_string()), ("host_pids_seen", "0".into()), ("canary_seen", "0".into())],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_reaches_nothing() {
    let k = Kit::new();
    // A host listener on 127.0.0.1 (the RUN's own loopback is a different one) and one on the
    // host's other addresses, counting what arrives.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let host_ip = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "10.0.2.15".to_owned());
    let script = format!(
        "ls /sys/class/net > /out/ifaces; \
         for a in 127.0.0.1 {host_ip} 1.1.1.1; do \
           if timeout 5 nc -w 2 $a {port} </dev/null >/dev/null 2>&1; then echo \"$a open\"; else echo \"$a closed\"; fi; \
         done > /out/connect; cat /proc/net/route > /out/route"
    );
    let (out, _, err) = run_out(&k, sh(&script).network(Network::None), k.opts(), "net").await;
    assert_eq!(err, None);
    let mut arrived = 0;
    while listener.accept().is_ok() {
        arrived += 1;
    }
    let ifaces: Vec<String> = read(&out.join("ifaces")).lines().map(str::to_owned).collect();
    assert_eq!(ifaces, vec!["lo".to_owned()], "interfaces under network none");
    let connect = read(&out.join("connect"));
    assert!(!connect.contains("open"), "a connection succeeded under network none: {connect}");
    assert_eq!(read(&out.join("route")).lines().count(), 1, "routes under network none (header only)");
    assert_eq!(arrived, 0, "the host listener received a connection");
    k.assert_no_leaks();
    record(
        "network_none",
        &[("interfaces", ifaces.len().to_string()), ("connects_ok", "0".into()), ("host_accepts", arrived.to_string())],
    );
}

/// Every regular file under `dir` (decompressed when gzip/zstd) holding `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).into_iter().filter_map(|e| e.ok()) {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path()) else { continue };
        let mut data = raw.clone();
        if raw.starts_with(&[0x1f, 0x8b]) {
            data.clear();
            let _ = flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut data);
        } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            data = zstd::decode_all(raw.as_slice()).unwrap_or_default();
        }
        if data.windows(needle.len()).any(|w| w == needle) || raw.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.path().display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_no_layer_cache_log_error_or_snapshot() {
    let k = Kit::new();
    let secret = b"S3CRET-isolation-9d1c77";
    let needle: &[u8] = secret;
    let cache = k.path("cache");
    // The RUN uses the secret (file and env) and writes a derived value, never the secret itself.
    let o = sh("test \"$(cat /run/secrets/tok)\" = \"$TOK\" && echo used > /out/used && echo used > /root-used")
        .mount(MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false))
        .secret_env("TOK", "tok", false);
    let opts = k
        .opts()
        .secret("tok", secret.to_vec())
        .cache_export(&format!("type=local,dest={},mode=max", cache.display()))
        .expect("cache export");
    let (out, events, err) = run_out(&k, o, opts, "secret").await;
    assert_eq!(err, None);
    assert_eq!(read(&out.join("used")).trim(), "used");
    // A failing RUN given the secret (env and file): its error may name the variable, never the value.
    let bad = sh("test -n \"$TOK\" && exit 3")
        .mount(MountSpec::secret("/run/secrets/tok", "tok", 0, 0, 0o400, false))
        .secret_env("TOK", "tok", false);
    let (_, bad_events, bad_err) = run_out(&k, bad, k.opts().secret("tok", secret.to_vec()), "secret-bad").await;
    let bad_err = bad_err.expect("exit 3 fails");
    // Where the secret must not be.
    let in_out = files_containing(&out, needle);
    let in_cache = files_containing(&cache, needle);
    let in_root = files_containing(k.engine().root(), needle);
    let log_lines: Vec<String> =
        events.iter().chain(&bad_events).map(|e| format!("{e:?}")).filter(|l| l.contains("S3CRET-isolation")).collect();
    let in_error = bad_err.contains("S3CRET-isolation");
    record(
        "secret_leaks",
        &[
            ("outputs", in_out.len().to_string()),
            ("cache_blobs", in_cache.len().to_string()),
            ("root_files", in_root.len().to_string()),
            ("log_lines", log_lines.len().to_string()),
            ("error_msgs", usize::from(in_error).to_string()),
        ],
    );
    assert!(in_out.is_empty(), "secret in output: {in_out:?}");
    assert!(in_cache.is_empty(), "secret in cache blobs: {in_cache:?}");
    assert!(in_root.is_empty(), "secret in engine root (snapshots, metadata): {in_root:?}");
    assert!(log_lines.is_empty(), "secret in progress/log lines: {log_lines:?}");
    assert!(!in_error, "secret in error message: {bad_err}");
    assert!(cache.join("index.json").exists(), "cache exported");
    k.assert_no_leaks();
}

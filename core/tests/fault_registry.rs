//! Registries that misbehave (issue 14, defect 5): every network wait is bounded, idempotent
//! requests are retried a bounded number of times, a cache import from a broken registry is a
//! warning and a miss, an export (cache or image) is a clear error naming the registry and what
//! happened, and cancellation ends a request blocked on the network at once.
//!
//! The misbehaving registries are made here with `std::net::TcpListener` on 127.0.0.1: a closed
//! port, one that accepts and never answers, one that answers HTTP 500 to everything, one that
//! serves a real cache with corrupted layer blobs; plus a real `docker-registry` killed with
//! SIGKILL in the middle of a large push. Figures go through `common::fault::record`.

mod common;

use common::fault::record;
use common::kit::{base, sh, started, Kit};
use common::registry::{http_status, TestRegistry, DOCKER_REGISTRY};
use kiln::content::ContentStore;
use kiln::registry::{Interrupt, Reference, RegistryClient, RegistryOptions};
use kiln::solver::ProgressEvent;
use kiln::{CancelToken, Digest, Engine, EngineOptions, Error, ErrorKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEST: &str = "fault_registry";
/// No probe may take longer than this (a hang is a failure, not a slow pass).
const BOUND: Duration = Duration::from_secs(60);

/// Short limits so that timeouts trip quickly: 1 s idle, 2 attempts.
fn fast() -> RegistryOptions {
    RegistryOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(1),
        attempts: 2,
        backoff: Duration::from_millis(50),
    }
}

/// A kit whose engine uses `registry` for its registry clients.
fn kit(registry: RegistryOptions) -> Kit {
    let mut k = Kit::native();
    k.engine = None;
    let mut o = EngineOptions::new(&k.root);
    o.snapshotters = k.snapshotters.clone();
    o.registry = Some(registry);
    k.engine = Some(Engine::open(o).expect("open engine"));
    k
}

fn graph() -> kiln::graph::State {
    base().run(sh("echo built > /out")).root()
}

fn warnings(ev: &[ProgressEvent]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            ProgressEvent::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// How a fake registry behaves.
#[derive(Clone)]
enum Behaviour {
    /// Accepts, reads the request, never answers (holds the connection until the peer closes).
    Silent,
    /// Answers every request with this status.
    Status(u16),
    /// Serves the cache tagged in an OCI layout directory, with every gzip layer corrupted.
    CorruptLayers(PathBuf),
}

/// A registry made of a `TcpListener` on 127.0.0.1; one thread per connection. Every request
/// (`METHOD PATH`) is logged and sent on `events`.
struct Fake {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    events: mpsc::Receiver<String>,
    connections: Arc<AtomicUsize>,
}

impl Fake {
    fn start(b: Behaviour) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, events) = mpsc::channel();
        let (log, count) = (requests.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (b, log, tx) = (b.clone(), log.clone(), tx.clone());
                std::thread::spawn(move || serve(conn, &b, &log, &tx));
            }
        });
        Fake { addr, requests, events, connections }
    }

    /// Waits (bounded) for the next request to arrive.
    fn next_request(&self) -> String {
        self.events.recv_timeout(BOUND).expect("the fake registry got no request")
    }

    fn count_per(&self, prefix: &str) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in self.requests.lock().unwrap().iter().filter(|r| r.starts_with(prefix)) {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
        m
    }

    fn count(&self, prefix: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(prefix)).count()
    }
}

fn serve(conn: TcpStream, b: &Behaviour, log: &Mutex<Vec<String>>, tx: &mpsc::Sender<String>) {
    // Bounded even if the client never closes.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut w = conn;
    // Keep-alive: several requests per connection.
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let req = format!("{method} {path}");
        log.lock().unwrap().push(req.clone());
        let _ = tx.send(req);
        let (status, headers, body) = match b {
            Behaviour::Silent => {
                // Hold the connection open until the client gives up (read returns 0 or fails).
                let mut sink = [0u8; 4096];
                while reader.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
                return;
            }
            Behaviour::Status(s) => {
                std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink()).ok();
                (
                    *s,
                    vec![("Content-Type".to_owned(), "application/json".to_owned())],
                    br#"{"errors":[{"code":"UNKNOWN","message":"internal error"}]}"#.to_vec(),
                )
            }
            Behaviour::CorruptLayers(dir) => from_layout(dir, &method, &path),
        };
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" && w.write_all(&body).is_err() {
            return;
        }
    }
}

/// Serves manifests (by tag, from `index.json`) and blobs of an OCI layout; gzip blobs (layers)
/// come back with one byte flipped, same length.
fn from_layout(dir: &Path, method: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let not_found = (404, vec![], br#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#.to_vec());
    if let Some((_, tag)) = path.split_once("/manifests/") {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json")).expect("json");
        let Some(m) = index["manifests"].as_array().and_then(|ms| {
            ms.iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))
        }) else {
            return not_found;
        };
        let digest = m["digest"].as_str().expect("digest");
        let body = std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).expect("manifest blob");
        let media = m["mediaType"].as_str().expect("mediaType").to_owned();
        return (200, vec![("Content-Type".into(), media), ("Docker-Content-Digest".into(), digest.into())], body);
    }
    if let Some((_, digest)) = path.split_once("/blobs/") {
        let Some(hex) = digest.strip_prefix("sha256:") else { return not_found };
        let Ok(mut body) = std::fs::read(dir.join("blobs/sha256").join(hex)) else { return not_found };
        if body.starts_with(&[0x1f, 0x8b]) && method == "GET" {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        return (200, vec![("Content-Type".into(), "application/octet-stream".into())], body);
    }
    not_found
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    drop(l);
    a
}

/// Builds `graph()` importing a cache from `addr`: must succeed, run the step itself (a miss),
/// and warn naming the registry. Returns (elapsed, the warnings).
async fn import_is_a_miss(addr: &str, opts: RegistryOptions) -> (Duration, Vec<String>) {
    let k = kit(opts);
    let out = k.path("out");
    let o = k
        .opts()
        .cache_import(&format!("type=registry,ref={addr}/cache/app:t"))
        .unwrap()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap();
    let t0 = Instant::now();
    let (r, ev) = tokio::time::timeout(BOUND, k.solve(&graph(), o)).await.expect("import solve hung");
    let elapsed = t0.elapsed();
    let r = r.unwrap_or_else(|e| panic!("a broken cache registry must not fail the build: {e}: {ev:#?}"));
    assert!(r.executed >= 1, "the step must run (a miss): {ev:#?}");
    assert!(started(&ev).iter().any(|n| n.contains("echo built")), "{:?}", started(&ev));
    assert_eq!(std::fs::read_to_string(out.join("out")).unwrap(), "built\n");
    let w = warnings(&ev);
    println!("import warnings: {w:?}");
    assert!(w.iter().any(|m| m.contains(addr)), "the warning names the registry {addr}: {w:#?}");
    k.assert_no_leaks();
    (elapsed, w)
}

/// Builds `graph()` exporting its cache to `addr`: must fail with a registry error naming `addr`.
async fn export_fails(addr: &str, opts: RegistryOptions) -> (Duration, Error) {
    let k = kit(opts);
    let o = k.opts().cache_export(&format!("type=registry,ref={addr}/cache/app:t,mode=max")).unwrap();
    let t0 = Instant::now();
    let (r, ev) = tokio::time::timeout(BOUND, k.solve(&graph(), o)).await.expect("export solve hung");
    let elapsed = t0.elapsed();
    let e = match r {
        Ok(_) => panic!("export to a broken registry succeeded: {ev:#?}"),
        Err(e) => e,
    };
    println!("export error: {e}");
    assert_eq!(e.kind(), ErrorKind::Registry, "{e}");
    assert!(e.to_string().contains(addr), "the error names the registry {addr}: {e}");
    k.assert_no_leaks();
    (elapsed, e)
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_port_import_misses_and_export_fails() {
    let addr = closed_port();
    let (t, w) = import_is_a_miss(&addr, fast()).await;
    assert!(w.iter().any(|m| m.contains("refused")), "{w:#?}");
    record(
        TEST,
        "closed-port import",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_error_ms", ms(t))],
    );
    let (t, e) = export_fails(&addr, fast()).await;
    assert!(e.to_string().contains("refused"), "{e}");
    record(
        TEST,
        "closed-port export",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_error_ms", ms(t))],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn never_answering_registry_import_misses_and_export_times_out() {
    let fake = Fake::start(Behaviour::Silent);
    let (t, w) = import_is_a_miss(&fake.addr, fast()).await;
    assert!(w.iter().any(|m| m.contains("timed out") && m.contains("KILN_REGISTRY_READ_TIMEOUT")), "{w:#?}");
    // Bounded by attempts x read timeout (+ backoff), far below the old unbounded wait.
    assert!(t < Duration::from_secs(30), "import took {t:?}");
    record(
        TEST,
        "never-answers import",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_error_ms", ms(t))],
    );
    let before = fake.count("GET");
    assert_eq!(before, 2, "GET manifest attempted exactly `attempts` times: {:?}", fake.requests.lock().unwrap());

    let (t, e) = export_fails(&fake.addr, fast()).await;
    let msg = e.to_string();
    assert!(msg.contains("timed out") && msg.contains("1 s"), "{msg}");
    assert!(msg.contains("after 2 attempts"), "{msg}");
    record(
        TEST,
        "never-answers export",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_error_ms", ms(t))],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_answering_500_is_retried_then_import_misses_and_export_fails() {
    let fake = Fake::start(Behaviour::Status(500));
    let opts = RegistryOptions { attempts: 3, ..fast() };
    let (t, w) = import_is_a_miss(&fake.addr, opts.clone()).await;
    assert!(w.iter().any(|m| m.contains("HTTP 500") && m.contains("after 3 attempts")), "{w:#?}");
    let gets = fake.count("GET");
    assert_eq!(gets, 3, "the manifest GET is tried 3 times: {:?}", fake.requests.lock().unwrap());
    record(
        TEST,
        "http-500 import",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("server_requests", gets.to_string()),
            ("time_to_error_ms", ms(t)),
        ],
    );

    let (t, e) = export_fails(&fake.addr, opts).await;
    let msg = e.to_string();
    assert!(msg.contains("HTTP 500") && msg.contains("after 3 attempts"), "{msg}");
    // Blobs are pushed in parallel: each one started is HEAD-checked exactly 3 times, and no
    // more than PUSH_PARALLELISM of them start before the first failure stops the batch.
    let heads = fake.count("HEAD");
    let per_blob = fake.count_per("HEAD");
    assert!(per_blob.values().all(|n| *n == 3), "each blob HEAD is tried 3 times: {per_blob:?}");
    assert!(
        !per_blob.is_empty() && per_blob.len() <= kiln::registry::PUSH_PARALLELISM,
        "{:?}",
        fake.requests.lock().unwrap()
    );
    // Upload sessions are never replayed: no POST was even reached.
    assert_eq!(fake.count("POST"), 0);

    // An image push meets the same limits: a clear error, bounded retries.
    let k = kit(RegistryOptions { attempts: 3, ..fast() });
    let before = fake.count("HEAD");
    let o = k.opts().output(&format!("type=image,name={}/kiln/img:1,push=true", fake.addr)).unwrap();
    let (r, ev) = tokio::time::timeout(BOUND, k.solve(&graph(), o)).await.expect("image push hung");
    let e = match r {
        Ok(_) => panic!("image push to a failing registry succeeded: {ev:#?}"),
        Err(e) => e,
    };
    println!("image push error: {e}");
    assert_eq!(e.kind(), ErrorKind::Registry, "{e}");
    assert!(e.to_string().contains(&fake.addr) && e.to_string().contains("HTTP 500"), "{e}");
    let after = fake.count("HEAD") - before;
    assert!(after % 3 == 0 && after > 0 && after <= 3 * kiln::registry::PUSH_PARALLELISM, "{after} HEADs");
    record(
        TEST,
        "http-500 export",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("server_requests", heads.to_string()),
            ("time_to_error_ms", ms(t)),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_layer_blobs_are_a_miss_never_applied() {
    // A real cache, exported to a local layout, served by the fake with every layer corrupted.
    let a = kit(fast());
    let cache = a.path("cache");
    let o = a.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, ev) = a.solve(&graph(), o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    let fake = Fake::start(Behaviour::CorruptLayers(cache.clone()));
    // The tag of a local export is `latest`.
    let b = kit(fast());
    let out = b.path("out");
    let o = b
        .opts()
        .cache_import(&format!("type=registry,ref={}/cache/app:latest", fake.addr))
        .unwrap()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap();
    let t0 = Instant::now();
    let (r, ev) = tokio::time::timeout(BOUND, b.solve(&graph(), o)).await.expect("hung");
    let t = t0.elapsed();
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(fake.count("GET /v2/cache/app/blobs/") >= 1, "a layer was fetched: {:?}", fake.requests.lock().unwrap());
    let w = warnings(&ev);
    assert!(w.iter().any(|m| m.contains("does not match its digest")), "{w:#?}");
    assert!(started(&ev).iter().any(|n| n.contains("echo built")), "the step ran again: {:?}", started(&ev));
    assert_eq!(std::fs::read_to_string(out.join("out")).unwrap(), "built\n");
    // Nothing corrupt entered the content store: every stored blob hashes to its name.
    let store = ContentStore::open(&b.root.join("content")).unwrap();
    for (d, _) in store.list().unwrap() {
        assert_eq!(Digest::of(&store.read(&d).unwrap()), d, "blob {d} in the store is corrupt");
    }
    b.assert_no_leaks();
    record(
        TEST,
        "wrong-digest blobs import",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("corrupt_applied", "0".into()),
            ("time_to_error_ms", ms(t)),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_an_import_blocked_on_a_silent_registry() {
    // Default timeouts (60 s idle): only cancellation can end this wait promptly.
    let fake = Fake::start(Behaviour::Silent);
    let mut k = kit(RegistryOptions::default());
    let token = CancelToken::new();
    let mut o = k.opts().cache_import(&format!("type=registry,ref={}/cache/app:t", fake.addr)).unwrap();
    o.cancel = Some(token.clone());
    let engine = k.engine().clone();
    let def = graph().to_definition().unwrap();
    let solve = tokio::spawn(async move { engine.solve(&def, o).await });
    // The import's request reached the registry, which now keeps it waiting.
    let (req, fake) = tokio::task::spawn_blocking(move || (fake.next_request(), fake)).await.unwrap();
    assert!(req.starts_with("GET /v2/cache/app/manifests/t"), "{req}");
    let t0 = Instant::now();
    token.cancel();
    let r = tokio::time::timeout(BOUND, solve).await.expect("cancelled solve hung").unwrap();
    let t = t0.elapsed();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(t < Duration::from_secs(10), "cancellation took {t:?}");
    // The import thread let go of the engine: the root opens again in this process.
    tokio::time::timeout(BOUND, k.engine().wait_idle()).await.expect("tasks left running");
    k.reopen();
    k.assert_no_leaks();
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1, "no retry after cancellation");
    record(
        TEST,
        "never-answers import cancel",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_cancel_ms", ms(t))],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_a_cache_export_blocked_on_a_silent_registry() {
    let fake = Fake::start(Behaviour::Silent);
    let k = kit(RegistryOptions::default());
    let token = CancelToken::new();
    let mut o = k.opts().cache_export(&format!("type=registry,ref={}/cache/app:t", fake.addr)).unwrap();
    o.cancel = Some(token.clone());
    let engine = k.engine().clone();
    let def = graph().to_definition().unwrap();
    let solve = tokio::spawn(async move { engine.solve(&def, o).await });
    let (req, _fake) = tokio::task::spawn_blocking(move || (fake.next_request(), fake)).await.unwrap();
    assert!(req.starts_with("HEAD /v2/cache/app/blobs/"), "{req}");
    let t0 = Instant::now();
    token.cancel();
    let r = tokio::time::timeout(BOUND, solve).await.expect("cancelled solve hung").unwrap();
    let t = t0.elapsed();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(t < Duration::from_secs(10), "cancellation took {t:?}");
    k.assert_no_leaks();
    record(
        TEST,
        "never-answers export cancel",
        &[("trials", "1".into()), ("failures", "0".into()), ("time_to_cancel_ms", ms(t))],
    );
}

#[test]
fn interrupt_ends_a_blocked_client_request_and_later_ones() {
    let fake = Fake::start(Behaviour::Silent);
    let interrupt = Interrupt::new();
    let c = RegistryClient::with_options(true, &RegistryOptions::default()).unwrap().interruptible(&interrupt);
    let r = Reference::parse(&format!("{}/a/b:t", fake.addr)).unwrap();
    let (tx, rx) = mpsc::channel();
    let c2 = c.clone();
    let r2 = r.clone();
    std::thread::spawn(move || {
        let _ = tx.send(c2.get_manifest(&r2).map(|_| ()));
    });
    fake.next_request();
    let t0 = Instant::now();
    interrupt.fire();
    let res = rx.recv_timeout(BOUND).expect("interrupted request hung");
    let t = t0.elapsed();
    assert!(matches!(res, Err(Error::Cancelled)), "{res:?}");
    // Later requests fail at once, without touching the network.
    let before = fake.connections.load(Ordering::SeqCst);
    assert!(matches!(c.blob_exists(&r, &Digest::of(b"x")), Err(Error::Cancelled)));
    assert_eq!(fake.connections.load(Ordering::SeqCst), before);
    record(TEST, "client interrupt", &[("trials", "1".into()), ("failures", "0".into()), ("time_to_cancel_ms", ms(t))]);
}

#[test]
fn stalled_blob_download_restarts_then_gives_up_naming_the_timeout() {
    // Headers and half the body, then silence: an idle (not whole-request) timeout trips, and
    // the download restarts `attempts` times.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gets = Arc::new(AtomicUsize::new(0));
    let g = gets.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            g.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut l = String::new();
                while r.read_line(&mut l).unwrap_or(0) > 2 {
                    l.clear();
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                let _ = conn.write_all(&[7u8; 500]);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
                let mut sink = [0u8; 64];
                while r.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
            });
        }
    });
    let c = RegistryClient::with_options(true, &RegistryOptions { attempts: 2, ..fast() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = ContentStore::open(dir.path()).unwrap();
    let r = Reference::parse(&format!("{addr}/a/b:t")).unwrap();
    let d = Digest::of(&[7u8; 1000]);
    let t0 = Instant::now();
    let e = c.fetch_blob(&r, &d, &s).unwrap_err();
    let t = t0.elapsed();
    let msg = e.to_string();
    assert!(msg.contains("timed out") && msg.contains(&addr) && msg.contains("after 2 attempts"), "{msg}");
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    assert!(s.list().unwrap().is_empty(), "no partial blob is stored");
    record(
        TEST,
        "stalled blob body",
        &[
            ("trials", "1".into()),
            ("failures", "0".into()),
            ("server_requests", "2".into()),
            ("time_to_error_ms", ms(t)),
        ],
    );
}

/// The pid of the `docker-registry` serving from `dir` (its config lives there).
fn registry_pid(dir: &Path) -> i32 {
    let config = dir.join("config.yml").to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with(DOCKER_REGISTRY) && cmd.contains(&config) {
            return pid;
        }
    }
    panic!("no docker-registry process for {config}");
}

/// `docker-registry serve` on `dir`'s config (same address and storage), until dropped.
struct Restarted(std::process::Child);

impl Restarted {
    fn start(dir: &Path, addr: &str) -> Restarted {
        let child = std::process::Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("restart docker-registry");
        let deadline = Instant::now() + BOUND;
        // Bounded poll for readiness.
        while http_status(addr, "/v2/") != Some(200) {
            assert!(Instant::now() < deadline, "restarted registry not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Restarted(child)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn registry_killed_mid_push_is_a_clear_error_and_a_later_push_succeeds() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = ContentStore::open(dir.path()).unwrap();
    // 96 MiB in 512 KiB chunks: a push long enough to be caught in the middle.
    let mut w = s.writer().unwrap();
    let mut block: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for i in 0..96u8 {
        block[0] = i;
        w.write_all(&block).unwrap();
    }
    let (d, _) = w.commit(None).unwrap();
    let c = RegistryClient::with_options(true, &fast()).unwrap().with_chunk_size(512 * 1024);
    let r = Reference::parse(&format!("{}/big/blob:t", reg.addr)).unwrap();
    let (tx, rx) = mpsc::channel();
    {
        let (c, r, d, s) = (c.clone(), r.clone(), d.clone(), ContentStore::open(dir.path()).unwrap());
        std::thread::spawn(move || {
            let _ = tx.send(c.push_blob(&r, &d, &s, None));
        });
    }
    // Kill the registry once the upload has data on its disk.
    let uploads = reg.storage().join("docker/registry/v2/repositories/big/blob/_uploads");
    let deadline = Instant::now() + BOUND;
    let started = loop {
        let written = std::fs::read_dir(&uploads)
            .map(|rd| {
                rd.flatten().any(|e| std::fs::metadata(e.path().join("data")).map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false);
        if written {
            break true;
        }
        if let Ok(res) = rx.try_recv() {
            panic!("the push finished before it could be interrupted: {res:?}");
        }
        assert!(Instant::now() < deadline, "the push never started writing");
        // Bounded poll of the registry's storage.
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(started);
    let pid = registry_pid(reg.dir.path());
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let res = rx.recv_timeout(BOUND).expect("push hung after the registry died");
    let t = t0.elapsed();
    let e = res.expect_err("push to a killed registry succeeded");
    assert_eq!(e.kind(), ErrorKind::Registry);
    let msg = e.to_string();
    println!("killed mid-push: {msg}");
    assert!(msg.contains(&reg.addr) && msg.contains(d.as_str()), "{msg}");
    record(TEST, "killed mid-push", &[("trials", "1".into()), ("failures", "0".into()), ("time_to_error_ms", ms(t))]);

    // Same address, same storage: a later push with the same client succeeds and reads back.
    let _restarted = Restarted::start(reg.dir.path(), &reg.addr);
    c.push_blob(&r, &d, &s, None).unwrap_or_else(|e| panic!("push after restart: {e}"));
    let back = tempfile::tempdir().unwrap();
    let b = ContentStore::open(back.path()).unwrap();
    c.fetch_blob(&r, &d, &b).unwrap();
    assert!(b.has(&d));
}

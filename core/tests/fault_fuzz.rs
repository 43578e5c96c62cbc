//! Fault suite, fuzzing on stable Rust: proptest drives kiln's parsers and the layer applier with
//! generated and mutated inputs for a bounded number of cases (fixed seed, so CI runs are
//! repeatable). The properties: nothing panics; option strings that parse print back (`to_csv`)
//! to strings that parse to the same spec; the layer applier never writes outside its root.
//!
//! Case counts: `KILN_FUZZ_CASES` (default per target below) scales every target, so a long
//! local run is `KILN_FUZZ_CASES=100000 cargo test -p kiln --test fault_fuzz`.

mod common;

use kiln::graph::{Definition, State};
use kiln::options::{parse_csv, CacheExportSpec, CacheImportSpec, OutputSpec, SecretSpec};
use kiln::remotecache::config::{parse_cache_config, CacheConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

/// Cases for a target: its default, or `KILN_FUZZ_CASES`.
fn cases(default: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A runner with a fixed seed (repeatable in CI) and no persisted failure files.
fn runner(n: u32) -> TestRunner {
    let config = Config { cases: n, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[0x6b; 32]))
}

/// Runs `test` over `strategy`, records the figures and fails on the first (shrunk) failure.
fn fuzz<S: Strategy>(probe: &str, n: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let t0 = Instant::now();
    let res = runner(n).run(&strategy, |v| {
        // A panic is the failure we look for: turn it into a case failure proptest can shrink.
        match catch_unwind(AssertUnwindSafe(|| test(v))) {
            Ok(r) => r,
            Err(p) => Err(TestCaseError::fail(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ))),
        }
    });
    let failures = usize::from(res.is_err());
    common::fault::record(
        "fault_fuzz",
        probe,
        &[("cases", n.to_string()), ("failures", failures.to_string()), ("ms", t0.elapsed().as_millis().to_string())],
    );
    if let Err(e) = res {
        panic!("{probe}: {e}");
    }
}

// ---- CSV option parser and the specs built on it ----

/// Option strings: mostly the CSV alphabet and known keys (so the specs' validation is reached),
/// plus arbitrary unicode, NUL and control characters.
fn option_string() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        4 => prop::sample::select(vec![
            "type", "local", "registry", "tar", "oci", "image", "dest", "src", "ref", "mode", "max", "min",
            "tag", "name", "push", "true", "false", "compression", "gzip", "zstd", "uncompressed",
            "compression-level", "force-compression", "oci-mediatypes", "image-manifest", "ignore-error",
            "id", "env", "digest", "store", "merge", "cache-mounts", "registry.insecure", "sha256:",
            "/tmp/x", "-", "=", ",", "\"", "\"\"", " ", "\n", "\r", "\0", "é", "☃", "𝄞", "\u{202e}",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,8}",
        1 => prop::collection::vec(any::<char>(), 0..4).prop_map(|v| v.into_iter().collect()),
    ];
    prop::collection::vec(atom, 0..24).prop_map(|v| v.concat())
}

#[test]
fn fuzz_option_strings_never_panic_and_round_trip() {
    fuzz("csv_options", cases(3000), option_string(), |s| {
        let _ = parse_csv(&s);
        if let Ok(o) = OutputSpec::parse(&s) {
            let again = OutputSpec::parse(&o.to_csv());
            prop_assert_eq!(again.as_ref().ok(), Some(&o), "output {:?} -> {:?}", s, o.to_csv());
        }
        if let Ok(c) = CacheExportSpec::parse(&s) {
            let again = CacheExportSpec::parse(&c.to_csv());
            prop_assert_eq!(again.as_ref().ok(), Some(&c), "cache export {:?} -> {:?}", s, c.to_csv());
        }
        if let Ok(c) = CacheImportSpec::parse(&s) {
            let again = CacheImportSpec::parse(&c.to_csv());
            prop_assert_eq!(again.as_ref().ok(), Some(&c), "cache import {:?} -> {:?}", s, c.to_csv());
        }
        if let Ok(c) = SecretSpec::parse(&s) {
            let again = SecretSpec::parse(&c.to_csv());
            prop_assert_eq!(again.as_ref().ok(), Some(&c), "secret {:?} -> {:?}", s, c.to_csv());
        }
        Ok(())
    });
}

#[test]
fn fuzz_csv_pairs_round_trip() {
    // Any pairs (keys without '=' or NUL-free restrictions) print to a record that reads back.
    let pair = ("[^=]{1,6}", "\\PC{0,8}|[,\"= \n]{0,4}");
    fuzz("csv_pairs_roundtrip", cases(2000), prop::collection::vec(pair, 1..6), |pairs| {
        let line = kiln::options::csv::to_csv(&pairs);
        match parse_csv(&line) {
            Ok(back) => prop_assert_eq!(back, pairs),
            // Keys starting with a quote or holding line breaks may be refused; never a panic.
            Err(_) => {}
        }
        Ok(())
    });
}

// ---- LLB definition decoder ----

fn valid_definition_bytes() -> Vec<Vec<u8>> {
    use kiln::graph::{CopyOptions, MkdirOptions, MkfileOptions};
    let a = State::scratch().mkdir("/a", MkdirOptions::default()).mkfile(
        "/a/f",
        0o644,
        b"x".to_vec(),
        MkfileOptions::default(),
    );
    let b = State::local("ctx").copy(&a, "/a", "/b", CopyOptions::default());
    let c =
        State::image("docker.io/library/busybox:latest").run(kiln::graph::ExecOptions::shell("echo hi > /x")).root();
    let m = State::merge(vec![b.clone(), c.clone()]);
    [a, b, c, m].iter().filter_map(|s| s.to_definition().ok()).map(|d| d.to_bytes()).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    HugeLength(usize),
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x;
                }
            }
            Mutation::Truncate(i) => b.truncate(i % len),
            Mutation::Insert(i, bytes) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = i % len;
                let end = (i + n).min(b.len());
                if i < end {
                    b.drain(i..end);
                }
            }
            Mutation::HugeLength(i) => {
                // A length-delimited field claiming ~4 GiB.
                let i = i % (b.len() + 1);
                b.splice(i..i, [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<usize>().prop_map(Mutation::HugeLength),
    ]
}

#[test]
fn fuzz_definition_decoder_arbitrary_bytes() {
    fuzz("definition_random_bytes", cases(4000), prop::collection::vec(any::<u8>(), 0..512), |b| {
        let _ = Definition::from_bytes(&b);
        Ok(())
    });
}

#[test]
fn fuzz_definition_decoder_mutated() {
    let seeds = valid_definition_bytes();
    assert_eq!(seeds.len(), 4, "seed definitions build");
    for s in &seeds {
        assert!(Definition::from_bytes(s).is_ok(), "seed decodes");
    }
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..5));
    fuzz("definition_mutated", cases(4000), strategy, |(i, muts)| {
        let b = mutate(seeds[i].clone(), &muts);
        if let Ok(d) = Definition::from_bytes(&b) {
            // Whatever decodes re-encodes to something that decodes to the same graph.
            let again = Definition::from_bytes(&d.to_bytes());
            prop_assert!(again.is_ok(), "re-encoded definition does not decode");
            prop_assert_eq!(again.ok().map(|a| a.len()), Some(d.len()));
        }
        Ok(())
    });
}

// ---- cache config parser ----

fn valid_cache_config() -> Vec<u8> {
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    let json = serde_json::json!({
        "layers": [
            {"blob": d1, "parent": -1, "annotations": {"containerd.io/uncompressed": d1, "createdAt": "2024-01-01T00:00:00Z"}},
            {"blob": d2, "parent": 0}
        ],
        "records": [
            {"digest": d1, "results": [{"layer": 1, "createdAt": "2024-01-01T00:00:00Z"}]},
            {"digest": d2, "inputs": [[{"selector": "", "link": 0}]], "chains": [{"layers": [0, 1]}]}
        ]
    });
    serde_json::to_vec(&json).unwrap_or_default()
}

/// JSON values of bounded depth: numbers (huge, negative, fractional), strings, arrays, objects
/// with the config's own key names, so mutated configs reach `validate`.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::from(n)),
        prop::sample::select(vec![-1i64, 0, 1, 2, i64::MAX, i64::MIN]).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "\\PC{0,10}".prop_map(Value::String),
        Just(Value::String(format!("sha256:{}", "1".repeat(64)))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop::sample::select(vec![
            "layers",
            "records",
            "blob",
            "parent",
            "annotations",
            "digest",
            "results",
            "inputs",
            "chains",
            "layer",
            "createdAt",
            "selector",
            "link",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn fuzz_cache_config_parser() {
    let valid = valid_cache_config();
    let cfg = parse_cache_config(&valid);
    assert!(cfg.is_ok(), "seed config parses: {:?}", cfg.err());
    let strategy = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| (None, b)),
        3 => prop::collection::vec(mutation(), 1..4).prop_map(|m| (Some(m), vec![])),
        3 => json_value().prop_map(|v| (None, serde_json::to_vec(&v).unwrap_or_default())),
    ];
    fuzz("cache_config", cases(3000), strategy, |(muts, bytes)| {
        let input = match muts {
            Some(m) => mutate(valid.clone(), &m),
            None => bytes,
        };
        if let Ok(c) = parse_cache_config(&input) {
            // A config that validates serialises and validates again.
            let json = c.to_json();
            prop_assert!(json.is_ok());
            let back: Result<CacheConfig, _> = parse_cache_config(&json.unwrap_or_default());
            prop_assert_eq!(back.ok(), Some(c));
        }
        Ok(())
    });
}

// ---- layer tar applier ----

#[derive(Debug, Clone)]
struct GenEntry {
    name: String,
    kind: u8,
    size: usize,
    link: String,
    mode: u32,
}

fn tar_path() -> impl Strategy<Value = String> {
    let comp = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "..",
        ".",
        "",
        "etc",
        "passwd",
        ".wh.a",
        ".wh..wh..opq",
        "canary",
        "..canary",
        "l",
    ]);
    (any::<bool>(), prop::collection::vec(comp, 1..5))
        .prop_map(|(abs, comps)| format!("{}{}", if abs { "/" } else { "" }, comps.join("/")))
}

fn tar_entry() -> impl Strategy<Value = GenEntry> {
    let link = prop_oneof![
        tar_path(),
        Just("../canary".to_owned()),
        Just("../../canary/secret".to_owned()),
        Just("/".to_owned()),
        Just("..".to_owned()),
    ];
    (tar_path(), 0u8..7, 0usize..64, link, prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o777, 0, 0o7777]))
        .prop_map(|(name, kind, size, link, mode)| GenEntry { name, kind, size, link, mode })
}

/// Builds a tar with the `tar` crate from raw headers (names are set byte-wise so `..` and
/// absolute names pass through unchecked, as in a hostile layer).
fn build_tar(entries: &[GenEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let ty = match e.kind {
                0 => tar::EntryType::Regular,
                1 => tar::EntryType::Directory,
                2 => tar::EntryType::Symlink,
                3 => tar::EntryType::Link,
                4 => tar::EntryType::Fifo,
                5 => tar::EntryType::Char,
                _ => tar::EntryType::Regular,
            };
            h.set_entry_type(ty);
            let size = if ty == tar::EntryType::Regular { e.size } else { 0 };
            h.set_size(size as u64);
            h.set_mode(e.mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            {
                let Some(gnu) = h.as_gnu_mut() else { continue };
                let n = e.name.as_bytes();
                let len = n.len().min(gnu.name.len());
                gnu.name[..len].copy_from_slice(&n[..len]);
                let l = e.link.as_bytes();
                let len = l.len().min(gnu.linkname.len());
                gnu.linkname[..len].copy_from_slice(&l[..len]);
            }
            h.set_cksum();
            let data = vec![b'Z'; size];
            if b.append(&h, data.as_slice()).is_err() {
                continue;
            }
        }
        let _ = b.finish();
    }
    out
}

/// Every path under `dir` with its content (files) or target (symlinks), for change detection.
fn snapshot_tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).into_iter().filter_map(|e| e.ok()) {
        let p = e.path().display().to_string();
        let ft = e.file_type();
        let what = if ft.is_symlink() {
            std::fs::read_link(e.path()).map(|t| format!("-> {}", t.display())).unwrap_or_default()
        } else if ft.is_file() {
            std::fs::read(e.path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        } else {
            "dir".to_owned()
        };
        out.push((p, what));
    }
    out
}

#[test]
fn fuzz_layer_applier_stays_in_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // <tmp>/canary sits beside the roots (<tmp>/r<n>): "../canary" from a root reaches it.
    let canary = tmp.path().join("canary");
    std::fs::create_dir_all(&canary).expect("canary dir");
    std::fs::write(canary.join("secret"), "untouched").expect("canary file");
    let before = snapshot_tree(&canary);
    let outside_before = std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(0);
    let n = std::sync::atomic::AtomicUsize::new(0);
    let strategy = prop::collection::vec(tar_entry(), 1..10);
    fuzz("layer_apply", cases(1500), strategy, |entries| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = tmp.path().join(format!("r{i}"));
        std::fs::create_dir_all(&root).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // An existing symlink pointing out, as a hostile lower layer might leave.
        let _ = std::os::unix::fs::symlink("../canary", root.join("l"));
        let _ = std::os::unix::fs::symlink(&canary, root.join("etc"));
        let tar = build_tar(&entries);
        let _ = kiln::snapshot::apply_layer(&root, tar.as_slice());
        prop_assert_eq!(snapshot_tree(&canary), before.clone(), "canary changed by {:?}", entries);
        let _ = std::fs::remove_dir_all(&root);
        // Nothing new beside the roots (a write through `..` would land here).
        let now = std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(0);
        prop_assert_eq!(now, outside_before, "an entry landed beside the root: {:?}", entries);
        Ok(())
    });
}

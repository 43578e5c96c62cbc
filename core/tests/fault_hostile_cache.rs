//! Hostile caches and sources (issue 14, defects 8-12): a fresh engine importing a hostile local
//! cache directory gets a warning and a miss and builds correctly; the hostile directory is byte
//! for byte unchanged afterwards (whole tree hashed before and after); sources are never modified
//! or hard-linked into the store; metadata reads are bounded (size cap, regular files only, JSON
//! depth); layer diffIDs are verified; hostile layer tars stay inside the snapshot.

mod common;

use common::fault::record;
use common::kit::{base, sh, Kit};
use kiln::content::ContentStore;
use kiln::engine::SolveOptions;
use kiln::graph::{OciRef, State};
use kiln::remotecache::config::{parse_cache_config, CacheConfig, CacheLayer, CacheRecord, CacheResult};
use kiln::solver::ProgressEvent;
use kiln::Digest;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TEST: &str = "fault_hostile_cache";

// ---------------------------------------------------------------------------------------------
// helpers

/// Every entry under `dir`: relative path -> (type, mode, size, content hash or link target).
/// Never reads FIFOs or devices (they are described by type only).
fn tree_hash(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut steps = 0;
    while let Some(d) = stack.pop() {
        steps += 1;
        assert!(steps < 100_000, "tree too large");
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                let mut h = Sha256::new();
                let mut f = std::fs::File::open(&p).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                format!("file {} {}", m.len(), hex::encode(h.finalize()))
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if ft.is_fifo() {
                "fifo".to_owned()
            } else {
                format!("special {}", m.rdev())
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), format!("{:o} {what} ino={}", m.mode(), m.ino()));
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

/// VmHWM of this process in KiB.
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn warnings(ev: &[ProgressEvent]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            ProgressEvent::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn graph() -> State {
    base().run(sh("echo hostile-$(cat /etc/hostname 2>/dev/null | wc -c) > /out")).root()
}

/// Builds `graph()` on a fresh engine and exports its cache (mode=max) to `cache`.
async fn good_cache(cache: &Path) {
    let k = Kit::native();
    let o = k.opts().cache_export(&format!("type=local,dest={},mode=max", cache.display())).unwrap();
    let (r, ev) = k.solve(&graph(), o).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
}

/// A fresh engine imports `cache`, builds `graph()` to a directory; returns (warnings, ran?).
async fn import_and_build(
    cache: &Path,
    extra: impl FnOnce(SolveOptions) -> SolveOptions,
) -> (Vec<String>, PathBuf, Kit) {
    let k = Kit::native();
    let out = k.path("out");
    let o = k
        .opts()
        .output(&format!("type=local,dest={}", out.display()))
        .unwrap()
        .cache_import(&format!("type=local,src={}", cache.display()))
        .unwrap();
    let (r, ev) = k.solve(&graph(), extra(o)).await;
    r.unwrap_or_else(|e| panic!("build with hostile cache {} failed: {e}: {ev:#?}", cache.display()));
    let content = std::fs::read_to_string(out.join("out")).unwrap();
    assert!(content.starts_with("hostile-"), "{content}");
    (warnings(&ev), out, k)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(dir: &Path, d: &str) -> PathBuf {
    dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = Digest::of(data);
    let p = blob(dir, d.as_str());
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, data).unwrap();
    d.to_string()
}

/// Rewrites the cache manifest (and its config) of `dir`'s only tag with `f`, re-addressing both.
fn rewrite_cache(dir: &Path, f: impl FnOnce(&mut Value, &mut Value)) {
    let mut index = read_json(&dir.join("index.json"));
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest = read_json(&blob(dir, &mdigest));
    let cdigest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut config = read_json(&blob(dir, &cdigest));
    f(&mut manifest, &mut config);
    let cbytes = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &cbytes);
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cbytes.len());
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mbytes);
    index["manifests"][0]["digest"] = json!(md);
    index["manifests"][0]["size"] = json!(mbytes.len());
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The largest blob of a layout (a layer).
fn largest_blob(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

fn flip_last_byte(p: &Path) {
    let mut data = std::fs::read(p).unwrap();
    let n = data.len() - 1;
    data[n] ^= 0xff;
    // Replace the file (not in place): the exported file may share its inode with a store.
    let _ = std::fs::remove_file(p);
    std::fs::write(p, data).unwrap();
}

// ---------------------------------------------------------------------------------------------
// engine level: hostile cache directories

type Mutate = fn(&Path, &Path);

fn cases() -> Vec<(&'static str, Mutate)> {
    vec![
        ("index_fifo", |d, _| {
            std::fs::remove_file(d.join("index.json")).unwrap();
            nix::unistd::mkfifo(&d.join("index.json"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        }),
        ("index_dev_zero", |d, _| {
            std::fs::remove_file(d.join("index.json")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", d.join("index.json")).unwrap();
        }),
        ("index_1gib_sparse", |d, _| {
            let f = std::fs::OpenOptions::new().write(true).open(d.join("index.json")).unwrap();
            f.set_len(1 << 30).unwrap();
        }),
        ("index_truncated", |d, _| {
            let data = std::fs::read(d.join("index.json")).unwrap();
            std::fs::write(d.join("index.json"), &data[..data.len() / 2]).unwrap();
        }),
        ("index_nested_200k", |d, _| {
            let mut s = "[".repeat(200_000);
            s.push_str(&"]".repeat(200_000));
            std::fs::write(d.join("index.json"), s).unwrap();
        }),
        ("manifest_digest_dotdot", |d, _| {
            let mut index = read_json(&d.join("index.json"));
            index["manifests"][0]["digest"] = json!("sha256:../../../../etc/passwd");
            std::fs::write(d.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        }),
        ("manifest_digest_nonhex", |d, _| {
            let mut index = read_json(&d.join("index.json"));
            index["manifests"][0]["digest"] = json!(format!("sha256:{}", "zz".repeat(32)));
            std::fs::write(d.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        }),
        ("manifest_digest_mismatch", |d, _| {
            let index = read_json(&d.join("index.json"));
            let m = blob(d, index["manifests"][0]["digest"].as_str().unwrap());
            let mut data = std::fs::read(&m).unwrap();
            data.push(b' ');
            std::fs::remove_file(&m).unwrap();
            std::fs::write(&m, data).unwrap();
        }),
        ("layer_digest_mismatch", |d, _| flip_last_byte(&largest_blob(d))),
        ("layer_descriptor_dotdot", |d, _| {
            rewrite_cache(d, |m, _| {
                m["layers"][0]["digest"] = json!("sha256:../../../../../../etc/shadow");
            })
        }),
        ("records_loop", |d, _| {
            rewrite_cache(d, |_, c| {
                let n = c["records"].as_array().unwrap().len();
                for (i, r) in c["records"].as_array_mut().unwrap().iter_mut().enumerate() {
                    r["inputs"] = json!([[{"link": (i + 1) % n}]]);
                }
            })
        }),
        ("layers_loop", |d, _| {
            rewrite_cache(d, |_, c| {
                let n = c["layers"].as_array().unwrap().len();
                for (i, l) in c["layers"].as_array_mut().unwrap().iter_mut().enumerate() {
                    l["parent"] = json!((i + 1) % n);
                }
            })
        }),
        ("config_nested_deep", |d, _| {
            rewrite_cache(d, |_, c| {
                let mut v = json!(1);
                for _ in 0..1000 {
                    v = json!([v]);
                }
                c["records"][0]["extra"] = v;
            })
        }),
        ("blobs_symlink_elsewhere", |d, other| {
            let blobs = d.join("blobs/sha256");
            let elsewhere = other.join("elsewhere");
            std::fs::rename(&blobs, &elsewhere).unwrap();
            // A corrupt layer there: a writable importer would have deleted it.
            flip_last_byte(&largest_blob_in(&elsewhere));
            std::os::unix::fs::symlink(&elsewhere, &blobs).unwrap();
        }),
    ]
}

fn largest_blob_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cache_dirs_are_warnings_and_misses_and_stay_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("good");
    good_cache(&good).await;
    let mut failures = Vec::new();
    let mut n = 0;
    let hwm0 = vm_hwm_kib();
    for (name, mutate) in cases() {
        n += 1;
        let case = t.path().join(name);
        let other = t.path().join(format!("{name}-other"));
        std::fs::create_dir_all(&other).unwrap();
        copy_tree(&good, &case);
        mutate(&case, &other);
        let before = (tree_hash(&case), tree_hash(&other));
        let (warns, _out, _k) = import_and_build(&case, |o| o).await;
        let after = (tree_hash(&case), tree_hash(&other));
        if warns.is_empty() {
            failures.push(format!("{name}: no warning"));
        }
        if before != after {
            failures.push(format!("{name}: the import dir changed"));
        }
        println!("{name}: {warns:?}");
    }
    let hwm_mb = vm_hwm_kib().saturating_sub(hwm0) / 1024;
    record(
        TEST,
        "hostile_cache_dirs",
        &[
            ("cases", n.to_string()),
            ("failures", failures.len().to_string()),
            ("changed_dirs", failures.iter().filter(|f| f.contains("changed")).count().to_string()),
            ("vmhwm_growth_mb", hwm_mb.to_string()),
        ],
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // A 1 GiB index.json or /dev/zero would have shown here (generous bound).
    assert!(hwm_mb < 512, "VmHWM grew by {hwm_mb} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_import_blob_is_a_miss_and_is_not_deleted() {
    // Defect 9: the importer deleted corrupt blobs of the import dir.
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    good_cache(&cache).await;
    let layer = largest_blob(&cache);
    flip_last_byte(&layer);
    let before = tree_hash(&cache);
    let (warns, _, _k) = import_and_build(&cache, |o| o).await;
    assert!(warns.iter().any(|w| w.contains("corrupt")), "{warns:?}");
    assert!(layer.is_file(), "the corrupt blob of the import dir was deleted");
    assert_eq!(tree_hash(&cache), before);
    record(TEST, "corrupt_import_blob", &[("cases", "1".into()), ("failures", "0".into()), ("deleted", "0".into())]);
}

/// Defect 12: lying `containerd.io/uncompressed` annotations must not reach `rootfs.diff_ids`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_diff_ids_are_refused_and_oci_export_is_valid() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    good_cache(&cache).await;
    let bogus = Digest::of(b"not the layer").to_string();
    rewrite_cache(&cache, |m, c| {
        for l in m["layers"].as_array_mut().unwrap() {
            l["annotations"]["containerd.io/uncompressed"] = json!(bogus);
        }
        for l in c["layers"].as_array_mut().unwrap() {
            if l.get("annotations").is_some() {
                l["annotations"]["diffID"] = json!(bogus);
            }
        }
    });
    let before = tree_hash(&cache);
    let oci = t.path().join("oci");
    let oci2 = oci.clone();
    let (warns, _, _k) =
        import_and_build(&cache, move |o| o.output(&format!("type=oci,dest={},tar=false", oci2.display())).unwrap())
            .await;
    assert!(warns.iter().any(|w| w.contains("diffID")), "{warns:?}");
    assert_eq!(tree_hash(&cache), before);
    // Every exported diff_id is the sha256 of the decompressed layer.
    let index = read_json(&oci.join("index.json"));
    let manifest = read_json(&blob(&oci, index["manifests"][0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(&oci, manifest["config"]["digest"].as_str().unwrap()));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    let mut bad = 0;
    for (l, want) in layers.iter().zip(diff_ids) {
        let store = ContentStore::open_readonly(&oci).unwrap();
        let lb = kiln::content::LayerBlob {
            digest: Digest::parse(l["digest"].as_str().unwrap()).unwrap(),
            diff_id: Digest::parse(want.as_str().unwrap()).unwrap(),
            size: l["size"].as_u64().unwrap(),
            media_type: l["mediaType"].as_str().unwrap().to_owned(),
        };
        if kiln::content::verify_diff_id(&store, &lb).is_err() || want.as_str() == Some(bogus.as_str()) {
            bad += 1;
        }
    }
    record(TEST, "lying_diff_ids", &[("layers", layers.len().to_string()), ("wrong_diff_ids", bad.to_string())]);
    assert_eq!(bad, 0);
}

/// Defect 10: 6,000 records x 1,000+-layer chains share their chains (no per-record copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_records_with_long_chains_stay_small() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    good_cache(&cache).await;
    let (nl, nr) = (7_000usize, 6_000usize);
    rewrite_cache(&cache, |m, c| {
        let diff = Digest::of(b"d").to_string();
        let mut layers = Vec::with_capacity(nl);
        let mut descs = Vec::with_capacity(nl);
        for i in 0..nl {
            let b = Digest::of(format!("layer{i}").as_bytes()).to_string();
            layers.push(json!({"blob": b, "parent": i as i64 - 1}));
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b, "size": 10,
                "annotations": {"containerd.io/uncompressed": diff}}));
        }
        let records: Vec<Value> = (0..nr)
            .map(|j| json!({"digest": Digest::of(format!("rec{j}").as_bytes()).to_string(), "layers": [{"layer": 1000 + j}]}))
            .collect();
        *c = json!({"layers": layers, "records": records});
        m["layers"] = json!(descs);
    });
    let size = std::fs::metadata(largest_blob(&cache)).unwrap().len();
    let hwm0 = vm_hwm_kib();
    let (_warns, _, _k) = import_and_build(&cache, |o| o).await;
    let grew = vm_hwm_kib().saturating_sub(hwm0) / 1024;
    record(
        TEST,
        "records_6000_chains_1000",
        &[("config_kb", (size / 1024).to_string()), ("vmhwm_growth_mb", grew.to_string()), ("failures", "0".into())],
    );
    // Copied chains took 1.8 GB; shared ones a few MB.
    assert!(grew < 300, "VmHWM grew by {grew} MiB");
}

// ---------------------------------------------------------------------------------------------
// library level: caps, loops, long chains

#[test]
fn cache_config_caps_and_linear_chain_check() {
    // A million records is far beyond the 16 MiB cap: refused before parsing.
    let mut big = Vec::with_capacity(90 << 20);
    big.extend_from_slice(b"{\"records\":[");
    let d = Digest::of(b"x").to_string();
    for i in 0..1_000_000 {
        if i > 0 {
            big.push(b',');
        }
        write!(big, "{{\"digest\":\"{d}\"}}").unwrap();
    }
    big.extend_from_slice(b"]}");
    let e = parse_cache_config(&big).unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
    drop(big);

    // Deep nesting is an error, not a stack overflow.
    let mut deep = "[".repeat(1_000_000);
    deep.push_str(&"]".repeat(1_000_000));
    assert!(parse_cache_config(deep.as_bytes()).is_err());

    // A 200,000-layer chain validates in linear time; a loop at its end is found.
    let n = 200_000usize;
    let mut cfg = CacheConfig::default();
    for i in 0..n {
        cfg.layers.push(CacheLayer { blob: Digest::of(&i.to_le_bytes()), parent: i as i64 - 1, annotations: None });
    }
    cfg.records.push(CacheRecord {
        results: vec![CacheResult { layer_index: n as i64 - 1, created_at: None }],
        chains: vec![],
        digest: Digest::of(b"r"),
        inputs: vec![],
    });
    let t0 = std::time::Instant::now();
    cfg.validate().unwrap();
    let ok_ms = t0.elapsed().as_millis();
    cfg.layers[0].parent = n as i64 - 1;
    let t0 = std::time::Instant::now();
    let e = cfg.validate().unwrap_err().to_string();
    let loop_ms = t0.elapsed().as_millis();
    assert!(e.contains("loops"), "{e}");
    record(
        TEST,
        "chain_200k_validate",
        &[("ok_ms", ok_ms.to_string()), ("loop_ms", loop_ms.to_string()), ("failures", "0".into())],
    );
}

#[test]
fn metadata_files_must_be_regular_and_capped() {
    use kiln::content::limits::read_metadata_file;
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let sparse = t.path().join("sparse");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    let hwm0 = vm_hwm_kib();
    let mut refused = 0;
    for p in [fifo.as_path(), Path::new("/dev/zero"), Path::new("/dev/null"), t.path(), sparse.as_path()] {
        if read_metadata_file(p, "index.json").is_err() {
            refused += 1;
        }
    }
    let grew = vm_hwm_kib().saturating_sub(hwm0) / 1024;
    record(
        TEST,
        "metadata_files",
        &[("cases", "5".into()), ("refused", refused.to_string()), ("vmhwm_growth_mb", grew.to_string())],
    );
    assert_eq!(refused, 5);
    assert!(grew < 64, "{grew}");
}

// ---------------------------------------------------------------------------------------------
// defect 8: sources are never modified, never hard-linked

#[test]
fn read_only_store_is_copied_never_linked_or_deleted() {
    let t = tempfile::tempdir().unwrap();
    let src_dir = t.path().join("src");
    let writable = ContentStore::open(&src_dir).unwrap();
    let good = writable.write_bytes(b"good blob").unwrap();
    let bad = writable.write_bytes(b"soon corrupt").unwrap();
    // The user edits a blob (replacing the file).
    let p = writable.blob_path(&bad);
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"tampered").unwrap();
    let before = tree_hash(&src_dir);
    let src = ContentStore::open_readonly(&src_dir).unwrap();
    let store = ContentStore::open(&t.path().join("store")).unwrap();
    store.link_from(&src, &good).unwrap();
    let e = store.link_from(&src, &bad).unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert!(src.read(&bad).is_err());
    assert!(p.is_file(), "a source blob was deleted");
    assert_eq!(tree_hash(&src_dir), before, "the source changed");
    let (a, b) = (std::fs::metadata(src.blob_path(&good)).unwrap(), std::fs::metadata(store.blob_path(&good)).unwrap());
    assert_ne!(a.ino(), b.ino(), "a source blob shares its inode with the store");
    // Store blobs are read-only files; only those are linked into exports.
    assert_eq!(b.permissions().mode() & 0o777, 0o444);
    let export = ContentStore::open(&t.path().join("export")).unwrap();
    export.link_from(&store, &good).unwrap();
    // A source cannot be written through.
    assert!(src.write_bytes(b"x").is_err());
    assert!(src.delete(&good).is_err());
    // blobs/sha256 as a symlink to another dir is refused.
    let evil = t.path().join("evil");
    std::fs::create_dir_all(evil.join("blobs")).unwrap();
    std::os::unix::fs::symlink(src_dir.join("blobs/sha256"), evil.join("blobs/sha256")).unwrap();
    assert!(ContentStore::open_readonly(&evil).is_err());
    record(TEST, "read_only_source_store", &[("cases", "6".into()), ("failures", "0".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_source_is_never_linked_modified_or_deleted() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    {
        let k = Kit::native();
        let o = k.opts().output(&format!("type=oci,dest={},tar=false,name=1", layout.display())).unwrap();
        let (r, ev) = k.solve(&base().run(sh("echo base > /base")).root(), o).await;
        r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    }
    // Detach the exported files from the exporting store (a user's own copy).
    let user = t.path().join("user");
    copy_tree(&layout, &user);
    let before = tree_hash(&user);
    let app = State::oci_layout(&user, OciRef::Tag("1".into())).run(sh("cat /base > /out")).root();
    let k = Kit::native();
    let out = k.path("out");
    let (r, ev) =
        k.solve(&app, SolveOptions::default().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(std::fs::read_to_string(out.join("out")).unwrap(), "base\n");
    assert_eq!(tree_hash(&user), before, "the source layout changed");
    let mut linked = 0;
    for e in std::fs::read_dir(user.join("blobs/sha256")).unwrap() {
        if std::fs::metadata(e.unwrap().path()).unwrap().nlink() > 1 {
            linked += 1;
        }
    }
    // A corrupt blob in the source: an error, and the user's file stays.
    let layer = largest_blob(&user);
    flip_last_byte(&layer);
    let before = tree_hash(&user);
    let k2 = Kit::native();
    let (r, _) = k2.solve(&app, SolveOptions::default()).await;
    let err = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(layer.is_file(), "kiln deleted a blob of the user's OCI layout");
    assert_eq!(tree_hash(&user), before, "the source layout changed");
    record(
        TEST,
        "oci_layout_source",
        &[("linked_blobs", linked.to_string()), ("corrupt_is_error", (!err.is_empty()).to_string())],
    );
    assert_eq!(linked, 0, "source blobs share inodes with the store");
    assert!(err.contains("corrupt"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// hostile layer tars: what core/tests/snapshot_apply.rs does not cover

struct Raw {
    name: &'static str,
    ty: tar::EntryType,
    link: &'static str,
    mode: u32,
    data: &'static [u8],
    dev: Option<(u32, u32)>,
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.ty);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_600_000_000);
        if let Some((ma, mi)) = e.dev {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        let old = h.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn reg(name: &'static str, data: &'static [u8]) -> Raw {
    Raw { name, ty: tar::EntryType::Regular, link: "", mode: 0o644, data, dev: None }
}

#[test]
fn hostile_layer_tars_stay_inside_the_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("precious"), "precious").unwrap();
    let hostfile = host.join("precious").display().to_string();
    let hostfile: &'static str = Box::leak(hostfile.into_boxed_str());
    let hostdir: &'static str = Box::leak(host.display().to_string().into_boxed_str());
    let passwd_before = std::fs::metadata("/etc/passwd").unwrap();
    type Check = fn(&Path, &kiln::Result<u64>) -> bool;
    let cases: Vec<(&str, Vec<Raw>, Check)> = vec![
        ("dotdot", vec![reg("../../escape", b"x")], |_, r| r.is_err()),
        ("absolute", vec![reg("/tmp/kiln-hostile-abs", b"x")], |root, r| {
            !Path::new("/tmp/kiln-hostile-abs").exists() && (r.is_err() || root.join("tmp/kiln-hostile-abs").is_file())
        }),
        (
            "symlink_then_write",
            vec![
                Raw { name: "s", ty: tar::EntryType::Symlink, link: hostdir, mode: 0o777, data: b"", dev: None },
                reg("s/precious", b"pwned"),
            ],
            |_, r| r.is_err(),
        ),
        (
            "hardlink_to_host_file",
            vec![Raw { name: "h", ty: tar::EntryType::Link, link: hostfile, mode: 0o644, data: b"", dev: None }],
            // Refused or resolved inside the root; the host file's link count is checked below.
            |_, _| true,
        ),
        (
            "hardlink_to_etc_passwd",
            vec![Raw { name: "p", ty: tar::EntryType::Link, link: "/etc/passwd", mode: 0o644, data: b"", dev: None }],
            |_, _| true,
        ),
        (
            "device_nodes",
            vec![
                Raw { name: "null", ty: tar::EntryType::Char, link: "", mode: 0o666, data: b"", dev: Some((1, 3)) },
                Raw { name: "sda", ty: tar::EntryType::Block, link: "", mode: 0o660, data: b"", dev: Some((8, 0)) },
                Raw { name: "fifo", ty: tar::EntryType::Fifo, link: "", mode: 0o644, data: b"", dev: None },
            ],
            |root, r| {
                // As in BuildKit, device nodes are created, and only inside the snapshot.
                r.is_ok()
                    && std::fs::symlink_metadata(root.join("null"))
                        .map(|m| m.file_type().is_char_device())
                        .unwrap_or(false)
                    && std::fs::symlink_metadata(root.join("fifo")).map(|m| m.file_type().is_fifo()).unwrap_or(false)
            },
        ),
        (
            "setuid_file",
            vec![Raw { name: "suid", ty: tar::EntryType::Regular, link: "", mode: 0o4755, data: b"#!", dev: None }],
            |root, r| {
                r.is_ok() && std::fs::metadata(root.join("suid")).map(|m| m.mode() & 0o7777 == 0o4755).unwrap_or(false)
            },
        ),
    ];
    let mut failures = Vec::new();
    let n = cases.len() + 1;
    for (name, entries, check) in cases {
        let root = t.path().join(format!("root-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        let before = tree_hash(&host);
        let r = kiln::snapshot::apply_layer(&root, &raw_tar(&entries)[..]);
        // The host's file must not gain a link from inside the root.
        if std::fs::metadata(host.join("precious")).unwrap().nlink() != 1 {
            failures.push(format!("{name}: host file linked"));
        }
        if tree_hash(&host) != before {
            failures.push(format!("{name}: host changed"));
        }
        if !check(&root, &r) {
            failures.push(format!("{name}: unexpected result {:?}", r.as_ref().err().map(|e| e.to_string())));
        }
    }
    let after = std::fs::metadata("/etc/passwd").unwrap();
    if after.nlink() != passwd_before.nlink() || after.mtime() != passwd_before.mtime() {
        failures.push("/etc/passwd changed".into());
    }
    // A size header of 1 TiB with 10 bytes behind it: an error, nothing allocated for it.
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("huge").unwrap();
        h.set_mode(0o644);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut tarb = h.as_bytes().to_vec();
        tarb.extend_from_slice(&[0u8; 10]);
        let root = t.path().join("root-huge");
        std::fs::create_dir_all(&root).unwrap();
        let hwm0 = vm_hwm_kib();
        let r = kiln::snapshot::apply_layer(&root, &tarb[..]);
        let grew = vm_hwm_kib().saturating_sub(hwm0) / 1024;
        if r.is_ok() || grew > 64 {
            failures.push(format!("huge_size_header: {:?}, grew {grew} MiB", r.is_ok()));
        }
    }
    record(TEST, "hostile_layer_tars", &[("cases", n.to_string()), ("failures", failures.len().to_string())]);
    assert!(failures.is_empty(), "{failures:#?}");
}

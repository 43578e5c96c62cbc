//! The import graph of `core/src` points down only (ARCHITECTURE.md, "Arrows point down only").
//! Every top-level module has a layer; a module may use only modules of a strictly lower layer
//! (and itself). A new module must be given a layer here; an upward (or sideways) import fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (ARCHITECTURE.md's list).
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["digest"],
    &["graph", "options"],
    &["content", "snapshot", "fileops", "progress"],
    &["registry", "worker", "source", "export"],
    &["cache", "remotecache"],
    &["solver"],
    &["build"],
    &["frontend"],
    // The session's client-served protocols (file transfer), then BuildKit's generated API types,
    // then the API's client: all below the engine, which wraps a connected client.
    &["session"],
    &["api"],
    &["client"],
    &["engine"],
    &["server"],
];

/// Items `lib.rs` re-exports at the crate root, by the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("ErrorKind", "error"),
    ("Result", "error"),
    ("Digest", "digest"),
    ("Definition", "graph"),
    ("State", "graph"),
    ("Engine", "engine"),
    ("EngineOptions", "engine"),
    ("SnapshotterKind", "snapshot"),
    ("CancelToken", "solver"),
    ("SolveOptions", "solver"),
    ("SolveResult", "solver"),
    ("WorkerInfo", "engine"),
    ("UsageRecord", "cache"),
    ("PruneReport", "cache"),
    ("ProgressEvent", "progress"),
    ("ProgressSink", "progress"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::NAME` paths a line of code refers to (comments skipped).
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let code = match code.find("//") {
        // A trailing comment (not inside a string literal such as "http://").
        Some(i) if !code[..i].contains('"') => &code[..i],
        _ => code,
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if before_ok && !name.is_empty() {
            out.push(name);
        } else if before_ok && rest.starts_with('{') {
            // `use crate::{a, b::c}`: every first segment in the group.
            let group: String = rest[1..].chars().take_while(|c| *c != '}').collect();
            for part in group.split(',') {
                let first: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() {
                    out.push(first);
                }
            }
        }
    }
    out
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files under {}", files.len(), src.display());
    let roots: BTreeMap<&str, &str> = ROOT_ITEMS.iter().copied().collect();
    let mut violations = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("component").as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue; // the public face re-exports from every layer
        }
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{}: module `{module}` has no layer in core/tests/architecture.rs", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for name in crate_refs(line) {
                let target = roots.get(name.as_str()).map(|s| s.to_string()).unwrap_or(name);
                if target == module {
                    continue;
                }
                match layer_of(&target) {
                    Some(l) if l < own => {}
                    Some(_) => violations.push(format!(
                        "{}:{}: `{module}` imports `{target}`, which is not below it: {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    )),
                    None => violations.push(format!(
                        "{}:{}: `crate::{target}` is not a module with a layer (add it to LAYERS or ROOT_ITEMS)",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(violations.is_empty(), "upward imports:\n{}", violations.join("\n"));
}

#[test]
fn nothing_below_the_engine_names_it() {
    // Modules above the engine in LAYERS may name it; everything else may not.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src").to_path_buf();
        // The engine itself, the crate root and what sits above the engine (the server).
        if rel == Path::new("engine.rs") || rel == Path::new("lib.rs") || rel.starts_with("server") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if crate_refs(line).iter().any(|r| r == "engine" || ["Engine", "EngineOptions"].contains(&r.as_str())) {
                offenders.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "modules below the engine import it:\n{}", offenders.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    assert_eq!(crate_refs("use crate::engine::EngineInner;"), vec!["engine"]);
    assert_eq!(crate_refs("    let x = crate::solver::solve(a);"), vec!["solver"]);
    assert_eq!(crate_refs("use crate::{cache::X, engine};"), vec!["cache", "engine"]);
    assert!(crate_refs("/// see [`crate::engine::Engine`]").is_empty());
    assert!(crate_refs("use kiln_crate::engine;").is_empty());
}

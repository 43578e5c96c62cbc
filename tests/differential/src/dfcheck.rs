//! Running one Dockerfile case on both engines: the case's context and Dockerfile directories,
//! `build --frontend dockerfile.v0` on each with the same locals and options, the tar trees
//! compared, and for `config` cases the image config of an `oci` export compared field by field.

use crate::dockerfiles::DockerfileCase;
use crate::{last_lines, run_cmd, tree, Env, Run};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The image config fields the suite compares (what a Dockerfile sets).
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
];

/// Replaces the case placeholders: `{REG}` (the loopback registry holding the base images) and
/// `{HTTP}` (the loopback file server, `http://127.0.0.1:PORT`).
fn expand(env: &Env, s: &str) -> String {
    s.replace("{REG}", &env.registry).replace("{HTTP}", &format!("http://{}", env.http))
}

fn write_case(env: &Env, c: &DockerfileCase, dir: &Path) -> Result<(), String> {
    let ctx = dir.join("context");
    let df = dir.join("dockerfile");
    for d in [&ctx, &df] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let dockerfile = df.join(c.filename);
    if let Some(parent) = dockerfile.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::write(&dockerfile, expand(env, c.dockerfile)).map_err(|e| format!("write Dockerfile: {e}"))?;
    for (base, files) in [(&ctx, c.files), (&df, c.df_files)] {
        for (name, content) in files {
            let p = base.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
            }
            std::fs::write(&p, file_bytes(name, content)?).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// A context file's bytes by its name: `*.tar` a tar of one file `inner.txt` holding `content`,
/// `*.tar.gz`/`*.tgz`/`*.tar.bz2`/`*.tar.xz` that tar compressed, `*.gz` `content` gzipped,
/// anything else `content` itself.
pub fn file_bytes(name: &str, content: &str) -> Result<Vec<u8>, String> {
    let compress = |tool: &str, data: Vec<u8>| compress(tool, &data);
    if name.ends_with(".tar") {
        one_file_tar(content)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        compress("gzip", one_file_tar(content)?)
    } else if name.ends_with(".tar.bz2") {
        compress("bzip2", one_file_tar(content)?)
    } else if name.ends_with(".tar.xz") {
        compress("xz", one_file_tar(content)?)
    } else if name.ends_with(".gz") {
        compress("gzip", content.as_bytes().to_vec())
    } else {
        Ok(content.as_bytes().to_vec())
    }
}

/// `data` through `TOOL -c` (gzip -n, bzip2, xz).
fn compress(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = Command::new(tool);
    c.arg("-c");
    if tool == "gzip" {
        c.arg("-n");
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {tool} (install it: scripts/setup): {e}"))?;
    let mut stdin = child.stdin.take().ok_or(format!("{tool}: no stdin"))?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().map_err(|e| format!("{tool}: {e}"))?;
    writer.join().map_err(|_| format!("{tool}: writer panicked"))?.map_err(|e| format!("{tool} stdin: {e}"))?;
    if !out.status.success() {
        return Err(format!("{tool} -c failed"));
    }
    Ok(out.stdout)
}

/// A tar holding `inner.txt` (mode 0640, uid 1000, a fixed mtime).
fn one_file_tar(content: &str) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", content.as_bytes()).map_err(|e| e.to_string())?;
    b.into_inner().map_err(|e| e.to_string())
}

impl Env {
    fn df_args(&self, c: &mut Command, case: &DockerfileCase, dir: &Path, output: &str) {
        c.arg("build").arg("--progress=plain").arg("--frontend").arg("dockerfile.v0");
        c.arg("--local").arg(format!("context={}", dir.join("context").display()));
        c.arg("--local").arg(format!("dockerfile={}", dir.join("dockerfile").display()));
        for (n, d) in &self.locals {
            c.arg("--local").arg(format!("{n}={}", d.display()));
        }
        for s in &self.secrets {
            c.arg("--secret").arg(s);
        }
        for s in &self.ssh {
            c.arg("--ssh").arg(s);
        }
        c.arg("--opt").arg("context:base=local:rootfs");
        if case.filename != "Dockerfile" {
            c.arg("--opt").arg(format!("filename={}", case.filename));
        }
        for o in case.opts {
            c.arg("--opt").arg(expand(self, o));
        }
        c.arg("--output").arg(output);
    }

    fn df_builds(&self, case: &DockerfileCase, dir: &Path, root: &Path, output: &str) -> Result<(Run, Run), String> {
        let null = dir.join("stdin");
        std::fs::write(&null, b"").map_err(|e| format!("write stdin: {e}"))?;
        // `{}` in the output stands for the engine (each writes its own file).
        let mut b = Command::new(&self.buildctl);
        b.arg("--addr").arg(&self.addr);
        self.df_args(&mut b, case, dir, &output.replace("{}", "buildkit"));
        let mut k = Command::new(&self.kiln);
        k.arg("--root").arg(root);
        self.df_args(&mut k, case, dir, &output.replace("{}", "kiln"));
        Ok((run_cmd(b, &null, dir, "buildctl-df")?, run_cmd(k, &null, dir, "kiln-df")?))
    }

    /// Runs a Dockerfile case; `Ok` when trees (and configs) match.
    pub fn check_dockerfile(&self, name: &str, case: &DockerfileCase, job: usize) -> Result<Vec<String>, Vec<String>> {
        let root = &self.kiln_roots[job % self.kiln_roots.len().max(1)];
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| vec![format!("mkdir {}: {e}", dir.display())])?;
        write_case(self, case, &dir).map_err(|e| vec![e])?;
        let (b, k) = self.df_builds(case, &dir, root, "type=tar,dest=-").map_err(|e| vec![e])?;
        if case.refused {
            let mut notes = Vec::new();
            if b.ok || k.ok {
                notes.push(format!(
                    "expected both to refuse: buildkit {}, kiln {}",
                    if b.ok { "succeeded" } else { "failed" },
                    if k.ok { "succeeded" } else { "failed" }
                ));
            }
            if !b.ok {
                notes.push(format!("    buildkit error:\n{}", last_lines(&b.stderr, 2)));
            }
            if !k.ok {
                notes.push(format!("    kiln error:\n{}", last_lines(&k.stderr, 2)));
            }
            return if b.ok || k.ok { Err(notes) } else { Ok(notes) };
        }
        let mut problems = failed(&b, &k);
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(keep) = std::env::var_os("DIFF_KEEP") {
            let keep = Path::new(&keep).join(name);
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::write(keep.join("buildkit.tar"), &b.stdout);
            let _ = std::fs::write(keep.join("kiln.tar"), &k.stdout);
        }
        match (tree::parse(&b.stdout), tree::parse(&k.stdout)) {
            (Ok(bt), Ok(kt)) => problems.extend(tree::diff(&kt, &bt, &[])),
            (Err(e), _) => problems.push(format!("buildkit tar: {e}")),
            (_, Err(e)) => problems.push(format!("kiln tar: {e}")),
        }
        if case.config {
            let out = format!("type=oci,dest={}/{{}}.oci.tar", dir.display());
            let (b, k) = self.df_builds(case, &dir, root, &out).map_err(|e| vec![e])?;
            let p = failed(&b, &k);
            let read = |e: &str| std::fs::read(dir.join(format!("{e}.oci.tar"))).unwrap_or_default();
            if !p.is_empty() {
                problems.extend(p);
            } else {
                match (oci_config(&read("buildkit")), oci_config(&read("kiln"))) {
                    (Ok(bc), Ok(kc)) => problems.extend(compare_configs(&bc, &kc)),
                    (Err(e), _) => problems.push(format!("buildkit oci: {e}")),
                    (_, Err(e)) => problems.push(format!("kiln oci: {e}")),
                }
            }
        }
        if problems.is_empty() {
            Ok(Vec::new())
        } else {
            Err(problems)
        }
    }
}

fn failed(b: &Run, k: &Run) -> Vec<String> {
    let mut p = Vec::new();
    if !b.ok || !k.ok {
        p.push(format!(
            "build failed: buildkit {}, kiln {}",
            if b.ok { "ok" } else { "FAILED" },
            if k.ok { "ok" } else { "FAILED" }
        ));
        if !b.ok {
            p.push(format!("    buildkit error:\n{}", last_lines(&b.stderr, 6)));
        }
        if !k.ok {
            p.push(format!("    kiln error:\n{}", last_lines(&k.stderr, 6)));
        }
    }
    p
}

/// The differences between two image configs: the [`CONFIG_FIELDS`] of `config`, `author`, and
/// each `history` entry's `created_by`, `empty_layer` and `comment` (creation times differ),
/// leaving out the entries exporters add for layers without one.
fn compare_configs(bc: &serde_json::Value, kc: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    // BuildKit writes `"OnBuild": null` when the image has no triggers; absent and null are the
    // same to every reader.
    let present = |v: Option<&serde_json::Value>| v.filter(|v| !v.is_null()).cloned();
    let show = |v: Option<serde_json::Value>| v.map_or("-".into(), |v| v.to_string());
    for f in CONFIG_FIELDS {
        let (bv, kv) = (present(bc["config"].get(*f)), present(kc["config"].get(*f)));
        if bv != kv {
            problems.push(format!("config {f}: kiln={} buildkit={}", show(kv), show(bv)));
        }
    }
    let (bv, kv) = (present(bc.get("author")), present(kc.get("author")));
    if bv != kv {
        problems.push(format!("author: kiln={} buildkit={}", show(kv), show(bv)));
    }
    let history = |c: &serde_json::Value| -> Vec<String> {
        c["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    // The entries an exporter adds for layers the config's history does not
                    // account for are described by engine internals (BuildKit: the layer's cache
                    // record description; kiln: `kiln`): left out on both sides.
                    .filter(|e| {
                        let comment = e["comment"].as_str().unwrap_or_default();
                        comment != "buildkit.exporter.image.v0" && !(comment.is_empty() && e["created_by"] == "kiln")
                    })
                    .map(|e| {
                        format!(
                            "{} empty_layer={} comment={}",
                            e["created_by"].as_str().unwrap_or("-"),
                            e["empty_layer"].as_bool().unwrap_or(false),
                            e["comment"].as_str().unwrap_or("-")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (bh, kh) = (history(bc), history(kc));
    if bh != kh {
        problems.push(format!("history: {} entries in kiln, {} in buildkit", kh.len(), bh.len()));
        for i in 0..bh.len().max(kh.len()) {
            let (b, k) = (bh.get(i).map_or("-", |s| s.as_str()), kh.get(i).map_or("-", |s| s.as_str()));
            if b != k {
                problems.push(format!("history[{i}]:\n      kiln=     {k}\n      buildkit= {b}"));
            }
        }
    }
    problems
}

/// The image config document in an OCI layout tar (index → manifest → config).
fn oci_config(tar_bytes: &[u8]) -> Result<serde_json::Value, String> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let path = e.path().map_err(|e| e.to_string())?.to_string_lossy().trim_start_matches("./").to_owned();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).map_err(|e| e.to_string())?;
        files.insert(path, v);
    }
    let json = |p: &str| -> Result<serde_json::Value, String> {
        serde_json::from_slice(files.get(p).ok_or(format!("{p} missing"))?).map_err(|e| format!("{p}: {e}"))
    };
    let blob = |d: &serde_json::Value| format!("blobs/{}", d.as_str().unwrap_or_default().replacen(':', "/", 1));
    let mut desc = json("index.json")?["manifests"][0].clone();
    // An index may point at another index (BuildKit's single-platform export does not).
    loop {
        let doc = json(&blob(&desc["digest"]))?;
        if doc.get("manifests").is_some() {
            desc = doc["manifests"][0].clone();
            continue;
        }
        return json(&blob(&doc["config"]["digest"]));
    }
}

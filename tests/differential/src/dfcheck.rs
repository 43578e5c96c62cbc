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
];

fn write_case(c: &DockerfileCase, dir: &Path) -> Result<(), String> {
    let ctx = dir.join("context");
    let df = dir.join("dockerfile");
    for d in [&ctx, &df] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    std::fs::write(df.join("Dockerfile"), c.dockerfile).map_err(|e| format!("write Dockerfile: {e}"))?;
    for (name, content) in c.files {
        let p = ctx.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        let bytes = if name.ends_with(".tar") { one_file_tar(content)? } else { content.as_bytes().to_vec() };
        std::fs::write(&p, bytes).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    Ok(())
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
        c.arg("--opt").arg("context:base=local:rootfs");
        for o in case.opts {
            c.arg("--opt").arg(o);
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
        write_case(case, &dir).map_err(|e| vec![e])?;
        let (b, k) = self.df_builds(case, &dir, root, "type=tar,dest=-").map_err(|e| vec![e])?;
        let mut problems = failed(&b, &k);
        if !problems.is_empty() {
            return Err(problems);
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
                    (Ok(bc), Ok(kc)) => {
                        for f in CONFIG_FIELDS {
                            // BuildKit writes `"OnBuild": null` for a Dockerfile without ONBUILD;
                            // kiln leaves the key out (a known, documented difference).
                            let present = |v: Option<&serde_json::Value>| v.filter(|v| !v.is_null()).cloned();
                            let (bv, kv) = (present(bc.get(*f)), present(kc.get(*f)));
                            if bv != kv {
                                problems.push(format!(
                                    "config {f}: kiln={} buildkit={}",
                                    kv.map_or("-".into(), |v| v.to_string()),
                                    bv.map_or("-".into(), |v| v.to_string()),
                                ));
                            }
                        }
                    }
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

/// The `config` object of the image in an OCI layout tar (index → manifest → config).
fn oci_config(tar_bytes: &[u8]) -> Result<BTreeMap<String, serde_json::Value>, String> {
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
        let config = json(&blob(&doc["config"]["digest"]))?;
        let obj = config["config"].as_object().cloned().unwrap_or_default();
        return Ok(obj.into_iter().collect());
    }
}

//! `cargo test -p kiln-differential`: runs every graph of the table on buildkitd and on kiln.
//! Never passes by skipping: a missing buildkit, kiln binary or busybox fails the run.
//!
//! Environment: `KILN_BUILDKIT_ADDR` (use a running buildkitd), `KILN_BUILDKIT_DIR` (where
//! `start`, `stop` and `buildctl` are; default `<repo>/../shared/buildkit`), `KILN_BIN` (the
//! kiln binary; default `<target>/debug/kiln`), `DIFF_ONLY` (comma-separated graph names),
//! `DIFF_JOBS` (graphs run at once, default 2), `DIFF_KEEP` (a directory: keep both tars and
//! the definition of every graph there).

use kiln_differential::{
    dockerfiles, dockerfiles::CASES, fixtures, graphs::GRAPHS, kiln_bin, repo_root, servers, start_daemon, Case, Env,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("differential: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let start = Instant::now();
    let kiln = kiln_bin()?;
    let bk_dir = match std::env::var_os("KILN_BUILDKIT_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("../shared/buildkit"),
    };
    let buildctl = bk_dir.join("buildctl");
    if !buildctl.exists() {
        return Err(format!(
            "no BuildKit at {} (looked for {}); set KILN_BUILDKIT_DIR to the directory holding buildctl, start and stop",
            bk_dir.display(),
            buildctl.display()
        ));
    }
    let tmp = tempfile::Builder::new().prefix("kiln-differential-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let (locals, secrets) = fixtures::create(&tmp.path().join("fixtures"))?;

    // The daemon guard stops buildkitd on every return path (and on panic unwinding).
    let mut _daemon = None;
    let addr = match std::env::var("KILN_BUILDKIT_ADDR") {
        Ok(a) if !a.is_empty() => a,
        _ => {
            let (addr, guard) = start_daemon(&bk_dir, &tmp.path().join("buildkitd"))?;
            _daemon = Some(guard);
            addr
        }
    };
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    // An SSH agent socket for `--ssh default=...`: graphs look at the mount, nobody connects.
    let agent = tmp.path().join("agent.sock");
    let _agent =
        std::os::unix::net::UnixListener::bind(&agent).map_err(|e| format!("bind {}: {e}", agent.display()))?;
    let ssh = vec![format!("default={}", agent.display())];
    // The Dockerfile cases' base images on a loopback registry, and a file server for ADD <url>.
    let registry = servers::Registry::start(&tmp.path().join("registry"))?;
    let http_dir = tmp.path().join("http");
    std::fs::create_dir_all(&http_dir).map_err(|e| format!("mkdir {}: {e}", http_dir.display()))?;
    for (name, content) in dockerfiles::HTTP_FILES {
        std::fs::write(http_dir.join(name), dockerfiles::file_bytes(name, content)?)
            .map_err(|e| format!("write {name}: {e}"))?;
    }
    let http = servers::HttpServer::start(http_dir)?;
    let env = Env {
        buildctl,
        addr,
        kiln,
        kiln_roots: Vec::new(),
        locals,
        secrets,
        ssh,
        work,
        registry: registry.addr.clone(),
        http: http.addr.clone(),
    };
    let wants_registry = |n: &str| {
        dockerfiles::CASES
            .iter()
            .any(|(c, d)| c == &n && (d.dockerfile.contains("{REG}") || d.opts.iter().any(|o| o.contains("{REG}"))))
    };

    let only: Option<Vec<String>> =
        std::env::var("DIFF_ONLY").ok().map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let all = GRAPHS.iter().map(Case::Graph).chain(CASES.iter().map(|(n, c)| Case::Dockerfile(n, c)));
    let selected: Vec<Case> = all.filter(|g| only.as_ref().is_none_or(|o| o.iter().any(|n| n == g.name()))).collect();
    if selected.is_empty() {
        return Err("no graph selected (check DIFF_ONLY)".into());
    }
    if selected.iter().any(|c| wants_registry(c.name())) {
        env.push_base_images()?;
    }
    let jobs = std::env::var("DIFF_JOBS").ok().and_then(|j| j.parse::<usize>().ok()).unwrap_or(2).max(1);
    let env = Env { kiln_roots: (0..jobs).map(|j| tmp.path().join(format!("kiln-root-{j}"))).collect(), ..env };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for job in 0..jobs {
            let (next, results, env, selected) = (&next, &results, &env, &selected);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(g) = selected.get(i) else { break };
                let t = Instant::now();
                let r = env.check_case(g, job);
                let secs = t.elapsed().as_secs_f32();
                let text = match &r {
                    Ok(notes) => {
                        let verdict = if g.refused() { "refused by both" } else { "identical" };
                        let mut t = format!("differential: {:<40} {verdict} ({secs:.1}s)", g.name());
                        for n in notes {
                            t.push_str(&format!("\n    [{}] {n}", g.name()));
                        }
                        t
                    }
                    Err(problems) => {
                        let mut t = format!("differential: {:<40} DIFFERENT ({secs:.1}s)", g.name());
                        for p in problems.iter().take(40) {
                            t.push_str(&format!("\n    [{}] {p}", g.name()));
                        }
                        if problems.len() > 40 {
                            t.push_str(&format!("\n    [{}] ... {} more", g.name(), problems.len() - 40));
                        }
                        t
                    }
                };
                println!("{text}");
                if let Ok(mut v) = results.lock() {
                    v.push((i, r.is_ok()));
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| "a worker thread panicked".to_owned())?;
    let same = results.iter().filter(|(_, ok)| *ok).count();
    let mut failed: Vec<&str> = results.iter().filter(|(_, ok)| !ok).map(|(i, _)| selected[*i].name()).collect();
    failed.sort();
    println!(
        "differential: {same}/{} graphs identical ({:.0}s){}",
        selected.len(),
        start.elapsed().as_secs_f32(),
        if failed.is_empty() { String::new() } else { format!("; different: {}", failed.join(", ")) }
    );
    Ok(same == selected.len() && results.len() == selected.len())
}

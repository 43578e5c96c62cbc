//! `kiln-bench`: benchmarks of the kiln engine through its public API (Engine, State,
//! SolveOptions). It prints figures and asserts nothing; `bench/run` builds it in release mode and
//! runs it. Cases:
//!
//! - a chain of file ops on scratch (one vertex per step), solved cold, then fully cached in a new
//!   Engine on the same root (Engine::open and the solve timed apart);
//! - a chain of RUN steps on a busybox rootfs, solved cold;
//! - a RUN writing N MB (random, then compressible text), solved without exports (kiln's overhead
//!   beyond the container's run time), then exported as `type=oci` with the RUN cached (layer
//!   creation), compared with `tar -c DIR | gzip -6 > /dev/null` on the same files;
//! - client-side builds (`Engine::build`): `read_file` of a 1 KB and an N MB file from a cached ref
//!   (first read, which mounts the ref's view, and later reads), and a whole build whose inner
//!   solves are all cached, against a plain cached solve of the same graph;
//! - the Dockerfile frontend: parse and convert (to LLB, then marshalled) of a generated
//!   500-instruction Dockerfile, and a multi-stage Dockerfile built cold then cached through
//!   `Engine::build_frontend("dockerfile.v0", ..)`.
//!
//! Knobs (environment): `KILN_BENCH_CHAIN` (default 1000), `KILN_BENCH_RUNS` (100),
//! `KILN_BENCH_MB` (100), `KILN_BENCH_DIR` (work directory parent, default the temp dir),
//! `KILN_BENCH_REPEAT` (5: cached re-solves in new Engines, for profiling), `KILN_BENCH_ONLY` (comma list of cases to run: chain, runs, layer, cache, build, dockerfile, daemon; default all),
//! `KILN_BENCH_DF_INSTRUCTIONS` (500: instructions of the generated Dockerfile).

mod defs;

mod daemon;

use kiln::engine::{Engine, EngineOptions, SolveOptions, SolveResult};
use kiln::graph::{Definition, ExecOptions, MkfileOptions, State};
use kiln::solver::{ProgressEvent, ProgressSink};
use kiln::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// One solve: wall time, result and the progress events with their arrival times.
struct Run {
    wall: Duration,
    result: SolveResult,
    events: Vec<(Instant, ProgressEvent)>,
}

impl Run {
    /// Total execution time of the vertices whose name contains `needle` (from their events).
    fn vertex_time(&self, needle: &str) -> Duration {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ProgressEvent::VertexCompleted { name, duration, .. } if name.contains(needle) => Some(*duration),
                _ => None,
            })
            .sum()
    }

    /// For a chain: (sum of vertex durations, sum of gaps between one vertex's completion and the
    /// next vertex's start, which is solver bookkeeping outside any vertex).
    fn split_time(&self) -> (Duration, Duration) {
        let mut inside = Duration::ZERO;
        let mut between = Duration::ZERO;
        let mut last_done: Option<Instant> = None;
        for (at, e) in &self.events {
            match e {
                ProgressEvent::VertexStarted { .. } => {
                    if let Some(d) = last_done.take() {
                        between += at.saturating_duration_since(d);
                    }
                }
                ProgressEvent::VertexCompleted { duration, .. } => {
                    inside += *duration;
                    last_done = Some(*at);
                }
                _ => {}
            }
        }
        (inside, between)
    }

    /// Execution time of exporter vertices (`export:*`).
    fn export_time(&self) -> Duration {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ProgressEvent::VertexCompleted { vertex, duration, .. } if vertex.starts_with("export:") => {
                    Some(*duration)
                }
                _ => None,
            })
            .sum()
    }
}

async fn solve(engine: &Engine, def: &Definition, mut opts: SolveOptions) -> Result<Run> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    opts.progress =
        ProgressSink::new(move |e| sink.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), e)));
    let t = Instant::now();
    let result = engine.solve(def, opts).await?;
    let wall = t.elapsed();
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Run { wall, result, events })
}

fn open(root: &Path) -> Result<(Engine, Duration)> {
    let t = Instant::now();
    let e = Engine::open(EngineOptions::new(root))?;
    Ok((e, t.elapsed()))
}

fn sh(cmd: &str) -> Result<Duration> {
    let t = Instant::now();
    let st =
        std::process::Command::new("sh").arg("-c").arg(cmd).status().map_err(|e| Error::io("run sh -c", cmd, e))?;
    if !st.success() {
        return Err(Error::new(ErrorKind::Internal, format!("`{cmd}` failed: {st}")));
    }
    Ok(t.elapsed())
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

/// A chain of `n` file ops on scratch, each its own vertex.
fn file_chain(n: u64) -> State {
    let mut st = State::scratch();
    for i in 0..n {
        st = st
            .mkfile(format!("/f{i}"), 0o644, format!("step {i}\n"), MkfileOptions::default())
            .with_custom_name(format!("step {i}"));
    }
    st
}

async fn bench_file_chain(work: &Path, n: u64) -> Result<()> {
    println!("== file-op chain: {n} vertices on scratch ==");
    let t = Instant::now();
    let def = file_chain(n).to_definition()?;
    println!("marshal ({} ops incl. terminal):         {}", def.to_pb().def.len(), ms(t.elapsed()));
    let root = work.join("chain-root");
    let (engine, t_open) = open(&root)?;
    println!("Engine::open (empty root):               {}", ms(t_open));
    let cold = solve(&engine, &def, SolveOptions::default()).await?;
    println!(
        "cold solve:                              {}  (executed {}, cached {})",
        secs(cold.wall),
        cold.result.executed,
        cold.result.cached
    );
    let (inside, between) = cold.split_time();
    println!(
        "  of which inside vertices (sum of their durations) {}, between vertices {}",
        secs(inside),
        secs(between)
    );
    let durs: Vec<Duration> = cold
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ProgressEvent::VertexCompleted { duration, .. } => Some(*duration),
            _ => None,
        })
        .collect();
    let tenth = (durs.len() / 10).max(1);
    let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len().max(1) as u32;
    println!(
        "  mean vertex time: first 10% {}, last 10% {}",
        ms(mean(&durs[..tenth.min(durs.len())])),
        ms(mean(&durs[durs.len().saturating_sub(tenth)..]))
    );
    let warm = solve(&engine, &def, SolveOptions::default()).await?;
    println!("cached re-solve, same Engine:            {}  (cached {})", ms(warm.wall), warm.result.cached);
    drop(engine);
    let mut totals = Vec::new();
    for i in 0..env_num("KILN_BENCH_REPEAT", 5) {
        let (engine, t_open) = open(&root)?;
        let r = solve(&engine, &def, SolveOptions::default()).await?;
        println!(
            "new Engine #{i}: open {:>9}, cached solve {:>9}, total {:>9}  (executed {}, cached {})",
            ms(t_open),
            ms(r.wall),
            ms(t_open + r.wall),
            r.result.executed,
            r.result.cached
        );
        totals.push((t_open, r.wall));
        drop(engine);
    }
    totals.sort_by_key(|(_, s)| *s);
    let (o, s) = totals[totals.len() / 2];
    println!("median cached re-solve in a new Engine:  {} (+ open {}; target < 50 ms)", ms(s), ms(o));
    println!();
    Ok(())
}

async fn bench_run_chain(work: &Path, rootfs: &Path, n: u64) -> Result<()> {
    println!("== RUN chain: {n} RUN vertices on a busybox rootfs ==");
    let mut st = State::local("rootfs");
    for i in 0..n {
        st = st.run(ExecOptions::shell(format!("echo {i} >> /log"))).root();
    }
    let def = st.to_definition()?;
    let (engine, _) = open(&work.join("runchain-root"))?;
    let opts = || SolveOptions::default().local("rootfs", rootfs);
    let cold = solve(&engine, &def, opts()).await?;
    let in_runs = cold.vertex_time("echo ");
    println!(
        "cold solve:                              {}  (executed {}; {} inside RUN vertices, {:.1} ms per RUN)",
        secs(cold.wall),
        cold.result.executed,
        secs(in_runs),
        cold.wall.as_secs_f64() * 1e3 / n as f64
    );
    drop(engine);
    let (engine, t_open) = open(&work.join("runchain-root"))?;
    let warm = solve(&engine, &def, opts()).await?;
    println!("cached re-solve in a new Engine:         {} (+ open {})", ms(warm.wall), ms(t_open));
    // The same command as a bare `runc run` loop on a copy of the rootfs (runc's default spec,
    // writable root): what a RUN costs without kiln.
    let bundle = work.join("runc-bundle");
    let state = work.join("runc-state");
    sh(&format!(
        r#"rm -rf '{b}' && mkdir -p '{b}' && cp -a '{r}' '{b}/rootfs' && cd '{b}' && runc spec && sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"readonly": true/"readonly": false/' -e 's|"sh"$|"/bin/sh", "-c", "echo 1 >> /log"|' config.json"#,
        b = bundle.display(),
        r = rootfs.display()
    ))?;
    let bare = sh(&format!(
        "cd '{b}' && for i in $(seq 1 {n}); do runc --root '{s}' run --bundle . kiln-bench-$i > /dev/null || exit 1; done",
        b = bundle.display(),
        s = state.display()
    ))?;
    let lines = std::fs::read_to_string(bundle.join("rootfs/log")).map(|l| l.lines().count()).unwrap_or(0);
    let (kiln_run, bare_run) = (cold.wall.as_secs_f64() * 1e3 / n as f64, bare.as_secs_f64() * 1e3 / n as f64);
    println!(
        "bare `runc run` loop, same command:      {} ({:.1} ms per run, {lines} lines written) -> kiln's own share per RUN {:.1} ms",
        secs(bare),
        bare_run,
        kiln_run - bare_run
    );
    println!();
    Ok(())
}

async fn bench_layer(work: &Path, rootfs: &Path, mb: u64, kind: &str) -> Result<()> {
    let bytes = mb * 1_000_000;
    let script = match kind {
        "random" => format!("head -c {bytes} /dev/urandom > /data"),
        _ => format!("seq 1 100000000 | head -c {bytes} > /data"),
    };
    println!("== {mb} MB RUN ({kind} data) + type=oci export ==");
    let st = State::local("rootfs").run(ExecOptions::shell(script.clone())).root();
    let def = st.to_definition()?;
    let root = work.join(format!("layer-root-{kind}"));
    let (engine, _) = open(&root)?;
    let opts = || SolveOptions::default().local("rootfs", rootfs);

    let run = solve(&engine, &def, opts()).await?;
    let in_run = run.vertex_time("head -c");
    println!(
        "RUN solve, no export: total {}, container {}, kiln overhead {}",
        secs(run.wall),
        secs(in_run),
        secs(run.wall.saturating_sub(in_run))
    );

    let oci = work.join(format!("oci-{kind}"));
    let o = opts().output(&format!("type=oci,dest={},tar=false", oci.display()))?;
    let export = solve(&engine, &def, o).await?;
    let exp = export.export_time();
    let blobs = dir_bytes(&oci.join("blobs"));

    let oci2 = work.join(format!("oci2-{kind}"));
    let o = opts().output(&format!("type=oci,dest={},tar=false", oci2.display()))?;
    let again = solve(&engine, &def, o).await?;

    let files = work.join(format!("files-{kind}"));
    let o = opts().output(&format!("type=local,dest={}", files.display()))?;
    solve(&engine, &def, o).await?;
    let raw = dir_bytes(&files);
    drop(engine);

    let gz = sh(&format!("tar -c -C '{}' . | gzip -6 > /dev/null", files.display()))?;
    // GNU tar skips reading file data when its output is /dev/null itself: pipe through cat.
    let tar_only = sh(&format!("tar -c -C '{}' . | cat > /dev/null", files.display()))?;
    let rate = |d: Duration| raw as f64 / 1e6 / d.as_secs_f64();
    println!(
        "oci export, RUN cached: total {}, exporter {}: {:.1} MB/s of layer creation over {:.1} MB of files ({:.1} MB of blobs)",
        secs(export.wall),
        secs(exp),
        rate(export.wall),
        raw as f64 / 1e6,
        blobs as f64 / 1e6
    );
    println!("oci export again (layers known):  total {}", secs(again.wall));
    println!("tar -c DIR | gzip -6 > /dev/null: {} ({:.1} MB/s); tar alone {}", secs(gz), rate(gz), secs(tar_only));
    println!("kiln layer export / tar|gzip -6:  {:.2}x (target <= 1.5x)", export.wall.as_secs_f64() / gz.as_secs_f64());
    println!();
    Ok(())
}

/// Cache export/import (issue: export mode=max of 3 × 30 MB layers + 2,000 small files; the
/// hardlinked second export; a fresh root importing to a full hit without fetching blobs).
async fn bench_cache(work: &Path, rootfs: &Path) -> Result<()> {
    println!("== cache export mode=max (3 x 30 MB layers + 2,000 small files) and import ==");
    let st = State::local("rootfs")
        .run(ExecOptions::shell("head -c 30000000 /dev/urandom > /l1"))
        .root()
        .run(ExecOptions::shell("head -c 30000000 /dev/urandom > /l2"))
        .root()
        .run(ExecOptions::shell(
            "head -c 30000000 /dev/urandom > /l3 && mkdir /small && i=0; while [ $i -lt 2000 ]; do echo $i > /small/f$i; i=$((i+1)); done",
        ))
        .root();
    let def = st.to_definition()?;
    let (engine, _) = open(&work.join("cache-root-a"))?;
    let opts = || SolveOptions::default().local("rootfs", rootfs);
    let cold = solve(&engine, &def, opts()).await?;
    println!("build (no export): {}", secs(cold.wall));
    let export_time = |r: &Run| -> Duration {
        r.events
            .iter()
            .filter_map(|(_, e)| match e {
                ProgressEvent::VertexCompleted { vertex, duration, .. } if vertex.starts_with("cache-export:") => {
                    Some(*duration)
                }
                _ => None,
            })
            .sum()
    };
    // W1 (bench/compare's definition) cold, without and with a mode=max export in the same
    // solve: layers are made while the graph runs, the export's own step only writes metadata.
    let w1 = defs::w1().to_definition()?;
    for round in 1..=2 {
        let (e, _) = open(&work.join(format!("w1-cold-{round}")))?;
        let plain = solve(&e, &w1, opts()).await?;
        drop(e);
        let (e, _) = open(&work.join(format!("w1-export-{round}")))?;
        let dest = work.join(format!("w1-cache-{round}"));
        let exp = solve(&e, &w1, opts().cache_export(&format!("type=local,dest={},mode=max", dest.display()))?).await?;
        println!(
            "W1 cold {}, cold + local export mode=max {}: the export adds {} ({} after the graph, {:.1} MB of blobs)",
            secs(plain.wall),
            secs(exp.wall),
            secs(exp.wall.saturating_sub(plain.wall)),
            secs(export_time(&exp)),
            dir_bytes(&dest.join("blobs")) as f64 / 1e6
        );
    }
    let first_dir = work.join("cache-first");
    let r = solve(&engine, &def, opts().cache_export(&format!("type=local,dest={},mode=max", first_dir.display()))?)
        .await?;
    let first = export_time(&r);
    let blob_bytes = dir_bytes(&first_dir.join("blobs"));
    println!("first export (layers compressed now): {} for {:.1} MB of blobs", secs(first), blob_bytes as f64 / 1e6);
    // Layers already exist in the engine's store: same filesystem → hardlinks.
    let same_fs = work.join("cache-second");
    let r =
        solve(&engine, &def, opts().cache_export(&format!("type=local,dest={},mode=max", same_fs.display()))?).await?;
    println!("second export, same filesystem (hardlinks): {}", secs(export_time(&r)));
    // Another filesystem (tmpfs) → verified copies; compare with hashing and writing the same bytes.
    let shm = tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in("/dev/shm")
        .map_err(|e| Error::io("tmpdir in", "/dev/shm", e))?;
    let other_fs = shm.path().join("cache");
    let r =
        solve(&engine, &def, opts().cache_export(&format!("type=local,dest={},mode=max", other_fs.display()))?).await?;
    let copy = export_time(&r);
    let base_dir = shm.path().join("baseline");
    let baseline = sh(&format!(
        "mkdir -p '{b}' && for f in '{src}'/blobs/sha256/*; do sha256sum \"$f\" > /dev/null; cat \"$f\" > '{b}'/$(basename \"$f\"); done && sync",
        b = base_dir.display(),
        src = first_dir.display()
    ))?;
    println!(
        "export with blobs present, other filesystem (verified copy): {} vs hash+write of the same bytes {} -> {:.2}x (target <= 1.2x)",
        secs(copy),
        secs(baseline),
        copy.as_secs_f64() / baseline.as_secs_f64()
    );
    drop(engine);
    // A fresh root: import, no output requested → a full hit without fetching any layer blob.
    let t = Instant::now();
    let (fresh, open_time) = open(&work.join("cache-root-b"))?;
    let r = solve(&fresh, &def, opts().cache_import(&format!("type=local,src={}", first_dir.display()))?).await?;
    println!(
        "fresh root import to full hit: solve {} (+ Engine::open {}), total {}; executed {} (the local rootfs is read for its checksum), cached {}",
        ms(r.wall),
        ms(open_time),
        ms(t.elapsed()),
        r.result.executed,
        r.result.cached
    );
    println!();
    Ok(())
}

/// Client-side builds: reads from a cached ref and a build whose inner solves are all cached.
async fn bench_build(work: &Path, rootfs: &Path, mb: u64) -> Result<()> {
    use kiln::engine::{BuildOptions, BuildOutput, SolveRequest};
    println!("== client-side builds (Engine::build): reads from a cached ref, cached inner solves ==");
    let files = State::local("rootfs")
        .run(ExecOptions::shell(&format!(
            "head -c 1024 /dev/urandom > /small && head -c {} /dev/urandom > /big",
            mb * 1_000_000
        )))
        .root();
    let second = files.run(ExecOptions::shell("echo two > /two")).root();
    let third = files.run(ExecOptions::shell("echo three > /three")).root();
    let (engine, _) = open(&work.join("build-root"))?;
    let opts = || SolveOptions::default().local("rootfs", rootfs);
    for st in [&second, &third] {
        solve(&engine, &st.to_definition()?, opts()).await?;
    }
    const READS: u32 = 200;
    let figures = Arc::new(Mutex::new(Vec::new()));
    let f2 = figures.clone();
    let files2 = files.clone();
    engine
        .build(BuildOptions::new(opts()), move |ctx| async move {
            let r = ctx.solve_state(&files2, SolveRequest::default()).await?;
            let t = Instant::now();
            r.read_file("/small", None).await?;
            let first = t.elapsed();
            let t = Instant::now();
            for _ in 0..READS {
                r.read_file("/small", None).await?;
            }
            let small = t.elapsed() / READS;
            let t = Instant::now();
            let big = r.read_file("/big", None).await?;
            let big_t = t.elapsed();
            let t = Instant::now();
            r.read_file("/big", Some((mb * 500_000, 1024))).await?;
            let ranged = t.elapsed();
            let mut f = f2.lock().unwrap_or_else(|p| p.into_inner());
            f.extend([first, small, big_t, ranged]);
            f.push(Duration::from_nanos(big.len() as u64));
            Ok(None)
        })
        .await?;
    let f = figures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let [first, small, big, ranged, len] = f[..] {
        let bytes = len.as_nanos() as f64;
        println!(
            "read_file 1 KB: first {} (mounts the ref's view), then {:.1} us each ({READS} reads)",
            ms(first),
            small.as_secs_f64() * 1e6
        );
        println!(
            "read_file {:.0} MB: {} ({:.0} MB/s); a 1 KB range from its middle: {:.1} us",
            bytes / 1e6,
            ms(big),
            bytes / 1e6 / big.as_secs_f64(),
            ranged.as_secs_f64() * 1e6
        );
    }
    let build_once = || {
        let (a, b, c) = (files.clone(), second.clone(), third.clone());
        engine.build(BuildOptions::new(opts()), move |ctx| async move {
            let (ra, rb, rc) = tokio::join!(
                ctx.solve_state(&a, SolveRequest::default()),
                ctx.solve_state(&b, SolveRequest::default()),
                ctx.solve_state(&c, SolveRequest::default()),
            );
            let (_ra, rb, rc) = (ra?, rb?, rc?);
            rb.read_file("/two", None).await?;
            Ok(Some(BuildOutput::of(rc)))
        })
    };
    const BUILDS: u32 = 20;
    build_once().await?;
    let t = Instant::now();
    let mut last = None;
    for _ in 0..BUILDS {
        last = Some(build_once().await?);
    }
    let per_build = t.elapsed() / BUILDS;
    let def = third.to_definition()?;
    let t = Instant::now();
    for _ in 0..BUILDS {
        engine.solve(&def, opts()).await?;
    }
    let per_solve = t.elapsed() / BUILDS;
    println!(
        "client-side build, 3 cached inner solves + a 1 KB read: {} per build (cached {} executed {}; the local rootfs is checksummed per solve) vs one plain cached solve {}",
        ms(per_build),
        last.as_ref().map(|r| r.cached).unwrap_or(0),
        last.as_ref().map(|r| r.executed).unwrap_or(0),
        ms(per_solve)
    );
    println!();
    Ok(())
}

/// A Dockerfile of `n` instructions (FROM lines included): stages of 50 on the named context
/// `base`, each FROM the previous stage, mixing every common instruction (RUN with cache mounts
/// and heredocs, COPY from the context and from stages, ENV, ARG, LABEL, WORKDIR, EXPOSE, USER).
pub fn generated_dockerfile(n: u64) -> String {
    let mut out = String::from("ARG BASE=base\n");
    let mut count = 1;
    let mut stage = 0;
    while count < n {
        if stage == 0 {
            out.push_str("FROM ${BASE} AS s0\n");
        } else {
            out.push_str(&format!("FROM s{} AS s{stage}\n", stage - 1));
        }
        count += 1;
        let mut i = 0;
        while i < 49 && count < n {
            let k = stage * 100 + i;
            out.push_str(&match i % 12 {
                0 => format!("ARG A{k}=v{k}\n"),
                1 => format!("ENV E{k}=\"$A{} x\" F{k}=${{E{k}:-d}}\n", stage * 100),
                2 => format!("RUN echo {k} > /f{k} && cat /f{k} >> /all\n"),
                3 => format!(
                    "RUN --mount=type=cache,target=/cache/{stage},sharing=locked echo {k} >> /cache/{stage}/log\n"
                ),
                4 => format!("COPY a.txt /copied/{k}.txt\n"),
                5 => format!("LABEL l{k}=\"value {k}\"\n"),
                6 => format!("WORKDIR /w/{k}\n"),
                7 => format!("EXPOSE {}/tcp\n", 1000 + k),
                8 => format!("RUN <<EOF\necho heredoc {k} > /h{k}\nEOF\n"),
                9 => "USER root\n".to_string(),
                10 if stage > 0 => format!("COPY --from=s{} /f{} /prev{k}\n", stage - 1, (stage - 1) * 100 + 2),
                _ => format!("RUN [\"/bin/sh\", \"-c\", \"echo exec {k} > /e{k}\"]\n"),
            });
            count += 1;
            i += 1;
        }
        stage += 1;
    }
    out
}

/// Parse and convert of a generated Dockerfile; a multi-stage Dockerfile built cold and cached.
async fn bench_dockerfile(work: &Path, rootfs: &Path, n: u64) -> Result<()> {
    use kiln::engine::BuildOptions;
    use kiln::frontend::dockerfile::convert::{convert, ConvertOptions};
    println!("== Dockerfile frontend (dockerfile.v0) ==");
    let text = generated_dockerfile(n);
    let (engine, _) = open(&work.join("dockerfile-root"))?;
    let attrs = [("context:base".to_owned(), "local:rootfs".to_owned())].into_iter().collect();
    let opts = ConvertOptions::from_frontend_attrs(&attrs)?;
    const ITER: u32 = 20;
    let df = kiln::frontend::dockerfile::parse(&text).map_err(|e| Error::new(ErrorKind::Definition, e.to_string()))?;
    let t = Instant::now();
    for _ in 0..ITER {
        kiln::frontend::dockerfile::parse(&text).map_err(|e| Error::new(ErrorKind::Definition, e.to_string()))?;
    }
    let parse = t.elapsed() / ITER;
    // Conversion resolves no image (stages and a local named context), so the engine as the
    // resolver is never asked; it runs on a blocking thread as in a build.
    let (conv, marshal, ops) = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || -> Result<(Duration, Duration, usize)> {
            let c = convert(&df, &opts, &engine)?;
            let t = Instant::now();
            for _ in 0..ITER {
                convert(&df, &opts, &engine)?;
            }
            let conv = t.elapsed() / ITER;
            let t = Instant::now();
            let mut ops = 0;
            for _ in 0..ITER {
                ops = c.state.to_definition()?.to_bytes().len();
            }
            Ok((conv, t.elapsed() / ITER, ops))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("convert task: {e}")))??
    };
    println!(
        "{n}-instruction Dockerfile ({} bytes): parse {}, convert {} (LLB + image config), marshal {} ({ops} bytes of definition); {ITER} runs each",
        text.len(),
        ms(parse),
        ms(conv),
        ms(marshal)
    );

    // A multi-stage build (three stages writing files, one copying from each), cold then cached.
    let ctx = work.join("df-context");
    std::fs::create_dir_all(&ctx).map_err(|e| Error::io("create", &ctx, e))?;
    std::fs::write(ctx.join("a.txt"), "a\n").map_err(|e| Error::io("write", &ctx, e))?;
    std::fs::write(ctx.join("Dockerfile"), defs::MULTI_STAGE_DOCKERFILE).map_err(|e| Error::io("write", &ctx, e))?;
    let build_opts = || {
        BuildOptions::new(
            SolveOptions::default().local("context", &ctx).local("dockerfile", &ctx).local("rootfs", rootfs),
        )
        .frontend_attr("context:base", "local:rootfs")
    };
    let t = Instant::now();
    let cold = engine.build_frontend("dockerfile.v0", build_opts()).await?;
    let cold_t = t.elapsed();
    let t = Instant::now();
    let cached = engine.build_frontend("dockerfile.v0", build_opts()).await?;
    let cached_t = t.elapsed();
    println!(
        "multi-stage Dockerfile (4 stages, 10 MB + 500 files): cold {} (executed {}), cached {} (cached {}, executed {})",
        secs(cold_t),
        cold.executed,
        ms(cached_t),
        cached.cached,
        cached.executed
    );
    println!();
    Ok(())
}

async fn run() -> Result<()> {
    let chain = env_num("KILN_BENCH_CHAIN", 1000);
    let runs = env_num("KILN_BENCH_RUNS", 100);
    let mb = env_num("KILN_BENCH_MB", 100);
    let parent = std::env::var_os("KILN_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("create bench work dir in", &parent, e))?;
    let rootfs = work.path().join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/make-rootfs");
    sh(&format!("sh '{}' '{}'", script.display(), rootfs.display()))?;
    println!(
        "kiln-bench: work dir {}, {} CPUs",
        work.path().display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!();
    let only = std::env::var("KILN_BENCH_ONLY").unwrap_or_default();
    let want = |case: &str| only.is_empty() || only.split(',').any(|c| c.trim() == case);
    if want("chain") {
        bench_file_chain(work.path(), chain).await?;
    }
    if want("runs") {
        bench_run_chain(work.path(), &rootfs, runs).await?;
    }
    if want("cache") {
        bench_cache(work.path(), &rootfs).await?;
    }
    if want("build") {
        bench_build(work.path(), &rootfs, mb).await?;
    }
    if want("dockerfile") {
        bench_dockerfile(work.path(), &rootfs, env_num("KILN_BENCH_DF_INSTRUCTIONS", 500)).await?;
    }
    if want("daemon") {
        daemon::bench_daemon(work.path()).await?;
    }
    if want("layer") {
        bench_layer(work.path(), &rootfs, mb, "random").await?;
        bench_layer(work.path(), &rootfs, mb, "text").await?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // `kiln-bench defs DIR`: only write the definitions bench/compare solves on both engines.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("defs") {
        let Some(dir) = args.get(2) else {
            eprintln!("usage: kiln-bench defs DIR");
            return std::process::ExitCode::FAILURE;
        };
        return match defs::write_all(Path::new(dir), env_num("KILN_COMPARE_CHAIN", 200)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kiln-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln-bench: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

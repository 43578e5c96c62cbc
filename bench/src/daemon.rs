//! `KILN_BENCH_ONLY=daemon`: what going through a daemon costs. A `kiln serve` runs in this
//! process on a unix socket (its own root); the same fully cached solve is timed embedded and
//! through `Engine::connect` (median of `KILN_BENCH_DAEMON_SOLVES`, default 50; target: under
//! 2 ms extra), then a `KILN_BENCH_CONTEXT_MB` (500) local context is streamed over the session
//! into the daemon and compared with `tar -c DIR | cat > /dev/null` on the same files (target:
//! at least 0.8x its throughput).

use kiln::engine::{Engine, EngineOptions, SolveOptions};
use kiln::graph::{MkfileOptions, State};
use kiln::server::ListenAddr;
use kiln::Result;
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn cached_median(engine: &Engine, def: &kiln::Definition, n: u64) -> Result<Duration> {
    engine.solve(def, SolveOptions::default()).await?;
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = engine.solve(def, SolveOptions::default()).await?;
        times.push(t.elapsed());
        if r.executed != 0 {
            return Err(kiln::Error::new(kiln::ErrorKind::Internal, "a cached solve executed vertices"));
        }
    }
    Ok(median(times))
}

/// Runs the daemon benchmark in `work`.
pub async fn bench_daemon(work: &Path) -> Result<()> {
    println!("== through a daemon (kiln serve on a unix socket) vs embedded ==");
    let sock = work.join("daemon/kiln.sock");
    let served = Engine::open(EngineOptions::new(work.join("daemon/root")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addrs = vec![ListenAddr::Unix(sock.clone())];
    let server = tokio::spawn(async move {
        kiln::server::serve(served, &addrs, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            return Err(kiln::Error::new(kiln::ErrorKind::Io, "kiln serve did not listen within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let remote = Engine::connect(&format!("unix://{}", sock.display()), &Default::default()).await?;
    let embedded = Engine::open(EngineOptions::new(work.join("daemon/embedded-root")))?;

    let mut st = State::scratch();
    for i in 0..20 {
        st = st.mkfile(&format!("/f{i}"), 0o644, format!("{i}\n").into_bytes(), MkfileOptions::default());
    }
    let def = st.to_definition()?;
    let n = crate::env_num("KILN_BENCH_DAEMON_SOLVES", 50);
    let e = cached_median(&embedded, &def, n).await?;
    let r = cached_median(&remote, &def, n).await?;
    println!(
        "fully cached solve (20 vertices), median of {n}: embedded {}, through kiln serve {}, overhead {} (target < 2 ms)",
        crate::ms(e),
        crate::ms(r),
        crate::ms(r.saturating_sub(e))
    );

    let mb = crate::env_num("KILN_BENCH_CONTEXT_MB", 500);
    let ctx = work.join("daemon/context");
    std::fs::create_dir_all(&ctx).map_err(|e| kiln::Error::io("create", &ctx, e))?;
    // 10 MB files of incompressible bytes (the transfer does not compress anyway).
    crate::sh(&format!(
        "cd '{}' && i=0; while [ $i -lt {} ]; do head -c 10000000 /dev/urandom > f$i; i=$((i+1)); done",
        ctx.display(),
        mb.div_ceil(10)
    ))?;
    let bytes = crate::dir_bytes(&ctx);
    let tar = crate::sh(&format!("tar -C '{}' -c . | cat > /dev/null", ctx.display()))?;
    let local = State::local("ctx").to_definition()?;
    let t = Instant::now();
    embedded.solve(&local, SolveOptions::default().local("ctx", &ctx)).await?;
    let in_process = t.elapsed();
    let t = Instant::now();
    remote.solve(&local, SolveOptions::default().local("ctx", &ctx)).await?;
    let streamed = t.elapsed();
    let rate = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9);
    println!(
        "{:.0} MB local context over the session: {} ({:.0} MB/s); tar -c | cat: {} ({:.0} MB/s); ratio {:.2} (target >= 0.8)",
        bytes as f64 / 1e6,
        crate::secs(streamed),
        rate(streamed),
        crate::secs(tar),
        rate(tar),
        rate(streamed) / rate(tar)
    );
    // Not a split of the streamed figure: the daemon hashes the files as they arrive and links
    // the received tree into its snapshot, so it does not redo what the embedded source does.
    println!(
        "  the same local source embedded (read, hashed and copied into a snapshot, no transfer): {} ({:.0} MB/s)",
        crate::secs(in_process),
        rate(in_process),
    );
    // Not the cold figure above: the daemon keeps what it synced for this client's shared key,
    // so later builds of the same context only transfer what changed.
    let t = Instant::now();
    remote.solve(&local, SolveOptions::default().local("ctx", &ctx)).await?;
    let unchanged = t.elapsed();
    crate::sh(&format!("head -c 10000000 /dev/urandom > '{}'", ctx.join("f0").display()))?;
    let t = Instant::now();
    remote.solve(&local, SolveOptions::default().local("ctx", &ctx)).await?;
    let one_changed = t.elapsed();
    println!(
        "  later builds of the same client (synced dir kept by shared key): unchanged {}, one 10 MB file changed {}",
        crate::secs(unchanged),
        crate::secs(one_changed)
    );
    drop(remote);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(60), server).await;
    println!();
    Ok(())
}

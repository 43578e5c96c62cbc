//! The definitions `bench/compare` solves on kiln and on BuildKit (`kiln-bench defs DIR` writes
//! them marshalled): the same bytes go to `kiln build` and `buildctl build`, so both engines run
//! identical graphs. Each starts from a copy of `local://rootfs` (a busybox rootfs) onto
//! scratch: BuildKit keys a local source by its session, and an exec whose writable rootfs is the
//! local itself gets no content-based key, so a new buildctl process would re-run every step;
//! the copy's result is keyed by content on both engines, so cached rows compare cache hits.

use kiln::graph::{CopyOptions, ExecOptions, State};
use kiln::{Error, Result};
use std::path::Path;

/// The busybox rootfs of the local `rootfs`, copied onto scratch.
fn base() -> State {
    State::scratch().copy(&State::local("rootfs"), "/", "/", CopyOptions::default())
}

/// `chain`: `n` RUN steps, each appending a line to `/log` (per-step overhead dominates).
pub fn run_chain(n: u64) -> State {
    let mut st = base();
    for i in 0..n {
        st = st.run(ExecOptions::shell(format!("echo {i} >> /log"))).root();
    }
    st
}

/// W1: four independent stages — three each writing 30,000,000 bytes of incompressible data,
/// one writing 2,000 small files — then a stage copying all four onto the rootfs.
pub fn w1() -> State {
    let base = base();
    let random = |i: u32| base.run(ExecOptions::shell(format!("head -c 30000000 /dev/urandom > /l{i}"))).root();
    let small = base
        .run(ExecOptions::shell(
            "mkdir /small && i=0; while [ $i -lt 2000 ]; do echo $i > /small/f$i; i=$((i+1)); done",
        ))
        .root();
    let copy = |dir: bool| CopyOptions { dir_copy_contents: dir, create_dest_path: true, ..Default::default() };
    base.copy(&random(1), "/l1", "/w1/l1", copy(false))
        .copy(&random(2), "/l2", "/w1/l2", copy(false))
        .copy(&random(3), "/l3", "/w1/l3", copy(false))
        .copy(&small, "/small", "/w1/small", copy(true))
}

/// Writes `chain.pb` (200 steps, or `KILN_COMPARE_CHAIN`) and `w1.pb` into `dir`.
pub fn write_all(dir: &Path, chain: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create definitions dir", dir, e))?;
    for (name, st) in [("chain.pb", run_chain(chain)), ("w1.pb", w1())] {
        let path = dir.join(name);
        std::fs::write(&path, st.to_definition()?.to_bytes()).map_err(|e| Error::io("write definition", &path, e))?;
    }
    // The multi-stage Dockerfile both engines build with `--frontend dockerfile.v0` (context and
    // Dockerfile in one directory; the busybox rootfs as the named context `base`).
    let df = dir.join("multistage");
    std::fs::create_dir_all(&df).map_err(|e| Error::io("create", &df, e))?;
    for (name, text) in [("Dockerfile", MULTI_STAGE_DOCKERFILE), ("a.txt", "a\n")] {
        std::fs::write(df.join(name), text).map_err(|e| Error::io("write", &df.join(name), e))?;
    }
    Ok(())
}

/// Four stages on the named context `base`: 10 MB of random bytes, 500 small files, a context
/// file, and a final stage copying from each and listing them.
pub const MULTI_STAGE_DOCKERFILE: &str = "FROM base AS one\nRUN head -c 10000000 /dev/urandom > /one\n\
FROM base AS two\nRUN mkdir /many && for i in $(seq 1 500); do echo $i > /many/$i; done\n\
FROM base AS three\nCOPY a.txt /a.txt\nRUN cat /a.txt > /three\n\
FROM base\nCOPY --from=one /one /r/one\nCOPY --from=two /many /r/many\nCOPY --from=three /three /r/three\n\
RUN ls /r > /r/list\n";

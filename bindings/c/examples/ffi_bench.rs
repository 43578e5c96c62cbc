//! The Rust baseline of bench/ffi: a chain of 1,000 file steps solved cold once on a root, then
//! re-solved fully cached in a new engine on that root 5 times; prints `rust <median ms>`.
//!
//!     cargo run --release -p kiln-capi --example ffi_bench -- ROOT
//!
//! The Python, Node and C programs in bench/ffi/ build and time exactly the same graph.

use kiln::graph::MkfileOptions;
use kiln::{Engine, EngineOptions, SolveOptions, State};
use std::time::Instant;

/// Steps in the chain.
const STEPS: usize = 1000;
/// Timed cached solves (the median is printed).
const RUNS: usize = 5;

/// scratch, then per step a file `/fI` holding `I`, named `step I` (a custom name ends the chain
/// of file actions, so every step is its own vertex).
fn graph() -> State {
    let mut st = State::scratch();
    for i in 0..STEPS {
        st = st
            .mkfile(format!("/f{i}"), 0o644, i.to_string(), MkfileOptions::default())
            .with_custom_name(format!("step {i}"));
    }
    st
}

/// The solve as every face times it: marshal the graph, solve with no outputs, quiet progress.
fn solve(rt: &tokio::runtime::Runtime, engine: &Engine, st: &State) -> kiln::Result<kiln::SolveResult> {
    let def = st.to_definition()?;
    rt.block_on(engine.solve(&def, SolveOptions::default()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).ok_or("usage: ffi_bench ROOT")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let open = || -> kiln::Result<Engine> {
        let _ctx = rt.enter();
        Engine::open(EngineOptions::new(&root))
    };
    let st = graph();
    {
        let engine = open()?;
        let cold = solve(&rt, &engine, &st)?;
        if cold.executed != STEPS {
            return Err(format!("cold solve executed {} steps, expected {STEPS}", cold.executed).into());
        }
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let engine = open()?;
        let t = Instant::now();
        let warm = solve(&rt, &engine, &st)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if warm.executed != 0 {
            return Err(format!("cached solve executed {} steps, expected 0", warm.executed).into());
        }
    }
    times.sort_by(f64::total_cmp);
    println!("rust {:.1}", times[RUNS / 2]);
    Ok(())
}

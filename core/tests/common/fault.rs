//! The fault suite's figures: every fault test records what it tried and found (trials,
//! failures, time to error, leaks) as one line per probe in `<target>/fault-summary/<test>.txt`;
//! `scripts/fault-summary` prints them all after a test run, and README's reliability section
//! quotes that table.

#![allow(dead_code)]

use std::path::PathBuf;

/// Where summary files go: `$KILN_FAULT_SUMMARY_DIR`, else `<target>/fault-summary`.
pub fn summary_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_FAULT_SUMMARY_DIR") {
        return PathBuf::from(d);
    }
    // Test binaries live in <target>/<profile>/deps.
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.ancestors().nth(3).map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    target.join("fault-summary")
}

/// Records one probe's figures, e.g. `record("kill9_cache_export", "local", &[("trials", "30"),
/// ("failures", "0"), ("leaks", "0")])`. Also printed, for `--nocapture` runs.
pub fn record(test: &str, probe: &str, figures: &[(&str, String)]) {
    let line = format!(
        "{test:<28} {probe:<32} {}",
        figures.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    println!("FAULT {line}");
    let dir = summary_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{test}.txt"));
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(f, "{line}");
    }
}

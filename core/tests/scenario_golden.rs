//! The golden definition of the shared scenario (tests/fixtures/scenario/README.md, step 6): the
//! graph built here marshals to exactly `definition.pb`, whose sha256 is `definition.sha256`.
//! Python, Node and C build the same graph and compare with the same files, so all four faces
//! produce byte-identical definitions. `KILN_BLESS=1 cargo test --test scenario_golden` rewrites
//! both files after a deliberate change of the encoding.

use kiln::graph::{CacheMountOptions, ExecOptions, MountSpec, Network, SecretMountOptions, State};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/scenario")
}

/// Steps 1 and 6 of the scenario.
fn golden() -> State {
    let base = State::local("rootfs");
    let ctx = State::local("ctx");
    let app = base
        .run(
            ExecOptions::new(["/bin/sh", "-c", "cat /ctx/hello.txt > /greeting"])
                .mount(MountSpec::bind("/ctx", &ctx, true)),
        )
        .root()
        .copy(
            &ctx,
            "/hello.txt",
            "/app/hello.txt",
            kiln::graph::CopyOptions { create_dest_path: true, ..Default::default() },
        );
    let mut o = ExecOptions::new(["/bin/sh", "-c", "true"]).env("Z", "1").env("A", "2");
    o.network = Network::None;
    o.custom_name = Some("golden".into());
    o.mounts.push(MountSpec::cache_with("/cache", CacheMountOptions::default()));
    o.mounts.push(MountSpec::secret_with("/run/secrets/tok", SecretMountOptions::default()).unwrap());
    app.try_run(o)
        .unwrap()
        .root()
        .mkdir("/p/q", kiln::graph::MkdirOptions { mode: 0o750, make_parents: true, ..Default::default() })
}

#[test]
fn the_scenario_marshals_to_the_golden_definition() {
    let bytes = golden().to_definition().unwrap().to_bytes();
    let hex = hex::encode(Sha256::digest(&bytes));
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(fixtures().join("definition.pb"), &bytes).unwrap();
        std::fs::write(fixtures().join("definition.sha256"), format!("{hex}\n")).unwrap();
    }
    let want = std::fs::read_to_string(fixtures().join("definition.sha256")).unwrap();
    assert_eq!(hex, want.trim(), "the scenario's definition changed; see this file's doc to bless it");
    assert_eq!(bytes, std::fs::read(fixtures().join("definition.pb")).unwrap());
}

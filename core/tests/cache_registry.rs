//! Cache export/import and images through a real `docker-registry` on 127.0.0.1: round trips in
//! both modes, several exporters (local + registry) and importers, pushing an image and building
//! FROM it as a `docker-image://` source in a fresh root.

mod common;

use common::kit::{base, sh, started, Kit};
use common::registry::TestRegistry;
use kiln::graph::{CopyOptions, State};
use kiln::solver::ProgressEvent;

fn graph() -> State {
    base().run(sh("echo from-registry-cache > /r")).root().copy(
        &State::local("ctx"),
        "/f.txt",
        "/f.txt",
        CopyOptions::default(),
    )
}

fn ctx(k: &Kit) -> std::path::PathBuf {
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("f.txt"), "F").unwrap();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_round_trip_both_modes_and_mixed_exporters() {
    let reg = TestRegistry::start();
    for mode in ["min", "max"] {
        let a = Kit::new();
        let c = ctx(&a);
        let local2 = a.path("local2");
        let o = a
            .opts()
            .local("ctx", &c)
            .cache_export(&format!("type=registry,ref={}/cache/app:{mode},mode={mode}", reg.addr))
            .unwrap()
            .cache_export(&format!("type=local,dest={},mode={mode}", a.path("local1").display()))
            .unwrap()
            .cache_export(&format!("type=local,dest={},mode={mode}", local2.display()))
            .unwrap();
        let (r, ev) = a.solve(&graph(), o).await;
        r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));

        let b = Kit::new();
        let out = b.path("out");
        let o = b
            .opts()
            .local("ctx", &c)
            .output(&format!("type=local,dest={}", out.display()))
            .unwrap()
            .cache_import(&format!("type=registry,ref={}/cache/missing:nope", reg.addr))
            .unwrap()
            .cache_import(&format!("type=registry,ref={}/cache/app:{mode}", reg.addr))
            .unwrap();
        let (r, ev) = b.solve(&graph(), o).await;
        let r = r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
        assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "mode={mode}: {:?}", started(&ev));
        assert!(ev.iter().any(|e| matches!(e, ProgressEvent::Warning { message } if message.contains("missing"))));
        assert!(r.cached >= 2);
        assert_eq!(std::fs::read_to_string(out.join("r")).unwrap(), "from-registry-cache\n");
        b.assert_no_leaks();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_image_then_build_from_it_in_a_fresh_root() {
    let reg = TestRegistry::start();
    let a = Kit::new();
    let img = base().run(sh("echo pushed > /pushed")).root();
    let o = a.opts().output(&format!("type=image,name={}/kiln/base:1,push=true", reg.addr)).unwrap();
    let (r, ev) = a.solve(&img, o).await;
    let r = r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert!(r.exporter_response["containerimage.digest"].starts_with("sha256:"));
    let sk = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/kiln/base:1", reg.addr))
        .output()
        .expect("skopeo");
    assert!(sk.status.success(), "{}", String::from_utf8_lossy(&sk.stderr));

    let b = Kit::new();
    let out = b.path("out");
    let from = State::image(format!("{}/kiln/base:1", reg.addr)).run(sh("cat /pushed > /seen")).root();
    let (r, ev) = b
        .solve(&from, kiln::SolveOptions::default().output(&format!("type=local,dest={}", out.display())).unwrap())
        .await;
    r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    assert_eq!(std::fs::read_to_string(out.join("seen")).unwrap(), "pushed\n");
    b.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_merge_keeps_previous_records() {
    let reg = TestRegistry::start();
    let one = base().run(sh("echo one > /one")).root();
    let two = base().run(sh("echo two > /two")).root();
    let a = Kit::new();
    for (g, merge) in [(&one, false), (&two, true)] {
        let o = a
            .opts()
            .cache_export(&format!("type=registry,ref={}/cache/merged:t,mode=max,merge={merge}", reg.addr))
            .unwrap();
        let (r, ev) = a.solve(g, o).await;
        r.unwrap_or_else(|e| panic!("{e}: {ev:#?}"));
    }
    let b = Kit::new();
    for g in [&one, &two] {
        let o = b.opts().cache_import(&format!("type=registry,ref={}/cache/merged:t", reg.addr)).unwrap();
        let (r, ev) = b.solve(g, o).await;
        r.unwrap();
        assert!(started(&ev).iter().all(|n| n.starts_with("local://")), "{:?}", started(&ev));
    }
}

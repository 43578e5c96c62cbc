//! Image configs end to end (issue 9 §2): a base image's config is inherited by states built
//! through the engine's resolver (a real registry on 127.0.0.1 and an OCI layout), later runs
//! use its env/cwd/user, exports keep every field (checked with skopeo and umoci);
//! SOURCE_DATE_EPOCH makes two fresh roots export and push the same manifest; foreign platforms
//! are refused, the host's is recorded.

mod common;

use common::kit::{base, read, sh, Kit};
use common::registry::TestRegistry;
use kiln::graph::{Healthcheck, ImageConfig, ImageOptions, ImageRef, OciRef, Platform, State};
use kiln::ErrorKind;
use std::path::Path;
use std::process::Command;

/// A config using every field kiln models.
fn full_config() -> ImageConfig {
    ImageConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: vec!["FOO=from-base".into(), "KEEP=kept".into()],
        working_dir: Some("/srv/app".into()),
        user: Some("nobody".into()),
        labels: [("org.example.base".to_owned(), "1".to_owned())].into(),
        exposed_ports: ["8080/tcp".to_owned(), "53/udp".to_owned()].into(),
        volumes: ["/data".to_owned()].into(),
        stop_signal: Some("SIGQUIT".into()),
        healthcheck: Some(Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(30_000_000_000),
            timeout: Some(5_000_000_000),
            start_period: Some(1_000_000_000),
            start_interval: None,
            retries: Some(3),
        }),
        shell: Some(vec!["/bin/ash".into(), "-c".into()]),
        on_build: Some(vec!["RUN echo child".into()]),
        annotations: Default::default(),
        args_escaped: true,
        author: None,
        history: Vec::new(),
    }
}

fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect --config --raw` of an image, as JSON.
fn skopeo_config(image: &str) -> serde_json::Value {
    let raw = tool(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--config", "--raw", image]));
    serde_json::from_str(&raw).expect("config JSON")
}

fn skopeo_manifest(image: &str) -> serde_json::Value {
    let raw = tool(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", image]));
    serde_json::from_str(&raw).expect("manifest JSON")
}

/// The busybox base with `full_config()`, exported to an OCI layout (tag `1`) and pushed to `reg`.
async fn publish_base(k: &Kit, reg: &TestRegistry, layout: &Path) -> String {
    let name = format!("{}/kiln/cfgbase:1", reg.addr);
    let mut o = k
        .opts()
        .output(&format!("type=oci,dest={},tar=false,name=1", layout.display()))
        .unwrap()
        .output(&format!("type=image,name={name},push=true"))
        .unwrap();
    o.image_config = full_config();
    let (r, ev) = k.solve(&base(), o).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    name
}

#[tokio::test(flavor = "multi_thread")]
async fn base_image_config_is_inherited_used_by_runs_and_exported() {
    let k = Kit::new();
    let reg = TestRegistry::start();
    let layout = k.path("base-layout");
    let name = publish_base(&k, &reg, &layout).await;

    let from_registry = k.engine().image(&name, &ImageOptions::default()).await.unwrap();
    let from_layout = k.engine().oci_layout(&layout, OciRef::Tag("1".into()), &ImageOptions::default()).await.unwrap();
    for (what, st) in [("registry", from_registry), ("layout", from_layout)] {
        // The base's history (the exporter's entry for its one layer) comes along.
        let history = vec![kiln::graph::HistoryEntry { created_by: "kiln".into(), ..Default::default() }];
        assert_eq!(st.image_config(), ImageConfig { history, ..full_config() }, "{what}");
        assert_eq!(st.cwd(), "/srv/app");
        // What the script sets later is merged in: same key replaced, new keys and labels added;
        // an entrypoint set later resets the inherited cmd (Dockerfile's rule).
        let st = st.with_env("FOO", "over").with_env("NEW", "n").with_label("org.example.app", "2");
        let run = st
            .run(sh("mkdir -p /tmp/o && { echo \"$FOO $KEEP $NEW\"; pwd; id -u; } > /tmp/o/report"))
            .root()
            .with_entrypoint(["/app"]);
        let cfg = run.image_config();
        assert_eq!(cfg.env, vec!["FOO=over", "KEEP=kept", "NEW=n"]);
        assert_eq!(cfg.cmd, None);
        assert_eq!(cfg.labels.len(), 2);

        let out = k.path(&format!("out-{what}"));
        let img = k.path(&format!("img-{what}"));
        let mut o = k
            .opts()
            .output(&format!("type=local,dest={}", out.display()))
            .unwrap()
            .output(&format!("type=oci,dest={},tar=false,name=v", img.display()))
            .unwrap();
        o.image_config = cfg;
        let (r, ev) = k.solve(&run, o).await;
        r.unwrap_or_else(|e| panic!("{what}: {e} {ev:#?}"));
        // The run saw the inherited env, working dir and user (nobody = 65534).
        assert_eq!(read(&out.join("tmp/o/report")), "over kept n\n/srv/app\n65534\n", "{what}");

        let c = skopeo_config(&format!("oci:{}:v", img.display()));
        let cc = &c["config"];
        assert_eq!(cc["Env"], serde_json::json!(["FOO=over", "KEEP=kept", "NEW=n"]), "{what}");
        assert_eq!(cc["WorkingDir"], "/srv/app");
        assert_eq!(cc["User"], "nobody");
        assert_eq!(cc["Entrypoint"], serde_json::json!(["/app"]));
        assert!(cc.get("Cmd").is_none(), "{cc}");
        assert_eq!(cc["ExposedPorts"], serde_json::json!({"53/udp": {}, "8080/tcp": {}}));
        assert_eq!(cc["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(cc["StopSignal"], "SIGQUIT");
        assert_eq!(
            cc["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000i64,
                "Timeout": 5_000_000_000i64, "StartPeriod": 1_000_000_000i64, "Retries": 3})
        );
        assert_eq!(cc["Shell"], serde_json::json!(["/bin/ash", "-c"]));
        assert_eq!(cc["OnBuild"], serde_json::json!(["RUN echo child"]));
        assert_eq!(cc["Labels"]["org.example.app"], "2");
        let host = Platform::host();
        assert_eq!(
            (c["os"].as_str(), c["architecture"].as_str()),
            (Some(host.os.as_str()), Some(host.architecture.as_str()))
        );
        tool(Command::new("umoci").args(["stat", "--image"]).arg(format!("{}:v", img.display())));
    }

    // The resolver pins by digest only when asked (BuildKit's ResolveDigest).
    let pinned = k.engine().image(&name, &ImageOptions { resolve_digest: true, ..Default::default() }).await.unwrap();
    let def = pinned.to_definition().unwrap();
    let ident = def.vertices().iter().find_map(|v| v.source_spec().ok().flatten()).map(|s| s.to_identifier());
    assert!(ident.as_deref().is_some_and(|i| i.contains(&format!("{name}@sha256:"))), "{ident:?}");
    k.assert_no_leaks();
}

#[test]
fn offline_image_states_marshal_without_a_resolver() {
    // Pure graph building: no network, no engine.
    let st = State::image("busybox").run(sh("true")).root();
    assert!(st.to_definition().is_ok());
    assert_eq!(State::image("busybox").image_config(), ImageConfig::default());
    // A whole config applied by hand is what a resolved base gives.
    let st = State::scratch().with_image_config(&full_config()).with_cmd(["x"]).with_entrypoint(["e"]);
    assert_eq!(st.image_config().cmd, Some(vec!["x".to_owned()]), "a cmd set on the state survives an entrypoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn resolver_errors_name_the_image() {
    let k = Kit::native();
    let missing = k.path("no-layout");
    let e = k.engine().oci_layout(&missing, OciRef::Tag("1".into()), &ImageOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("no-layout"), "{e}");
    let e = k
        .engine()
        .resolve_image_config(&ImageRef::Registry("127.0.0.1:1/none:1".into()), Some(&foreign()))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

/// A platform this host does not run.
fn foreign() -> Platform {
    let host = Platform::host();
    if host.architecture == "s390x" { "linux/arm64" } else { "linux/s390x" }.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_platforms_are_refused_and_the_host_one_is_recorded() {
    let k = Kit::native();
    let host = Platform::host();
    let f = foreign();
    let e = k.opts().platform(&f.to_string()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let msg = e.to_string();
    assert!(msg.contains(&f.to_string()) && msg.contains(&host.to_string()), "{msg}");
    let e = "linux".parse::<Platform>().unwrap_err();
    assert!(e.to_string().contains("os/arch"), "{e}");

    // Set on the options directly, or on a source op: refused before anything runs.
    let mut o = k.opts();
    o.platform = Some(f.clone());
    let (r, _) = k.solve(&base(), o).await;
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&f.to_string()) && msg.contains(&host.to_string()), "{msg}");
    let src = State::image_with_options("127.0.0.1:1/none:1", &ImageOptions::platform(f.clone()));
    let (r, _) = k.solve(&src, k.opts()).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains(&f.to_string()), "{e}");

    // The host platform works and is what the image records.
    let img = k.path("img");
    let o = k.opts().platform("local").unwrap().output(&format!("type=oci,dest={},tar=false", img.display())).unwrap();
    let (r, ev) = k.solve(&base(), o).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    let c = skopeo_config(&format!("oci:{}:latest", img.display()));
    assert_eq!(c["os"], host.os.as_str());
    assert_eq!(c["architecture"], host.architecture.as_str());
    let index: serde_json::Value = serde_json::from_str(&read(&img.join("index.json"))).unwrap();
    assert_eq!(index["manifests"][0]["platform"]["architecture"], host.architecture.as_str());
}

const EPOCH: i64 = 1_700_000_000;

/// One build in a fresh root: a run writing files with this build's own times (now, and a random
/// future time), exported as an OCI layout tar and pushed. Returns (oci digest, pushed digest).
async fn reproducible_build(reg: &TestRegistry, tag: &str) -> (String, String, Kit) {
    let k = Kit::native();
    let st = base()
        .run(sh("echo data > /made && t=$((1800000000 + $(od -An -N2 -tu2 /dev/urandom))) && mkdir -p /d && touch -d @$t /d/future"))
        .root()
        .with_env("A", "1");
    let mut o =
        k.opts().source_date_epoch(EPOCH).output(&format!("type=oci,dest={}", k.path("img.tar").display())).unwrap();
    o.image_config = st.image_config();
    let (r, ev) = k.solve(&st, o).await;
    let oci = r.unwrap_or_else(|e| panic!("{e} {ev:#?}")).exporter_response["containerimage.digest"].clone();
    let mut o = k
        .opts()
        .source_date_epoch(EPOCH)
        .output(&format!("type=image,name={}/kiln/repro:{tag},push=true", reg.addr))
        .unwrap();
    o.image_config = st.image_config();
    let (r, ev) = k.solve(&st, o).await;
    let pushed = r.unwrap_or_else(|e| panic!("{e} {ev:#?}")).exporter_response["containerimage.digest"].clone();
    (oci, pushed, k)
}

#[tokio::test(flavor = "multi_thread")]
async fn source_date_epoch_gives_the_same_digest_from_fresh_roots() {
    let reg = TestRegistry::start();
    let (oci_a, pushed_a, ka) = reproducible_build(&reg, "a").await;
    let (oci_b, pushed_b, _kb) = reproducible_build(&reg, "b").await;
    assert_eq!(oci_a, oci_b, "OCI exports of two fresh roots differ");
    assert_eq!(pushed_a, pushed_b, "pushed images of two fresh roots differ");
    let image = format!("docker://{}/kiln/repro:a", reg.addr);
    assert_eq!(
        skopeo_manifest(&image)["config"]["digest"],
        skopeo_manifest(&format!("docker://{}/kiln/repro:b", reg.addr))["config"]["digest"]
    );
    let c = skopeo_config(&image);
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    assert!(c["history"].as_array().unwrap().iter().all(|h| h["created"] == "2023-11-14T22:13:20Z"), "{c}");
    // No layer entry is newer than the epoch; the base layer's older times are kept.
    let dir = ka.path("unpacked");
    tool(Command::new("tar").arg("-xf").arg(ka.path("img.tar")).arg("-C").arg({
        std::fs::create_dir_all(&dir).unwrap();
        &dir
    }));
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir.join(format!("blobs/sha256/{}", oci_a.trim_start_matches("sha256:")))))
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob =
            dir.join(format!("blobs/sha256/{}", layer["digest"].as_str().unwrap().trim_start_matches("sha256:")));
        let listing = tool(Command::new("tar").args(["--full-time", "-tvzf"]).arg(&blob));
        for line in listing.lines() {
            let date = line.split_whitespace().nth(3).unwrap_or_default();
            assert!(date <= "2023-11-14", "entry newer than SOURCE_DATE_EPOCH: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn output_attributes_set_config_and_annotations() {
    let k = Kit::native();
    let img = k.path("img");
    let cfg =
        r#"{"architecture":"ignored","config":{"Env":["X=1"],"ExposedPorts":{"80/tcp":{}}}}"#.replace('"', "\"\"");
    let o = k
        .opts()
        .output(&format!(
            "type=oci,dest={},tar=false,name=t,\"containerimage.config={cfg}\",annotation.org.opencontainers.image.title=kiln,annotation-manifest-descriptor.d=1",
            img.display()
        ))
        .unwrap();
    let (r, ev) = k.solve(&base(), o).await;
    r.unwrap_or_else(|e| panic!("{e} {ev:#?}"));
    let c = skopeo_config(&format!("oci:{}:t", img.display()));
    assert_eq!(c["config"]["Env"], serde_json::json!(["X=1"]));
    assert_eq!(c["config"]["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
    assert_eq!(c["architecture"], Platform::host().architecture.as_str());
    let m = skopeo_manifest(&format!("oci:{}:t", img.display()));
    assert_eq!(m["annotations"]["org.opencontainers.image.title"], "kiln");
    let index: serde_json::Value = serde_json::from_str(&read(&img.join("index.json"))).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["d"], "1");
    tool(Command::new("umoci").args(["stat", "--image"]).arg(format!("{}:t", img.display())));
}

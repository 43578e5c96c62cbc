//! Integration tests of the OCI exporter, checked with the real `skopeo` and `umoci`, and of the
//! oci-layout source reading the result back.

use kiln::content::{layer_reader, write_layer, Compression, ContentStore, LayerBlob};
use kiln::export::export_oci;
use kiln::graph::ImageConfig;
use kiln::source::oci_layout::resolve_oci_layout;
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layer(store: &ContentStore, files: &[(&str, &str)], compression: Compression, oci: bool) -> LayerBlob {
    write_layer(store, &compression, oci, |w| {
        let mut b = tar::Builder::new(w);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "etc", std::io::empty()).unwrap();
        for (name, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
        b.finish().unwrap();
        Ok(())
    })
    .unwrap()
}

fn config() -> ImageConfig {
    ImageConfig {
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), "cat /etc/hello".into()]),
        env: vec!["PATH=/usr/bin:/bin".into()],
        working_dir: Some("/etc".into()),
        labels: [("org.example.k".to_owned(), "v".to_owned())].into(),
        ..Default::default()
    }
}

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args(["inspect", reference]));
    serde_json::from_str(&out).unwrap()
}

/// gzip and uncompressed layers (umoci 0.4 cannot read zstd layers).
fn image_layers(store: &ContentStore) -> Vec<LayerBlob> {
    vec![
        layer(store, &[("etc/hello", "hello from kiln\n")], Compression::default(), true),
        layer(store, &[("etc/second", "two\n")], Compression::Gzip { level: 1 }, true),
        layer(store, &[("etc/third", "three\n")], Compression::Uncompressed, true),
    ]
}

#[test]
fn oci_layout_dir_passes_skopeo_and_umoci_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("engine")).unwrap();
    let layers = image_layers(&store);
    let out = dir.path().join("layout");
    let digest = export_oci(&store, &layers, &config(), &out, false, None, true).unwrap();

    let info = skopeo_inspect(&format!("oci:{}:latest", out.display()));
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(info["Labels"]["org.example.k"], "v");
    assert_eq!(info["Os"], "linux");

    let stat = run(Command::new("umoci").args(["stat", "--image", &format!("{}:latest", out.display())]));
    assert!(stat.contains("LAYER"), "{stat}");

    // umoci unpack extracts the layers in order.
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &format!("{}:latest", out.display())]).arg(&bundle));
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/hello")).unwrap(), "hello from kiln\n");
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/second")).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/third")).unwrap(), "three\n");
    let runtime: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["cwd"], "/etc");

    // A second tag in the same layout keeps the first one.
    let d2 = export_oci(&store, &layers[..1], &ImageConfig::default(), &out, false, Some("v2"), true).unwrap();
    assert_eq!(skopeo_inspect(&format!("oci:{}:v2", out.display()))["Digest"], d2.as_str());
    assert_eq!(skopeo_inspect(&format!("oci:{}:latest", out.display()))["Digest"], digest.as_str());

    // Round trip: the oci-layout source brings the image into another store.
    let engine2 = ContentStore::open(&dir.path().join("engine2")).unwrap();
    let img = resolve_oci_layout(&out, "latest", &engine2).unwrap();
    assert_eq!(img.manifest_digest, digest);
    assert_eq!(img.layers.len(), 3);
    let diff_ids = img.config.rootfs().diff_ids();
    for (i, (desc, original)) in img.layers.iter().zip(&layers).enumerate() {
        let d = kiln::Digest::parse(desc.digest().as_ref()).unwrap();
        assert_eq!(d, original.digest);
        let mut tar_bytes = Vec::new();
        layer_reader(&engine2, &d, desc.media_type().as_ref()).unwrap().read_to_end(&mut tar_bytes).unwrap();
        assert_eq!(kiln::Digest::of(&tar_bytes).as_str(), diff_ids[i]);
    }
    let by_digest = resolve_oci_layout(&out, digest.as_str(), &engine2).unwrap();
    assert_eq!(by_digest.manifest_digest, digest);

    // zstd layers: skopeo reads the manifest, the oci-layout source reads the layer back.
    let z = layer(&store, &[("etc/z", "zstd\n")], Compression::Zstd { level: 3 }, true);
    let dz = export_oci(&store, std::slice::from_ref(&z), &config(), &out, false, Some("zstd"), true).unwrap();
    let info = skopeo_inspect(&format!("oci:{}:zstd", out.display()));
    assert_eq!(info["Digest"], dz.as_str());
    let img = resolve_oci_layout(&out, "zstd", &engine2).unwrap();
    assert_eq!(img.layers[0].media_type().as_ref(), "application/vnd.oci.image.layer.v1.tar+zstd");
    let mut tar_bytes = Vec::new();
    layer_reader(&engine2, &z.digest, &z.media_type).unwrap().read_to_end(&mut tar_bytes).unwrap();
    assert_eq!(kiln::Digest::of(&tar_bytes), z.diff_id);
}

#[test]
fn oci_source_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("engine")).unwrap();
    let err = resolve_oci_layout(&dir.path().join("nope"), "latest", &store).unwrap_err();
    assert_eq!(err.kind(), kiln::ErrorKind::Source);
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    let layers = image_layers(&store);
    let out = dir.path().join("layout");
    export_oci(&store, &layers, &config(), &out, false, Some("v1"), true).unwrap();
    let err = resolve_oci_layout(&out, "v9", &store).unwrap_err();
    assert_eq!(err.kind(), kiln::ErrorKind::Source);
    assert!(err.to_string().contains("known tags: v1"), "{err}");
    // A corrupt layer in the layout is detected and nothing of it lands in the engine store.
    let engine2 = ContentStore::open(&dir.path().join("engine2")).unwrap();
    let victim = out.join("blobs/sha256").join(layers[0].digest.hex());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let err = resolve_oci_layout(&out, "v1", &engine2).unwrap_err();
    assert_eq!(err.kind(), kiln::ErrorKind::Content, "{err}");
    assert!(!engine2.has(&layers[0].digest));
}

fn extract(tar_file: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("tar").arg("-xf").arg(tar_file).arg("-C").arg(into));
}

#[test]
fn oci_tar_extracts_to_a_valid_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("engine")).unwrap();
    let layers = image_layers(&store);
    let out = dir.path().join("out/image.tar");
    let digest = export_oci(&store, &layers, &config(), &out, true, Some("mytag"), true).unwrap();
    // Nothing but the tar in its directory (the temp file was renamed).
    assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
    let x = dir.path().join("x");
    extract(&out, &x);
    let info = skopeo_inspect(&format!("oci:{}:mytag", x.display()));
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    // skopeo can also read the tar directly through its oci-archive transport.
    let info = skopeo_inspect(&format!("oci-archive:{}:mytag", out.display()));
    assert_eq!(info["Digest"], digest.as_str());
    // And umoci unpacks the extracted layout.
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &format!("{}:mytag", x.display())]).arg(&bundle));
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/third")).unwrap(), "three\n");
}

#[test]
fn docker_media_types_round_trip_through_oci_tar() {
    // skopeo's oci transport only accepts OCI media types in index.json, so this round trip is
    // checked with kiln's own reader.
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("engine")).unwrap();
    let layers = vec![layer(&store, &[("etc/hello", "hi\n")], Compression::default(), false)];
    let out = dir.path().join("image.tar");
    let digest = export_oci(&store, &layers, &config(), &out, true, None, false).unwrap();
    let x = dir.path().join("x");
    extract(&out, &x);
    let engine2 = ContentStore::open(&dir.path().join("engine2")).unwrap();
    let img = resolve_oci_layout(&x, "latest", &engine2).unwrap();
    assert_eq!(img.manifest_digest, digest);
    assert_eq!(
        img.manifest.media_type().as_ref().unwrap().as_ref(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(img.layers[0].media_type().as_ref(), "application/vnd.docker.image.rootfs.diff.tar.gzip");
    let mut tar_bytes = Vec::new();
    layer_reader(&engine2, &layers[0].digest, &layers[0].media_type).unwrap().read_to_end(&mut tar_bytes).unwrap();
    assert_eq!(kiln::Digest::of(&tar_bytes), layers[0].diff_id);
}

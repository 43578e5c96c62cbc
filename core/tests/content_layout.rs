//! Integration tests of OCI layout index updates under the index.json lock.

use kiln::content::OciLayout;
use kiln::Digest;
use oci_spec::image::{Descriptor, MediaType};

fn desc_for(data: &[u8]) -> Descriptor {
    let d: oci_spec::image::Digest = Digest::of(data).as_str().parse().unwrap();
    Descriptor::new(MediaType::ImageManifest, data.len() as u64, d)
}

#[test]
fn set_tag_from_eight_threads_keeps_all_tags() {
    let dir = tempfile::tempdir().unwrap();
    OciLayout::create(dir.path()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                // Each thread opens its own handle, as separate processes would.
                let layout = OciLayout::open(&path).unwrap();
                for round in 0..5 {
                    layout.set_tag(&format!("t{i}"), desc_for(format!("{i}-{round}").as_bytes())).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let layout = OciLayout::open(dir.path()).unwrap();
    let index = layout.index().unwrap();
    assert_eq!(index.manifests().len(), 8);
    for i in 0..8 {
        let d = layout.resolve(&format!("t{i}")).unwrap();
        assert_eq!(d.digest().as_ref(), Digest::of(format!("{i}-4").as_bytes()).as_str());
    }
    // index.json is valid JSON with the OCI index media type; no temp files left.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn update_index_keeps_foreign_entries() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    // Another tool adds an untagged entry.
    layout
        .update_index(|mut idx| {
            let mut m = idx.manifests().clone();
            m.push(desc_for(b"foreign"));
            idx.set_manifests(m);
            Ok(idx)
        })
        .unwrap();
    layout.set_tag("mine", desc_for(b"mine")).unwrap();
    assert_eq!(layout.index().unwrap().manifests().len(), 2);
    let err = layout.resolve("other").unwrap_err();
    assert!(err.to_string().contains("known tags: mine"), "{err}");
}

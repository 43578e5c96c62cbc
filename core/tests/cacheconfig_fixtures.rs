//! BuildKit v0.11 cache exports (tests/fixtures/buildkit-cache) parse into kiln's cache config
//! model; the model serialises back to the same JSON BuildKit wrote; both wrapper forms work.

use kiln::remotecache::config::{
    cache_index_json, cache_manifest_json, config_descriptor, descriptor_digest, layer_created_at, layer_descriptor,
    layer_diff_id, parse_cache_config, parse_cache_index, parse_cache_manifest, parse_cache_root, CacheConfig,
    CACHE_CONFIG_MEDIA_TYPE,
};
use kiln::{Digest, ErrorKind};
use oci_spec::image::{Descriptor, ImageIndex};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/buildkit-cache");

struct Export {
    dir: PathBuf,
    root_bytes: Vec<u8>,
    layers: Vec<Descriptor>,
    config_bytes: Vec<u8>,
    config: CacheConfig,
}

fn blob(dir: &Path, d: &Digest) -> Vec<u8> {
    let bytes = std::fs::read(dir.join("blobs/sha256").join(d.hex())).unwrap();
    d.verify(&bytes).unwrap();
    bytes
}

fn load(name: &str) -> Export {
    let dir = Path::new(FIXTURES).join(name);
    let index: ImageIndex = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests().len(), 1);
    let root = &index.manifests()[0];
    assert_eq!(root.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"], "latest");
    let root_bytes = blob(&dir, &descriptor_digest(root).unwrap());
    assert_eq!(root_bytes.len() as u64, root.size());
    let (layers, config_desc) = parse_cache_index(&root_bytes).unwrap();
    assert_eq!(config_desc.media_type().to_string(), CACHE_CONFIG_MEDIA_TYPE);
    let config_bytes = blob(&dir, &descriptor_digest(&config_desc).unwrap());
    assert_eq!(config_bytes.len() as u64, config_desc.size());
    let config = parse_cache_config(&config_bytes).unwrap();
    Export { dir, root_bytes, layers, config_bytes, config }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Counts straight from the JSON, independent of kiln's model.
fn raw_counts(e: &Export) -> (usize, usize, usize) {
    let cfg = json(&e.config_bytes);
    let root = json(&e.root_bytes);
    let entries = root["manifests"].as_array().unwrap().len();
    (cfg["layers"].as_array().unwrap().len(), cfg["records"].as_array().unwrap().len(), entries)
}

#[test]
fn both_fixtures_parse_with_the_counts_the_files_hold() {
    for (name, layers, records) in [("w1-local-mode-min", 7, 15), ("w1-local-mode-max", 11, 15)] {
        let e = load(name);
        let (raw_layers, raw_records, entries) = raw_counts(&e);
        assert_eq!((raw_layers, raw_records), (layers, records), "{name}");
        assert_eq!(e.config.layers.len(), raw_layers, "{name}");
        assert_eq!(e.config.records.len(), raw_records, "{name}");
        assert_eq!(e.layers.len(), entries - 1, "{name}: every entry but the config is a layer");
        assert_eq!(e.layers.len(), e.config.layers.len(), "{name}");
    }
}

#[test]
fn mode_max_has_more_layers_than_mode_min() {
    let min = load("w1-local-mode-min");
    let max = load("w1-local-mode-max");
    assert!(max.config.layers.len() > min.config.layers.len());
    assert!(max.layers.len() > min.layers.len());
    let results = |c: &CacheConfig| c.records.iter().map(|r| r.results.len()).sum::<usize>();
    assert!(results(&max.config) > results(&min.config));
}

#[test]
fn layer_descriptors_carry_buildkit_annotations_and_match_the_omitted_list() {
    for name in ["w1-local-mode-min", "w1-local-mode-max"] {
        let e = load(name);
        let tsv = std::fs::read_to_string(e.dir.join("OMITTED_LAYERS.tsv")).unwrap();
        let omitted: BTreeSet<(String, u64, String)> = tsv
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0].to_owned(), f[1].parse().unwrap(), f[2].to_owned())
            })
            .collect();
        let listed: BTreeSet<(String, u64, String)> =
            e.layers.iter().map(|d| (d.digest().to_string(), d.size(), d.media_type().to_string())).collect();
        assert_eq!(listed, omitted, "{name}");
        for d in &e.layers {
            let diff_id = layer_diff_id(d).expect("containerd.io/uncompressed");
            let created = layer_created_at(d).expect("buildkit/createdat");
            // kiln's writer produces exactly BuildKit's descriptor.
            let rebuilt = layer_descriptor(
                d.media_type().as_ref(),
                &descriptor_digest(d).unwrap(),
                d.size(),
                &diff_id,
                Some(created),
            )
            .unwrap();
            assert_eq!(&rebuilt, d);
        }
        // Every config layer blob is one of the index's layers.
        let blobs: BTreeSet<String> = e.layers.iter().map(|d| d.digest().to_string()).collect();
        for l in &e.config.layers {
            assert!(blobs.contains(l.blob.as_str()), "{name}: {} missing", l.blob);
        }
    }
}

#[test]
fn every_result_resolves_to_a_layer_chain_ending_at_a_base_layer() {
    for name in ["w1-local-mode-min", "w1-local-mode-max"] {
        let e = load(name);
        let mut with_inputs = 0;
        for r in &e.config.records {
            for res in &r.results {
                let chain = e.config.layer_chain(res.layer_index).unwrap();
                assert_eq!(*chain.last().unwrap() as i64, res.layer_index);
                assert_eq!(e.config.layers[chain[0]].parent, -1);
                assert!(res.created_at.is_some());
            }
            with_inputs += usize::from(!r.inputs.is_empty());
        }
        assert!(with_inputs > 0, "{name}: records link to inputs");
        assert!(e.config.records.iter().flat_map(|r| r.inputs.iter().flatten()).any(|i| !i.selector.is_empty()));
    }
    // mode=max holds a layer whose parent is layer 0: Go omits `"parent":0`, absent means 0.
    let max = load("w1-local-mode-max");
    let raw = json(&max.config_bytes);
    let absent = raw["layers"].as_array().unwrap().iter().position(|l| l.get("parent").is_none()).unwrap();
    assert_eq!(max.config.layers[absent].parent, 0);
}

#[test]
fn our_json_equals_buildkits_json() {
    for name in ["w1-local-mode-min", "w1-local-mode-max"] {
        let e = load(name);
        let ours = e.config.to_json().unwrap();
        // Same field names, same omitted fields: the JSON values are identical.
        assert_eq!(json(&ours), json(&e.config_bytes), "{name}");
        assert_eq!(parse_cache_config(&ours).unwrap(), e.config, "{name}");
        // The index form kiln writes equals BuildKit's index too.
        let (_, cfg_desc) = parse_cache_index(&e.root_bytes).unwrap();
        let index = cache_index_json(&e.layers, &cfg_desc).unwrap();
        assert_eq!(json(&index), json(&e.root_bytes), "{name}");
        assert_eq!(config_descriptor(&e.config_bytes).unwrap(), cfg_desc);
    }
}

#[test]
fn image_manifest_form_round_trips() {
    let e = load("w1-local-mode-max");
    let (_, cfg_desc) = parse_cache_index(&e.root_bytes).unwrap();
    let manifest = cache_manifest_json(&e.layers, &cfg_desc).unwrap();
    let v = json(&manifest);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(v["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(v["layers"].as_array().unwrap().len(), e.layers.len());
    let (layers, config) = parse_cache_manifest(&manifest).unwrap();
    assert_eq!((layers.clone(), config.clone()), (e.layers.clone(), cfg_desc.clone()));
    assert_eq!(parse_cache_root(&manifest).unwrap(), (layers, config));
    assert_eq!(parse_cache_root(&e.root_bytes).unwrap(), (e.layers.clone(), cfg_desc));
}

#[test]
fn malformed_documents_are_content_errors() {
    let e = load("w1-local-mode-min");
    // A link past the end names the record.
    let mut v = json(&e.config_bytes);
    v["records"][1]["inputs"][0][0]["link"] = serde_json::json!(99);
    let err = parse_cache_config(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Content);
    let digest = v["records"][1]["digest"].as_str().unwrap();
    assert!(err.to_string().contains("record 1") && err.to_string().contains(digest), "{err}");
    // A record linking to itself is a cycle.
    let mut v = json(&e.config_bytes);
    v["records"][1]["inputs"][0][0]["link"] = serde_json::json!(1);
    assert!(parse_cache_config(&serde_json::to_vec(&v).unwrap()).unwrap_err().to_string().contains("cycle"));
    // A result layer past the end.
    let mut v = json(&e.config_bytes);
    let rec = v["records"].as_array().unwrap().iter().position(|r| r.get("layers").is_some()).unwrap();
    v["records"][rec]["layers"][0]["layer"] = serde_json::json!(70);
    let err = parse_cache_config(&serde_json::to_vec(&v).unwrap()).unwrap_err().to_string();
    assert!(err.contains(&format!("record {rec}")) && err.contains("70"), "{err}");
    // An index without the config entry.
    let mut v = json(&e.root_bytes);
    v["manifests"].as_array_mut().unwrap().pop();
    let err = parse_cache_index(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.to_string().contains(CACHE_CONFIG_MEDIA_TYPE) && err.to_string().contains("exactly one"), "{err}");
    // A manifest whose config is an image config.
    let (_, mut cfg) = parse_cache_index(&e.root_bytes).unwrap();
    cfg.set_media_type(oci_spec::image::MediaType::ImageConfig);
    let err = parse_cache_manifest(&cache_manifest_json(&e.layers, &cfg).unwrap()).unwrap_err();
    assert!(err.to_string().contains("expected application/vnd.buildkit.cacheconfig.v0"), "{err}");
    assert!(parse_cache_config(b"{not json").unwrap_err().to_string().contains("invalid cache config JSON"));
}

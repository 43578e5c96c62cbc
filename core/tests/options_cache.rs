//! Cache export/import option parsing: every accepted key and value, each error class, CSV
//! quoting, the legacy forms and the canonical round trip.

use kiln::options::{
    validate_exports, CacheCompression, CacheExportSpec, CacheImportSource, CacheImportSpec, CacheMode, CacheTarget,
};
use kiln::{Digest, ErrorKind};
use std::path::PathBuf;

fn export(s: &str) -> CacheExportSpec {
    CacheExportSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn import(s: &str) -> CacheImportSpec {
    CacheImportSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Asserts an option error whose message holds every needle.
fn assert_err(r: kiln::Result<impl std::fmt::Debug>, needles: &[&str]) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), ErrorKind::Option, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

#[test]
fn local_export_defaults() {
    let s = export("type=local,dest=/tmp/cache");
    assert_eq!(s.target, CacheTarget::Local { dir: PathBuf::from("/tmp/cache"), tag: "latest".into() });
    assert_eq!(s.mode, CacheMode::Min);
    assert_eq!(s.compression, CacheCompression::Gzip);
    assert_eq!(s.compression_level, None);
    assert!(!s.force_compression && s.oci_mediatypes && s.image_manifest);
    assert!(!s.ignore_error && !s.merge && !s.cache_mounts);
}

#[test]
fn every_export_key() {
    let s = export(
        "type=local,dest=d,tag=v1,mode=max,compression=zstd,compression-level=19,force-compression=true,\
         oci-mediatypes=false,image-manifest=false,ignore-error=true,merge=true,cache-mounts=true",
    );
    assert_eq!(s.target, CacheTarget::Local { dir: "d".into(), tag: "v1".into() });
    assert_eq!(s.mode, CacheMode::Max);
    assert_eq!(s.compression, CacheCompression::Zstd);
    assert_eq!(s.compression_level, Some(19));
    assert!(s.force_compression && !s.oci_mediatypes && !s.image_manifest);
    assert!(s.ignore_error && s.merge && s.cache_mounts);

    let r =
        export("type=registry,ref=127.0.0.1:5000/cache:main,registry.insecure=true,mode=min,compression=uncompressed");
    assert_eq!(r.target, CacheTarget::Registry { reference: "127.0.0.1:5000/cache:main".into(), insecure: true });
    assert_eq!(r.compression, CacheCompression::Uncompressed);
    assert_eq!(export("type=local,dest=d,compression=gzip,compression-level=0").compression_level, Some(0));
    assert_eq!(export("type=local,dest=d,compression-level=9").compression_level, Some(9));
    // Keys are case-insensitive like buildctl's; bools accept Go's spellings.
    assert_eq!(export("TYPE=local,Dest=d,MODE=max").mode, CacheMode::Max);
    assert!(export("type=local,dest=d,merge=1").merge);
    assert!(!export("type=local,dest=d,oci-mediatypes=F").oci_mediatypes);
}

#[test]
fn store_is_the_old_spelling() {
    assert_eq!(export("type=local,store=/c").target, CacheTarget::Local { dir: "/c".into(), tag: "latest".into() });
    assert_eq!(
        import("type=local,store=/c").source,
        CacheImportSource::Local { dir: "/c".into(), tag: None, digest: None }
    );
    assert_err(CacheExportSpec::parse("type=local,dest=/a,store=/b"), &["store", "/b", "dest=/a", "give one"]);
}

#[test]
fn every_import_key() {
    let d = Digest::of(b"cache");
    let s = import(&format!("type=local,src=/c,digest={d}"));
    assert_eq!(s.source, CacheImportSource::Local { dir: "/c".into(), tag: None, digest: Some(d.clone()) });
    let s = import("type=local,src=/c,tag=v2");
    assert_eq!(s.source, CacheImportSource::Local { dir: "/c".into(), tag: Some("v2".into()), digest: None });
    let s = import("type=registry,ref=localhost:5000/c,registry.insecure=true");
    assert_eq!(s.source, CacheImportSource::Registry { reference: "localhost:5000/c".into(), insecure: true });
    assert_err(
        CacheImportSpec::parse(&format!("type=local,src=/c,tag=t,digest={d}")),
        &["digest", "tag=t", "not both"],
    );
    assert_err(CacheImportSpec::parse("type=local,src=/c,digest=sha256:abc"), &["digest", "sha256:abc", "64"]);
}

#[test]
fn bad_values_name_key_value_and_accepted() {
    assert_err(CacheExportSpec::parse("type=local,dest=d,mode=maxx"), &["mode", "maxx", "expected min or max"]);
    assert_err(
        CacheExportSpec::parse("type=local,dest=d,compression=lz4"),
        &["compression", "lz4", "gzip, zstd or uncompressed"],
    );
    assert_err(CacheExportSpec::parse("type=local,dest=d,compression=estargz"), &["estargz", "not supported"]);
    assert_err(CacheExportSpec::parse("type=local,dest=d,compression-level=10"), &["compression-level", "10", "0-9"]);
    assert_err(
        CacheExportSpec::parse("type=local,dest=d,compression=zstd,compression-level=x"),
        &["compression-level", "\"x\"", "1-22"],
    );
    assert_err(
        CacheExportSpec::parse("type=local,dest=d,compression=uncompressed,compression-level=3"),
        &["compression-level", "3", "gzip"],
    );
    for key in ["force-compression", "oci-mediatypes", "image-manifest", "ignore-error", "merge", "cache-mounts"] {
        assert_err(CacheExportSpec::parse(&format!("type=local,dest=d,{key}=yes")), &[key, "yes", "true or false"]);
    }
    assert_err(
        CacheExportSpec::parse("type=registry,ref=r/c,registry.insecure=maybe"),
        &["registry.insecure", "maybe", "true or false"],
    );
    assert_err(CacheExportSpec::parse("type=registry,ref=http://r/c"), &["ref", "http://r/c", "without a scheme"]);
    assert_err(CacheExportSpec::parse("type=local,dest=d,tag="), &["tag", "must not be empty"]);
}

#[test]
fn missing_required_keys() {
    assert_err(CacheExportSpec::parse("type=local,mode=max"), &["dest", "required", "dest=DIR", "store=DIR"]);
    assert_err(CacheExportSpec::parse("type=registry,mode=max"), &["ref", "required", "ref=HOST/REPO"]);
    assert_err(CacheImportSpec::parse("type=local"), &["src", "required", "src=DIR"]);
    assert_err(CacheImportSpec::parse("type=registry"), &["ref", "required"]);
    assert_err(CacheExportSpec::parse("mode=max,dest=d"), &["type", "required", "local", "registry"]);
    assert_err(CacheExportSpec::parse("type=local,dest="), &["dest", "must not be empty"]);
}

#[test]
fn unknown_keys_list_the_accepted_keys() {
    assert_err(
        CacheExportSpec::parse("type=local,dest=d,color=blue"),
        &["color", "blue", "unknown key", "accepted keys: type, dest, store, tag, mode, compression"],
    );
    assert_err(
        CacheImportSpec::parse("type=registry,ref=r/c,foo=1"),
        &["foo", "\"1\"", "unknown key", "accepted keys: type, ref, registry.insecure"],
    );
}

#[test]
fn keys_of_the_other_direction_or_type_are_rejected() {
    assert_err(
        CacheImportSpec::parse("type=local,dest=/c"),
        &[
            "dest",
            "/c",
            "not accepted by a cache import of type=local",
            "accepted keys: type, src, store, tag, digest",
            "src=DIR",
        ],
    );
    assert_err(
        CacheExportSpec::parse("type=local,src=/c"),
        &["src", "/c", "not accepted by a cache export of type=local", "dest=DIR"],
    );
    assert_err(
        CacheExportSpec::parse("type=registry,ref=r/c,tag=v1"),
        &["tag", "v1", "type=registry", "ref=HOST/REPO:TAG"],
    );
    assert_err(
        CacheExportSpec::parse("type=local,dest=d,registry.insecure=true"),
        &["registry.insecure", "type=local"],
    );
    assert_err(
        CacheImportSpec::parse("type=registry,ref=r/c,mode=max"),
        &["mode", "max", "cache import", "cache exports"],
    );
    assert_err(CacheExportSpec::parse("type=local,dest=d,digest=sha256:0"), &["digest", "not accepted"]);
}

#[test]
fn unsupported_and_unknown_types() {
    for t in ["gha", "s3", "azblob", "inline"] {
        assert_err(
            CacheExportSpec::parse(&format!("type={t}")),
            &["type", t, &format!("cache type {t} is not supported by kiln; supported: local, registry")],
        );
        assert_err(CacheImportSpec::parse(&format!("type={t},ref=x")), &["not supported by kiln"]);
    }
    assert_err(CacheExportSpec::parse("type=floppy,dest=d"), &["type", "floppy", "supported: local, registry"]);
}

#[test]
fn duplicate_keys_are_rejected() {
    assert_err(CacheExportSpec::parse("type=local,dest=a,dest=b"), &["dest", "b", "more than once"]);
}

#[test]
fn csv_quoting_in_values() {
    let s = export("type=local,\"dest=/tmp/a,b\",tag=x");
    assert_eq!(s.target, CacheTarget::Local { dir: "/tmp/a,b".into(), tag: "x".into() });
    let s = export("type=local,dest=\"/tmp/a,b\",tag=x");
    assert_eq!(s.target, CacheTarget::Local { dir: "/tmp/a,b".into(), tag: "x".into() });
    assert_err(CacheExportSpec::parse("type=local,dest=d,"), &["empty field"]);
    assert_err(CacheExportSpec::parse("type=local,dest=d,max"), &["max", "KEY=VALUE"]);
}

#[test]
fn legacy_forms_translate_to_the_new_form() {
    let legacy =
        CacheExportSpec::parse_legacy("localhost:5000/cache", &["mode=max".into(), "ignore-error=true".into()])
            .unwrap();
    assert_eq!(legacy, export("type=registry,ref=localhost:5000/cache,mode=max,ignore-error=true"));
    assert_eq!(legacy.to_csv(), "type=registry,ref=localhost:5000/cache,mode=max,ignore-error=true");
    assert_eq!(export("localhost:5000/cache"), export("type=registry,ref=localhost:5000/cache"));
    assert_eq!(import("localhost:5000/cache:tag"), import("type=registry,ref=localhost:5000/cache:tag"));
    let i = CacheImportSpec::parse_legacy("127.0.0.1:5000/c", &["registry.insecure=true".into()]).unwrap();
    assert_eq!(i.source, CacheImportSource::Registry { reference: "127.0.0.1:5000/c".into(), insecure: true });
    // Legacy options go through the same validation.
    assert_err(CacheExportSpec::parse_legacy("r/c", &["mode=maxx".into()]), &["mode", "maxx", "min or max"]);
    assert_err(CacheExportSpec::parse_legacy("r/c", &["mode".into()]), &["mode", "KEY=VALUE"]);
    assert_err(CacheExportSpec::parse_legacy("r/c", &["ref=other".into()]), &["ref", "more than once"]);
    assert_err(CacheExportSpec::parse_legacy("", &[]), &["ref", "bare HOST/REPO"]);
    assert_err(CacheImportSpec::parse_legacy("r/c", &["mode=max".into()]), &["mode", "cache import"]);
}

#[test]
fn canonical_form_round_trips() {
    let inputs = [
        "type=local,dest=/tmp/c",
        "type=local,store=/tmp/c,tag=v1,mode=max",
        "type=local,dest=\"/tmp/a,b\",compression=zstd,compression-level=3,force-compression=true",
        "type=local,dest=d,oci-mediatypes=false,image-manifest=false,ignore-error=true,merge=true,cache-mounts=true",
        "type=registry,ref=127.0.0.1:5000/c:t,registry.insecure=true,mode=max,compression=uncompressed",
        "r/c",
    ];
    for s in inputs {
        let spec = export(s);
        let canon = spec.to_csv();
        assert_eq!(export(&canon), spec, "{s} -> {canon}");
        assert_eq!(canon.parse::<CacheExportSpec>().unwrap(), spec);
        assert_eq!(spec.to_string(), canon);
    }
    assert_eq!(export("type=local,store=/c,mode=min,tag=latest").to_csv(), "type=local,dest=/c");
    let d = Digest::of(b"x");
    for s in [
        "type=local,src=/c".to_owned(),
        "type=local,store=/c,tag=v".to_owned(),
        format!("type=local,src=/c,digest={d}"),
        "type=registry,ref=r/c,registry.insecure=true".to_owned(),
        "type=local,src=\"a\"\"b,c\"".to_owned(),
    ] {
        let spec = import(&s);
        assert_eq!(import(&spec.to_csv()), spec, "{s}");
        assert_eq!(spec.to_csv().parse::<CacheImportSpec>().unwrap(), spec);
    }
}

#[test]
fn duplicate_exporters() {
    let a = export("type=local,dest=/c");
    let b = export("type=local,dest=/c/,tag=latest");
    assert_err(validate_exports(&[a.clone(), b]), &["dest", "/c", "tag latest", "own dest or tag"]);
    validate_exports(&[a.clone(), export("type=local,dest=/c,tag=other"), export("type=local,dest=/d")]).unwrap();
    let r = export("type=registry,ref=r/c:1");
    assert_err(
        validate_exports(&[r.clone(), a, export("type=registry,ref=r/c:1,mode=max")]),
        &["ref", "r/c:1", "own ref"],
    );
    validate_exports(&[r, export("type=registry,ref=r/c:2")]).unwrap();
}

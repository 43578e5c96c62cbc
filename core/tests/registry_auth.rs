//! Basic auth against a real `docker-registry` configured with a bcrypt htpasswd file, with
//! credentials from a temp `DOCKER_CONFIG`. One test in its own process, because it sets the
//! process environment.

mod common;

use common::registry::TestRegistry;
use kiln::content::ContentStore;
use kiln::registry::{Reference, RegistryClient};
use kiln::ErrorKind;

#[test]
fn basic_auth_with_credentials_from_docker_config() {
    let reg = TestRegistry::start_with_htpasswd("kiln", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("store")).unwrap();
    let d = store.write_bytes(b"private blob").unwrap();
    let r = Reference::parse(&format!("{}/private/repo:t", reg.addr)).unwrap();

    // No credentials: the error names the registry and where credentials were looked for.
    let empty = dir.path().join("empty-config");
    std::fs::create_dir_all(&empty).unwrap();
    std::env::set_var("DOCKER_CONFIG", &empty);
    let anon = RegistryClient::new(true).unwrap();
    let e = anon.push_blob(&r, &d, &store, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Registry);
    let msg = e.to_string();
    assert!(msg.contains(&reg.addr), "{msg}");
    assert!(msg.contains(&empty.join("config.json").display().to_string()), "{msg}");

    // Wrong password: refused, and the message says credentials came from the file.
    let bad = dir.path().join("bad-config");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"username": "kiln", "password": "wrong"}}}}}}"#, reg.addr),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &bad);
    let e = RegistryClient::new(true).unwrap().blob_exists(&r, &d).unwrap_err();
    assert!(e.to_string().contains("refused the credentials"), "{e}");

    // Right credentials (base64 "auth" form, keyed with a scheme as `docker login` may write).
    let good = dir.path().join("good-config");
    std::fs::create_dir_all(&good).unwrap();
    // base64("kiln:s3cret")
    std::fs::write(
        good.join("config.json"),
        format!(r#"{{"auths": {{"http://{}": {{"auth": "a2lsbjpzM2NyZXQ="}}}}}}"#, reg.addr),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &good);
    let c = RegistryClient::new(true).unwrap();
    c.push_blob(&r, &d, &store, None).unwrap();
    assert_eq!(c.blob_exists(&r, &d).unwrap(), Some(12));
    let other = ContentStore::open(&dir.path().join("other")).unwrap();
    c.fetch_blob(&r, &d, &other).unwrap();
    assert_eq!(other.read(&d).unwrap(), b"private blob");
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let cfg = store.write_bytes(b"{}").unwrap();
    c.push_blob(&r, &cfg, &store, None).unwrap();
    let md = c.put_manifest(&r, "application/vnd.oci.image.manifest.v1+json", manifest).unwrap();
    assert_eq!(c.resolve(&r).unwrap().0, md);
}

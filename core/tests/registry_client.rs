//! Integration tests of `kiln::registry` against a real `docker-registry` on 127.0.0.1, checked
//! with `skopeo`, plus tiny fake registries (TCP servers in the test) for misbehaviour and tokens.

mod common;

use common::registry::TestRegistry;
use kiln::content::{write_image, write_layer, Compression, ContentStore, OciLayout};
use kiln::graph::ImageConfig;
use kiln::registry::{pull_image_metadata, push_image, PushStats, Reference, RegistryClient};
use kiln::{Digest, ErrorKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

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

fn client() -> RegistryClient {
    RegistryClient::new(true).expect("client")
}

fn reference(reg: &TestRegistry, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{}/{repo_tag}", reg.addr)).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for a real upload.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ContentStore::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn small_blob_is_uploaded_once_then_skipped() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let d = s.write_bytes(b"a small blob").unwrap();
    let r = reference(&reg, "small/blob:t");
    assert_eq!(c.blob_exists(&r, &d).unwrap(), None);
    c.push_blob(&r, &d, &s, None).unwrap();
    assert_eq!(c.push_stats(), PushStats { monolithic_uploads: 1, bytes_uploaded: 12, ..Default::default() });
    assert_eq!(c.blob_exists(&r, &d).unwrap(), Some(12));
    // Re-push: the HEAD hit means nothing is uploaded.
    c.clone().push_blob(&r, &d, &s, None).unwrap();
    assert_eq!(c.push_stats().blobs_skipped, 1);
    assert_eq!(c.push_stats().monolithic_uploads, 1);
    assert_eq!(c.push_stats().bytes_uploaded, 12);
    let (_d2, s2) = store();
    c.fetch_blob(&r, &d, &s2).unwrap();
    assert_eq!(s2.read(&d).unwrap(), b"a small blob");
}

#[test]
fn large_blob_streams_in_one_request_by_default() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let data = noise(20 * 1000 * 1000, 11);
    let d = s.write_bytes(&data).unwrap();
    let r = reference(&reg, "big/mono:t");
    c.push_blob(&r, &d, &s, None).unwrap();
    let st = c.push_stats();
    assert_eq!((st.monolithic_uploads, st.chunked_uploads, st.chunks), (1, 0, 0), "{st:?}");
    assert_eq!(st.bytes_uploaded, data.len() as u64);
    assert_eq!(c.blob_exists(&r, &d).unwrap(), Some(data.len() as u64));
}

#[test]
fn push_blobs_uploads_many_at_once_and_skips_present_ones() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let digests: Vec<_> = (0..10u64).map(|i| s.write_bytes(&noise(300_000 + i as usize, i)).unwrap()).collect();
    let r = reference(&reg, "many/blobs:t");
    c.push_blob(&r, &digests[0], &s, None).unwrap();
    c.push_blobs(&r, &digests, &s).unwrap();
    let st = c.push_stats();
    assert_eq!((st.monolithic_uploads, st.blobs_skipped), (10, 1), "{st:?}");
    for d in &digests {
        assert!(c.blob_exists(&r, d).unwrap().is_some(), "{d} missing");
    }
    // A missing local blob fails the batch with its digest named; nothing else is lost.
    let missing = Digest::of(b"not in the store");
    let err = c.push_blobs(&r, &[missing.clone()], &s).unwrap_err();
    assert!(err.to_string().contains(missing.as_str()), "{err}");
}

#[test]
fn large_blob_is_uploaded_in_chunks_and_fetched_back() {
    let reg = TestRegistry::start();
    let c = client().with_chunk_size(kiln::registry::DEFAULT_CHUNK_SIZE);
    let (_d, s) = store();
    let data = noise(20 * 1000 * 1000, 7);
    let d = s.write_bytes(&data).unwrap();
    let r = reference(&reg, "big/blob:t");
    c.push_blob(&r, &d, &s, None).unwrap();
    let st = c.push_stats();
    assert_eq!(st.chunked_uploads, 1, "{st:?}");
    assert_eq!(st.chunks, 3, "20 MB in 8 MiB chunks: {st:?}");
    assert_eq!(st.monolithic_uploads, 0);
    assert_eq!(st.bytes_uploaded, data.len() as u64);
    assert_eq!(c.blob_exists(&r, &d).unwrap(), Some(data.len() as u64));
    let (_d2, s2) = store();
    c.fetch_blob(&r, &d, &s2).unwrap();
    assert_eq!(s2.size(&d).unwrap(), data.len() as u64);
    // Not `read`: that is capped at the metadata limit; a layer blob is read from its file.
    assert_eq!(Digest::of(&std::fs::read(s2.blob_path(&d)).unwrap()), d);
    // A small chunk size chunks small blobs too.
    let small = s.write_bytes(&noise(1000, 3)).unwrap();
    let c2 = client().with_chunk_size(300);
    c2.push_blob(&r, &small, &s, None).unwrap();
    assert_eq!(c2.push_stats().chunks, 4);
    assert_eq!(c2.blob_exists(&r, &small).unwrap(), Some(1000));
}

#[test]
fn cross_repository_mount() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let d = s.write_bytes(&noise(4096, 11)).unwrap();
    let a = reference(&reg, "team/a:t");
    let b = reference(&reg, "team/b:t");
    c.push_blob(&a, &d, &s, None).unwrap();
    c.push_blob(&b, &d, &s, Some("team/a")).unwrap();
    let st = c.push_stats();
    assert_eq!((st.blobs_mounted, st.monolithic_uploads), (1, 1), "{st:?}");
    assert_eq!(c.blob_exists(&b, &d).unwrap(), Some(4096));
    // The registry-qualified form names the same repository.
    let e = reference(&reg, "team/e:t");
    c.push_blob(&e, &d, &s, Some(&format!("{}/team/a", reg.addr))).unwrap();
    assert_eq!(c.push_stats().blobs_mounted, 2);
    // Mounting from a repository without the blob falls back to an upload.
    let other = s.write_bytes(b"not in a").unwrap();
    let cc = reference(&reg, "team/c:t");
    c.push_blob(&cc, &other, &s, Some("team/a")).unwrap();
    let st = c.push_stats();
    assert_eq!((st.blobs_mounted, st.monolithic_uploads), (2, 2), "{st:?}");
    assert_eq!(c.blob_exists(&cc, &other).unwrap(), Some(8));
}

/// An image (two layers) written into `store`; returns the manifest descriptor.
fn make_image(s: &ContentStore, oci: bool) -> oci_spec::image::Descriptor {
    let layers: Vec<_> = (0..2u8)
        .map(|i| {
            write_layer(s, &Compression::default(), oci, |w| {
                let mut b = tar::Builder::new(w);
                let data = format!("file {i}\n");
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, format!("f{i}"), data.as_bytes()).unwrap();
                b.finish().unwrap();
                Ok(())
            })
            .unwrap()
        })
        .collect();
    let cfg = ImageConfig { cmd: Some(vec!["/bin/sh".into()]), ..Default::default() };
    write_image(s, &layers, &cfg, oci).unwrap()
}

#[test]
fn manifests_by_tag_and_digest_resolve_and_push_image() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let desc = make_image(&s, true);
    let md = Digest::parse(desc.digest().as_ref()).unwrap();
    let manifest = s.read(&md).unwrap();
    let r = reference(&reg, "app/img:v1");
    push_image(&c, &r, &desc, &s).unwrap();
    assert_eq!(c.push_stats().monolithic_uploads, 3, "two layers and the config");

    let (bytes, mt, digest) = c.get_manifest(&r).unwrap();
    assert_eq!((bytes.as_slice(), mt.as_str(), &digest), (manifest.as_slice(), desc.media_type().as_ref(), &md));
    let by_digest = r.with_digest(md.clone());
    assert_eq!(c.get_manifest(&by_digest).unwrap().0, manifest);
    assert_eq!(c.resolve(&r).unwrap(), (md.clone(), desc.media_type().to_string(), manifest.len() as u64));
    assert_eq!(c.resolve(&by_digest).unwrap().0, md);

    // put_manifest to another tag and to a digest.
    let r2 = reference(&reg, "app/img:v2");
    assert_eq!(c.put_manifest(&r2, desc.media_type().as_ref(), &manifest).unwrap(), md);
    assert_eq!(c.resolve(&r2).unwrap().0, md);
    assert_eq!(c.put_manifest(&by_digest, desc.media_type().as_ref(), &manifest).unwrap(), md);
    let wrong = r.with_digest(Digest::of(b"other"));
    let e = c.put_manifest(&wrong, desc.media_type().as_ref(), &manifest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Registry);

    // Re-pushing the image skips every blob.
    push_image(&c, &r, &desc, &s).unwrap();
    assert_eq!(c.push_stats().blobs_skipped, 3);

    // skopeo reads what kiln pushed, blobs included.
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{r}")));
    assert_eq!(raw.as_bytes(), manifest.as_slice());
    let out = tempfile::tempdir().unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{r}"))
        .arg(format!("oci:{}:v1", out.path().display())));

    // Unknown tags and manifests are Registry errors naming the URL, status and registry message.
    let e = c.get_manifest(&reference(&reg, "app/img:nope")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Registry);
    let msg = e.to_string();
    assert!(
        msg.contains("404") && msg.contains("/v2/app/img/manifests/nope") && msg.contains("MANIFEST_UNKNOWN"),
        "{msg}"
    );
    let e = c.resolve(&reference(&reg, "app/img:nope")).unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}

#[test]
fn docker_media_types_roundtrip() {
    let reg = TestRegistry::start();
    let c = client();
    let (_d, s) = store();
    let desc = make_image(&s, false);
    let r = reference(&reg, "docker/img:v1");
    push_image(&c, &r, &desc, &s).unwrap();
    let (_, mt, _) = c.get_manifest(&r).unwrap();
    assert_eq!(mt, "application/vnd.docker.distribution.manifest.v2+json");
    let (_d2, s2) = store();
    let img = pull_image_metadata(&c, &r, &s2).unwrap();
    assert_eq!(img.manifest_digest.as_str(), desc.digest().as_ref());
}

#[test]
fn pull_metadata_of_image_pushed_by_skopeo_then_fetch_layers() {
    let reg = TestRegistry::start();
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(&dir.path().join("layout")).unwrap();
    let desc = make_image(layout.store(), true);
    // Tag an index (with the host platform) so that pulling follows it.
    let mut index = oci_spec::image::ImageIndex::default();
    index.set_media_type(Some(oci_spec::image::MediaType::ImageIndex));
    index.set_manifests(vec![desc.clone()]);
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = layout.store().write_bytes(&index_bytes).unwrap();
    let index_desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageIndex,
        index_bytes.len() as u64,
        index_digest.as_str().parse::<oci_spec::image::Digest>().unwrap(),
    );
    layout.set_tag("multi", index_desc).unwrap();
    layout.set_tag("single", desc.clone()).unwrap();
    for tag in ["multi", "single"] {
        run(Command::new("skopeo")
            .args(["copy", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.dir().display()))
            .arg(format!("docker://{}/pulled/img:{tag}", reg.addr)));
    }
    let expected = kiln::content::read_image(layout.store(), &desc).unwrap();
    for tag in ["multi", "single"] {
        let r = reference(&reg, &format!("pulled/img:{tag}"));
        let (_d, s) = store();
        let img = pull_image_metadata(&c, &r, &s).unwrap();
        assert_eq!(img.manifest_digest, expected.manifest_digest, "{tag}");
        assert_eq!(img.config.rootfs().diff_ids(), expected.config.rootfs().diff_ids());
        assert_eq!(img.layers.len(), 2);
        // Layers are lazy: not in the store until fetched.
        for l in &img.layers {
            let d = Digest::parse(l.digest().as_ref()).unwrap();
            assert!(!s.has(&d), "{tag}: layer {d} fetched eagerly");
            c.fetch_blob(&r, &d, &s).unwrap();
            assert_eq!(s.read(&d).unwrap(), layout.store().read(&d).unwrap());
        }
        if tag == "multi" {
            assert!(s.has(&index_digest), "the index is kept in the store");
        }
    }
}

/// A fake registry: answers every request with `respond(method, path, headers)`; records requests.
struct FakeServer {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
}

type Responder = dyn Fn(&str, &str, &[String]) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

impl FakeServer {
    fn start(respond: Box<Responder>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    headers.push(h.trim().to_owned());
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                log.lock().unwrap().push(format!("{method} {path}"));
                let (status, extra, body) = respond(&method, &path, &headers);
                let mut resp =
                    format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in extra {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let _ = conn.write_all(resp.as_bytes());
                if method != "HEAD" {
                    let _ = conn.write_all(&body);
                }
            }
        });
        FakeServer { addr, requests }
    }
}

#[test]
fn blob_with_wrong_content_is_rejected_and_not_stored() {
    let server = FakeServer::start(Box::new(|_, _, _| (200, vec![], b"this is not the expected content".to_vec())));
    let c = client();
    let (_d, s) = store();
    let want = Digest::of(b"the real content");
    let r = Reference::parse(&format!("{}/evil/repo:t", server.addr)).unwrap();
    let e = c.fetch_blob(&r, &want, &s).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Registry);
    let msg = e.to_string();
    let actual = Digest::of(b"this is not the expected content");
    assert!(msg.contains(want.as_str()) && msg.contains(actual.as_str()), "{msg}");
    assert!(!s.has(&want));
    assert!(s.list().unwrap().is_empty());
    // A manifest whose content does not match the pinned digest is rejected too.
    let e = c.get_manifest(&r.with_digest(want.clone())).unwrap_err();
    assert!(e.to_string().contains(want.as_str()), "{e}");
}

#[test]
fn bearer_token_flow_caches_tokens_per_scope() {
    let addr_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let a = addr_cell.clone();
    let blob = b"token protected".to_vec();
    let d = Digest::of(&blob);
    let server = FakeServer::start(Box::new(move |_method, path, headers| {
        let addr = a.lock().unwrap().clone();
        if path.starts_with("/token") {
            assert!(
                path.contains("service=fake") && path.contains("scope=repository%3Aprivate%2Frepo%3Apull"),
                "{path}"
            );
            return (200, vec![], br#"{"token":"T0K3N","expires_in":300}"#.to_vec());
        }
        if headers.iter().any(|h| h == "authorization: Bearer T0K3N" || h == "Authorization: Bearer T0K3N") {
            return (200, vec![], blob.clone());
        }
        let challenge =
            format!("Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:private/repo:pull\"");
        (401, vec![("WWW-Authenticate".to_owned(), challenge)], br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec())
    }));
    *addr_cell.lock().unwrap() = server.addr.clone();
    let c = client();
    let r = Reference::parse(&format!("{}/private/repo:t", server.addr)).unwrap();
    let (_d1, s1) = store();
    c.fetch_blob(&r, &d, &s1).unwrap();
    let (_d2, s2) = store();
    c.fetch_blob(&r, &d, &s2).unwrap();
    assert_eq!(s2.read(&d).unwrap(), b"token protected");
    let reqs = server.requests.lock().unwrap().clone();
    let tokens = reqs.iter().filter(|r| r.contains("/token")).count();
    assert_eq!(tokens, 1, "the token is cached: {reqs:?}");
    assert_eq!(reqs.len(), 4, "401, token, blob, blob: {reqs:?}");
}

//! `--output` and `--secret` option parsing: accepted keys, errors and round trips.

use kiln::options::{OutputSpec, SecretSource, SecretSpec};
use kiln::ErrorKind;
use std::path::PathBuf;

fn out(s: &str) -> OutputSpec {
    OutputSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn assert_err(r: kiln::Result<impl std::fmt::Debug>, needles: &[&str]) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), ErrorKind::Option, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

#[test]
fn image_output_attributes() {
    let csv = r#"type=image,name=r/a,"containerimage.config={""config"":{""Env"":[""A=1""]}}",annotation.org.x=1,annotation-manifest[linux/arm64].k=v,annotation-manifest-descriptor.d=2,source-date-epoch=10"#;
    let OutputSpec::Image { image, .. } = out(csv) else { panic!("not an image output") };
    assert_eq!(image.config_json.as_deref(), Some(r#"{"config":{"Env":["A=1"]}}"#));
    assert_eq!(image.manifest_annotations["org.x"], "1");
    assert_eq!(image.descriptor_annotations["d"], "2");
    assert_eq!(image.source_date_epoch, Some(10));
    let (m, _) = image.annotations_for(|p| p == "linux/arm64");
    assert_eq!(m.get("k").map(String::as_str), Some("v"));
    let (m, _) = image.annotations_for(|_| false);
    assert!(!m.contains_key("k"));
    // The canonical form reads back the same.
    assert_eq!(out(&out(csv).to_csv()), out(csv));
    for (bad, what) in [
        ("type=oci,dest=x.tar,annotation-index.k=v", "index annotations not supported"),
        ("type=oci,dest=x.tar,containerimage.config=[1]", "JSON object"),
        ("type=oci,dest=x.tar,annotation-foo.k=v", "unrecognized annotation type"),
        ("type=oci,dest=x.tar,annotation.=v", "annotation.KEY"),
        ("type=oci,dest=x.tar,source-date-epoch=soon", "seconds"),
        ("type=local,dest=x,annotation.k=v", "applies to type=oci and type=image"),
    ] {
        let e = OutputSpec::parse(bad).unwrap_err().to_string();
        assert!(e.contains(what), "{bad}: {e}");
    }
}

#[test]
fn output_types() {
    assert_eq!(out("type=local,dest=out"), OutputSpec::Local { dest: "out".into() });
    assert_eq!(out("type=tar,dest=-"), OutputSpec::Tar { dest: "-".into() });
    assert_eq!(
        out("type=oci,dest=img.tar"),
        OutputSpec::Oci {
            dest: "img.tar".into(),
            tar: true,
            name: None,
            oci_mediatypes: true,
            image: Default::default()
        }
    );
    assert_eq!(
        out("type=oci,dest=layout,tar=false,name=example.com/a:b,oci-mediatypes=false"),
        OutputSpec::Oci {
            dest: "layout".into(),
            tar: false,
            name: Some("example.com/a:b".into()),
            oci_mediatypes: false,
            image: Default::default(),
        }
    );
    assert_eq!(
        out("type=image,name=127.0.0.1:5000/app:1,push=true,registry.insecure=true"),
        OutputSpec::Image {
            name: "127.0.0.1:5000/app:1".into(),
            push: true,
            insecure: true,
            image: Default::default()
        }
    );
    assert_eq!(
        out("type=image,name=a"),
        OutputSpec::Image { name: "a".into(), push: false, insecure: false, image: Default::default() }
    );
    assert_eq!(
        out("type=image,\"name=a,b\""),
        OutputSpec::Image { name: "a,b".into(), push: false, insecure: false, image: Default::default() }
    );
}

#[test]
fn oci_dest_directory_means_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(matches!(out(&format!("type=oci,dest={d}")), OutputSpec::Oci { tar: false, .. }));
    assert!(matches!(out("type=oci,dest=newdir/"), OutputSpec::Oci { tar: false, .. }));
    assert!(matches!(out(&format!("type=oci,dest={d}/img.tar")), OutputSpec::Oci { tar: true, .. }));
    assert_err(OutputSpec::parse(&format!("type=oci,dest={d},tar=true")), &["dest", d, "tar=false"]);
    assert_err(OutputSpec::parse("type=oci,dest=-,tar=false"), &["dest", "-", "tar stream"]);
    assert!(matches!(out("type=oci,dest=-"), OutputSpec::Oci { tar: true, .. }));
}

#[test]
fn output_errors() {
    assert_err(OutputSpec::parse("dest=x"), &["type", "required", "local, tar, oci, image"]);
    assert_err(OutputSpec::parse("type=docker,dest=x"), &["type", "docker", "local, tar, oci, image"]);
    for t in ["local", "tar", "oci"] {
        assert_err(OutputSpec::parse(&format!("type={t}")), &["dest", "required", &format!("type={t}")]);
    }
    assert_err(OutputSpec::parse("type=image"), &["name", "required"]);
    assert_err(OutputSpec::parse("type=image,name=a,push=yes"), &["push", "yes", "true or false"]);
    assert_err(
        OutputSpec::parse("type=local,dest=x,push=true"),
        &["push", "not accepted by an output of type=local", "accepted keys: type, dest", "type=image"],
    );
    assert_err(OutputSpec::parse("type=image,name=a,dest=x"), &["dest", "x", "accepted keys: type, name, push"]);
    assert_err(OutputSpec::parse("type=tar,dest=x,colour=red"), &["colour", "red", "unknown key"]);
    assert_err(OutputSpec::parse("type=oci,dest=x,tar=maybe"), &["tar", "maybe", "true or false"]);
    assert_err(OutputSpec::parse("type=local,dest=-"), &["dest", "type=tar"]);
}

#[test]
fn output_round_trips() {
    for s in [
        "type=local,dest=/o",
        "type=tar,dest=-",
        "type=oci,dest=o.tar,name=a/b:c",
        "type=oci,dest=o,tar=false,oci-mediatypes=false",
        "type=image,name=a/b,push=true,registry.insecure=true",
        "type=local,dest=\"a,b\"",
    ] {
        let spec = out(s);
        assert_eq!(out(&spec.to_csv()), spec, "{s}");
        assert_eq!(s.parse::<OutputSpec>().unwrap(), spec);
    }
}

#[test]
fn secrets() {
    let s = SecretSpec::parse("id=npm,src=/run/npmrc").unwrap();
    assert_eq!(s, SecretSpec { id: "npm".into(), source: SecretSource::File(PathBuf::from("/run/npmrc")) });
    assert_eq!(SecretSpec::parse("id=npm,source=/run/npmrc").unwrap(), s);
    assert_eq!(SecretSpec::parse("type=file,id=npm,src=/run/npmrc").unwrap(), s);
    let e = SecretSpec { id: "tok".into(), source: SecretSource::Env("TOKEN".into()) };
    assert_eq!(SecretSpec::parse("id=tok,env=TOKEN").unwrap(), e);
    assert_eq!(SecretSpec::parse("type=env,id=tok,env=TOKEN").unwrap(), e);
    assert_eq!(SecretSpec::parse("type=env,id=tok,src=TOKEN").unwrap(), e);
    for spec in [&s, &e] {
        assert_eq!(&SecretSpec::parse(&spec.to_csv()).unwrap(), spec);
        assert_eq!(&spec.to_csv().parse::<SecretSpec>().unwrap(), spec);
    }
}

#[test]
fn secret_errors() {
    assert_err(SecretSpec::parse("id=x"), &["src", "secret x needs src=FILE", "env=VAR"]);
    assert_err(SecretSpec::parse("src=/f"), &["id", "required"]);
    assert_err(SecretSpec::parse("id=x,src=/f,env=E"), &["env", "E", "not both"]);
    assert_err(SecretSpec::parse("id=x,src=/f,source=/g"), &["source", "/g", "give one"]);
    assert_err(SecretSpec::parse("id=x,type=vault,src=/f"), &["type", "vault", "file or env"]);
    assert_err(SecretSpec::parse("id=x,type=file,env=E"), &["env", "E", "type=file"]);
    assert_err(
        SecretSpec::parse("id=x,src=/f,required=true"),
        &["required", "unknown key", "id, type, src, source, env"],
    );
}

#[test]
fn secrets_refuse_duplicate_ids_fifos_and_oversized_files_without_printing_values() {
    use kiln::options::{read_secrets, SecretSpec};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tok");
    std::fs::write(&file, "hunter2").unwrap();
    let spec = |s: String| s.parse::<SecretSpec>().unwrap();
    let one = spec(format!("id=tok,src={}", file.display()));
    assert_eq!(read_secrets(std::slice::from_ref(&one)).unwrap()["tok"], b"hunter2");
    let e = read_secrets(&[one.clone(), one]).unwrap_err().to_string();
    assert!(e.contains("more than once") && e.contains("tok") && !e.contains("hunter2"), "{e}");

    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = read_secrets(&[spec(format!("id=f,src={}", fifo.display()))]).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let e = read_secrets(&[spec("id=z,src=/dev/zero".into())]).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");

    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 600 * 1024]).unwrap();
    let e = read_secrets(&[spec(format!("id=b,src={}", big.display()))]).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    let e = read_secrets(&[spec(format!("id=m,src={}", dir.path().join("missing").display()))]).unwrap_err();
    // The id and the kind, never the path: a path may be a value given by mistake.
    let e = e.report();
    assert!(e.contains("\"m\"") && e.contains("a file") && !e.contains("missing"), "{e}");
}

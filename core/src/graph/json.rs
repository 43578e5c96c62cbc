//! JSON dump of a definition for `kiln debug dump-llb`: one object per op, shaped like
//! buildctl's `debug dump-llb` (`{"Op": {...}, "Digest": "sha256:...", "OpMetadata": {...}}`),
//! with empty fields left out as Go's `omitempty` does.

use super::definition::Definition;
use super::pb;
use super::pb::file_action::Action;
use super::pb::op::Op as PbOp;
use crate::digest::Digest;
use serde_json::{json, Map, Value};

/// Builds an object from (key, value) pairs, dropping nulls, `false`, `0`, `""`, `[]` and `{}`.
fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let empty = match &v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_i64() == Some(0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        };
        if !empty {
            m.insert(k.to_owned(), v);
        }
    }
    Value::Object(m)
}

fn chown(c: &Option<pb::ChownOpt>) -> Value {
    let user = |u: &Option<pb::UserOpt>| match u.as_ref().and_then(|u| u.user.as_ref()) {
        Some(pb::user_opt::User::ById(id)) => json!({"byID": id}),
        Some(pb::user_opt::User::ByName(n)) => json!({"byName": {"name": n.name, "input": n.input}}),
        None => Value::Null,
    };
    match c {
        Some(c) => obj(vec![("user", user(&c.user)), ("group", user(&c.group))]),
        None => Value::Null,
    }
}

fn action(a: &Option<Action>) -> (&'static str, Value) {
    match a {
        Some(Action::Copy(c)) => (
            "copy",
            obj(vec![
                ("src", json!(c.src)),
                ("dest", json!(c.dest)),
                ("owner", chown(&c.owner)),
                ("mode", json!(c.mode)),
                ("followSymlink", json!(c.follow_symlink)),
                ("dirCopyContents", json!(c.dir_copy_contents)),
                ("createDestPath", json!(c.create_dest_path)),
                ("allowWildcard", json!(c.allow_wildcard)),
                ("allowEmptyWildcard", json!(c.allow_empty_wildcard)),
                ("timestamp", json!(c.timestamp)),
                ("include_patterns", json!(c.include_patterns)),
                ("exclude_patterns", json!(c.exclude_patterns)),
            ]),
        ),
        Some(Action::Mkfile(m)) => (
            "mkfile",
            obj(vec![
                ("path", json!(m.path)),
                ("mode", json!(m.mode)),
                ("data", json!(String::from_utf8_lossy(&m.data))),
                ("owner", chown(&m.owner)),
                ("timestamp", json!(m.timestamp)),
            ]),
        ),
        Some(Action::Mkdir(m)) => (
            "mkdir",
            obj(vec![
                ("path", json!(m.path)),
                ("mode", json!(m.mode)),
                ("makeParents", json!(m.make_parents)),
                ("owner", chown(&m.owner)),
                ("timestamp", json!(m.timestamp)),
            ]),
        ),
        Some(Action::Rm(r)) => (
            "rm",
            obj(vec![
                ("path", json!(r.path)),
                ("allowNotFound", json!(r.allow_not_found)),
                ("allowWildcard", json!(r.allow_wildcard)),
            ]),
        ),
        Some(Action::Symlink(s)) => (
            "symlink",
            obj(vec![("oldpath", json!(s.oldpath)), ("newpath", json!(s.newpath)), ("timestamp", json!(s.timestamp))]),
        ),
        None => ("unknown", Value::Null),
    }
}

fn mount(m: &pb::Mount) -> Value {
    let ty = pb::MountType::try_from(m.mount_type).map(|t| t.as_str_name()).unwrap_or("UNKNOWN");
    obj(vec![
        // input/output are meaningful when 0, so always written.
        ("dest", json!(m.dest)),
        ("selector", json!(m.selector)),
        ("readonly", json!(m.readonly)),
        ("mountType", if m.mount_type == 0 { Value::Null } else { json!(ty) }),
        ("TmpfsOpt", m.tmpfs_opt.as_ref().map(|t| json!({"size": t.size})).unwrap_or(Value::Null)),
        (
            "cacheOpt",
            m.cache_opt
                .as_ref()
                .map(|c| {
                    let sharing =
                        pb::CacheSharingOpt::try_from(c.sharing).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
                    json!({"ID": c.id, "sharing": sharing})
                })
                .unwrap_or(Value::Null),
        ),
        (
            "secretOpt",
            m.secret_opt
                .as_ref()
                .map(|s| {
                    obj(vec![
                        ("ID", json!(s.id)),
                        ("uid", json!(s.uid)),
                        ("gid", json!(s.gid)),
                        ("mode", json!(s.mode)),
                        ("optional", json!(s.optional)),
                    ])
                })
                .unwrap_or(Value::Null),
        ),
    ])
    .as_object()
    .map(|o| {
        let mut o = o.clone();
        o.insert("input".into(), json!(m.input));
        o.insert("output".into(), json!(m.output));
        Value::Object(o)
    })
    .unwrap_or(Value::Null)
}

/// The JSON value of one op (the `"Op"` member of a dump line).
pub fn op_to_json(op: &pb::Op) -> Value {
    let payload = match &op.op {
        Some(PbOp::Source(s)) => {
            json!({"source": obj(vec![("identifier", json!(s.identifier)), ("attrs", json!(s.attrs))])})
        }
        Some(PbOp::Exec(e)) => {
            let meta = e.meta.as_ref().map(|m| {
                obj(vec![
                    ("args", json!(m.args)),
                    ("env", json!(m.env)),
                    ("cwd", json!(m.cwd)),
                    ("user", json!(m.user)),
                    ("hostname", json!(m.hostname)),
                ])
            });
            let net = pb::NetMode::try_from(e.network).map(|n| n.as_str_name()).unwrap_or("UNKNOWN");
            json!({"exec": obj(vec![
                ("meta", meta.unwrap_or(Value::Null)),
                ("mounts", Value::Array(e.mounts.iter().map(mount).collect())),
                ("network", if e.network == 0 { Value::Null } else { json!(net) }),
            ])})
        }
        Some(PbOp::File(f)) => {
            let actions: Vec<Value> = f
                .actions
                .iter()
                .map(|a| {
                    let (k, v) = action(&a.action);
                    json!({"input": a.input, "secondaryInput": a.secondary_input, "output": a.output, k: v})
                })
                .collect();
            json!({"file": {"actions": actions}})
        }
        Some(PbOp::Merge(m)) => {
            json!({"merge": {"inputs": m.inputs.iter().map(|i| json!({"input": i.input})).collect::<Vec<_>>()}})
        }
        Some(PbOp::Diff(_)) => json!({"diff": {}}),
        Some(PbOp::Build(_)) => json!({"build": {}}),
        None => Value::Null,
    };
    let platform = op.platform.as_ref().map(|p| {
        obj(vec![("Architecture", json!(p.architecture)), ("OS", json!(p.os)), ("Variant", json!(p.variant))])
    });
    let mut m = obj(vec![
        ("inputs", Value::Array(op.inputs.iter().map(|i| json!({"digest": i.digest, "index": i.index})).collect())),
        ("Op", payload),
        ("platform", platform.unwrap_or(Value::Null)),
    ]);
    if let (Some(c), Value::Object(o)) = (&op.constraints, &mut m) {
        o.insert("constraints".into(), obj(vec![("filter", json!(c.filter))]));
    }
    m
}

/// The JSON value of op metadata (the `"OpMetadata"` member).
pub fn metadata_to_json(md: &pb::OpMetadata) -> Value {
    obj(vec![
        ("ignore_cache", json!(md.ignore_cache)),
        ("description", json!(md.description)),
        ("caps", json!(md.caps)),
    ])
}

impl Definition {
    /// One JSON object per line for every op (vertices in topological order, then the
    /// terminal), like `buildctl debug dump-llb`.
    pub fn to_json_lines(&self) -> String {
        let pbdef = self.to_pb();
        let mut out = String::new();
        for bytes in &pbdef.def {
            let d = Digest::of(bytes);
            let op = match self.vertex(&d) {
                Some(v) => v.op.clone(),
                None => prost::Message::decode(bytes.as_slice()).unwrap_or_default(),
            };
            let md = pbdef.metadata.get(d.as_str()).cloned().unwrap_or_default();
            let line = json!({"Op": op_to_json(&op), "Digest": d.as_str(), "OpMetadata": metadata_to_json(&md)});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }
}

//! JSON dump of a definition for `kiln debug dump-llb`, byte-identical to BuildKit v0.11.6's
//! `buildctl debug dump-llb`: one line per op in definition order, each Go's `encoding/json` of
//! `llbOp{Op pb.Op; Digest digest.Digest; OpMetadata pb.OpMetadata}` over the gogo-protobuf
//! structs. That means: struct fields in declaration order under their `json` tags, `omitempty`
//! where the tag says so (a nil pointer is omitted, a pointer to an empty struct is `{}`), oneof
//! interfaces under their Go field name (`"Op"`, `"Action"`, `"User"`) wrapping a one-member
//! object, enums as numbers, `[]byte` as standard base64, maps with sorted keys (a nil map is
//! `null` unless `omitempty`), and strings escaped like Go (HTML-safe `\u003c`, `\u003e`,
//! `\u0026`, `\u2028`, `\u2029`, other control bytes as `\u00XX`, invalid UTF-8 as `\ufffd`).
//! Fields BuildKit v0.11.6 does not know (newer protocol additions) are left out, as its
//! decoder drops them.

use super::definition::Definition;
use super::pb;
use super::pb::file_action::Action;
use super::pb::op::Op as PbOp;
use crate::digest::Digest;
use crate::error::{Error, Result};
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;

/// A JSON object under construction, members in insertion order.
struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::from("{"))
    }

    fn raw(&mut self, key: &str, json: &str) -> &mut Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        go_string(&mut self.0, key);
        self.0.push(':');
        self.0.push_str(json);
        self
    }

    /// Always written.
    fn str(&mut self, key: &str, v: &str) -> &mut Obj {
        let mut s = String::new();
        go_string(&mut s, v);
        self.raw(key, &s)
    }

    fn str_omit(&mut self, key: &str, v: &str) -> &mut Obj {
        if v.is_empty() {
            self
        } else {
            self.str(key, v)
        }
    }

    fn num<N: std::fmt::Display + Default + PartialEq>(&mut self, key: &str, v: N) -> &mut Obj {
        self.raw(key, &v.to_string())
    }

    fn num_omit<N: std::fmt::Display + Default + PartialEq>(&mut self, key: &str, v: N) -> &mut Obj {
        if v == N::default() {
            self
        } else {
            self.num(key, v)
        }
    }

    fn bool_omit(&mut self, key: &str, v: bool) -> &mut Obj {
        if v {
            self.raw(key, "true")
        } else {
            self
        }
    }

    fn strs_omit(&mut self, key: &str, v: &[String]) -> &mut Obj {
        if v.is_empty() {
            self
        } else {
            let a = arr(v.iter().map(|s| {
                let mut o = String::new();
                go_string(&mut o, s);
                o
            }));
            self.raw(key, &a)
        }
    }

    fn opt<T>(&mut self, key: &str, v: &Option<T>, f: impl Fn(&T) -> String) -> &mut Obj {
        match v {
            Some(v) => {
                let s = f(v);
                self.raw(key, &s)
            }
            None => self,
        }
    }

    fn list_omit<T>(&mut self, key: &str, v: &[T], f: impl Fn(&T) -> String) -> &mut Obj {
        if v.is_empty() {
            self
        } else {
            let a = arr(v.iter().map(f));
            self.raw(key, &a)
        }
    }

    fn done(&mut self) -> String {
        let mut s = std::mem::take(&mut self.0);
        s.push('}');
        s
    }
}

fn arr(items: impl Iterator<Item = String>) -> String {
    let mut s = String::from("[");
    for (i, it) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&it);
    }
    s.push(']');
    s
}

/// A map with sorted keys; `None` for an empty one (a nil map after gogo decoding).
fn map<V>(m: &BTreeMap<String, V>, f: impl Fn(&V) -> String) -> Option<String> {
    if m.is_empty() {
        return None;
    }
    let mut o = Obj::new();
    for (k, v) in m {
        let s = f(v);
        o.raw(k, &s);
    }
    Some(o.done())
}

fn quoted(v: &str) -> String {
    let mut s = String::new();
    go_string(&mut s, v);
    s
}

/// Appends `s` as a JSON string escaped as Go's `encoding/json` does (HTML escaping on).
fn go_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `json.Marshal` of a `string` built from arbitrary bytes: invalid UTF-8 becomes U+FFFD
/// per invalid byte (what `String::from_utf8_lossy` does per maximal invalid sequence differs,
/// so decode by hand).
fn go_string_bytes(out: &mut String, b: &[u8]) {
    let mut s = String::new();
    let mut rest = b;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(v) => {
                s.push_str(v);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                s.push_str(std::str::from_utf8(good).unwrap_or_default());
                s.push('\u{fffd}');
                rest = &bad[1..];
            }
        }
    }
    go_string(out, &s);
}

/// Standard base64 with padding (Go's `[]byte` encoding).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4 + 2);
    s.push('"');
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    s.push('"');
    s
}

fn user_opt(u: &pb::UserOpt) -> String {
    let inner = match &u.user {
        Some(pb::user_opt::User::ByName(n)) => {
            let named = Obj::new().str_omit("name", &n.name).num("input", n.input).done();
            Some(Obj::new().raw("byName", &named).done())
        }
        Some(pb::user_opt::User::ById(id)) => Some(Obj::new().num_omit("byID", *id).done()),
        None => None,
    };
    Obj::new().raw("User", inner.as_deref().unwrap_or("null")).done()
}

fn chown(c: &pb::ChownOpt) -> String {
    Obj::new().opt("user", &c.user, user_opt).opt("group", &c.group, user_opt).done()
}

fn action(a: &Option<Action>) -> Option<String> {
    let (k, v) = match a {
        Some(Action::Copy(c)) => (
            "copy",
            Obj::new()
                .str_omit("src", &c.src)
                .str_omit("dest", &c.dest)
                .opt("owner", &c.owner, chown)
                .num_omit("mode", c.mode)
                .bool_omit("followSymlink", c.follow_symlink)
                .bool_omit("dirCopyContents", c.dir_copy_contents)
                .bool_omit("attemptUnpackDockerCompatibility", c.attempt_unpack_docker_compatibility)
                .bool_omit("createDestPath", c.create_dest_path)
                .bool_omit("allowWildcard", c.allow_wildcard)
                .bool_omit("allowEmptyWildcard", c.allow_empty_wildcard)
                .num_omit("timestamp", c.timestamp)
                .strs_omit("include_patterns", &c.include_patterns)
                .strs_omit("exclude_patterns", &c.exclude_patterns)
                .done(),
        ),
        Some(Action::Mkfile(m)) => {
            let mut o = Obj::new();
            o.str_omit("path", &m.path).num_omit("mode", m.mode);
            if !m.data.is_empty() {
                o.raw("data", &base64(&m.data));
            }
            ("mkfile", o.opt("owner", &m.owner, chown).num_omit("timestamp", m.timestamp).done())
        }
        Some(Action::Mkdir(m)) => (
            "mkdir",
            Obj::new()
                .str_omit("path", &m.path)
                .num_omit("mode", m.mode)
                .bool_omit("makeParents", m.make_parents)
                .opt("owner", &m.owner, chown)
                .num_omit("timestamp", m.timestamp)
                .done(),
        ),
        Some(Action::Rm(r)) => (
            "rm",
            Obj::new()
                .str_omit("path", &r.path)
                .bool_omit("allowNotFound", r.allow_not_found)
                .bool_omit("allowWildcard", r.allow_wildcard)
                .done(),
        ),
        // Unknown to BuildKit v0.11.6: its decoder skips the field, leaving no action.
        Some(Action::Symlink(_)) | None => return None,
    };
    Some(Obj::new().raw(k, &v).done())
}

fn mount(m: &pb::Mount) -> String {
    Obj::new()
        .num("input", m.input)
        .str_omit("selector", &m.selector)
        .str_omit("dest", &m.dest)
        .num("output", m.output)
        .bool_omit("readonly", m.readonly)
        .num_omit("mountType", m.mount_type)
        .opt("TmpfsOpt", &m.tmpfs_opt, |t| Obj::new().num_omit("size", t.size).done())
        .opt("cacheOpt", &m.cache_opt, |c| Obj::new().str_omit("ID", &c.id).num_omit("sharing", c.sharing).done())
        .opt("secretOpt", &m.secret_opt, |s| id_owner_mode(&s.id, s.uid, s.gid, s.mode, s.optional))
        .opt("SSHOpt", &m.ssh_opt, |s| id_owner_mode(&s.id, s.uid, s.gid, s.mode, s.optional))
        .str_omit("resultID", &m.result_id)
        .done()
}

/// SecretOpt and SSHOpt: the same fields, the same Go encoding.
fn id_owner_mode(id: &str, uid: u32, gid: u32, mode: u32, optional: bool) -> String {
    Obj::new()
        .str_omit("ID", id)
        .num_omit("uid", uid)
        .num_omit("gid", gid)
        .num_omit("mode", mode)
        .bool_omit("optional", optional)
        .done()
}

fn meta(m: &pb::Meta) -> String {
    Obj::new()
        .strs_omit("args", &m.args)
        .strs_omit("env", &m.env)
        .str_omit("cwd", &m.cwd)
        .str_omit("user", &m.user)
        .opt("proxy_env", &m.proxy_env, |p| {
            Obj::new()
                .str_omit("http_proxy", &p.http_proxy)
                .str_omit("https_proxy", &p.https_proxy)
                .str_omit("ftp_proxy", &p.ftp_proxy)
                .str_omit("no_proxy", &p.no_proxy)
                .str_omit("all_proxy", &p.all_proxy)
                .done()
        })
        .list_omit("extraHosts", &m.extra_hosts, |h| Obj::new().str_omit("Host", &h.host).str_omit("IP", &h.ip).done())
        .str_omit("hostname", &m.hostname)
        .list_omit("ulimit", &m.ulimit, |u| {
            Obj::new().str_omit("Name", &u.name).num_omit("Soft", u.soft).num_omit("Hard", u.hard).done()
        })
        .str_omit("cgroupParent", &m.cgroup_parent)
        .bool_omit("removeMountStubsRecursive", m.remove_mount_stubs_recursive)
        .done()
}

fn definition(d: &pb::Definition) -> String {
    let mut o = Obj::new();
    o.list_omit("def", &d.def, |b| base64(b));
    o.raw("metadata", map(&d.metadata, metadata).as_deref().unwrap_or("null"));
    // Source (locations of a frontend's source) is not expanded: BuildKit's Def of a BuildOp
    // rarely carries it; written as an empty object when present.
    if d.source.is_some() {
        o.raw("Source", "{}");
    }
    o.done()
}

fn op_text(op: &pb::Op) -> String {
    let payload = match &op.op {
        Some(PbOp::Source(s)) => {
            let mut o = Obj::new();
            o.str_omit("identifier", &s.identifier);
            if let Some(a) = map(&s.attrs, |v| quoted(v)) {
                o.raw("attrs", &a);
            }
            Some(Obj::new().raw("source", &o.done()).done())
        }
        Some(PbOp::Exec(e)) => {
            let x = Obj::new()
                .opt("meta", &e.meta, meta)
                .list_omit("mounts", &e.mounts, mount)
                .num_omit("network", e.network)
                .num_omit("security", e.security)
                .list_omit("secretenv", &e.secretenv, |s| {
                    Obj::new().str_omit("ID", &s.id).str_omit("name", &s.name).bool_omit("optional", s.optional).done()
                })
                .done();
            Some(Obj::new().raw("exec", &x).done())
        }
        Some(PbOp::File(f)) => {
            let x = Obj::new()
                .list_omit("actions", &f.actions, |a| {
                    let act = action(&a.action);
                    Obj::new()
                        .num("input", a.input)
                        .num("secondaryInput", a.secondary_input)
                        .num("output", a.output)
                        .raw("Action", act.as_deref().unwrap_or("null"))
                        .done()
                })
                .done();
            Some(Obj::new().raw("file", &x).done())
        }
        Some(PbOp::Build(b)) => {
            let mut o = Obj::new();
            o.num("builder", b.builder);
            if let Some(i) = map(&b.inputs, |i| Obj::new().num("input", i.input).done()) {
                o.raw("inputs", &i);
            }
            o.opt("def", &b.def, definition);
            if let Some(a) = map(&b.attrs, |v| quoted(v)) {
                o.raw("attrs", &a);
            }
            Some(Obj::new().raw("build", &o.done()).done())
        }
        Some(PbOp::Merge(m)) => {
            let x = Obj::new().list_omit("inputs", &m.inputs, |i| Obj::new().num("input", i.input).done()).done();
            Some(Obj::new().raw("merge", &x).done())
        }
        Some(PbOp::Diff(d)) => {
            let x = Obj::new()
                .opt("lower", &d.lower, |i| Obj::new().num("input", i.input).done())
                .opt("upper", &d.upper, |i| Obj::new().num("input", i.input).done())
                .done();
            Some(Obj::new().raw("diff", &x).done())
        }
        None => None,
    };
    Obj::new()
        .list_omit("inputs", &op.inputs, |i| Obj::new().str("digest", &i.digest).num("index", i.index).done())
        .raw("Op", payload.as_deref().unwrap_or("null"))
        .opt("platform", &op.platform, |p| {
            Obj::new()
                .str_omit("Architecture", &p.architecture)
                .str_omit("OS", &p.os)
                .str_omit("Variant", &p.variant)
                .str_omit("OSVersion", &p.os_version)
                .strs_omit("OSFeatures", &p.os_features)
                .done()
        })
        .opt("constraints", &op.constraints, |c| Obj::new().strs_omit("filter", &c.filter).done())
        .done()
}

fn metadata(md: &pb::OpMetadata) -> String {
    let mut o = Obj::new();
    o.bool_omit("ignore_cache", md.ignore_cache);
    if let Some(d) = map(&md.description, |v| quoted(v)) {
        o.raw("description", &d);
    }
    o.opt("export_cache", &md.export_cache, |e| Obj::new().bool_omit("Value", e.value).done());
    let caps = map(&md.caps, |b| b.to_string());
    o.raw("caps", caps.as_deref().unwrap_or("null"));
    o.opt("progress_group", &md.progress_group, |p| {
        Obj::new().str_omit("id", &p.id).str_omit("name", &p.name).bool_omit("weak", p.weak).done()
    });
    o.done()
}

/// The JSON value of one op (the `"Op"` member of a dump line).
pub fn op_to_json(op: &pb::Op) -> Value {
    serde_json::from_str(&op_text(op)).unwrap_or(Value::Null)
}

/// The JSON value of op metadata (the `"OpMetadata"` member).
pub fn metadata_to_json(md: &pb::OpMetadata) -> Value {
    serde_json::from_str(&metadata(md)).unwrap_or(Value::Null)
}

/// One dump line per op of a wire definition, in its order (no validation, like buildctl).
pub fn definition_to_json_lines(def: &pb::Definition) -> Result<String> {
    let mut out = String::new();
    for bytes in &def.def {
        let op = pb::Op::decode(bytes.as_slice())
            .map_err(|e| Error::definition(None, format!("failed to parse op: {e}")))?;
        let d = Digest::of(bytes);
        let md = def.metadata.get(d.as_str()).cloned().unwrap_or_default();
        let mut line = Obj::new();
        line.raw("Op", &op_text(&op));
        let mut dig = String::new();
        go_string_bytes(&mut dig, d.as_str().as_bytes());
        line.raw("Digest", &dig).raw("OpMetadata", &metadata(&md));
        out.push_str(&line.done());
        out.push('\n');
    }
    Ok(out)
}

/// `kiln debug dump-llb` of marshalled definition bytes: decoded without validation (as buildctl
/// does), so invalid definitions dump too.
pub fn dump_llb(bytes: &[u8]) -> Result<String> {
    let def = pb::Definition::decode(bytes)
        .map_err(|e| Error::definition(None, format!("failed to parse definition: {e}")))?;
    definition_to_json_lines(&def)
}

impl Definition {
    /// One JSON object per line for every op (vertices in topological order, then the
    /// terminal), exactly as `buildctl debug dump-llb` prints them.
    pub fn to_json_lines(&self) -> String {
        definition_to_json_lines(&self.to_pb()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_go() {
        let mut s = String::new();
        go_string(&mut s, "a<b>&\"\\\n\t\u{1}\u{2028}é");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\t\u0001\u2028é""#);
        let mut b = String::new();
        go_string_bytes(&mut b, b"a\xffb");
        assert_eq!(b, "\"a\u{fffd}b\"");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "\"\"");
        assert_eq!(base64(b"f"), "\"Zg==\"");
        assert_eq!(base64(b"fo"), "\"Zm8=\"");
        assert_eq!(base64(b"foo"), "\"Zm9v\"");
        assert_eq!(base64(b"hello\n"), "\"aGVsbG8K\"");
    }
}

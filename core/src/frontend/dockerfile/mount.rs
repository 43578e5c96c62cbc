//! `RUN --mount=...`: the CSV option list of one mount, checked as BuildKit v0.11.6 does
//! (`instructions/commands_runmount.go`). At parse time only the CSV syntax and `from` are
//! read (`from` cannot use variables, it decides stage dependencies); every other option is
//! read when the instruction is expanded, after variable substitution.

use super::shell::Expander;
use super::text::{go_quote, suggest, with_suggestion};
use super::units::{parse_go_bool, parse_go_u32, ram_in_bytes};

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MountType {
    /// A directory or file from the build context or another stage/image (default).
    #[default]
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    /// BuildKit's name (`bind`, `cache`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheSharing {
    /// Used by every build at once (BuildKit's default).
    Shared,
    /// A new directory when the cache is in use.
    Private,
    /// One build at a time.
    Locked,
}

impl CacheSharing {
    /// BuildKit's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// One `RUN --mount`. String fields are empty when not given (BuildKit treats empty as unset).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `from=`: a stage name, image or named context to mount from.
    pub from: String,
    /// `source=`/`src=`: the path inside `from` (bind, cache) or the secret id.
    pub source: String,
    /// `target=`/`dst=`/`destination=`: where it is mounted.
    pub target: String,
    /// `readonly`/`ro` or not `readwrite`/`rw`; by default read-only for bind, secret and ssh.
    pub read_only: bool,
    /// tmpfs `size=` in bytes (0: no limit).
    pub size_limit: i64,
    /// `id=`: the cache id, or the secret/ssh id.
    pub cache_id: String,
    /// cache `sharing=`.
    pub cache_sharing: Option<CacheSharing>,
    /// `required` (secret and ssh): fail when not provided.
    pub required: bool,
    /// `mode=` (octal; cache, secret, ssh).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret, ssh).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret, ssh).
    pub gid: Option<u32>,
}

/// Parses one `--mount` value. Without `expand` (parse time) only the CSV syntax and `from`
/// are read; with it every value is expanded first and every option checked.
pub(crate) fn parse_mount(value: &str, mut expand: Option<&mut Expander>) -> Result<Mount, String> {
    let fields = csv_record(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = Mount::default();
    let mut ro_auto = true;
    let secret_or_ssh = |m: &Mount| matches!(m.kind, MountType::Secret | MountType::Ssh);
    let unexpected = |key: &str, m: &Mount| format!("unexpected key '{key}' for mount type '{}'", m.kind.as_str());

    for field in &fields {
        let (raw_key, val) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field.as_str(), None),
        };
        let key = raw_key.to_lowercase();
        let Some(val) = val else {
            if expand.is_none() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                    continue;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                    continue;
                }
                "required" if secret_or_ssh(&m) => {
                    m.required = true;
                    continue;
                }
                "required" => return Err(unexpected(&key, &m)),
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
        };
        let value = match expand.as_mut() {
            Some(ex) => ex(val)?,
            None if key == "from" => {
                if has_variable(val) {
                    return Err(format!("'{key}' doesn't support variable expansion, define alias stage instead"));
                }
                val.to_owned()
            }
            None => continue,
        };
        let bad_value = || format!("invalid value for {key}: {value}");
        match key.as_str() {
            "type" => {
                m.kind = MountType::parse(&value.to_lowercase()).ok_or_else(|| {
                    let all = ["bind", "cache", "tmpfs", "secret", "ssh"];
                    with_suggestion(format!("unsupported mount type {}", go_quote(&value)), suggest(&value, all, true))
                })?;
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.read_only = parse_go_bool(&value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_go_bool(&value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "required" if secret_or_ssh(&m) => m.required = parse_go_bool(&value).ok_or_else(bad_value)?,
            "required" => return Err(unexpected(&key, &m)),
            "size" if m.kind == MountType::Tmpfs => m.size_limit = ram_in_bytes(&value).map_err(|_| bad_value())?,
            "size" => return Err(unexpected(&key, &m)),
            "id" => m.cache_id = value,
            "sharing" => {
                m.cache_sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(format!("unsupported sharing value {}", go_quote(&value))),
                })
            }
            "mode" => m.mode = Some(parse_go_u32(&value, 8).ok_or_else(|| format!("invalid value {value} for mode"))?),
            "uid" => m.uid = Some(parse_go_u32(&value, 10).ok_or_else(|| format!("invalid value {value} for uid"))?),
            "gid" => m.gid = Some(parse_go_u32(&value, 10).ok_or_else(|| format!("invalid value {value} for gid"))?),
            _ => {
                let all = [
                    "type",
                    "from",
                    "source",
                    "target",
                    "readonly",
                    "id",
                    "sharing",
                    "required",
                    "mode",
                    "uid",
                    "gid",
                    "src",
                    "dst",
                    "ro",
                    "rw",
                    "readwrite",
                ];
                return Err(with_suggestion(format!("unexpected key '{key}' in '{field}'"), suggest(&key, all, true)));
            }
        }
    }

    let file_info_allowed = matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    for (set, what) in [(m.mode.is_some(), "mode"), (m.uid.is_some(), "uid"), (m.gid.is_some(), "gid")] {
        if set && !file_info_allowed {
            return Err(format!("{what} not allowed for {} type mounts", go_quote(m.kind.as_str())));
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.cache_sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {} mount", m.kind.as_str()));
    }
    if m.kind == MountType::Secret {
        if !m.from.is_empty() {
            return Err("secret mount should not have a from".into());
        }
        if m.cache_sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_empty() && m.target.is_empty() && m.cache_id.is_empty() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if !m.source.is_empty() && !m.cache_id.is_empty() {
            return Err("both source and id can't be set".into());
        }
    }
    Ok(m)
}

/// BuildKit's `\$.` check: a `$` followed by any character (except a newline).
fn has_variable(s: &str) -> bool {
    s.char_indices().any(|(i, c)| c == '$' && s[i + 1..].chars().next().is_some_and(|n| n != '\n'))
}

/// One record of Go's `encoding/csv` reader (comma-separated; a field starting with `"` is
/// quoted, `""` inside it is a quote; a quote anywhere else is an error).
fn csv_record(s: &str) -> Result<Vec<String>, String> {
    // The reader stops at the end of the first line; an empty input has no record.
    let line = s.split_once('\n').map_or(s, |(l, _)| l);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if s.is_empty() {
        return Err("EOF".into());
    }
    let b = line.as_bytes();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            // Quoted field.
            let mut field = String::new();
            let mut j = i + 1;
            let mut start = j;
            loop {
                match line[j..].find('"') {
                    Some(k) => {
                        field.push_str(&line[start..j + k]);
                        j += k + 1;
                        match b.get(j) {
                            Some(b'"') => {
                                field.push('"');
                                j += 1;
                                start = j;
                            }
                            Some(b',') => {
                                fields.push(field);
                                i = j + 1;
                                break;
                            }
                            None => {
                                fields.push(field);
                                return Ok(fields);
                            }
                            Some(_) => return Err(csv_error(j, "extraneous or missing \" in quoted-field")),
                        }
                    }
                    None => return Err(csv_error(line.len() + 1, "extraneous or missing \" in quoted-field")),
                }
            }
        } else {
            let end = line[i..].find(',').map_or(line.len(), |k| i + k);
            let field = &line[i..end];
            if let Some(q) = field.find('"') {
                return Err(csv_error(i + q + 1, "bare \" in non-quoted-field"));
            }
            fields.push(field.to_owned());
            if end == line.len() {
                return Ok(fields);
            }
            i = end + 1;
        }
    }
}

fn csv_error(column: usize, what: &str) -> String {
    format!("parse error on line 1, column {column}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(v: &str) -> Result<Mount, String> {
        let mut ex = |s: &str| -> Result<String, String> { Ok(s.replace("$X", "x")) };
        parse_mount(v, Some(&mut ex))
    }

    #[test]
    fn csv() {
        assert_eq!(csv_record("a,b=c,\"d,e\",\"f\"\"g\"").unwrap(), ["a", "b=c", "d,e", "f\"g"]);
        assert_eq!(csv_record("a,").unwrap(), ["a", ""]);
        assert_eq!(csv_record("").unwrap_err(), "EOF");
        assert!(csv_record("a\"b").unwrap_err().contains("bare \" in non-quoted-field"));
        assert!(csv_record("\"ab").unwrap_err().contains("extraneous or missing \" in quoted-field"));
        assert!(csv_record("\"a\"b").unwrap_err().contains("extraneous or missing \" in quoted-field"));
    }

    #[test]
    fn parse_time_reads_only_from() {
        let m = parse_mount("type=cache,target=/x,from=builder,ro", None).unwrap();
        assert_eq!(m, Mount { from: "builder".into(), read_only: true, ..Default::default() });
        assert_eq!(
            parse_mount("type=bind,from=$STAGE", None).unwrap_err(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(parse_mount("from=a$", None).is_ok());
        assert_eq!(parse_mount("", None).unwrap_err(), "failed to parse csv mounts: EOF");
    }

    #[test]
    fn all_options() {
        let m =
            expanded("type=cache,id=$X,target=/root/.cache,sharing=LOCKED,mode=0700,uid=1000,gid=1000,from=b,source=s")
                .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!((m.cache_id.as_str(), m.target.as_str()), ("x", "/root/.cache"));
        assert_eq!(m.cache_sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o700), Some(1000), Some(1000)));
        assert!(!m.read_only);
        let m = expanded("type=bind,src=a,dst=/b,rw").unwrap();
        assert_eq!((m.source.as_str(), m.target.as_str(), m.read_only), ("a", "/b", false));
        assert!(expanded("target=/b").unwrap().read_only);
        assert!(!expanded("type=bind,target=/b,readonly=false").unwrap().read_only);
        assert!(expanded("type=bind,target=/b,readwrite=0").unwrap().read_only);
        assert!(expanded("type=cache,target=/b,ro").unwrap().read_only);
        let m = expanded("type=tmpfs,destination=/t,size=64m").unwrap();
        assert_eq!((m.size_limit, m.read_only), (64 << 20, false));
        let m = expanded("type=secret,id=tok,required,mode=0400").unwrap();
        assert!(m.required && m.read_only);
        assert!(!expanded("type=ssh,required=false").unwrap().required);
        assert_eq!(expanded("type=ssh").unwrap().kind, MountType::Ssh);
        assert_eq!(expanded("TYPE=Secret,target=/s").unwrap().kind, MountType::Secret);
    }

    #[test]
    fn errors_like_buildkit() {
        let err = |v: &str| expanded(v).unwrap_err();
        assert_eq!(err("type=cach,target=/x"), "unsupported mount type \"cach\" (did you mean cache?)");
        assert_eq!(err("type=volume"), "unsupported mount type \"volume\"");
        assert_eq!(err("target=/x,zzzz=bar"), "unexpected key 'zzzz' in 'zzzz=bar'");
        assert_eq!(err("target=/x,foo=bar"), "unexpected key 'foo' in 'foo=bar' (did you mean from?)");
        assert_eq!(err("target=/x,tagret=/y"), "unexpected key 'tagret' in 'tagret=/y' (did you mean target?)");
        assert_eq!(err("target=/x,bogus"), "invalid field 'bogus' must be a key=value pair");
        assert_eq!(err("target=/x,required"), "unexpected key 'required' for mount type 'bind'");
        assert_eq!(err("target=/x,size=1m"), "unexpected key 'size' for mount type 'bind'");
        assert_eq!(err("type=tmpfs,size=lots"), "invalid value for size: lots");
        assert_eq!(err("target=/x,ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(err("type=cache,target=/x,sharing=all"), "unsupported sharing value \"all\"");
        assert_eq!(err("type=cache,target=/x,mode=999"), "invalid value 999 for mode");
        assert_eq!(err("type=cache,target=/x,uid=-1"), "invalid value -1 for uid");
        assert_eq!(err("type=bind,target=/x,mode=0700"), "mode not allowed for \"bind\" type mounts");
        assert_eq!(err("type=tmpfs,target=/x,gid=1"), "gid not allowed for \"tmpfs\" type mounts");
        assert_eq!(err("type=bind,target=/x,sharing=locked"), "invalid cache sharing set for bind mount");
        assert_eq!(err("type=secret,id=a,from=b"), "secret mount should not have a from");
        assert_eq!(err("type=secret"), "invalid secret mount. one of source, target required");
        assert_eq!(err("type=secret,id=a,source=b"), "both source and id can't be set");
        // Options are read in order: `required` before `type=secret` is refused.
        assert_eq!(err("required,type=secret,id=a"), "unexpected key 'required' for mount type 'bind'");
    }
}

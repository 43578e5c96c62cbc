//! `ImageConfig`: the image metadata (entrypoint, env, working dir, ports, healthcheck, ...) a build
//! result carries into image exporters, and its OCI/Docker JSON form (the `config` object of an
//! image config, with Docker's extensions `Healthcheck`, `Shell`, `OnBuild`). It travels beside
//! the LLB definition, as BuildKit's exporter config does; states inherit it from base images
//! through an [`ImageMetaResolver`](super::resolve::ImageMetaResolver).

use crate::error::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Image configuration written into the image config of `type=oci` / `type=image` exports.
///
/// The serde form (snake_case keys, every key optional) is what the bindings take; the image
/// JSON form is [`ImageConfig::from_oci_json`] / [`ImageConfig::to_oci_json`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `Entrypoint` of the image config.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd` of the image config.
    pub cmd: Option<Vec<String>>,
    /// `Env` as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `ExposedPorts`: `PORT/PROTO` (`80/tcp`, `53/udp`).
    pub exposed_ports: BTreeSet<String>,
    /// `Volumes`: container paths.
    pub volumes: BTreeSet<String>,
    /// `StopSignal` (`SIGTERM`, `9`).
    pub stop_signal: Option<String>,
    /// `Healthcheck` (a Docker extension of the OCI config).
    pub healthcheck: Option<Healthcheck>,
    /// `Shell` (Docker extension): the shell of shell-form commands.
    pub shell: Option<Vec<String>>,
    /// `OnBuild` (Docker extension): triggers run by builds `FROM` this image.
    pub on_build: Option<Vec<String>>,
    /// Annotations of the image manifest (not part of the image config; never inherited from a
    /// base image).
    pub annotations: BTreeMap<String, String>,
    /// `ArgsEscaped` (Docker extension; BuildKit's Dockerfile frontend sets it with CMD).
    pub args_escaped: bool,
    /// `author` of the image config (top level; a Dockerfile's MAINTAINER sets it).
    pub author: Option<String>,
    /// `history` of the image config (top level): the base image's entries, then one per
    /// instruction of a Dockerfile. Exporters add an entry for each layer the history does not
    /// account for and stamp every entry's `created`.
    pub history: Vec<HistoryEntry>,
}

/// One `history` entry of an image config, without its creation time (the exporter writes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HistoryEntry {
    /// `created_by`: the command that made the entry.
    pub created_by: String,
    /// `comment` (BuildKit's Dockerfile frontend writes `buildkit.dockerfile.v0`).
    pub comment: Option<String>,
    /// `empty_layer`: the entry made no layer.
    pub empty_layer: bool,
}

/// A `history` entry as the image config JSON holds it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciHistory {
    created_by: Option<String>,
    comment: Option<String>,
    empty_layer: Option<bool>,
}

/// Docker's `HealthConfig`: durations in nanoseconds, as in the JSON; `None` or 0 = inherit the
/// runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    /// `Test`: `["NONE"]`, `["CMD", args..]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `Interval` between checks, in nanoseconds.
    pub interval: Option<i64>,
    /// `Timeout` of one check, in nanoseconds.
    pub timeout: Option<i64>,
    /// `StartPeriod` before failures count, in nanoseconds.
    pub start_period: Option<i64>,
    /// `StartInterval` between checks during the start period, in nanoseconds.
    pub start_interval: Option<i64>,
    /// `Retries` before the container is unhealthy.
    pub retries: Option<i64>,
}

/// The `config` object of an OCI/Docker image config, as Docker and BuildKit write it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OciConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<OciHealthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_false")]
    args_escaped: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Docker's `HealthConfig` JSON (`omitempty` on every field but `Test`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OciHealthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    interval: Option<i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    retries: Option<i64>,
}

fn is_zero(v: &Option<i64>) -> bool {
    v.unwrap_or(0) == 0
}

/// Keys that mark a JSON object as a whole image config (rather than its `config` object).
const IMAGE_KEYS: &[&str] = &["config", "rootfs", "architecture", "os", "history", "created"];

impl ImageConfig {
    /// Reads an image config in its JSON form: either a whole OCI/Docker image config (the
    /// `config` key is used; `rootfs`, `history`, `created`, `architecture`, `os` are ignored
    /// because the exporter writes them) or just its `config` object (`{"Env": [..], "Cmd": ..}`).
    /// Keys kiln does not model (`Hostname`, `ArgsEscaped`, ...) are ignored.
    pub fn from_oci_json(bytes: &[u8]) -> Result<ImageConfig> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::with_source(ErrorKind::Option, "image config is not valid JSON", e))?;
        let serde_json::Value::Object(obj) = &v else {
            return Err(Error::option("image-config", clip_json(&v), "a JSON object (an image config or its config)"));
        };
        let whole = IMAGE_KEYS.iter().any(|k| obj.contains_key(*k));
        let config = if whole { obj.get("config").cloned().unwrap_or(serde_json::Value::Null) } else { v.clone() };
        // A whole image config's author and history (the history a child image continues).
        let (author, history) = if whole {
            let author = obj.get("author").and_then(|a| a.as_str()).filter(|a| !a.is_empty()).map(str::to_owned);
            let history: Vec<OciHistory> = match obj.get("history") {
                Some(h) if !h.is_null() => serde_json::from_value(h.clone()).map_err(|e| {
                    Error::with_source(ErrorKind::Option, "image config: history is not a list of entries", e)
                })?,
                _ => Vec::new(),
            };
            let history = history
                .into_iter()
                .map(|h| HistoryEntry {
                    created_by: h.created_by.unwrap_or_default(),
                    comment: h.comment.filter(|c| !c.is_empty()),
                    empty_layer: h.empty_layer.unwrap_or(false),
                })
                .collect();
            (author, history)
        } else {
            (None, Vec::new())
        };
        if config.is_null() {
            return Ok(ImageConfig { author, history, ..ImageConfig::default() });
        }
        let c: OciConfig = serde_json::from_value(config).map_err(|e| {
            Error::with_source(
                ErrorKind::Option,
                "image config: a field has the wrong type (Env, Cmd, Entrypoint, Shell, OnBuild take lists of \
                 strings; Labels a string map; ExposedPorts and Volumes objects; Healthcheck an object)",
                e,
            )
        })?;
        Ok(ImageConfig { author, history, ..ImageConfig::from_oci(c) })
    }

    fn from_oci(c: OciConfig) -> ImageConfig {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            labels: c.labels.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            stop_signal: non_empty(c.stop_signal),
            healthcheck: c.healthcheck.map(|h| Healthcheck {
                test: h.test.unwrap_or_default(),
                interval: h.interval.filter(|v| *v != 0),
                timeout: h.timeout.filter(|v| *v != 0),
                start_period: h.start_period.filter(|v| *v != 0),
                start_interval: h.start_interval.filter(|v| *v != 0),
                retries: h.retries.filter(|v| *v != 0),
            }),
            shell: c.shell,
            on_build: c.on_build,
            annotations: BTreeMap::new(),
            args_escaped: c.args_escaped,
            author: None,
            history: Vec::new(),
        }
    }

    /// The `config` object of an image config (Docker's key names; empty fields left out).
    pub fn to_oci_json(&self) -> serde_json::Value {
        let set = |s: &BTreeSet<String>| {
            (!s.is_empty()).then(|| s.iter().map(|k| (k.clone(), serde_json::json!({}))).collect::<BTreeMap<_, _>>())
        };
        let c = OciConfig {
            user: self.user.clone(),
            exposed_ports: set(&self.exposed_ports),
            env: (!self.env.is_empty()).then(|| self.env.clone()),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            volumes: set(&self.volumes),
            working_dir: self.working_dir.clone(),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            stop_signal: self.stop_signal.clone(),
            healthcheck: self.healthcheck.as_ref().map(|h| OciHealthcheck {
                test: Some(h.test.clone()),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            }),
            shell: self.shell.clone(),
            on_build: self.on_build.clone(),
            args_escaped: self.args_escaped,
        };
        // Serializing plain strings, lists and maps cannot fail; Null is the impossible fallback.
        serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
    }

    /// `env` as (key, value) pairs, split at the first `=` like Go llb's `WithImageConfig`
    /// (an entry without `=` has an empty value; one with an empty key is skipped).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
            })
            .collect()
    }
}

fn clip_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_forms_and_docker_names() {
        let whole = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1","B"],"WorkingDir":"/w",
            "User":"1:2","ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},"StopSignal":"SIGKILL",
            "Healthcheck":{"Test":["CMD","true"],"Interval":1000000000,"Retries":3},"Shell":["/bin/ash","-c"],
            "OnBuild":["RUN x"],"Hostname":"ignored","Labels":{"l":"v"}}}"#;
        let c = ImageConfig::from_oci_json(whole).unwrap();
        assert_eq!(c.env, vec!["A=1", "B"]);
        assert_eq!(c.env_pairs(), vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), String::new())]);
        assert_eq!(c.exposed_ports, BTreeSet::from(["80/tcp".to_owned()]));
        assert_eq!(c.healthcheck.as_ref().unwrap().interval, Some(1_000_000_000));
        let inner = serde_json::to_vec(&c.to_oci_json()).unwrap();
        assert_eq!(ImageConfig::from_oci_json(&inner).unwrap(), c);
        let j = c.to_oci_json();
        assert_eq!(j["Healthcheck"], serde_json::json!({"Test":["CMD","true"],"Interval":1000000000,"Retries":3}));
        assert_eq!(j["Volumes"], serde_json::json!({"/data":{}}));
        assert!(j.get("Hostname").is_none());
        assert_eq!(ImageConfig::from_oci_json(br#"{"os":"linux"}"#).unwrap(), ImageConfig::default());
        assert_eq!(ImageConfig::default().to_oci_json(), serde_json::json!({}));
    }

    #[test]
    fn bad_json_is_an_option_error() {
        for bad in [&b"[1]"[..], b"{", br#"{"Env":"A=1"}"#] {
            assert_eq!(ImageConfig::from_oci_json(bad).unwrap_err().kind(), ErrorKind::Option);
        }
    }
}

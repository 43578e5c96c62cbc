//! Options of a Dockerfile turned into a [`State`](super::State) by the graph builder's faces
//! (`kiln::frontend::dockerfile::state_from_dir`, `Engine::dockerfile`; `kiln.dockerfile(...)`
//! in the bindings), and the BuildKit frontend attributes they stand for. Plain data, so the
//! generated option readers (`graph::builder`) fill it for every language.

use super::platform::Platform;
use std::collections::BTreeMap;

/// How a Dockerfile in a context directory is converted (BuildKit's `dockerfile.v0` options
/// under the builder's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileOptions {
    /// The Dockerfile, relative to the context directory (or absolute); errors name it as given
    /// (`Dockerfile:3: ...`). BuildKit's `filename`.
    pub dockerfile: String,
    /// The stage to build (`None`: the last one). BuildKit's `target`.
    pub target: Option<String>,
    /// Build arguments. BuildKit's `build-arg:NAME`.
    pub build_args: BTreeMap<String, String>,
    /// Labels added to the image config. BuildKit's `label:NAME`.
    pub labels: BTreeMap<String, String>,
    /// Named contexts (`docker-image://REF`, `oci-layout://DIR[:TAG]`, `local:NAME`,
    /// `https://URL`). BuildKit's `context:NAME`.
    pub contexts: BTreeMap<String, String>,
    /// The target platform (`None`: the host's, the only one kiln builds for). BuildKit's
    /// `platform`.
    pub platform: Option<Platform>,
    /// No step uses the cache. BuildKit's `no-cache`.
    pub no_cache: bool,
    /// The name of the `local` source the build context is read from at solve time (give its
    /// directory in the solve's locals). BuildKit's `contextkey`.
    pub context_name: String,
}

impl Default for DockerfileOptions {
    fn default() -> Self {
        DockerfileOptions {
            dockerfile: "Dockerfile".into(),
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            contexts: BTreeMap::new(),
            platform: None,
            no_cache: false,
            context_name: "context".into(),
        }
    }
}

impl DockerfileOptions {
    /// The frontend attributes these options stand for, as `buildctl --opt` sends them
    /// (`filename`, `target`, `build-arg:NAME`, `label:NAME`, `context:NAME`, `platform`,
    /// `no-cache`, `contextkey`).
    pub fn frontend_attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert("filename".to_owned(), self.dockerfile.clone());
        if let Some(t) = &self.target {
            a.insert("target".to_owned(), t.clone());
        }
        let prefixed = [("build-arg:", &self.build_args), ("label:", &self.labels), ("context:", &self.contexts)];
        for (prefix, map) in prefixed {
            a.extend(map.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())));
        }
        if let Some(p) = &self.platform {
            a.insert("platform".to_owned(), p.to_string());
        }
        if self.no_cache {
            a.insert("no-cache".to_owned(), String::new());
        }
        a.insert("contextkey".to_owned(), self.context_name.clone());
        a
    }
}

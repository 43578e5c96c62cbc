//! `ImageConfig`: the image metadata (entrypoint, env, working dir, ...) a build result carries
//! into image exporters. It travels beside the LLB definition, as BuildKit's exporter config does.

use std::collections::BTreeMap;

/// Image configuration written into the image config of `type=oci` / `type=image` exports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}

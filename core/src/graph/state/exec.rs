//! [`State::run`] (BuildKit's `ExecOp`), in four steps with one job each:
//!
//! - `process_meta`: the process (`pb::Meta`): env merged over the state's, the default `PATH`,
//!   ssh agent targets and `SSH_AUTH_SOCK`, cwd, user, hostname and the other process options;
//! - `plan_mounts`: the mounts in BuildKit's shape, unnumbered: rootfs and writable-capable
//!   mounts, then secrets, then ssh sockets;
//! - `number_outputs`: BuildKit's ordering and numbering: plain mounts sorted by dest (rootfs `/`
//!   first), each writable one taking the next output index, secrets and ssh last with -1;
//! - `exec_caps`: the LLB caps the exec needs, from the options and the mounts.
//!
//! `run` then builds the node and hands out the rootfs and writable bind mount outputs.

use super::node::{Constraints, ExecNode, Node, NodeKind, Output};
use super::options::MountKind;
use super::path::normalize_path;
use super::{CacheSharing, ExecOptions, ExecState, Network, Security, State, StateMeta};
use crate::graph::definition::CUSTOM_NAME_KEY;
use crate::graph::pb;
use std::collections::BTreeSet;
use std::sync::Arc;

/// `PATH` set on exec ops whose env has none (what Go's `llb` does for older daemons).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The mounts of an exec before numbering.
struct MountPlan {
    /// Rootfs, bind, tmpfs and cache mounts: (source, mount, is-writable-output), in option order.
    plain: Vec<(Option<Output>, pb::Mount, bool)>,
    /// Secret file mounts, in option order.
    secrets: Vec<pb::Mount>,
    /// Ssh agent socket mounts, in option order.
    ssh: Vec<pb::Mount>,
}

impl State {
    /// Runs a process on this state as rootfs. Mounts follow BuildKit's ExecOp conventions:
    /// sorted by dest (rootfs `/` first, secrets last); each writable rootfs/bind mount gets the
    /// next output index; readonly, cache, tmpfs and secret mounts have output -1.
    pub fn run(&self, o: ExecOptions) -> ExecState {
        self.run_unchecked(o)
    }

    /// [`State::run`] after [`ExecOptions::validate`]: what every binding calls, so a run that
    /// one face would refuse is refused by all.
    pub fn try_run(&self, o: ExecOptions) -> crate::Result<ExecState> {
        o.validate()?;
        Ok(self.run_unchecked(o))
    }

    fn run_unchecked(&self, o: ExecOptions) -> ExecState {
        let ssh_targets = ssh_targets(&o);
        let meta = self.process_meta(&o, &ssh_targets);
        let caps = self.exec_caps(&o);
        let mounts = number_outputs(self.plan_mounts(&o, ssh_targets));

        let mut constraints = Constraints { ignore_cache: o.ignore_cache, ..Default::default() };
        if let Some(n) = &o.custom_name {
            constraints.description.insert(CUSTOM_NAME_KEY.to_owned(), n.clone());
        }
        constraints.worker_filter = o.worker_selector.iter().map(|(k, v)| format!("{k}=={v}")).collect();
        let network = match o.network {
            Network::Sandbox => pb::NetMode::Unset,
            Network::Host => pb::NetMode::Host,
            Network::None => pb::NetMode::None,
        } as i32;
        let outputs: Vec<(String, i64, bool)> = mounts
            .iter()
            .map(|(_, m)| (m.dest.clone(), m.output, m.mount_type == pb::MountType::Bind as i32))
            .collect();
        let security = match o.security {
            Security::Sandbox => pb::SecurityMode::Sandbox,
            Security::Insecure => pb::SecurityMode::Insecure,
        } as i32;
        let secretenv = o
            .secret_env
            .iter()
            .map(|s| pb::SecretEnv { id: s.id.clone(), name: s.name.clone(), optional: s.optional })
            .collect();
        let node = Arc::new(Node {
            kind: NodeKind::Exec(Box::new(ExecNode { meta, network, mounts, caps, security, secretenv })),
            constraints,
        });
        let out_state = |idx: i64, meta: StateMeta| State {
            output: Some(Output { node: node.clone(), index: idx }),
            meta,
            chain_open: false,
        };
        let root = if o.readonly_rootfs {
            State { chain_open: false, ..self.clone() }
        } else {
            out_state(0, self.meta.clone())
        };
        let mounts = outputs
            .into_iter()
            .filter(|(d, _, _)| d != "/")
            .map(|(d, idx, bind)| {
                let s = (bind && idx >= 0).then(|| out_state(idx, StateMeta::default()));
                (d, s)
            })
            .collect();
        ExecState { root, mounts }
    }

    /// The process of the exec: env (the state's, overridden by the options', `PATH` defaulted,
    /// `SSH_AUTH_SOCK` = the first ssh target unless set), cwd, user, hostname and the rest.
    fn process_meta(&self, o: &ExecOptions, ssh_targets: &[String]) -> pb::Meta {
        let mut env = self.meta.env.clone();
        for (k, v) in &o.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
        }
        // Go's ExecOp.Marshal: SSH_AUTH_SOCK = the first ssh target's unless set.
        if let Some(first) = ssh_targets.first() {
            if !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                env.push(("SSH_AUTH_SOCK".to_owned(), first.clone()));
            }
        }
        let cwd = match &o.cwd {
            Some(c) => normalize_path(self.cwd(), c, false),
            None => self.cwd().to_owned(),
        };
        pb::Meta {
            args: o.args.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd,
            user: o.user.clone().or_else(|| self.meta.user.clone()).unwrap_or_default(),
            hostname: o.hostname.clone().or_else(|| self.meta.hostname.clone()).unwrap_or_default(),
            // Go `llb` (v0.11.6) sets this on every ExecOp it marshals.
            remove_mount_stubs_recursive: true,
            extra_hosts: o
                .extra_hosts
                .iter()
                .map(|(h, ip)| pb::HostIp { host: h.clone(), ip: ip.to_string() })
                .collect(),
            ulimit: o.ulimits.clone(),
            cgroup_parent: o.cgroup_parent.clone().unwrap_or_default(),
            valid_exit_codes: o.valid_exit_codes.clone(),
            ..Default::default()
        }
    }

    /// The mounts of the exec in BuildKit's shape, not yet ordered or numbered: this state as
    /// rootfs `/` (writable unless `readonly_rootfs`), then each option mount, then one ssh
    /// socket per `ssh_targets` entry.
    fn plan_mounts(&self, o: &ExecOptions, ssh_targets: Vec<String>) -> MountPlan {
        let mut plain: Vec<(Option<Output>, pb::Mount, bool)> = Vec::new();
        plain.push((
            self.output.clone(),
            pb::Mount { dest: "/".into(), readonly: o.readonly_rootfs, ..Default::default() },
            !o.readonly_rootfs,
        ));
        let mut secrets = Vec::new();
        for m in &o.mounts {
            match &m.kind {
                MountKind::Bind { state, readonly, selector, no_output } => {
                    plain.push((
                        state.output.clone(),
                        pb::Mount {
                            dest: m.dest.clone(),
                            readonly: *readonly,
                            selector: selector.clone().unwrap_or_default(),
                            ..Default::default()
                        },
                        !*readonly && !*no_output,
                    ));
                }
                MountKind::Tmpfs { size } => {
                    let tmpfs_opt =
                        (*size > 0).then(|| pb::TmpfsOpt { size: i64::try_from(*size).unwrap_or(i64::MAX) });
                    let mount = pb::Mount {
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Tmpfs as i32,
                        tmpfs_opt,
                        ..Default::default()
                    };
                    plain.push((None, mount, false));
                }
                MountKind::Cache { id, sharing, base, selector, readonly } => {
                    let sharing = match sharing {
                        CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                        CacheSharing::Private => pb::CacheSharingOpt::Private,
                        CacheSharing::Locked => pb::CacheSharingOpt::Locked,
                    } as i32;
                    let mount = pb::Mount {
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Cache as i32,
                        cache_opt: Some(pb::CacheOpt { id: id.clone(), sharing }),
                        selector: selector.clone().unwrap_or_default(),
                        readonly: *readonly,
                        ..Default::default()
                    };
                    plain.push((base.as_ref().and_then(|b| b.output.clone()), mount, false));
                }
                MountKind::Secret { id, uid, gid, mode, optional } => {
                    secrets.push(pb::Mount {
                        input: -1,
                        output: -1,
                        dest: m.dest.clone(),
                        mount_type: pb::MountType::Secret as i32,
                        secret_opt: Some(pb::SecretOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: *optional,
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        let ssh = o
            .ssh
            .iter()
            .zip(ssh_targets)
            .map(|(s, target)| {
                let ssh_opt =
                    pb::SshOpt { id: s.id.clone(), uid: s.uid, gid: s.gid, mode: s.mode, optional: s.optional };
                pb::Mount {
                    input: -1,
                    output: -1,
                    dest: target,
                    mount_type: pb::MountType::Ssh as i32,
                    ssh_opt: Some(ssh_opt),
                    ..Default::default()
                }
            })
            .collect();
        MountPlan { plain, secrets, ssh }
    }

    /// The LLB caps the exec needs (a set, so the order found does not matter).
    fn exec_caps(&self, o: &ExecOptions) -> BTreeSet<&'static str> {
        let mut caps: BTreeSet<&'static str> = BTreeSet::from(["exec.meta.base"]);
        if o.network != Network::Sandbox {
            caps.insert("exec.meta.network");
        }
        if !o.ulimits.is_empty() {
            caps.insert("exec.meta.ulimit");
        }
        if !o.valid_exit_codes.is_empty() {
            caps.insert("exec.validexitcode");
        }
        if o.security != Security::Sandbox {
            caps.insert("exec.meta.security");
        }
        if !o.secret_env.is_empty() {
            // Go adds the secret-mount cap for any secret, env or file.
            caps.insert("exec.mount.secret");
            caps.insert("exec.secretenv");
        }
        if !o.ssh.is_empty() {
            caps.insert("exec.mount.ssh");
        }
        if self.output.is_some() {
            caps.insert("exec.mount.bind");
        }
        for m in &o.mounts {
            match &m.kind {
                MountKind::Bind { state, selector, .. } => {
                    if selector.is_some() {
                        caps.insert("exec.mount.selector");
                    }
                    if state.output.is_some() {
                        caps.insert("exec.mount.bind");
                    }
                }
                MountKind::Tmpfs { size } => {
                    caps.insert("exec.mount.tmpfs");
                    if *size > 0 {
                        caps.insert("exec.mount.tmpfs.size");
                    }
                }
                MountKind::Cache { selector, base, .. } => {
                    caps.insert("exec.mount.cache");
                    caps.insert("exec.mount.cache.sharing");
                    if selector.is_some() {
                        caps.insert("exec.mount.selector");
                    }
                    if base.is_some() {
                        caps.insert("exec.mount.bind");
                    }
                }
                MountKind::Secret { .. } => {
                    caps.insert("exec.mount.secret");
                }
            }
        }
        caps
    }
}

/// Go's ExecOp.Marshal default ssh targets: `/run/buildkit/ssh_agent.N` for sockets without one.
fn ssh_targets(o: &ExecOptions) -> Vec<String> {
    o.ssh
        .iter()
        .enumerate()
        .map(|(i, s)| s.target.clone().unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}")))
        .collect()
}

/// Orders and numbers the planned mounts as BuildKit does: plain mounts sorted by dest (stable;
/// rootfs `/` sorts first), each writable one taking the next output index and the others -1;
/// then secrets, then ssh sockets, all with output -1. Inputs are -1 here and filled at marshal
/// time for mounts with a source.
fn number_outputs(plan: MountPlan) -> Vec<(Option<Output>, pb::Mount)> {
    let MountPlan { mut plain, secrets, ssh } = plan;
    plain.sort_by(|a, b| a.1.dest.cmp(&b.1.dest));
    let mut next_out = 0i64;
    let mut mounts = Vec::with_capacity(plain.len() + secrets.len() + ssh.len());
    for (src, mut m, writable) in plain {
        m.input = -1; // filled at marshal time when there is a source
        m.output = if writable {
            next_out += 1;
            next_out - 1
        } else {
            -1
        };
        mounts.push((src, m));
    }
    mounts.extend(secrets.into_iter().map(|m| (None, m)));
    mounts.extend(ssh.into_iter().map(|m| (None, m)));
    mounts
}

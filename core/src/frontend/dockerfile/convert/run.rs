//! RUN (BuildKit's `dispatchRun`, `dispatchRunMounts`, `dispatchSecret`, `dispatchSSH`): the
//! command line (shell wrapping, heredocs run as a script or fed to the shell), the mounts and
//! the network mode, and the op's name and description.

use super::dispatch::{describe, state_env, with_shell, Env};
use super::history::{commit, run_command_string};
use super::names::{prefix_command, process_cmd_env, summarize_heredoc, uppercase_cmd};
use super::stages::Ds;
use crate::frontend::dockerfile::heredoc::{chomp_heredoc_content, parse_heredoc};
use crate::frontend::dockerfile::instructions::{Command, NetworkMode, RunCommand};
use crate::frontend::dockerfile::mount::{CacheSharing as DfSharing, MountType};
use crate::graph::state::clean_path;
use crate::graph::{
    CacheSharing, ExecOptions, MkdirOptions, MkfileOptions, MountSpec, Network, Owner, SshSocket, State,
};

/// Dispatches a RUN whose mounts read `sources` (one state per mount, scratch when none).
pub(super) fn dispatch_run(
    d: &mut Ds,
    c: &Command,
    r: &RunCommand,
    sources: &[State],
    env: &mut Env,
) -> Result<(), String> {
    let mut custom_name = c.code.clone();
    let mut args = r.cmd.cmd_line.clone();
    let mut mounts: Vec<MountSpec> = Vec::new();
    if !r.cmd.files.is_empty() {
        if args.len() != 1 || !r.cmd.prepend_shell {
            return Err(format!("parsing produced an invalid run command: {args:?}"));
        }
        let first = &r.cmd.files[0];
        if parse_heredoc(&args[0]).ok().flatten().is_some() {
            let data = if first.chomp { chomp_heredoc_content(&first.data) } else { first.data.clone() };
            if first.data.starts_with("#!") {
                // A script with a shebang: written to a file and run.
                let st = State::scratch()
                    .with_cwd("/")
                    .mkfile(&first.name, 0o755, data.into_bytes(), MkfileOptions::default())
                    .with_custom_name("[internal] preparing inline document");
                mounts.push(MountSpec::bind("/dev/pipes/", &st, true).with_selector("/"));
                args = vec![format!("/dev/pipes/{}", first.name)];
            } else {
                args = vec![data];
            }
            custom_name.push_str(&format!(" ({})", summarize_heredoc(&first.data)));
        } else {
            // Several heredocs: given back to the shell as written.
            let mut full = args[0].clone();
            for f in &r.cmd.files {
                full.push('\n');
                full.push_str(&f.data);
                full.push_str(&f.name);
            }
            args = vec![full];
        }
    }
    let args = with_shell(d, &args, r.cmd.prepend_shell);
    let (more, sockets) = run_mounts(d, r, sources, env)?;
    mounts.extend(more);

    let vars = state_env(d);
    let mut raw = env.lex;
    raw.raw_quotes = true;
    raw.skip_unset_env = true;
    let name = prefix_command(
        &d.name,
        &mut d.cmd_index,
        d.cmd_total,
        &uppercase_cmd(&process_cmd_env(&raw, &custom_name, &vars)),
    );
    let history = format!("RUN {}", run_command_string(&args, &d.build_args, &vars));
    let mut o = ExecOptions::new(args);
    o.mounts = mounts;
    o.ssh = sockets;
    o.ignore_cache = d.ignore_cache;
    o.custom_name = Some(name);
    for (name, soft, hard) in &env.opts.ulimits {
        o = o.ulimit(name.clone(), *soft, *hard);
    }
    for (host, ip) in &env.opts.extra_hosts {
        o = o.extra_host(host.clone(), *ip);
    }
    if env.opts.shm_size > 0 {
        o.mounts.push(MountSpec::tmpfs("/dev/shm", env.opts.shm_size));
    }
    o.cgroup_parent = env.opts.cgroup_parent.clone();
    o.network = match r.network {
        // `--network=default` (or none given) keeps the stage's network: `force-network-mode`.
        NetworkMode::Default => env.opts.force_network,
        NetworkMode::None => Network::None,
        NetworkMode::Host => Network::Host,
    };
    let st = d.state.try_run(o).map_err(|e| e.to_string())?.root();
    d.state = describe(st, &c.code);
    commit(d, history, true, true);
    Ok(())
}

/// The mounts of a RUN (BuildKit's `dispatchRunMounts`).
fn run_mounts(
    d: &mut Ds,
    r: &RunCommand,
    sources: &[State],
    env: &mut Env,
) -> Result<(Vec<MountSpec>, Vec<SshSocket>), String> {
    let mut out = Vec::new();
    let mut sockets = Vec::new();
    for (i, m) in r.mounts.iter().enumerate() {
        let from_given = !m.from.is_empty() || m.kind == MountType::Cache;
        let mut st = if from_given { sources.get(i).cloned().unwrap_or_default() } else { env.context.clone() };
        match m.kind {
            MountType::Secret => {
                out.push(secret(m)?);
                continue;
            }
            MountType::Ssh => {
                sockets.push(ssh(m)?);
                continue;
            }
            MountType::Tmpfs => st = State::scratch(),
            _ => {}
        }
        // An absolute target stays as written (BuildKit only checks it).
        let target = if clean_path(&m.target).starts_with('/') {
            m.target.clone()
        } else {
            clean_path(&format!("/{}/{}", d.state.cwd(), m.target))
        };
        if target == "/" {
            return Err("invalid mount target \"/\"".into());
        }
        let src = clean_path(&format!("/{}", m.source));
        let mut selector = (src != "/").then_some(src);
        if selector.is_none() && (m.uid.is_some() || m.gid.is_some() || m.mode.is_some()) {
            // A cache directory owned and moded as asked: BuildKit prepares it with a mkdir.
            let o = MkdirOptions {
                mode: m.mode.unwrap_or(0o755),
                owner: Some(Owner { uid: m.uid.unwrap_or(0), gid: m.gid.unwrap_or(0) }),
                ..Default::default()
            };
            st = st.mkdir("/cache", o).with_custom_name("[internal] settings cache mount permissions");
            selector = Some("/cache".into());
        }
        let spec = match m.kind {
            MountType::Tmpfs => MountSpec::tmpfs(&target, u64::try_from(m.size_limit).unwrap_or(0)),
            MountType::Cache => {
                let sharing = match m.cache_sharing {
                    Some(DfSharing::Private) => CacheSharing::Private,
                    Some(DfSharing::Locked) => CacheSharing::Locked,
                    _ => CacheSharing::Shared,
                };
                let id = if m.cache_id.is_empty() { clean_path(&m.target) } else { m.cache_id.clone() };
                let id = format!("{}/{id}", env.opts.cache_id_namespace);
                let spec = MountSpec::cache_on(&target, id, sharing, &st);
                if m.read_only {
                    spec.read_only_cache()
                } else {
                    spec
                }
            }
            _ => {
                let spec = MountSpec::bind(&target, &st, m.read_only);
                if m.read_only {
                    spec
                } else {
                    spec.without_output()
                }
            }
        };
        out.push(match selector {
            Some(s) => spec.with_selector(s),
            None => spec,
        });
        if m.from.is_empty() {
            env.pass.ctx_paths.insert(clean_path(&format!("/{}", m.source)));
        }
    }
    Ok((out, sockets))
}

/// A secret mount (BuildKit's `dispatchSecret`).
fn secret(m: &crate::frontend::dockerfile::mount::Mount) -> Result<MountSpec, String> {
    let mut id = if m.source.is_empty() { m.cache_id.clone() } else { m.source.clone() };
    if id.is_empty() {
        if m.target.is_empty() {
            return Err("one of source, target required".into());
        }
        id = base_name(&m.target);
    }
    let target = if m.target.is_empty() { format!("/run/secrets/{}", base_name(&id)) } else { m.target.clone() };
    let mode = if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() { m.mode.unwrap_or(0o400) } else { 0o400 };
    Ok(MountSpec::secret(target, id, m.uid.unwrap_or(0), m.gid.unwrap_or(0), mode, !m.required))
}

/// An SSH agent socket (BuildKit's `dispatchSSH`).
fn ssh(m: &crate::frontend::dockerfile::mount::Mount) -> Result<SshSocket, String> {
    if !m.source.is_empty() {
        return Err("ssh does not support source".into());
    }
    let mut s = SshSocket::new(m.cache_id.clone());
    if !m.target.is_empty() {
        s = s.target(m.target.clone());
    }
    if !m.required {
        s = s.optional();
    }
    if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
        s = s.owner(m.uid.unwrap_or(0), m.gid.unwrap_or(0), m.mode.unwrap_or(0o600));
    }
    Ok(s)
}

/// Go's `path.Base`.
fn base_name(p: &str) -> String {
    let c = clean_path(p);
    c.rsplit('/').find(|s| !s.is_empty()).unwrap_or(&c).to_owned()
}

//! Dispatching a stage's instructions onto its state and image config (BuildKit's `dispatch*`
//! functions): the per-stage setup from the base (PATH, env, working dir, user, ONBUILD
//! triggers), expansion of each command with the stage's environment, and every instruction but
//! RUN ([`super::run`]) and COPY/ADD ([`super::copy`]).

use super::base::COMMAND_DESCRIPTION;
use super::checks::{check_signal, parse_port_specs};
use super::history::{commit, go_list, go_port_map, go_quote_list, healthcheck_message};
use super::names::{prefix_command, process_cmd_env, uppercase_cmd};
use super::options::ConvertOptions;
use super::stages::{Ds, StageGraph};
use super::{conv_err, copy, run};
use crate::frontend::dockerfile::error::DockerfileError;
use crate::frontend::dockerfile::instructions::{Command, Instruction};
use crate::frontend::dockerfile::parse::{parse_instruction, Parsed};
use crate::frontend::dockerfile::parser;
use crate::frontend::dockerfile::shell::Lex;
use crate::graph::state::DEFAULT_PATH;
use crate::graph::{Healthcheck, MkdirOptions, State};
use std::collections::BTreeSet;

/// ARGs BuildKit does not put in the environment.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// What one dispatch pass learned besides the states.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// Context paths the stages read (for the context source's follow paths).
    pub ctx_paths: BTreeSet<String>,
}

/// What dispatching needs besides the stage.
pub(super) struct Env<'a> {
    pub opts: &'a ConvertOptions,
    pub lex: Lex,
    pub meta_args: &'a [(String, Option<String>)],
    pub context: &'a State,
    pub pass: &'a mut Pass,
}

/// Dispatches every stage the target needs, in order, on a copy of `graph`; returns the target.
pub(super) fn dispatch_all(
    graph: &StageGraph,
    opts: &ConvertOptions,
    context: &State,
) -> Result<(Ds, Pass), DockerfileError> {
    let mut g = graph.clone();
    let mut pass = Pass::default();
    for i in 0..g.states.len() {
        if !g.reachable(g.target, i) || g.states[i].noinit {
            continue;
        }
        let mut d = g.states[i].clone();
        if let Some(b) = d.base {
            d.state = g.states[b].state.clone();
            d.platform = g.states[b].platform.clone();
            d.image = g.states[b].image.clone();
        }
        let meta_args = g.meta_args.clone();
        let mut env = Env { opts, lex: g.lex, meta_args: &meta_args, context, pass: &mut pass };
        init_stage(&mut d, &mut env, &mut g)?;
        let commands = std::mem::take(&mut d.commands);
        for (c, sources) in commands {
            dispatch(&mut d, c.clone(), &sources, &mut env, &g).map_err(|e| e.at(c.location))?;
        }
        g.states[i] = d;
    }
    let target = g.states[g.target].clone();
    Ok((target, pass))
}

/// The stage's start from its base (BuildKit: PATH always set, image env into the state, the
/// image's working dir and user, the hostname, then the base's ONBUILD triggers).
fn init_stage(d: &mut Ds, env: &mut Env, g: &mut StageGraph) -> Result<(), DockerfileError> {
    if !d.image.env.iter().any(|e| e.split('=').next() == Some("PATH")) {
        d.image.env.push(format!("PATH={DEFAULT_PATH}"));
    }
    for e in d.image.env.clone() {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        d.state = std::mem::take(&mut d.state).with_env(k, v);
    }
    if let Some(h) = &env.opts.hostname {
        d.state = std::mem::take(&mut d.state).with_hostname(h.clone());
    }
    if let Some(wd) = d.image.working_dir.clone().filter(|w| !w.is_empty()) {
        workdir(d, &wd, None, env);
    }
    if let Some(u) = d.image.user.clone().filter(|u| !u.is_empty()) {
        d.state = std::mem::take(&mut d.state).with_user(u);
    }
    let triggers = d.image.on_build.take().unwrap_or_default();
    for t in triggers {
        let ast = parser::parse(&t).map_err(|e| conv_err(e.message, d.stage.location))?;
        if ast.children.len() != 1 {
            return Err(conv_err("onbuild trigger should be a single expression", d.stage.location));
        }
        let Parsed::Command(c) =
            parse_instruction(&ast.children[0]).map_err(|e| conv_err(e.message, d.stage.location))?
        else {
            return Err(conv_err("onbuild trigger should be a single expression", d.stage.location));
        };
        let sources = g.sources_of(&c, false)?;
        dispatch(d, c, &sources, env, g).map_err(|e| e.at(d.stage.location))?;
    }
    Ok(())
}

/// The stage's environment for expansion.
pub(super) fn state_env(d: &Ds) -> Vec<(String, String)> {
    d.state.env().to_vec()
}

/// Expands and dispatches one command.
fn dispatch(
    d: &mut Ds,
    mut c: Command,
    sources: &[Option<usize>],
    env: &mut Env,
    g: &StageGraph,
) -> Result<(), DockerfileError> {
    let vars = state_env(d);
    c.expand(&env.lex, &vars)?;
    let loc = c.location;
    let err = |m: String| conv_err(m, loc);
    let source_state = |i: Option<usize>| i.map(|i| g.states[i].state.clone()).unwrap_or_default();
    match &c.instruction {
        Instruction::Maintainer(m) => {
            d.image.author = Some(m.maintainer.clone());
            commit(d, format!("MAINTAINER {}", m.maintainer), false, false);
        }
        Instruction::Env(e) => {
            let mut msg = String::from("ENV");
            for kv in &e.env {
                d.state = std::mem::take(&mut d.state).with_env(kv.key.clone(), kv.value.clone());
                add_env(&mut d.image.env, &kv.key, &kv.value);
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            commit(d, msg, false, false);
        }
        Instruction::Run(r) => {
            let sources: Vec<State> = sources.iter().map(|s| source_state(*s)).collect();
            run::dispatch_run(d, &c, r, &sources, env).map_err(err)?;
        }
        Instruction::Workdir(w) => workdir(d, &w.path, Some(&c), env),
        Instruction::Add(a) => {
            if !a.checksum.is_empty() {
                return Err(err("instruction 'ADD --checksum=<CHECKSUM>' requires the labs channel".into()));
            }
            let cfg = copy::CopyConfig {
                files: &a.files,
                source: env.context.clone(),
                is_add: true,
                chown: &a.chown,
                chmod: &a.chmod,
                link: a.link,
                code: &c.code,
            };
            copy::dispatch_copy(d, cfg, env).map_err(err)?;
            for s in &a.files.source_paths {
                if !copy::is_http(s) {
                    env.pass.ctx_paths.insert(join_root(s));
                }
            }
        }
        Instruction::Copy(cp) => {
            let from = sources.first().copied().flatten();
            let source = match from {
                Some(i) => g.states[i].state.clone(),
                None if cp.from.is_empty() => env.context.clone(),
                None => State::scratch(),
            };
            let cfg = copy::CopyConfig {
                files: &cp.files,
                source,
                is_add: false,
                chown: &cp.chown,
                chmod: &cp.chmod,
                link: cp.link,
                code: &c.code,
            };
            copy::dispatch_copy(d, cfg, env).map_err(err)?;
            if cp.from.is_empty() {
                for s in &cp.files.source_paths {
                    env.pass.ctx_paths.insert(join_root(s));
                }
            }
        }
        Instruction::Label(l) => {
            let mut msg = String::from("LABEL");
            for kv in &l.labels {
                d.image.labels.insert(kv.key.clone(), kv.value.clone());
                msg.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            commit(d, msg, false, false);
        }
        Instruction::Onbuild(o) => d.image.on_build.get_or_insert_with(Vec::new).push(o.expression.clone()),
        Instruction::Cmd(cmd) => {
            let args = with_shell(d, &cmd.cmd.cmd_line, cmd.cmd.prepend_shell);
            commit(d, format!("CMD {}", go_quote_list(&args)), false, false);
            d.image.cmd = (!args.is_empty()).then_some(args);
            d.image.args_escaped = true;
            d.cmd_set = true;
        }
        Instruction::Entrypoint(e) => {
            let args = with_shell(d, &e.cmd.cmd_line, e.cmd.prepend_shell);
            commit(d, format!("ENTRYPOINT {}", go_quote_list(&args)), false, false);
            d.image.entrypoint = (!args.is_empty()).then_some(args);
            if !d.cmd_set {
                d.image.cmd = None;
            }
        }
        Instruction::Healthcheck(h) => {
            let nz = |v: i64| (v != 0).then_some(v);
            let hc = Healthcheck {
                test: h.health.test.clone(),
                interval: nz(h.health.interval),
                timeout: nz(h.health.timeout),
                start_period: nz(h.health.start_period),
                start_interval: None,
                retries: nz(i64::from(h.health.retries)),
            };
            commit(d, healthcheck_message(&hc), false, false);
            d.image.healthcheck = Some(hc);
        }
        Instruction::Expose(x) => {
            let ports = x.expand_ports(&env.lex, &vars).map_err(|e| err(e.0))?;
            let ps: BTreeSet<String> = parse_port_specs(&ports).map_err(err)?.into_iter().collect();
            d.image.exposed_ports.extend(ps.iter().cloned());
            commit(d, format!("EXPOSE {}", go_port_map(&ps)), false, false);
        }
        Instruction::User(u) => {
            d.state = std::mem::take(&mut d.state).with_user(u.user.clone());
            d.image.user = Some(u.user.clone());
            commit(d, format!("USER {}", u.user), false, false);
        }
        Instruction::Volume(v) => {
            for p in &v.volumes {
                if p.is_empty() {
                    return Err(err("VOLUME specified can not be an empty string".into()));
                }
                d.image.volumes.insert(p.clone());
            }
            commit(d, format!("VOLUME {}", go_list(&v.volumes)), false, false);
        }
        Instruction::StopSignal(s) => {
            check_signal(&s.signal).map_err(err)?;
            d.image.stop_signal = Some(s.signal.clone());
            commit(d, format!("STOPSIGNAL {}", s.signal), false, false);
        }
        Instruction::Shell(s) => {
            d.image.shell = Some(s.shell.clone());
            commit(d, format!("SHELL {}", go_list(&s.shell)), false, false);
        }
        Instruction::Arg(a) => {
            let mut msg = Vec::new();
            for def in &a.args {
                msg.push(match &def.value {
                    Some(v) => format!("{}={v}", def.key),
                    None => def.key.clone(),
                });
                let mut value = env.opts.build_args.get(&def.key).cloned().or_else(|| def.value.clone());
                if value.is_none() {
                    // Inherited from the global scope: the meta ARG of that name.
                    for (k, v) in env.meta_args {
                        if *k == def.key {
                            value = v.clone();
                        }
                    }
                }
                if let Some(v) = &value {
                    if !NON_ENV_ARGS.contains(&def.key.as_str()) {
                        d.state = std::mem::take(&mut d.state).with_env(def.key.clone(), v.clone());
                    }
                }
                d.build_args.push((def.key.clone(), value));
            }
            commit(d, format!("ARG {}", msg.join(" ")), false, false);
        }
    }
    Ok(())
}

/// `path.Join("/", p)`.
pub(super) fn join_root(p: &str) -> String {
    crate::graph::state::clean_path(&format!("/{p}"))
}

/// BuildKit's `addEnv`: replace the first entry with the key, else append.
fn add_env(env: &mut Vec<String>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(key, _)| key) == k) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// A shell-form command wrapped in the stage's SHELL (default `/bin/sh -c`); exec form as is.
pub(super) fn with_shell(d: &Ds, args: &[String], prepend: bool) -> Vec<String> {
    if !prepend {
        return args.to_vec();
    }
    let mut out = match &d.image.shell {
        Some(s) if !s.is_empty() => s.clone(),
        _ => vec!["/bin/sh".to_owned(), "-c".to_owned()],
    };
    out.push(args.join(" "));
    out
}

/// WORKDIR (BuildKit's `dispatchWorkdir`): the state's dir, the image's working dir, and — for a
/// WORKDIR instruction (`cmd`) other than `/` — a mkdir with parents as the image's user.
fn workdir(d: &mut Ds, path: &str, cmd: Option<&Command>, env: &mut Env) {
    d.state = std::mem::take(&mut d.state).with_cwd(path);
    let wd = if path.starts_with('/') {
        path.to_owned()
    } else {
        join_root(&format!("{}/{path}", d.image.working_dir.clone().unwrap_or_default()))
    };
    d.image.working_dir = Some(wd.clone());
    let Some(c) = cmd else { return };
    if wd == "/" {
        commit(d, format!("WORKDIR {wd}"), false, false);
        return;
    }
    let o =
        MkdirOptions { make_parents: true, user: d.image.user.clone().filter(|u| !u.is_empty()), ..Default::default() };
    let vars = state_env(d);
    let name = uppercase_cmd(&process_cmd_env(&env.lex, &c.code, &vars));
    let name = prefix_command(&d.name, &mut d.cmd_index, d.cmd_total, &name);
    d.state = d.state.mkdir(&wd, o).with_custom_name(name);
    commit(d, format!("WORKDIR {wd}"), true, false);
}

/// The dockerfile command description of an op.
pub(super) fn describe(st: State, code: &str) -> State {
    st.with_description(COMMAND_DESCRIPTION, code)
}

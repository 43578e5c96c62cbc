//! The stage graph (BuildKit's `dispatchStates`): meta ARGs with the predefined platform ARGs,
//! each stage's expanded base name and step count, stages referenced by name, index or image
//! (`COPY --from`, `RUN --mount=from=`), the target and which stages it needs.

use super::conv_err;
use super::options::ConvertOptions;
use crate::frontend::dockerfile::error::{DockerfileError, Location};
use crate::frontend::dockerfile::instructions::{ArgDef, Command, Dockerfile, Instruction, Stage};
use crate::frontend::dockerfile::shell::Lex;
use crate::graph::{ImageConfig, Platform, State};
use std::collections::{BTreeMap, BTreeSet};

/// The base name of the empty image.
pub(super) const SCRATCH: &str = "scratch";

/// One stage (or an image used only by `--from`) and what dispatching it needs.
#[derive(Debug, Clone)]
pub(super) struct Ds {
    /// The stage as parsed, with its base name expanded (and normalized once resolved).
    pub stage: Stage,
    /// The name in op names (`AS` name, `stage-N`, "" for a single stage or an image).
    pub name: String,
    /// Filesystem and llb metadata (env, cwd, user) of the stage so far.
    pub state: State,
    /// The image config so far.
    pub image: ImageConfig,
    /// `FROM --platform` when given.
    pub platform: Option<Platform>,
    /// The stage this one is `FROM`.
    pub base: Option<usize>,
    /// Replaced by a named context: its commands are not run.
    pub noinit: bool,
    /// Stages its commands read from.
    pub deps: BTreeSet<usize>,
    /// The commands with the stages each reads (`COPY --from`: one; RUN: one per mount).
    pub commands: Vec<(Command, Vec<Option<usize>>)>,
    /// `no-cache` applies to this stage.
    pub ignore_cache: bool,
    /// A CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// Steps named so far.
    pub cmd_index: usize,
    /// Steps in the stage (FROM of an image, ADD, COPY, RUN, WORKDIR).
    pub cmd_total: usize,
    /// The stage's ARGs with their values.
    pub build_args: Vec<(String, Option<String>)>,
    /// Added for a `--from` naming no stage.
    pub unregistered: bool,
}

impl Ds {
    fn new(stage: Stage) -> Ds {
        Ds {
            stage,
            name: String::new(),
            state: State::scratch(),
            image: ImageConfig::default(),
            platform: None,
            base: None,
            noinit: false,
            deps: BTreeSet::new(),
            commands: Vec::new(),
            ignore_cache: false,
            cmd_set: false,
            cmd_index: 0,
            cmd_total: 0,
            build_args: Vec::new(),
            unregistered: false,
        }
    }
}

/// Every stage, the target, and the meta ARGs in effect.
#[derive(Debug, Clone)]
pub(super) struct StageGraph {
    pub states: Vec<Ds>,
    by_name: BTreeMap<String, usize>,
    pub target: usize,
    /// Platform ARGs then meta ARGs, in order (the later wins).
    pub meta_args: Vec<(String, Option<String>)>,
    pub lex: Lex,
}

/// The predefined platform ARGs for the host (BuildKit's `getPlatformArgs`).
pub(super) fn platform_args(target: &Platform) -> Vec<(String, Option<String>)> {
    let build = Platform::host();
    let v = |s: &str| Some(s.to_owned());
    vec![
        ("BUILDPLATFORM".into(), v(&build.to_string())),
        ("BUILDOS".into(), v(&build.os)),
        ("BUILDARCH".into(), v(&build.architecture)),
        ("BUILDVARIANT".into(), v(&build.variant)),
        ("TARGETPLATFORM".into(), v(&target.to_string())),
        ("TARGETOS".into(), v(&target.os)),
        ("TARGETARCH".into(), v(&target.architecture)),
        ("TARGETVARIANT".into(), v(&target.variant)),
    ]
}

/// The meta ARGs as a lookup map (unset ones are "", as BuildKit's `metaArgsToMap`).
pub(super) fn meta_map(args: &[(String, Option<String>)]) -> BTreeMap<String, String> {
    args.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect()
}

/// A platform other than the host's is refused: kiln runs only native steps.
pub(super) fn check_platform(p: &Platform, location: Location) -> Result<(), DockerfileError> {
    let host = Platform::host();
    if p.os != host.os || p.architecture != host.architecture {
        return Err(conv_err(
            format!("platform {p} is not supported: kiln builds for this host's platform ({host}) only"),
            location,
        ));
    }
    Ok(())
}

impl StageGraph {
    /// Builds the graph (BuildKit's first two loops of `toDispatchState`).
    pub fn new(df: &Dockerfile, opts: &ConvertOptions) -> Result<StageGraph, DockerfileError> {
        if df.stages.is_empty() {
            return Err(DockerfileError::new(
                crate::frontend::dockerfile::error::DockerfileErrorKind::Conversion,
                "the Dockerfile has no stages",
            ));
        }
        let target_platform = opts.target_platform.clone().unwrap_or_else(Platform::host);
        check_platform(&target_platform, Location::default()).map_err(|mut e| {
            e.location = None;
            e
        })?;
        let lex = Lex::new(df.escape);
        let mut meta_args: Vec<(String, Option<String>)> = platform_args(&target_platform)
            .into_iter()
            .map(|(k, v)| {
                let v = opts.build_args.get(&k).cloned().or(v);
                (k, v)
            })
            .collect();
        for cmd in &df.meta_args {
            for ArgDef { key, value, .. } in &cmd.arg.args {
                let v = match opts.build_args.get(key) {
                    Some(v) => Some(v.clone()),
                    // BuildKit ignores an expansion error of a meta ARG default (the raw text stays).
                    None => value.as_ref().map(|v| {
                        lex.process_word_with_matches(v, &meta_map(&meta_args)).map(|r| r.0).unwrap_or(v.clone())
                    }),
                };
                meta_args.push((key.clone(), v));
            }
        }

        let mut g = StageGraph { states: Vec::new(), by_name: BTreeMap::new(), target: 0, meta_args, lex };
        for (i, st) in df.stages.iter().enumerate() {
            let meta = meta_map(&g.meta_args);
            let (name, _) =
                lex.process_word_with_matches(&st.base_name, &meta).map_err(|e| conv_err(e.0, st.location))?;
            if name.is_empty() {
                return Err(conv_err(format!("base name ({}) should not be blank", st.base_name), st.location));
            }
            let mut stage = st.clone();
            stage.base_name = name;
            let mut ds = Ds::new(stage);
            ds.name = st.name.clone();
            if !st.platform.is_empty() {
                let (v, _) = lex.process_word_with_matches(&st.platform, &meta).map_err(|e| {
                    conv_err(format!("failed to process arguments for platform {}: {}", st.platform, e.0), st.location)
                })?;
                let p: Platform = v
                    .parse()
                    .map_err(|_| conv_err(format!("failed to parse platform {v}: invalid platform"), st.location))?;
                check_platform(&p, st.location)?;
                ds.platform = Some(p);
            }
            if !st.name.is_empty() && super::base::has_named_context(opts, &st.name) {
                ds.noinit = true;
                g.add(ds);
                continue;
            }
            if st.name.is_empty() {
                ds.name = format!("stage-{i}");
            }
            let mut total = usize::from(ds.stage.base_name != SCRATCH);
            total += st
                .commands
                .iter()
                .filter(|c| {
                    matches!(
                        c.instruction,
                        Instruction::Add(_) | Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_)
                    )
                })
                .count();
            // A stage FROM an earlier stage has no FROM step of its own.
            if g.by_name.contains_key(&ds.stage.base_name) {
                total -= usize::from(ds.stage.base_name != SCRATCH);
            }
            ds.cmd_total = total;
            ds.ignore_cache = match &opts.ignore_cache {
                None => false,
                Some(l) if l.is_empty() => true,
                Some(l) => !st.name.is_empty() && l.iter().any(|n| n.eq_ignore_ascii_case(&st.name)),
            };
            g.add(ds);
        }

        g.target = if opts.target.is_empty() {
            g.states.len() - 1
        } else {
            g.find(&opts.target).ok_or_else(|| {
                DockerfileError::new(
                    crate::frontend::dockerfile::error::DockerfileErrorKind::Conversion,
                    format!("target stage {} could not be found", opts.target),
                )
            })?
        };

        let n = g.states.len();
        for i in 0..n {
            let cmds = g.states[i].stage.commands.clone();
            let mut commands = Vec::with_capacity(cmds.len());
            for c in cmds {
                let sources = g.sources_of(&c, true)?;
                for s in sources.iter().flatten() {
                    g.states[i].deps.insert(*s);
                }
                commands.push((c, sources));
            }
            g.states[i].commands = commands;
        }
        if let Some(i) = g.circular() {
            return Err(DockerfileError::new(
                crate::frontend::dockerfile::error::DockerfileErrorKind::Conversion,
                format!("circular dependency detected on stage: {}", g.states[i].name),
            ));
        }
        if g.states.len() == 1 {
            g.states[0].name.clear();
        }
        Ok(g)
    }

    /// BuildKit's `addState`: the base is the earlier stage named exactly as the base name.
    fn add(&mut self, mut ds: Ds) -> usize {
        ds.base = self.by_name.get(&ds.stage.base_name).copied();
        let i = self.states.len();
        if !ds.stage.name.is_empty() {
            self.by_name.insert(ds.stage.name.to_lowercase(), i);
        }
        self.states.push(ds);
        i
    }

    /// The stage named `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_lowercase()).copied()
    }

    /// The stages `c` reads (BuildKit's `toCommand` and `detectRunMount`): a `--from` naming no
    /// stage becomes an image stage, added when `register` (not for ONBUILD triggers, whose
    /// unknown images BuildKit leaves empty).
    pub fn sources_of(&mut self, c: &Command, register: bool) -> Result<Vec<Option<usize>>, DockerfileError> {
        match &c.instruction {
            Instruction::Copy(cp) if !cp.from.is_empty() => {
                let s = match cp.from.parse::<i64>() {
                    Ok(idx) => {
                        if idx < 0 || idx as usize >= self.states.len() {
                            return Err(conv_err(format!("invalid stage index {idx}"), c.location));
                        }
                        Some(idx as usize)
                    }
                    Err(_) => self.find_or_add(&cp.from, c.location, register),
                };
                Ok(vec![s])
            }
            Instruction::Run(r) => Ok(r
                .mounts
                .iter()
                .map(|m| {
                    let from = if m.from.is_empty() { SCRATCH } else { m.from.as_str() };
                    self.find_or_add(from, c.location, register)
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    fn find_or_add(&mut self, name: &str, location: Location, register: bool) -> Option<usize> {
        if let Some(i) = self.find(name) {
            return Some(i);
        }
        if !register {
            return None;
        }
        let stage = Stage { base_name: name.to_owned(), location, ..Default::default() };
        let mut ds = Ds::new(stage);
        ds.unregistered = true;
        Some(self.add(ds))
    }

    fn circular(&self) -> Option<usize> {
        let mut visited = BTreeSet::new();
        for i in 0..self.states.len() {
            let mut path = BTreeSet::new();
            if self.visit(i, &mut visited, &mut path) {
                return Some(i);
            }
        }
        None
    }

    fn visit(&self, i: usize, visited: &mut BTreeSet<usize>, path: &mut BTreeSet<usize>) -> bool {
        if !visited.insert(i) {
            return false;
        }
        path.insert(i);
        for d in &self.states[i].deps {
            if path.contains(d) || self.visit(*d, visited, path) {
                return true;
            }
        }
        path.remove(&i);
        false
    }

    /// Whether the target needs stage `to` (BuildKit's `isReachable`).
    pub fn reachable(&self, from: usize, to: usize) -> bool {
        let mut seen = BTreeSet::new();
        self.reach(from, to, &mut seen)
    }

    fn reach(&self, from: usize, to: usize, seen: &mut BTreeSet<usize>) -> bool {
        if from == to {
            return true;
        }
        if !seen.insert(from) {
            return false;
        }
        let d = &self.states[from];
        d.base.is_some_and(|b| self.reach(b, to, seen)) || d.deps.iter().any(|x| self.reach(*x, to, seen))
    }
}

//! From syntax-tree nodes to typed instructions (BuildKit's `instructions.Parse` and
//! `ParseInstruction`): argument counts, flags, heredoc sources, RUN's mounts and network,
//! HEALTHCHECK options, and grouping into stages after the meta ARGs.

use std::collections::HashMap;

use super::ast::{Ast, Node};
use super::error::{DockerfileError, DockerfileErrorKind};
use super::flags::Flags;
use super::heredoc::{chomp_heredoc_content, parse_heredoc};
use super::instructions::*;
use super::mount::parse_mount;
use super::text::{go_quote, suggest, trim_space, with_suggestion};
use super::units::{parse_go_duration, parse_go_i32};

/// Every instruction name BuildKit knows (for "did you mean" suggestions).
const ALL_INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// What one node is: the start of a stage, or a command inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A FROM.
    Stage(Stage),
    /// Any other instruction.
    Command(Command),
}

/// Groups the instructions of `ast` into stages (BuildKit's `instructions.Parse`): ARGs before
/// the first FROM are meta ARGs; any other instruction before it is an error.
pub fn parse_stages(ast: &Ast) -> Result<Dockerfile, DockerfileError> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut meta_args = Vec::new();
    for node in &ast.children {
        match parse_instruction(node)? {
            Parsed::Stage(s) => stages.push(s),
            Parsed::Command(c) => match stages.last_mut() {
                Some(stage) => stage.commands.push(c),
                None => match c.instruction {
                    Instruction::Arg(arg) => meta_args.push(MetaArg { arg, code: c.code, location: c.location }),
                    _ => return Err(DockerfileError::instruction("no build stage in current context").at(c.location)),
                },
            },
        }
    }
    Ok(Dockerfile {
        stages,
        meta_args,
        escape: ast.escape,
        directives: ast.directives.clone(),
        warnings: ast.warnings.clone(),
    })
}

/// The typed form of one node (BuildKit's `ParseInstruction`); errors carry the node's lines.
pub fn parse_instruction(node: &Node) -> Result<Parsed, DockerfileError> {
    let req = Request::new(node);
    let err = |e: String| DockerfileError::instruction(e).at(node.location);
    let command = |instruction: Instruction| {
        Parsed::Command(Command {
            name: node.value.clone(),
            code: trim_space(&node.original).to_owned(),
            location: node.location,
            instruction,
        })
    };
    Ok(match node.value.to_lowercase().as_str() {
        "env" => command(Instruction::Env(req.env().map_err(err)?)),
        "maintainer" => command(Instruction::Maintainer(req.maintainer().map_err(err)?)),
        "label" => command(Instruction::Label(req.label().map_err(err)?)),
        "add" => command(Instruction::Add(req.add().map_err(err)?)),
        "copy" => command(Instruction::Copy(req.copy().map_err(err)?)),
        "from" => Parsed::Stage(req.from().map_err(err)?),
        "onbuild" => command(Instruction::Onbuild(req.onbuild().map_err(err)?)),
        "workdir" => command(Instruction::Workdir(req.workdir().map_err(err)?)),
        "run" => command(Instruction::Run(req.run().map_err(err)?)),
        "cmd" => command(Instruction::Cmd(CmdCommand { cmd: req.cmd().map_err(err)? })),
        "healthcheck" => command(Instruction::Healthcheck(req.healthcheck().map_err(err)?)),
        "entrypoint" => command(Instruction::Entrypoint(EntrypointCommand { cmd: req.cmd().map_err(err)? })),
        "expose" => command(Instruction::Expose(req.expose().map_err(err)?)),
        "user" => command(Instruction::User(UserCommand { user: req.exactly_one("USER").map_err(err)? })),
        "volume" => command(Instruction::Volume(req.volume().map_err(err)?)),
        "stopsignal" => command(Instruction::StopSignal(req.stopsignal().map_err(err)?)),
        "arg" => command(Instruction::Arg(req.arg().map_err(err)?)),
        "shell" => command(Instruction::Shell(req.shell().map_err(err)?)),
        _ => {
            let msg = with_suggestion(
                format!("unknown instruction: {}", node.value),
                suggest(&node.value, ALL_INSTRUCTIONS, false),
            );
            return Err(DockerfileError::new(DockerfileErrorKind::UnknownInstruction, msg).at(node.location));
        }
    })
}

/// One node's parts, as BuildKit's `parseRequest`.
struct Request<'a> {
    node: &'a Node,
    args: Vec<String>,
    flags: Flags,
}

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}

impl<'a> Request<'a> {
    fn new(node: &'a Node) -> Self {
        Request { node, args: node.instruction_args(), flags: Flags::new(&node.flags) }
    }

    fn kvps(&self, cmd: &str) -> Result<Vec<KeyValue>, String> {
        if self.args.is_empty() {
            return Err(at_least_one(cmd));
        }
        if !self.args.len().is_multiple_of(2) {
            return Err(format!("Bad input to {cmd}, too many arguments"));
        }
        self.args
            .chunks(2)
            .map(|kv| {
                if kv[0].is_empty() {
                    return Err(format!("{cmd} names can not be blank"));
                }
                Ok(KeyValue { key: kv[0].clone(), value: kv[1].clone() })
            })
            .collect()
    }

    fn env(mut self) -> Result<EnvCommand, String> {
        self.flags.parse()?;
        Ok(EnvCommand { env: self.kvps("ENV")? })
    }

    fn label(mut self) -> Result<LabelCommand, String> {
        self.flags.parse()?;
        Ok(LabelCommand { labels: self.kvps("LABEL")?, no_expand: false })
    }

    /// The single argument of MAINTAINER, WORKDIR and USER (checked before the flags).
    fn exactly_one(mut self, cmd: &str) -> Result<String, String> {
        if self.args.len() != 1 {
            return Err(exactly_one(cmd));
        }
        self.flags.parse()?;
        Ok(self.args.swap_remove(0))
    }

    fn maintainer(self) -> Result<MaintainerCommand, String> {
        Ok(MaintainerCommand { maintainer: self.exactly_one("MAINTAINER")? })
    }

    fn workdir(self) -> Result<WorkdirCommand, String> {
        Ok(WorkdirCommand { path: self.exactly_one("WORKDIR")? })
    }

    /// STOPSIGNAL takes no flags, and BuildKit does not even check them.
    fn stopsignal(self) -> Result<StopSignalCommand, String> {
        if self.args.len() != 1 {
            return Err(exactly_one("STOPSIGNAL"));
        }
        Ok(StopSignalCommand { signal: self.args[0].clone() })
    }

    fn sources_and_dest(&self, cmd: &str) -> Result<SourcesAndDest, String> {
        let (dest, srcs) = match self.args.split_last() {
            Some((d, s)) => (d.clone(), s),
            None => return Err(Self::no_destination(cmd)),
        };
        if parse_heredoc(&dest).ok().flatten().is_some() {
            return Err(format!("{cmd} cannot accept a heredoc as a destination"));
        }
        let by_name: HashMap<&str, &super::heredoc::Heredoc> =
            self.node.heredocs.iter().map(|h| (h.name.as_str(), h)).collect();
        let mut out = SourcesAndDest { dest_path: dest, ..Default::default() };
        for src in srcs {
            match parse_heredoc(src).ok().flatten() {
                Some(h) => {
                    let mut data = by_name.get(h.name.as_str()).map(|d| d.content.clone()).unwrap_or_default();
                    if h.chomp {
                        data = chomp_heredoc_content(&data);
                    }
                    out.source_contents.push(SourceContent { path: h.name, data, expand: h.expand });
                }
                None => out.source_paths.push(src.clone()),
            }
        }
        Ok(out)
    }

    fn no_destination(cmd: &str) -> String {
        format!("{cmd} requires at least two arguments, but only one was provided. Destination could not be determined")
    }

    fn add(mut self) -> Result<AddCommand, String> {
        if self.args.len() < 2 {
            return Err(Self::no_destination("ADD"));
        }
        self.flags.add_string("chown", "");
        self.flags.add_string("chmod", "");
        self.flags.add_bool("link", false);
        self.flags.add_bool("keep-git-dir", false);
        self.flags.add_string("checksum", "");
        self.flags.parse()?;
        Ok(AddCommand {
            files: self.sources_and_dest("ADD")?,
            chown: self.flags.string("chown"),
            chmod: self.flags.string("chmod"),
            link: self.flags.bool("link"),
            keep_git_dir: self.flags.bool("keep-git-dir"),
            checksum: self.flags.string("checksum"),
        })
    }

    fn copy(mut self) -> Result<CopyCommand, String> {
        if self.args.len() < 2 {
            return Err(Self::no_destination("COPY"));
        }
        self.flags.add_string("chown", "");
        self.flags.add_string("from", "");
        self.flags.add_string("chmod", "");
        self.flags.add_bool("link", false);
        self.flags.parse()?;
        Ok(CopyCommand {
            files: self.sources_and_dest("COPY")?,
            from: self.flags.string("from"),
            chown: self.flags.string("chown"),
            chmod: self.flags.string("chmod"),
            link: self.flags.bool("link"),
        })
    }

    fn from(mut self) -> Result<Stage, String> {
        let name = stage_name(&self.args)?;
        self.flags.add_string("platform", "");
        self.flags.parse()?;
        Ok(Stage {
            comment: doc_comment(&self.node.comments, &name),
            name,
            base_name: self.args.first().cloned().unwrap_or_default(),
            platform: self.flags.string("platform"),
            source_code: trim_space(&self.node.original).to_owned(),
            location: self.node.location,
            commands: Vec::new(),
        })
    }

    fn onbuild(mut self) -> Result<OnbuildCommand, String> {
        let Some(first) = self.args.first() else { return Err(at_least_one("ONBUILD")) };
        self.flags.parse()?;
        let trigger = trim_space(first).to_uppercase();
        match trigger.as_str() {
            "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
            "MAINTAINER" | "FROM" => return Err(format!("{trigger} isn't allowed as an ONBUILD trigger")),
            _ => {}
        }
        let mut expression = strip_onbuild_keyword(&self.node.original).to_owned();
        for h in &self.node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        Ok(OnbuildCommand { expression })
    }

    /// The command line of RUN, CMD and ENTRYPOINT: exec form as is, shell form joined.
    fn command_line(&self) -> CommandLine {
        let files = self
            .node
            .heredocs
            .iter()
            .map(|h| ShellInlineFile { name: h.name.clone(), data: h.content.clone(), chomp: h.chomp })
            .collect();
        CommandLine { cmd_line: json_args(&self.args, self.node.json), files, prepend_shell: !self.node.json }
    }

    fn cmd(mut self) -> Result<CommandLine, String> {
        self.flags.parse()?;
        Ok(self.command_line())
    }

    fn run(mut self) -> Result<RunCommand, String> {
        self.flags.add_strings("mount");
        self.flags.add_string("network", "default");
        self.flags.parse()?;
        let mount_specs = self.flags.strings("mount");
        let mounts = mount_specs.iter().map(|m| parse_mount(m, None)).collect::<Result<Vec<_>, _>>()?;
        let network = match self.flags.string("network").as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => return Err(format!("invalid network mode {}", go_quote(other))),
        };
        Ok(RunCommand { cmd: self.command_line(), mount_specs, mounts, network, flags_used: self.flags.used() })
    }

    fn healthcheck(mut self) -> Result<HealthcheckCommand, String> {
        let Some(first) = self.args.first() else { return Err(at_least_one("HEALTHCHECK")) };
        let typ = first.to_uppercase();
        let rest = &self.args[1..];
        if typ == "NONE" {
            // BuildKit ignores flags on HEALTHCHECK NONE.
            if !rest.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            return Ok(HealthcheckCommand { health: HealthConfig { test: vec![typ], ..Default::default() } });
        }
        for name in ["interval", "timeout", "start-period", "retries"] {
            self.flags.add_string(name, "");
        }
        self.flags.parse()?;
        if typ != "CMD" {
            return Err(format!("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(&typ)));
        }
        let cmd = json_args(rest, self.node.json);
        if cmd.is_empty() {
            return Err("Missing command after HEALTHCHECK CMD".into());
        }
        let mut test = vec![if self.node.json { typ } else { "CMD-SHELL".to_owned() }];
        test.extend(cmd);
        let retries = match self.flags.string("retries") {
            r if r.is_empty() => 0,
            r => {
                let n = parse_go_i32(&r)?;
                if n < 0 {
                    return Err(format!("--retries cannot be negative ({n})"));
                }
                n
            }
        };
        let health = HealthConfig {
            test,
            interval: self.interval("interval")?,
            timeout: self.interval("timeout")?,
            start_period: self.interval("start-period")?,
            retries,
        };
        Ok(HealthcheckCommand { health })
    }

    /// A HEALTHCHECK duration flag: 0 when not given or zero, else at least 1ms.
    fn interval(&self, name: &str) -> Result<i64, String> {
        let v = self.flags.string(name);
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_go_duration(&v)?;
        if d != 0 && d < 1_000_000 {
            return Err(format!("Interval {} cannot be less than 1ms", go_quote(name)));
        }
        Ok(d)
    }

    fn expose(mut self) -> Result<ExposeCommand, String> {
        if self.args.is_empty() {
            return Err(at_least_one("EXPOSE"));
        }
        self.flags.parse()?;
        let mut ports = self.args;
        ports.sort();
        Ok(ExposeCommand { ports })
    }

    fn volume(mut self) -> Result<VolumeCommand, String> {
        if self.args.is_empty() {
            return Err(at_least_one("VOLUME"));
        }
        self.flags.parse()?;
        let mut volumes = Vec::with_capacity(self.args.len());
        for v in &self.args {
            let v = trim_space(v);
            if v.is_empty() {
                return Err("VOLUME specified can not be an empty string".into());
            }
            volumes.push(v.to_owned());
        }
        Ok(VolumeCommand { volumes })
    }

    /// ARG takes no flags, and BuildKit does not check them.
    fn arg(self) -> Result<ArgCommand, String> {
        if self.args.is_empty() {
            return Err(at_least_one("ARG"));
        }
        let mut args = Vec::with_capacity(self.args.len());
        for a in &self.args {
            let (key, value) = match a.split_once('=') {
                Some(("", _)) => return Err("ARG names can not be blank".into()),
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (a.clone(), None),
            };
            let comment = doc_comment(&self.node.comments, &key);
            args.push(ArgDef { key, value, comment });
        }
        Ok(ArgCommand { args })
    }

    fn shell(mut self) -> Result<ShellCommand, String> {
        self.flags.parse()?;
        let shell = json_args(&self.args, self.node.json);
        if shell.is_empty() {
            return Err(at_least_one("SHELL"));
        }
        if !self.node.json {
            return Err("SHELL requires the arguments to be in JSON form".into());
        }
        Ok(ShellCommand { shell })
    }
}

/// Exec form: the arguments; shell form: one string of them joined with spaces.
fn json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    if json {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

/// FROM's `AS name` (lowercased), "" without one.
fn stage_name(args: &[String]) -> Result<String, String> {
    if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
        let name = args[2].to_lowercase();
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(format!(
                "invalid name for build stage: {}, name can't start with a number or contain symbols",
                go_quote(&args[2])
            ));
        }
        return Ok(name);
    }
    if args.len() != 1 {
        return Err("FROM requires either one or three arguments".into());
    }
    Ok(String::new())
}

/// The comment line documenting `name` (`# name description` gives `description`).
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments.iter().find_map(|c| c.strip_prefix(&prefix)).unwrap_or_default().to_owned()
}

/// `original` without the leading `ONBUILD` keyword and the blanks around it
/// (`(?i)^\s*ONBUILD\s*`).
fn strip_onbuild_keyword(original: &str) -> &str {
    let is_re_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let rest = original.trim_start_matches(is_re_space);
    match rest.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => rest[7..].trim_start_matches(is_re_space),
        _ => original,
    }
}

#[cfg(test)]
mod tests;

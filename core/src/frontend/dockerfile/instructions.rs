//! The typed instruction model a converter works from: one struct per Dockerfile instruction
//! (BuildKit's `instructions.*Command`), [`Command`] (an instruction with its source text and
//! lines), [`Stage`] (a FROM and the commands under it) and [`Dockerfile`] (stages, the meta
//! ARGs before the first FROM, the escape character, directives and warnings).
//!
//! Values are kept as written: quotes and variables are processed by
//! [`Command::expand`](super::expand) where BuildKit expands them, so a converter calls it
//! (with the stage's environment) before using a command's fields.

use super::ast::Warning;
use super::directives::Directive;
use super::error::Location;
use super::mount::Mount;

/// A `key=value` pair in order of appearance (ENV, LABEL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One ARG definition: a name and an optional default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArgDef {
    /// The name.
    pub key: String,
    /// The default (`ARG a=1`), `None` for `ARG a`.
    pub value: Option<String>,
    /// The documentation comment above the ARG (`# NAME description` gives `description`).
    pub comment: String,
}

/// `ENV k=v ...` or `ENV k v`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvCommand {
    /// The variables in order.
    pub env: Vec<KeyValue>,
}

/// `MAINTAINER name` (deprecated; sets the image author).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaintainerCommand {
    /// The text.
    pub maintainer: String,
}

/// `LABEL k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelCommand {
    /// The labels in order.
    pub labels: Vec<KeyValue>,
    /// Skip expansion (labels a converter adds itself from `label:` options).
    pub no_expand: bool,
}

/// A file given inline by a heredoc (`COPY <<EOF /dst`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceContent {
    /// The file name (the heredoc's delimiter).
    pub path: String,
    /// The content (leading tabs already stripped for `<<-`).
    pub data: String,
    /// Whether variables in `data` are expanded (unquoted delimiter).
    pub expand: bool,
}

/// The sources and destination of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcesAndDest {
    /// The destination (last argument).
    pub dest_path: String,
    /// Source paths or URLs, in order.
    pub source_paths: Vec<String>,
    /// Inline heredoc files, in order.
    pub source_contents: Vec<SourceContent>,
}

/// `ADD [--chown] [--chmod] [--link] [--keep-git-dir] [--checksum] src... dest`.
///
/// BuildKit v0.11.6 accepts `--checksum` and `--keep-git-dir` here, but its stable frontend
/// refuses a checksum at conversion ("requires the labs channel") and treats git URLs as
/// plain HTTP sources; the converter must do the same.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddCommand {
    /// Sources and destination.
    pub files: SourcesAndDest,
    /// `--chown=user[:group]` ("" when not given).
    pub chown: String,
    /// `--chmod=mode` ("" when not given).
    pub chmod: String,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum=` ("" when not given).
    pub checksum: String,
}

/// `COPY [--from] [--chown] [--chmod] [--link] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyCommand {
    /// Sources and destination.
    pub files: SourcesAndDest,
    /// `--from=stage|index|image` ("" when not given).
    pub from: String,
    /// `--chown=user[:group]` ("" when not given).
    pub chown: String,
    /// `--chmod=mode` ("" when not given).
    pub chmod: String,
    /// `--link`.
    pub link: bool,
}

/// `ONBUILD INSTRUCTION`: stored in the image, run when the image is used as a base.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnbuildCommand {
    /// The trigger's source text (with its heredocs appended), parsed again when run.
    pub expression: String,
}

/// `WORKDIR path`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkdirCommand {
    /// The path (may be relative to the previous one).
    pub path: String,
}

/// A heredoc attached to RUN: written as a file or fed to the shell by the converter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellInlineFile {
    /// The heredoc's delimiter.
    pub name: String,
    /// The content (leading tabs not yet stripped, see `chomp`).
    pub data: String,
    /// `<<-`: strip leading tabs ([`super::heredoc::chomp_heredoc_content`]).
    pub chomp: bool,
}

/// A command line in shell form (run through the stage's SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandLine {
    /// Exec form: the array; shell form: one string (the arguments joined with spaces).
    pub cmd_line: Vec<String>,
    /// RUN's heredocs.
    pub files: Vec<ShellInlineFile>,
    /// Shell form: prepend the shell.
    pub prepend_shell: bool,
}

/// RUN's `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// The sandbox's network (BuildKit's default).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network (needs the `network.host` entitlement).
    Host,
}

impl NetworkMode {
    /// BuildKit's name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// `RUN [--mount=...]... [--network=...] command`.
///
/// `--security` is not part of the stable Dockerfile 1.5 syntax in BuildKit v0.11.6 (labs
/// only), so it is an unknown flag here as there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunCommand {
    /// The command.
    pub cmd: CommandLine,
    /// The `--mount` values as written.
    pub mount_specs: Vec<String>,
    /// The mounts. After parsing only `from` is read (what BuildKit knows before expansion,
    /// enough to find stage dependencies); [`Command::expand`] fills every field.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: NetworkMode,
    /// The flags given, by name, in order of first use.
    pub flags_used: Vec<String>,
}

/// `CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdCommand {
    /// The command.
    pub cmd: CommandLine,
}

/// `ENTRYPOINT` (an empty JSON array clears it: `cmd_line` is then empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntrypointCommand {
    /// The command.
    pub cmd: CommandLine,
}

/// An image health check (the Docker image config's `Healthcheck`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` (exec form) or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval` in nanoseconds (0: inherit/default).
    pub interval: i64,
    /// `--timeout` in nanoseconds.
    pub timeout: i64,
    /// `--start-period` in nanoseconds.
    pub start_period: i64,
    /// `--retries` (0: inherit/default).
    pub retries: i32,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthcheckCommand {
    /// The configuration.
    pub health: HealthConfig,
}

/// `EXPOSE port[/proto]...` (sorted as BuildKit sorts them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExposeCommand {
    /// The port words as written; the converter expands each with `process_words`.
    pub ports: Vec<String>,
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserCommand {
    /// The user.
    pub user: String,
}

/// `VOLUME path...` or `VOLUME ["path", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeCommand {
    /// The paths.
    pub volumes: Vec<String>,
}

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopSignalCommand {
    /// The signal (name or number).
    pub signal: String,
}

/// `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArgCommand {
    /// The definitions in order.
    pub args: Vec<ArgDef>,
}

/// `SHELL ["executable", "params"...]` (JSON form only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellCommand {
    /// The shell and its arguments.
    pub shell: Vec<String>,
}

/// Every instruction that can appear inside a stage (FROM starts a [`Stage`] instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// ADD.
    Add(AddCommand),
    /// ARG.
    Arg(ArgCommand),
    /// CMD.
    Cmd(CmdCommand),
    /// COPY.
    Copy(CopyCommand),
    /// ENTRYPOINT.
    Entrypoint(EntrypointCommand),
    /// ENV.
    Env(EnvCommand),
    /// EXPOSE.
    Expose(ExposeCommand),
    /// HEALTHCHECK.
    Healthcheck(HealthcheckCommand),
    /// LABEL.
    Label(LabelCommand),
    /// MAINTAINER.
    Maintainer(MaintainerCommand),
    /// ONBUILD.
    Onbuild(OnbuildCommand),
    /// RUN.
    Run(RunCommand),
    /// SHELL.
    Shell(ShellCommand),
    /// STOPSIGNAL.
    StopSignal(StopSignalCommand),
    /// USER.
    User(UserCommand),
    /// VOLUME.
    Volume(VolumeCommand),
    /// WORKDIR.
    Workdir(WorkdirCommand),
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction name as written (`run`, `RUN`).
    pub name: String,
    /// The instruction's source text, trimmed (continuations joined; BuildKit's `String()`,
    /// used in progress names and image history).
    pub code: String,
    /// Its lines.
    pub location: Location,
    /// The typed instruction.
    pub instruction: Instruction,
}

/// A build stage: a FROM and the commands up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stage {
    /// `AS name`, lowercased; "" for an unnamed stage.
    pub name: String,
    /// The base: an image reference, a stage name or `scratch` (may hold meta ARG variables).
    pub base_name: String,
    /// `--platform` as written ("" when not given; may hold meta ARG variables).
    pub platform: String,
    /// The documentation comment above the FROM (`# NAME description` gives `description`).
    pub comment: String,
    /// The FROM line, trimmed.
    pub source_code: String,
    /// The FROM's lines.
    pub location: Location,
    /// The stage's commands in order.
    pub commands: Vec<Command>,
}

/// An ARG before the first FROM (a "meta" ARG: usable in FROM lines, and in stages that
/// declare it again).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaArg {
    /// The definitions.
    pub arg: ArgCommand,
    /// The ARG line, trimmed.
    pub code: String,
    /// Its lines.
    pub location: Location,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// The ARGs before the first FROM, in order.
    pub meta_args: Vec<MetaArg>,
    /// The escape character (`\` or backtick): the converter's [`super::shell::Lex`] uses it.
    pub escape: char,
    /// The parser directives (`syntax`, `escape`) at the top of the file.
    pub directives: Vec<Directive>,
    /// Parser warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The index of the stage named `name` (case-insensitive, as BuildKit matches stage names).
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(name))
    }

    /// The value of directive `name` (`syntax`, `escape`), if given.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives.iter().find(|d| d.name == name).map(|d| d.value.as_str())
    }
}

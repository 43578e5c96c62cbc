//! Which words BuildKit v0.11.6 expands, instruction by instruction (its `Expand` and
//! `ExpandRaw` methods), applied by [`Command::expand`] as BuildKit's dispatcher does before
//! converting a command: every expanded word goes through [`Lex::process_word`] with the
//! stage's environment (which also removes quotes), and COPY/ADD heredoc contents whose
//! delimiter was unquoted are expanded with quotes left alone.
//!
//! Expanded: ENV (keys, values), LABEL (keys, values), ARG (names, defaults), WORKDIR, USER,
//! VOLUME (each path), STOPSIGNAL, COPY (sources, destination, `--chown`), ADD (sources,
//! destination, `--chown`, `--checksum`), RUN (every `--mount` option value).
//!
//! Not expanded here: RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK command lines (the shell does it at
//! run time), MAINTAINER, ONBUILD, COPY `--from` and `--chmod`, `--network`. The converter
//! expands the rest itself, as BuildKit's does: EXPOSE ports with [`ExposeCommand::expand_ports`]
//! (`process_words`, so one word can give several ports), and a stage's base name and
//! `--platform` with the meta ARGs only ([`Lex::process_word_with_matches`]).

use super::error::{DockerfileError, DockerfileErrorKind};
use super::instructions::{Command, ExposeCommand, Instruction, KeyValue, SourcesAndDest};
use super::mount::parse_mount;
pub use super::shell::Expander;
use super::shell::{Lex, ShellError, VarLookup};

fn expand_kvps(kvps: &mut [KeyValue], ex: &mut Expander) -> Result<(), String> {
    for kv in kvps {
        kv.key = ex(&kv.key)?;
        kv.value = ex(&kv.value)?;
    }
    Ok(())
}

fn expand_all(values: &mut [String], ex: &mut Expander) -> Result<(), String> {
    for v in values {
        *v = ex(v)?;
    }
    Ok(())
}

fn expand_files(files: &mut SourcesAndDest, ex: &mut Expander) -> Result<(), String> {
    expand_all(&mut files.source_paths, ex)?;
    files.dest_path = ex(&files.dest_path)?;
    Ok(())
}

impl Instruction {
    /// Whether BuildKit expands words of this instruction ([`Instruction::expand_words`]
    /// changes something).
    pub fn expands(&self) -> bool {
        !matches!(
            self,
            Instruction::Cmd(_)
                | Instruction::Entrypoint(_)
                | Instruction::Expose(_)
                | Instruction::Healthcheck(_)
                | Instruction::Maintainer(_)
                | Instruction::Onbuild(_)
                | Instruction::Shell(_)
        )
    }

    /// Applies `ex` to every word BuildKit's `Expand` does (see the module documentation).
    /// For RUN this parses every `--mount` fully, replacing [`super::RunCommand::mounts`].
    pub fn expand_words(&mut self, ex: &mut Expander) -> Result<(), String> {
        match self {
            Instruction::Env(c) => expand_kvps(&mut c.env, ex),
            Instruction::Label(c) if c.no_expand => Ok(()),
            Instruction::Label(c) => expand_kvps(&mut c.labels, ex),
            Instruction::Add(c) => {
                c.chown = ex(&c.chown)?;
                c.checksum = ex(&c.checksum)?;
                expand_files(&mut c.files, ex)
            }
            Instruction::Copy(c) => {
                c.chown = ex(&c.chown)?;
                expand_files(&mut c.files, ex)
            }
            Instruction::Workdir(c) => {
                c.path = ex(&c.path)?;
                Ok(())
            }
            Instruction::User(c) => {
                c.user = ex(&c.user)?;
                Ok(())
            }
            Instruction::Volume(c) => expand_all(&mut c.volumes, ex),
            Instruction::StopSignal(c) => {
                c.signal = ex(&c.signal)?;
                Ok(())
            }
            Instruction::Arg(c) => {
                for a in &mut c.args {
                    a.key = ex(&a.key)?;
                    if let Some(v) = &a.value {
                        a.value = Some(ex(v)?);
                    }
                }
                Ok(())
            }
            Instruction::Run(c) => {
                let mut mounts = Vec::with_capacity(c.mount_specs.len());
                for spec in &c.mount_specs {
                    mounts.push(parse_mount(spec, Some(&mut *ex))?);
                }
                c.mounts = mounts;
                Ok(())
            }
            Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Expose(_)
            | Instruction::Healthcheck(_)
            | Instruction::Maintainer(_)
            | Instruction::Onbuild(_)
            | Instruction::Shell(_) => Ok(()),
        }
    }

    /// Applies `ex` to COPY/ADD heredoc contents whose delimiter was unquoted (BuildKit's
    /// `ExpandRaw`).
    pub fn expand_raw(&mut self, ex: &mut Expander) -> Result<(), String> {
        let files = match self {
            Instruction::Add(c) => &mut c.files,
            Instruction::Copy(c) => &mut c.files,
            _ => return Ok(()),
        };
        for content in files.source_contents.iter_mut().filter(|c| c.expand) {
            content.data = ex(&content.data)?;
        }
        Ok(())
    }
}

impl Command {
    /// Expands the command in place as BuildKit's dispatcher does: [`Instruction::expand_words`]
    /// with `lex` (the Dockerfile's escape character) over `env` (the stage's environment:
    /// ENV and ARG values in effect), then [`Instruction::expand_raw`] with a `\` lexer that
    /// leaves quotes alone. Errors carry the command's lines.
    pub fn expand(&mut self, lex: &Lex, env: &dyn VarLookup) -> Result<(), DockerfileError> {
        let located = |e: String| DockerfileError::new(DockerfileErrorKind::Expansion, e).at(self.location);
        let mut words = |w: &str| lex.process_word(w, env).map_err(|e| e.0);
        self.instruction.expand_words(&mut words).map_err(located)?;
        let mut raw_lex = Lex::new('\\');
        raw_lex.skip_process_quotes = true;
        let mut raw = |w: &str| raw_lex.process_word(w, env).map_err(|e| e.0);
        self.instruction.expand_raw(&mut raw).map_err(located)
    }
}

impl ExposeCommand {
    /// The ports after expansion: each word is expanded and split into words (BuildKit's
    /// `dispatchExpose`), so `EXPOSE $PORTS` can give several.
    pub fn expand_ports(&self, lex: &Lex, env: &dyn VarLookup) -> Result<Vec<String>, ShellError> {
        let mut out = Vec::new();
        for p in &self.ports {
            out.extend(lex.process_words(p, env)?);
        }
        Ok(out)
    }
}

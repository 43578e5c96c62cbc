//! The `dockerfile.v0` frontend's model: Dockerfile text in, typed instructions out, with the
//! semantics of BuildKit v0.11.6 (Dockerfile syntax 1.5, stable features).
//!
//! [`parse`] gives a [`Dockerfile`]: its [`Stage`]s (each a FROM and its [`Command`]s), the meta
//! ARGs before the first FROM, the escape character, directives and warnings. Values are kept
//! as written; a converter expands each command with [`Command::expand`] (see [`expand`] for
//! which words BuildKit expands) using a [`Lex`] built with [`Dockerfile::escape`].
//!
//! [`convert`] turns a parsed Dockerfile into LLB and an image config; [`build`] is the
//! `dockerfile.v0` frontend itself (read the Dockerfile and `.dockerignore` in a client-side
//! build, convert, solve), run by `Engine::build_frontend`.
//!
//! Layers, lowest first: [`shell`] (word processing and expansion), [`directives`],
//! [`heredoc`], the line parsers, [`parser`] (text to [`ast::Node`]s), [`parse`](parse_stages)
//! (nodes to typed [`instructions`]), [`expand`].

pub mod ast;
pub mod build;
pub mod convert;
pub mod directives;
pub mod dockerignore;
pub mod error;
pub mod expand;
mod flags;
mod from_dir;
pub mod heredoc;
pub mod instructions;
mod line_parsers;
pub mod mount;
mod parse;
pub mod parser;
pub mod shell;
mod text;
pub mod units;

pub use directives::{detect_syntax, Directive, SyntaxDirective};
pub use error::{DockerfileError, DockerfileErrorKind, Location};
pub use from_dir::state_from_dir;
pub use heredoc::{chomp_heredoc_content, parse_heredoc, Heredoc};
pub use instructions::*;
pub use mount::{CacheSharing, Mount, MountType};
pub use parse::{parse_instruction, parse_stages, Parsed};
pub use shell::{build_envs, Lex, ShellError, VarLookup};

/// Parses Dockerfile `text` into stages of typed commands (BuildKit's `parser.Parse` then
/// `instructions.Parse`).
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    parse_stages(&parser::parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multi-stage Dockerfile using most of the syntax, parsed and expanded end to end.
    #[test]
    fn multi_stage_end_to_end() {
        let text = include_str!("../../../tests/fixtures/dockerfile/multi-stage.Dockerfile");
        let df = parse(text).unwrap();
        assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1.5"));
        assert_eq!(df.meta_args.len(), 1);
        let names: Vec<&str> = df.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build", "test", ""]);
        assert_eq!(df.stage_index("Build"), Some(0));
        let build = &df.stages[0];
        assert_eq!(build.platform, "$BUILDPLATFORM");
        let kinds: Vec<&str> = build.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(kinds, ["ARG", "ENV", "WORKDIR", "COPY", "RUN", "RUN"]);
        let run = &build.commands[4];
        assert_eq!(run.location, Location::new(10, 13));
        let Instruction::Run(r) = &run.instruction else { panic!() };
        assert_eq!(r.mount_specs.len(), 2);
        assert_eq!(r.cmd.cmd_line, ["go build -o /out/app ./cmd/app &&     strip /out/app"]);
        let heredoc = &build.commands[5];
        assert_eq!(heredoc.location, Location::new(14, 17));

        // Expansion with the stage's environment, as a converter does it.
        let lex = Lex::new(df.escape);
        let env: Vec<(String, String)> = vec![
            ("GOVERSION".into(), "1.20".into()),
            ("APP".into(), "demo".into()),
            ("GOCACHE".into(), "/root/.cache/go".into()),
        ];
        let mut cmds = build.commands.clone();
        for c in &mut cmds {
            c.expand(&lex, &env).unwrap();
        }
        let Instruction::Workdir(w) = &cmds[2].instruction else { panic!() };
        assert_eq!(w.path, "/src/demo");
        let Instruction::Run(r) = &cmds[4].instruction else { panic!() };
        assert_eq!(r.mounts[0].kind, MountType::Cache);
        assert_eq!(r.mounts[0].target, "/root/.cache/go");
        assert_eq!(r.mounts[0].cache_sharing, Some(CacheSharing::Locked));
        assert_eq!(r.mounts[1].kind, MountType::Secret);
        assert!(r.mounts[1].required);

        let last = &df.stages[2];
        let Instruction::Copy(c) = &last.commands[0].instruction else { panic!() };
        assert_eq!((c.from.as_str(), c.link), ("build", true));
        let Instruction::Healthcheck(h) = &last.commands[4].instruction else { panic!() };
        assert_eq!(h.health.test, ["CMD", "/app", "-health"]);
        assert_eq!(h.health.interval, 30_000_000_000);
        let Instruction::Onbuild(o) = &last.commands[5].instruction else { panic!() };
        assert_eq!(o.expression, "RUN echo child build");
        let Instruction::Entrypoint(e) = &last.commands[7].instruction else { panic!() };
        assert_eq!(e.cmd.cmd_line, ["/app"]);
        assert!(df.warnings.is_empty());
    }
}

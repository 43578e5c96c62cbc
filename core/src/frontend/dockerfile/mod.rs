//! The `dockerfile.v0` frontend's model: Dockerfile text in, typed instructions out, with the
//! semantics of BuildKit v0.11.6 (Dockerfile syntax 1.5, stable features).
//!
//! [`parse`] gives a [`Dockerfile`]: its [`Stage`]s (each a FROM and its [`Command`]s), the meta
//! ARGs before the first FROM, the escape character, directives and warnings. Values are kept
//! as written; a converter expands each command with [`Command::expand`] (see [`expand`] for
//! which words BuildKit expands) using a [`Lex`] built with [`Dockerfile::escape`].
//!
//! Layers, lowest first: [`shell`] (word processing and expansion), [`directives`],
//! [`heredoc`], the line parsers, [`parser`] (text to [`ast::Node`]s), [`parse`](parse_stages)
//! (nodes to typed [`instructions`]), [`expand`].

pub mod ast;
pub mod directives;
pub mod error;
pub mod expand;
mod flags;
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

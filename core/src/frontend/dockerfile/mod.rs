//! The `dockerfile.v0` frontend's model: Dockerfile text in, typed instructions out, with the
//! semantics of BuildKit v0.11.6 (Dockerfile syntax 1.5, stable features).

pub mod ast;
pub mod directives;
pub mod error;
pub mod heredoc;
mod line_parsers;
pub mod parser;
pub mod shell;
mod text;

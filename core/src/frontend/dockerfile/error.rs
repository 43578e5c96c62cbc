//! The Dockerfile frontend's error: what went wrong, in BuildKit's words, and where (file name
//! and 1-based line range), rendered as `Dockerfile:3: unknown instruction: RUNN`.

use super::shell::ShellError;

/// A range of 1-based lines of the Dockerfile, both ends included (an instruction with line
/// continuations or heredocs spans several lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Location {
    /// First line.
    pub start: usize,
    /// Last line (equal to `start` for a one-line instruction).
    pub end: usize,
}

impl Location {
    /// The range `start..=end` (an `end` before `start` is taken as `start`, as BuildKit does).
    pub fn new(start: usize, end: usize) -> Self {
        Location { start, end: end.max(start) }
    }

    /// A single line.
    pub fn line(line: usize) -> Self {
        Location { start: line, end: line }
    }
}

/// Which stage of reading a Dockerfile failed; BuildKit words the message differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerfileErrorKind {
    /// The text could not be split into instructions (directives, JSON arrays, heredocs, flag
    /// syntax, an empty file).
    Syntax,
    /// An instruction name BuildKit does not know.
    UnknownInstruction,
    /// A known instruction with bad arguments or flags.
    Instruction,
    /// Variable expansion or a value checked after expansion (mount options, ...).
    Expansion,
    /// Converting to LLB failed (an unknown stage, a bad platform, a refused option ...).
    Conversion,
}

/// A Dockerfile could not be read; [`std::fmt::Display`] gives `FILE:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DockerfileError {
    /// What failed.
    pub kind: DockerfileErrorKind,
    /// BuildKit's message (`unknown instruction: RUNN (did you mean RUN?)`).
    pub message: String,
    /// The lines of the offending instruction, when known.
    pub location: Option<Location>,
    /// The file name shown in front of the line ("Dockerfile" unless set with
    /// [`DockerfileError::in_file`]).
    pub file: String,
}

impl DockerfileError {
    /// An error of `kind` with BuildKit's `message`, not yet tied to lines.
    pub fn new(kind: DockerfileErrorKind, message: impl Into<String>) -> Self {
        DockerfileError { kind, message: message.into(), location: None, file: "Dockerfile".to_owned() }
    }

    /// A syntax error at `location`.
    pub(crate) fn syntax(message: impl Into<String>, location: Location) -> Self {
        Self::new(DockerfileErrorKind::Syntax, message).at(location)
    }

    /// An instruction error (not yet located).
    pub(crate) fn instruction(message: impl Into<String>) -> Self {
        Self::new(DockerfileErrorKind::Instruction, message)
    }

    /// Sets the location unless one is already known (the innermost location wins, as with
    /// BuildKit's `WithLocation`).
    pub fn at(mut self, location: Location) -> Self {
        if self.location.is_none() {
            self.location = Some(location);
        }
        self
    }

    /// The same error reported against `file` (e.g. `app.Dockerfile`).
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }

    /// The message as BuildKit's frontend returns it in the solve error: instruction errors
    /// carry `dockerfile parse error on line N: ...`, the others are the bare message.
    pub fn buildkit_message(&self) -> String {
        match (self.kind, self.location) {
            (DockerfileErrorKind::Instruction | DockerfileErrorKind::UnknownInstruction, Some(l)) => {
                format!("dockerfile parse error on line {}: {}", l.start, self.message)
            }
            _ => self.message.clone(),
        }
    }

    fn render(&self) -> String {
        match self.location {
            Some(l) => format!("{}:{}: {}", self.file, l.start, self.message),
            None => format!("{}: {}", self.file, self.message),
        }
    }
}

impl From<ShellError> for DockerfileError {
    fn from(e: ShellError) -> Self {
        DockerfileError::new(DockerfileErrorKind::Expansion, e.0)
    }
}

/// A Dockerfile error is a definition error for the rest of kiln (the build description is
/// invalid); the typed error stays reachable as the cause.
impl From<DockerfileError> for crate::error::Error {
    fn from(e: DockerfileError) -> Self {
        crate::error::Error::with_source(crate::error::ErrorKind::Definition, e.to_string(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_and_message() {
        let e = DockerfileError::new(DockerfileErrorKind::UnknownInstruction, "unknown instruction: RUNN")
            .at(Location::new(3, 3));
        assert_eq!(e.to_string(), "Dockerfile:3: unknown instruction: RUNN");
        assert_eq!(e.buildkit_message(), "dockerfile parse error on line 3: unknown instruction: RUNN");
        assert_eq!(e.clone().in_file("app.Dockerfile").to_string(), "app.Dockerfile:3: unknown instruction: RUNN");
        // The innermost location wins.
        assert_eq!(e.clone().at(Location::line(9)).location, Some(Location::line(3)));
        let k: crate::error::Error = e.into();
        assert_eq!(k.kind(), crate::error::ErrorKind::Definition);
        assert_eq!(k.report(), "Dockerfile:3: unknown instruction: RUNN");
    }
}

//! The low-level syntax tree: one [`Node`] per instruction with its raw arguments, flags and
//! heredocs, before any typing (BuildKit's `parser.Node`), and its S-expression dump (the
//! format of BuildKit's parser test results).

use super::error::Location;
use super::heredoc::Heredoc;
use super::text::{go_quote, go_quote_list, trim_space};

/// One instruction as the parser split it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The instruction name as written (`RUN`, `run`, `Run`).
    pub value: String,
    /// The whole logical line (continuations joined), before splitting.
    pub original: String,
    /// The `--flag[=value]` words before the arguments, quotes removed.
    pub flags: Vec<String>,
    /// The arguments as the instruction's line parser split them (ENV and LABEL: key, value,
    /// key, value...; JSON forms: the array's strings).
    pub args: Vec<String>,
    /// ONBUILD's trigger instruction.
    pub sub: Option<Box<Node>>,
    /// The heredocs the line opened, with their content.
    pub heredocs: Vec<Heredoc>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// The lines the instruction spans (including its heredocs).
    pub location: Location,
    /// The comment lines directly above the instruction (without `#`).
    pub comments: Vec<String>,
}

impl Node {
    /// The S-expression BuildKit's `Node.Dump` prints: `(copy ["--from=a"] "x" "/y")` without
    /// the outer parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        if let Some(sub) = &self.sub {
            s.push_str(&format!(" ({})", sub.dump()));
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        trim_space(&s).to_owned()
    }

    /// The arguments as BuildKit's instruction parsers see them: ONBUILD's are the trigger's
    /// name followed by the trigger's arguments.
    pub fn instruction_args(&self) -> Vec<String> {
        let mut out = self.args.clone();
        if let Some(sub) = &self.sub {
            out.push(sub.value.clone());
            out.extend(sub.instruction_args());
        }
        out
    }
}

/// A non-fatal finding while parsing (BuildKit reports empty continuation lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub short: String,
    /// Further detail.
    pub detail: String,
    /// Where to read more.
    pub url: String,
    /// The line it refers to.
    pub location: Location,
}

/// A parsed Dockerfile before typing: its instructions, the escape character in effect, the
/// directives and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// The instructions in order.
    pub children: Vec<Node>,
    /// The escape character (`\` or a backtick from `# escape=`).
    pub escape: char,
    /// The parser directives found at the top.
    pub directives: Vec<super::directives::Directive>,
    /// Warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// Every instruction dumped as BuildKit's parser tests print them, one per line.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            s.push('(');
            s.push_str(&c.dump());
            s.push_str(")\n");
        }
        trim_space(&s).to_owned()
    }

    /// The value of directive `name` (`syntax`, `escape`), if it was given.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives.iter().find(|d| d.name == name).map(|d| d.value.as_str())
    }

    /// BuildKit's lines for warnings: each short text, then the note on empty continuation lines.
    pub fn warning_lines(&self) -> Vec<String> {
        if self.warnings.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<String> = self.warnings.iter().map(|w| format!("[WARNING]: {}", w.short)).collect();
        out.push("[WARNING]: Empty continuation lines will become errors in a future release.".to_owned());
        out
    }
}

//! Parser directives (`# syntax=...`, `# escape=...`): recognised only on the first lines of
//! the file, before anything else (a blank line, another comment or an instruction ends them),
//! names case-insensitive, each at most once; plus BuildKit's `DetectSyntax` (also `//` comments,
//! a JSON `{"syntax": ...}` document, and a leading `#!` line skipped).

use std::collections::HashSet;

/// The directive names BuildKit knows.
const KNOWN: [&str; 2] = ["syntax", "escape"];

/// One parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name (`syntax` or `escape`).
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// Its 1-based line.
    pub line: usize,
}

/// Reads directives line by line until the first line that is not one.
#[derive(Debug, Clone)]
pub(crate) struct DirectiveParser {
    line: usize,
    seen: HashSet<String>,
    done: bool,
    comment: &'static str,
}

impl DirectiveParser {
    pub(crate) fn new() -> Self {
        Self::with_comment("#", 0)
    }

    fn with_comment(comment: &'static str, line: usize) -> Self {
        DirectiveParser { line, seen: HashSet::new(), done: false, comment }
    }

    /// The directive on `line` (the next line of the file), `None` once directives ended.
    /// A repeated directive is an error.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, String> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = match_directive(line, self.comment) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        Ok(Some(Directive { name, value: value.to_owned(), line: self.line }))
    }

    /// Every directive at the top of `text` (stops at the first error, keeping what came before).
    fn parse_all(&mut self, text: &str) -> Vec<Directive> {
        let mut out = Vec::new();
        for line in scan_lines(text) {
            if self.done {
                break;
            }
            match self.parse_line(line) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        out
    }
}

/// Go's regexp `\s`: ASCII whitespace without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

/// Matches `^PREFIX\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` by hand: the name and value.
fn match_directive<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?.trim_start_matches(is_re_space);
    let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let name = &rest[..name_len];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = rest[name_len..].trim_start_matches(is_re_space).strip_prefix('=')?;
    if after.is_empty() {
        return None;
    }
    let value = after.trim_start_matches(is_re_space).trim_end_matches(is_re_space);
    if value.is_empty() {
        // Only whitespace after `=`: the lazy `.+?` takes the last character.
        let last = after.char_indices().last().map_or(0, |(i, _)| i);
        return Some((name, &after[last..]));
    }
    Some((name, value))
}

/// Lines as Go's `bufio.ScanLines` yields them: without `\n` and one trailing `\r`.
fn scan_lines(text: &str) -> impl Iterator<Item = &str> {
    let empty = text.is_empty();
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).filter(move |_| !empty)
}

/// The `syntax` directive of a Dockerfile, as BuildKit's `DetectSyntax` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The frontend image reference (the value up to the first space).
    pub reference: String,
    /// The whole value (reference and any options after it).
    pub cmdline: String,
    /// Its 1-based line.
    pub line: usize,
}

/// The `syntax` directive of `text`, if any: `# syntax=...` (also `// syntax=...`) among the
/// leading directives, after an optional `#!` line, or a JSON document with a `syntax` key.
pub fn detect_syntax(text: &str) -> Option<SyntaxDirective> {
    let (text, start_line) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 1),
        None if text.starts_with("#!") => ("", 1),
        _ => (text, 0),
    };
    for prefix in ["#", "//"] {
        let found = DirectiveParser::with_comment(prefix, start_line).parse_all(text);
        if let Some(d) = found.into_iter().find(|d| d.name == "syntax") {
            let reference = d.value.split(' ').next().unwrap_or_default().to_owned();
            return Some(SyntaxDirective { reference, cmdline: d.value, line: d.line });
        }
    }
    #[derive(serde::Deserialize)]
    struct JsonDirective {
        #[serde(default)]
        syntax: String,
    }
    match serde_json::from_str::<JsonDirective>(text) {
        Ok(d) if !d.syntax.is_empty() => {
            Some(SyntaxDirective { reference: d.syntax.clone(), cmdline: d.syntax, line: start_line })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_stop_at_first_other_line_and_ignore_case() {
        for text in ["#escape=\\\n# key = FOO bar\n\n# smth\n", "# EScape=\\\n# KEY = FOO bar\n\n# smth\n"] {
            let d = DirectiveParser::new().parse_all(text);
            assert_eq!(d, vec![Directive { name: "escape".into(), value: "\\".into(), line: 1 }]);
        }
        let mut p = DirectiveParser::new();
        assert!(p.parse_line("# syntax=a").unwrap().is_some());
        assert_eq!(p.parse_line("# SYNTAX = b").unwrap_err(), "only one syntax parser directive can be used");
        assert_eq!(match_directive("#  escape  =  `  ", "#"), Some(("escape", "`")));
        assert_eq!(match_directive("# escape=   ", "#"), Some(("escape", " ")));
        assert_eq!(match_directive("# escape=", "#"), None);
        assert_eq!(match_directive("# 1x=a", "#"), None);
    }

    #[test]
    fn detects_syntax_like_buildkit() {
        let d = detect_syntax("# syntax = dockerfile:experimental // opts\nFROM busybox\n").unwrap();
        assert_eq!(d.reference, "dockerfile:experimental");
        assert_eq!(d.cmdline, "dockerfile:experimental // opts");
        assert_eq!(d.line, 1);
        let d = detect_syntax("#!/bin/sh\n# syntax = dockerfile:experimental\nFROM busybox\n").unwrap();
        assert_eq!((d.reference.as_str(), d.line), ("dockerfile:experimental", 2));
        assert!(detect_syntax("#!/bin/sh\n\n# syntax = dockerfile:experimental\n").is_none());
        assert!(detect_syntax("FROM busybox\nRUN ls\n").is_none());
        assert_eq!(detect_syntax("//syntax=foo\n//key=value").unwrap().reference, "foo");
        assert_eq!(detect_syntax("#!/bin/sh\n//syntax=x").unwrap().reference, "x");
        assert_eq!(detect_syntax("{\"syntax\": \"foo\"}").unwrap().reference, "foo");
        assert!(detect_syntax("{\"syntax\": \"foo\"").is_none());
        assert!(detect_syntax("{\"syntax\": \"foo\"}\n# syntax=bar").is_none());
        // A directive after a duplicate error is still found when it came first.
        assert_eq!(detect_syntax("# syntax=a\n# syntax=b\n").unwrap().reference, "a");
    }
}

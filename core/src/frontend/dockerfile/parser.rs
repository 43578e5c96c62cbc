//! The file-level parser (BuildKit's `parser.Parse`): reads lines, applies the directives at the
//! top, joins line continuations (skipping comment lines and warning about empty lines inside
//! them), collects the comments above each instruction, reads heredoc bodies, and records the
//! line range of every instruction.

use super::ast::{Ast, Node, Warning};
use super::directives::{Directive, DirectiveParser};
use super::error::{DockerfileError, Location};
use super::heredoc::heredocs_from_line;
use super::line_parsers::node_from_line;
use super::text::trim_space;

/// The longest line BuildKit's scanner accepts (64 KiB including the newline).
const MAX_LINE: usize = 64 * 1024;

/// Parses Dockerfile text into its instructions. Errors name the line they occur on.
pub fn parse(text: &str) -> Result<Ast, DockerfileError> {
    Parser::new(text).run()
}

/// Lines with their endings kept, stopping (and remembering why) at a line too long for
/// BuildKit's scanner.
struct Lines<'a> {
    rest: &'a str,
    too_long: bool,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() || self.too_long {
            return None;
        }
        let (line, rest) = match self.rest.find('\n') {
            Some(i) if i < MAX_LINE => self.rest.split_at(i + 1),
            // The scanner fills its 64 KiB buffer before it sees the end of the input, so an
            // unterminated last line of that size fails too.
            None if self.rest.len() < MAX_LINE => (self.rest, ""),
            _ => {
                self.too_long = true;
                return None;
            }
        };
        self.rest = rest;
        Some(line)
    }
}

/// Escape-dependent state: the escape character and the directive reader.
struct Directives {
    escape: char,
    parser: DirectiveParser,
    found: Vec<Directive>,
}

impl Directives {
    /// Feeds a line to the directive reader; an `escape` directive changes the escape character.
    fn check(&mut self, line: &str) -> Result<(), String> {
        if let Some(d) = self.parser.parse_line(line)? {
            if d.name == "escape" {
                if d.value != "`" && d.value != "\\" {
                    return Err(format!("invalid escape token '{}' does not match ` or \\", d.value));
                }
                self.escape = d.value.chars().next().unwrap_or('\\');
            }
            self.found.push(d);
        }
        Ok(())
    }

    /// `line` without its continuation escape, and whether the instruction ends here. The
    /// escape continues the line when it is the last non-blank character and is not itself
    /// escaped (BuildKit's regexp: `([^E])E[ \t]*$|^E[ \t]*$`).
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        let Some(before) = body.strip_suffix(self.escape) else { return (line.to_owned(), true) };
        match before.chars().next_back() {
            None => (String::new(), false),
            Some(c) if c != self.escape => (before.to_owned(), false),
            Some(_) => (line.to_owned(), true),
        }
    }
}

struct Parser<'a> {
    lines: Lines<'a>,
    d: Directives,
    current_line: usize,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn trim_leading_ws(s: &str) -> &str {
    s.trim_start_matches(char::is_whitespace)
}

fn is_comment(line: &str) -> bool {
    trim_leading_ws(trim_newline(line)).starts_with('#')
}

fn is_empty_continuation_line(line: &str) -> bool {
    trim_leading_ws(trim_newline(line)).is_empty()
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Parser {
            lines: Lines { rest: text, too_long: false },
            d: Directives { escape: '\\', parser: DirectiveParser::new(), found: Vec::new() },
            current_line: 0,
        }
    }

    /// Trims the line ending (and leading blanks for the first line of an instruction), checks
    /// for a directive, and drops a comment line.
    fn process_line(&mut self, raw: &str, strip_left: bool) -> Result<String, DockerfileError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = trim_leading_ws(token);
        }
        let line = self.current_line + 1;
        self.d.check(token).map_err(|e| DockerfileError::syntax(e, Location::line(line)))?;
        Ok(if token.starts_with('#') { String::new() } else { token.to_owned() })
    }

    fn run(mut self) -> Result<Ast, DockerfileError> {
        let mut children: Vec<Node> = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = self.lines.next() {
            if is_comment(raw) {
                // BuildKit drops only the first byte of the raw line (`#` when unindented).
                let text = raw.char_indices().nth(1).map_or("", |(i, _)| &raw[i..]);
                let comment = trim_space(text);
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_owned());
                }
            }
            let first = self.process_line(raw, true)?;
            self.current_line += 1;
            let start_line = self.current_line;
            let (mut line, mut end) = self.d.trim_continuation(&first);
            if end && line.is_empty() {
                continue;
            }

            let mut has_empty_continuation = false;
            while !end {
                let Some(raw) = self.lines.next() else { break };
                let processed = self.process_line(raw, false)?;
                self.current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if is_empty_continuation_line(&processed) {
                    has_empty_continuation = true;
                    continue;
                }
                let (part, e) = self.d.trim_continuation(&processed);
                line.push_str(&part);
                end = e;
            }
            if has_empty_continuation {
                warnings.push(Warning {
                    short: format!("Empty continuation line found in: {line}"),
                    detail: "Empty continuation lines will become errors in a future release".to_owned(),
                    url: "https://github.com/moby/moby/pull/33719".to_owned(),
                    location: Location::line(self.current_line),
                });
            }

            let located = |e: String, end: usize| DockerfileError::syntax(e, Location::new(start_line, end));
            let mut node = node_from_line(&line, self.d.escape).map_err(|e| located(e, self.current_line))?;
            if can_contain_heredoc(&node) {
                let heredocs = heredocs_from_line(&line).map_err(|e| located(e, self.current_line))?;
                for mut heredoc in heredocs {
                    let mut terminated = false;
                    for raw in self.lines.by_ref() {
                        self.current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if heredoc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                        heredoc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(located("unterminated heredoc".to_owned(), self.current_line));
                    }
                    node.heredocs.push(heredoc);
                }
            }
            node.location = Location::new(start_line, self.current_line);
            node.comments = std::mem::take(&mut comments);
            children.push(node);
        }

        if children.is_empty() {
            return Err(DockerfileError::syntax("file with no instructions", Location::line(self.current_line)));
        }
        if self.lines.too_long {
            return Err(DockerfileError::syntax(
                format!("dockerfile line greater than max allowed size of {}", MAX_LINE - 1),
                Location::line(self.current_line),
            ));
        }
        Ok(Ast { children, escape: self.d.escape, directives: self.d.found, warnings })
    }
}

/// RUN, COPY and ADD in shell form (also as an ONBUILD trigger) take heredocs.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.sub {
        Some(sub) if node.value.eq_ignore_ascii_case("onbuild") => sub,
        _ => node,
    };
    ["add", "copy", "run"].contains(&node.value.to_lowercase().as_str()) && !node.json
}

#[cfg(test)]
mod tests;

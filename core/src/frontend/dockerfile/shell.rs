//! Shell-style word processing and variable expansion, with the semantics of BuildKit's
//! `frontend/dockerfile/shell` (v0.11.6): quotes, the escape character, `$V`, `${V}`,
//! `${V:-x}`, `${V:+x}`, `${V?msg}`, `${V:?msg}`, and splitting into words after expansion.
//!
//! Only what BuildKit supports is accepted: `${V-x}` and `${V+x}` (no colon) are errors
//! ("missing ':' in substitution"), as are `${V:=x}` and other modifiers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::text::{go_quote, is_space};

/// Where variable values come from during expansion.
pub trait VarLookup {
    /// The value of `name`, or `None` when it is not set (an empty value is set).
    fn lookup(&self, name: &str) -> Option<String>;
}

impl VarLookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl VarLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// `KEY=VALUE` pairs in order: the last definition of a key wins (BuildKit's `BuildEnvs`).
impl VarLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

impl VarLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}

impl<F: Fn(&str) -> Option<String>> VarLookup for F {
    fn lookup(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// `KEY=VALUE` strings (a process environment) as a map, as BuildKit's `BuildEnvs`: a string
/// without `=` sets an empty value, a later key overwrites an earlier one.
pub fn build_envs<S: AsRef<str>>(env: &[S]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for e in env {
        let e = e.as_ref();
        match e.split_once('=') {
            Some((k, v)) => out.insert(k.to_owned(), v.to_owned()),
            None => out.insert(e.to_owned(), String::new()),
        };
    }
    out
}

/// Expands one word (BuildKit's `SingleWordExpander`); the error is the message. Instruction
/// expansion takes one of these so that the caller decides the lexer and environment.
pub type Expander<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

/// An expansion failure; the message is BuildKit's (`failed to process "${A": syntax error: missing '}'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// The word processor: BuildKit's `shell.Lex` with its switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lex {
    /// The escape character (`\` or the backtick set by `# escape=`).
    pub escape: char,
    /// Keep quote characters in the output (they still group words).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (they still escape).
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (used for heredoc contents).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset_env: bool,
}

impl Lex {
    /// A processor with `escape` and every switch off (what instruction expansion uses).
    pub fn new(escape: char) -> Self {
        Lex { escape, raw_quotes: false, raw_escapes: false, skip_process_quotes: false, skip_unset_env: false }
    }

    /// `word` with quotes processed and variables expanded (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, ShellError> {
        self.process(word, env).map(|r| r.word)
    }

    /// `word` expanded then split into words on unquoted whitespace (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn VarLookup) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|r| r.words)
    }

    /// [`Lex::process_word`] and the names of the variables that were found in `env`
    /// (BuildKit's `ProcessWordWithMatches`; the converter uses it for meta ARGs).
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<(String, BTreeSet<String>), ShellError> {
        self.process(word, env).map(|r| (r.word, r.matches))
    }

    fn process(&self, word: &str, env: &dyn VarLookup) -> Result<Processed, ShellError> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut sw = ShellWord { lex: self, env, chars, pos: 0, matches: BTreeSet::new() };
        match sw.process_stop_on(None) {
            Ok((word, words)) => Ok(Processed { word, words, matches: sw.matches }),
            Err(e) => Err(ShellError(format!("failed to process {}: {e}", go_quote(word)))),
        }
    }
}

struct Processed {
    word: String,
    words: Vec<String>,
    matches: BTreeSet<String>,
}

/// Accumulates the split words: unquoted whitespace (including whitespace coming from a
/// variable's value) separates words; quoted text and escaped characters never do.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if is_space(c) && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !is_space(c) {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    lex: &'a Lex,
    env: &'a dyn VarLookup,
    chars: Vec<char>,
    pos: usize,
    matches: BTreeSet<String>,
}

type StepResult<T> = Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = self.env.lookup(name);
        if v.is_some() {
            self.matches.insert(name.to_owned());
        }
        v
    }

    /// Processes until the end of input or until `stop` (consumed), returning the word and its
    /// split form. Hitting the end while looking for `stop` is an error.
    fn process_stop_on(&mut self, stop: Option<char>) -> StepResult<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = ch == '$' || (!self.lex.skip_process_quotes && (ch == '\'' || ch == '"'));
            if special {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&tmp);
                // A variable's value is split on whitespace; quoted text is not.
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = ch;
            self.next();
            if ch == self.lex.escape {
                if self.lex.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // The escape escapes the next character; a trailing escape is dropped.
                match self.next() {
                    None => break,
                    Some(c) => {
                        ch = c;
                        words.add_raw_char(ch);
                    }
                }
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(format!("unexpected end of statement while looking for matching {stop}"));
        }
        Ok((result, words.finish()))
    }

    /// Everything up to the next `'` is literal; nothing can be escaped inside.
    fn process_single_quote(&mut self) -> StepResult<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// Up to the next unescaped `"`: variables expand, the escape character escapes only `"`,
    /// `$` and itself (other escapes stay literal).
    fn process_double_quote(&mut self) -> StepResult<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.lex.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A trailing escape is dropped (the quote is unterminated anyway).
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> StepResult<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some('?') => {
                let word = self.modifier_word()?;
                match self.get_env(&name) {
                    Some(v) => Ok(v),
                    None if self.lex.skip_unset_env => Ok(format!("${{{name}?{word}}}")),
                    None => Err(format!("{name}: {}", or_default(word, "is not allowed to be unset"))),
                }
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.modifier_word()?;
                let value = self.get_env(&name);
                let found = value.is_some();
                let value = value.unwrap_or_default();
                let m = modifier.map(String::from).unwrap_or_default();
                let kept = || format!("${{{name}:{m}{word}}}");
                match modifier {
                    Some('+') => {
                        if !found && self.lex.skip_unset_env {
                            return Ok(kept());
                        }
                        Ok(if value.is_empty() { value } else { word.clone() })
                    }
                    Some('-') => {
                        if !found && self.lex.skip_unset_env {
                            return Ok(kept());
                        }
                        Ok(if value.is_empty() { word.clone() } else { value })
                    }
                    Some('?') => {
                        if !found {
                            if self.lex.skip_unset_env {
                                return Ok(kept());
                            }
                            return Err(format!("{name}: {}", or_default(word, "is not allowed to be unset")));
                        }
                        if value.is_empty() {
                            return Err(format!("{name}: {}", or_default(word, "is not allowed to be empty")));
                        }
                        Ok(value)
                    }
                    // Go prints the replacement character for a missing modifier rune.
                    other => Err(format!("unsupported modifier ({}) in substitution", other.unwrap_or('\u{fffd}'))),
                }
            }
            _ => Err("missing ':' in substitution".into()),
        }
    }

    /// The word after a `${NAME:x` / `${NAME?` modifier, up to the closing brace.
    fn modifier_word(&mut self) -> StepResult<String> {
        match self.process_stop_on(Some('}')) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".into()),
            Err(e) => Err(e),
        }
    }

    /// A variable name: letters, digits and `_`; a run of digits (positional parameter) or
    /// one special parameter character (`@*#?-$!0`) when it starts with one.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(c) = self.peek().filter(|c| is_go_digit(*c)) {
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// Go's `unicode.IsDigit` for the digits that occur in practice (ASCII and other decimal digits
/// Rust classifies as numeric; letter-like numerals are not digits in Go but are rare enough).
fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn or_default(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// BuildKit's shell/envVarTest: `PLATFORM|input|expected` lines (U and A apply here).
    #[test]
    fn envvar_test_file() {
        let text = include_str!("../../../tests/fixtures/dockerfile/shell/envVarTest");
        let envs = env(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
        let lex = Lex::new('\\');
        let mut checked = 0;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.trim().split('|').collect();
            assert_eq!(parts.len(), 3, "line {}", n + 1);
            let (platform, source, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
            if platform == "W" {
                continue;
            }
            let got = lex.process_word(source, &envs);
            if expected == "error" {
                assert!(got.is_err(), "line {}: {source:?} gave {got:?}", n + 1);
            } else {
                assert_eq!(got.as_deref(), Ok(expected), "line {}: {source:?}", n + 1);
            }
            checked += 1;
        }
        assert!(checked > 200);
    }

    /// BuildKit's shell/wordsTest: `ENV k=v` lines add variables, `input | w1,w2` lines check
    /// splitting after expansion.
    #[test]
    fn words_test_file() {
        let text = include_str!("../../../tests/fixtures/dockerfile/shell/wordsTest");
        let lex = Lex::new('\\');
        let mut envs: Vec<String> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("ENV ") {
                envs.push(rest.trim_start_matches(' ').to_owned());
                continue;
            }
            let parts: Vec<&str> = line.split('|').collect();
            assert_eq!(parts.len(), 2, "line {}", n + 1);
            let test = parts[0].trim_matches(is_space);
            let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
            let got = lex.process_words(test, &build_envs(&envs)).unwrap_or_else(|_| vec!["error".to_owned()]);
            assert_eq!(got, expected, "line {}: {test:?}", n + 1);
        }
    }

    #[test]
    fn mandatory_vars() {
        let lex = Lex::new('\\');
        let set = env(&[("VAR", "plain"), ("ARG", "x")]);
        let empty = env(&[("VAR", ""), ("ARG", "x")]);
        let unset = env(&[("ARG", "x")]);
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        assert_eq!(lex.process_word(no_empty, &set).unwrap(), "plain");
        assert!(lex.process_word(no_empty, &empty).unwrap_err().0.contains("message herex"));
        assert!(lex.process_word(no_empty, &unset).unwrap_err().0.contains("message herex"));
        assert_eq!(lex.process_word(no_unset, &set).unwrap(), "plain");
        assert_eq!(lex.process_word(no_unset, &empty).unwrap(), "");
        assert_eq!(
            lex.process_word(no_unset, &unset).unwrap_err().0,
            "failed to process \"${VAR?message here$ARG}\": VAR: message herex"
        );
    }

    #[test]
    fn matches_report_found_variables() {
        let lex = Lex::new('\\');
        let (w, m) =
            lex.process_word_with_matches("foo ${BAR} ${UNUSED}", &env(&[("ANOTHER", "bar"), ("BAR", "baz")])).unwrap();
        assert_eq!(w, "foo baz ");
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec!["BAR"]);
        let (w, m) = lex.process_word_with_matches("foo ${BAR:-abc} ${UNUSED}", &env(&[("ANOTHER", "bar")])).unwrap();
        assert_eq!(w, "foo abc ");
        assert!(m.is_empty());
        let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let e = env(&[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
        assert_eq!(lex.process_word(release, &e).unwrap(), "something-v1.2.3.linux-arm-v7.tar.gz");
        let e = env(&[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm64")]);
        assert_eq!(lex.process_word(release, &e).unwrap(), "something-v1.2.3.linux-arm64.tar.gz");
    }

    #[test]
    fn unsupported_forms_fail_like_buildkit() {
        let lex = Lex::new('\\');
        let e = env(&[("A", "1")]);
        assert_eq!(
            lex.process_word("${A-x}", &e).unwrap_err().0,
            "failed to process \"${A-x}\": missing ':' in substitution"
        );
        assert_eq!(
            lex.process_word("${B+x}", &e).unwrap_err().0,
            "failed to process \"${B+x}\": missing ':' in substitution"
        );
        assert_eq!(
            lex.process_word("${A:=x}", &e).unwrap_err().0,
            "failed to process \"${A:=x}\": unsupported modifier (=) in substitution"
        );
        assert_eq!(
            lex.process_word("${A", &e).unwrap_err().0,
            "failed to process \"${A\": missing ':' in substitution"
        );
        assert_eq!(lex.process_word("${", &e).unwrap_err().0, "failed to process \"${\": syntax error: missing '}'");
        assert_eq!(
            lex.process_word("${}", &e).unwrap_err().0,
            "failed to process \"${}\": syntax error: bad substitution"
        );
    }

    #[test]
    fn switches() {
        let e = env(&[("A", "1")]);
        let mut lex = Lex::new('`');
        assert_eq!(lex.process_word("a`$A\\b", &e).unwrap(), "a$A\\b");
        lex = Lex::new('\\');
        lex.raw_quotes = true;
        lex.skip_unset_env = true;
        assert_eq!(lex.process_word("'x' \"$A$B\" ${C:-d} ${D?e}", &e).unwrap(), "'x' \"1$B\" ${C:-d} ${D?e}");
        lex = Lex::new('\\');
        lex.skip_process_quotes = true;
        assert_eq!(lex.process_word("'$A' \"$A\"", &e).unwrap(), "'1' \"1\"");
        lex = Lex::new('\\');
        lex.raw_escapes = true;
        assert_eq!(lex.process_word("a\\$A \"\\$A\"", &e).unwrap(), "a\\$A \\$A");
        let list = vec![("A".to_owned(), "1".to_owned()), ("A".to_owned(), "2".to_owned())];
        assert_eq!(Lex::new('\\').process_word("$A", &list).unwrap(), "2");
        let f = |n: &str| (n == "X").then(|| "y".to_owned());
        assert_eq!(Lex::new('\\').process_word("$X$Z", &f).unwrap(), "y");
        assert_eq!(build_envs(&["a=1", "b", "a=2"]).get("a").map(String::as_str), Some("2"));
    }
}

//! Splitting one logical line (continuations already joined) into a [`Node`]: the instruction
//! name, the leading `--flags`, and the arguments split by that instruction's rule (JSON array
//! or shell string, whitespace-separated words, `key=value` pairs, ONBUILD's nested line).

use super::ast::Node;
use super::text::{split_ws, trim_space};

/// BuildKit's message for a JSON array holding something other than strings.
const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// The argument rule of each instruction BuildKit knows (unknown names keep no arguments).
#[derive(Clone, Copy)]
enum Rule {
    MaybeJson,
    MaybeJsonToList,
    NameVal(&'static str),
    NameOrNameVal,
    Whitespace,
    String,
    SubCommand,
    HealthConfig,
    Ignore,
}

fn rule_for(cmd: &str) -> Rule {
    match cmd.to_lowercase().as_str() {
        "add" | "copy" | "volume" => Rule::MaybeJsonToList,
        "cmd" | "entrypoint" | "run" | "shell" => Rule::MaybeJson,
        "arg" => Rule::NameOrNameVal,
        "env" => Rule::NameVal("ENV"),
        "label" => Rule::NameVal("LABEL"),
        "expose" | "from" => Rule::Whitespace,
        "maintainer" | "stopsignal" | "user" | "workdir" => Rule::String,
        "onbuild" => Rule::SubCommand,
        "healthcheck" => Rule::HealthConfig,
        _ => Rule::Ignore,
    }
}

/// What a rule produced: the arguments, ONBUILD's nested node, and whether they were JSON.
#[derive(Default)]
struct Parsed {
    args: Vec<String>,
    sub: Option<Box<Node>>,
    json: bool,
}

/// The node for one logical `line` (BuildKit's `newNodeFromLine`); `escape` is the escape
/// character in effect. Location, heredocs and comments are the caller's.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (cmd, flags, args) = split_command(line);
    let parsed = match rule_for(&cmd) {
        Rule::MaybeJson => parse_maybe_json(&args)?,
        Rule::MaybeJsonToList => parse_maybe_json_to_list(&args)?,
        Rule::NameVal(key) => Parsed { args: parse_name_val(&args, key, escape)?, ..Default::default() },
        Rule::NameOrNameVal => Parsed { args: parse_words(&args, escape), ..Default::default() },
        Rule::Whitespace => Parsed { args: whitespace_list(&args), ..Default::default() },
        Rule::String => Parsed { args: single(&args), ..Default::default() },
        Rule::SubCommand if args.is_empty() => Parsed::default(),
        Rule::SubCommand => Parsed { sub: Some(Box::new(node_from_line(&args, escape)?)), ..Default::default() },
        Rule::HealthConfig => parse_health_config(&args)?,
        // Unknown instructions keep one empty argument, as BuildKit's parseIgnore does; the
        // instruction parser reports them.
        Rule::Ignore => Parsed { args: vec![String::new()], ..Default::default() },
    };
    Ok(Node {
        value: cmd,
        original: line.to_owned(),
        flags,
        args: parsed.args,
        sub: parsed.sub,
        json: parsed.json,
        ..Default::default()
    })
}

/// The instruction name, its flags and the rest of the line (trimmed).
fn split_command(line: &str) -> (String, Vec<String>, String) {
    let parts = split_ws(trim_space(line), Some(2));
    let cmd = parts.first().copied().unwrap_or_default().to_owned();
    match parts.get(1) {
        Some(rest) => {
            let (args, flags) = extract_builder_flags(rest);
            (cmd, flags, trim_space(&args).to_owned())
        }
        None => (cmd, Vec::new(), String::new()),
    }
}

/// Go's `unicode.IsSpace` applied to a single byte taken as a rune (BuildKit's flag scanner
/// works on bytes, so the UTF-8 continuation bytes 0x85 and 0xA0 count as spaces there).
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// The leading `--flag` words of `line` (quotes removed, `\` escaping) and the rest. A word
/// `--` ends the flags. Works on bytes as BuildKit does: a non-ASCII byte in a flag becomes the
/// Latin-1 character of that byte.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let rest_from = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c as char);
            pos += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c as char);
        pos += 1;
    }
    (String::new(), words)
}

/// Space-separated words with quotes and escapes kept (they are processed at expansion): a
/// quoted or escaped space does not split.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                // An escaped character (even a quote) is kept with its escape.
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        // Nothing escapes inside single quotes.
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// ENV and LABEL: `key value` (old form: the rest of the line is the value, taken verbatim) or
/// `k=v k2=v2` (words; quotes kept for expansion).
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        let parts = split_ws(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![parts[0].to_owned(), parts[1].to_owned()]);
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::text::go_quote(word)
            ));
        };
        out.push(k.to_owned());
        out.push(v.to_owned());
    }
    Ok(out)
}

fn whitespace_list(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, None).into_iter().map(str::to_owned).collect()
}

fn single(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_owned()]
    }
}

/// Why a line is not a JSON string array.
enum JsonError {
    /// Not JSON (or not an array): the line is taken as a shell string instead.
    NotJson,
    /// A JSON array with a non-string element: an error.
    NotStrings,
}

/// The strings of a JSON array at the start of `rest`. Like Go's `json.Decoder`, only the first
/// JSON value is read; anything after it is ignored.
fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let value = match stream.next() {
        Some(Ok(v)) => v,
        _ => return Err(JsonError::NotJson),
    };
    let serde_json::Value::Array(items) = value else { return Err(JsonError::NotJson) };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonError::NotStrings),
        })
        .collect()
}

fn parse_maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::default());
    }
    match parse_json(rest) {
        Ok(args) => Ok(Parsed { args, json: true, sub: None }),
        Err(JsonError::NotStrings) => Err(NOT_STRING_ARRAY.to_owned()),
        Err(JsonError::NotJson) => Ok(Parsed { args: vec![rest.to_owned()], ..Default::default() }),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<Parsed, String> {
    match parse_json(rest) {
        Ok(args) => Ok(Parsed { args, json: true, sub: None }),
        Err(JsonError::NotStrings) => Err(NOT_STRING_ARRAY.to_owned()),
        Err(JsonError::NotJson) => Ok(Parsed { args: whitespace_list(rest), ..Default::default() }),
    }
}

/// HEALTHCHECK: the type word (`CMD`, `NONE`), then the command as in RUN. Scans bytes as
/// BuildKit does.
fn parse_health_config(rest: &str) -> Result<Parsed, String> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|c| is_space_byte(*c)).unwrap_or(b.len());
    if sep == 0 {
        return Ok(Parsed::default());
    }
    let next = b[sep..].iter().position(|c| !is_space_byte(*c)).map_or(b.len(), |i| sep + i);
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let cmd = parse_maybe_json(&String::from_utf8_lossy(&b[next..]))?;
    let mut args = vec![typ];
    args.extend(cmd.args);
    Ok(Parsed { args, json: cmd.json, sub: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
            ("àöû", &["àöû"]),
            ("föo bàr \"âbc xÿz\"", &["föo", "bàr", "\"âbc xÿz\""]),
        ];
        for (input, expect) in cases {
            assert_eq!(parse_words(input, '\\'), *expect, "{input}");
        }
    }

    #[test]
    fn name_val_forms() {
        assert_eq!(parse_name_val("foo bar", "LABEL", '\\').unwrap(), ["foo", "bar"]);
        assert_eq!(parse_name_val("foo=bar thing=star", "LABEL", '\\').unwrap(), ["foo", "bar", "thing", "star"]);
        assert_eq!(parse_name_val("foo", "ENV", '\\').unwrap_err(), "ENV must have two arguments");
        assert_eq!(
            parse_name_val("a=b c", "ENV", '\\').unwrap_err(),
            "Syntax error - can't find = in \"c\". Must be of the form: name=value"
        );
    }

    #[test]
    fn json_arrays() {
        let valid: &[(&str, &[&str])] = &[
            ("[]", &[]),
            ("[\"\"]", &[""]),
            ("[\"a\"]", &["a"]),
            ("[\"a\",\"b\"]", &["a", "b"]),
            ("[ \"a\", \"b\" ]", &["a", "b"]),
            ("[\t\"a\",\t\"b\"\t]", &["a", "b"]),
            ("\t[\t\"a\",\t\"b\"\t]\t", &["a", "b"]),
            (
                "[\"abc 123\", \"♥\", \"☃\", \"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000\"]",
                &["abc 123", "♥", "☃", "\" \\ / \u{8} \u{c} \n \r \t \u{0}"],
            ),
            // Only the first JSON value counts, as with Go's json.Decoder.
            ("[\"a\"] trailing", &["a"]),
        ];
        for (input, expect) in valid {
            match parse_json(input) {
                Ok(v) => assert_eq!(v, *expect, "{input}"),
                Err(_) => panic!("{input} should parse"),
            }
        }
        for input in [
            "[\"a\",42,\"b\"]",
            "[\"a\",123.456,\"b\"]",
            "[\"a\",{},\"b\"]",
            "[\"a\",{\"c\": \"d\"},\"b\"]",
            "[\"a\",[\"c\"],\"b\"]",
            "[\"a\",true,\"b\"]",
            "[\"a\",false,\"b\"]",
            "[\"a\",null,\"b\"]",
        ] {
            assert!(matches!(parse_json(input), Err(JsonError::NotStrings)), "{input}");
        }
    }

    #[test]
    fn flags() {
        let (rest, flags) = extract_builder_flags("--a=b --c --d=\"e f\" -- --g x");
        assert_eq!(flags, ["--a=b", "--c", "--d=e f"]);
        assert_eq!(rest, " --g x");
        // A word that does not start with `--` ends the flags.
        let (rest, flags) = extract_builder_flags("--a \"--b\"");
        assert_eq!((rest.as_str(), flags), ("\"--b\"", vec!["--a".to_owned()]));
        let (rest, flags) = extract_builder_flags("--x='a b' foo");
        assert_eq!((rest.as_str(), flags), ("foo", vec!["--x=a b".to_owned()]));
        let (rest, flags) = extract_builder_flags("-x foo");
        assert_eq!((rest.as_str(), flags.len()), ("-x foo", 0));
        let (rest, flags) = extract_builder_flags("--only");
        assert_eq!((rest.as_str(), flags), ("", vec!["--only".to_owned()]));
    }
}

//! The CSV option syntax shared by every option string (`type=local,dest=DIR,...`): one record of
//! Go `encoding/csv` fields, each split at its first `=`, plus the `key="a,b"` quoting buildx users
//! write. Also the inverse, quoting values so that Go's reader and ours read them back unchanged.

use crate::error::{Error, Result};

/// One field of an option record: `KEY=VALUE` or a bare word without `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// `KEY=VALUE`, split at the first `=`.
    Pair(String, String),
    /// A field without `=`; only some forms accept it.
    Bare(String),
}

const QUOTING: &str = "a double quote may only wrap a whole field (\"key=a,b\") or a whole value (key=\"a,b\"); \
                       write \"\" for a quote inside quotes";

/// Parses one option record into `(key, value)` pairs, in order.
///
/// Fields are separated by commas. A field wrapped in double quotes may contain commas, and `""`
/// inside it stands for one quote (Go `encoding/csv`); a value may also be quoted on its own after
/// `key=`, as in `key="a,b"`. Each field is split at its first `=`; a field without `=` is an
/// error naming it. An empty string yields no pairs.
pub fn parse_csv(s: &str) -> Result<Vec<(String, String)>> {
    parse_fields(s)?
        .into_iter()
        .map(|f| match f {
            Field::Pair(k, v) => Ok((k, v)),
            Field::Bare(word) => Err(bare_word_error(&word)),
        })
        .collect()
}

/// The error for a field without `=` where only `KEY=VALUE` is accepted.
pub(crate) fn bare_word_error(word: &str) -> Error {
    if word.is_empty() {
        Error::option(
            "",
            "",
            "an empty field is not accepted: expected KEY=VALUE (is there a doubled or trailing comma?)",
        )
    } else {
        Error::option(word, "", format!("field {word:?} has no '=': expected KEY=VALUE"))
    }
}

/// Splits `s` into fields, keeping bare words for forms that accept them.
pub(crate) fn parse_fields(s: &str) -> Result<Vec<Field>> {
    // Go's reader drops one trailing line ending of the record.
    let s = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(s);
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let (text, next) =
            if chars.get(i) == Some(&'"') { read_quoted(&chars, i + 1, s)? } else { read_unquoted(&chars, i, s)? };
        fields.push(split_field(text));
        match chars.get(next) {
            None => break,
            Some(',') => i = next + 1,
            Some(_) => {
                return Err(Error::option(
                    field_key(&chars, i),
                    s,
                    format!("unexpected text after a closing quote: {QUOTING}"),
                ));
            }
        }
    }
    Ok(fields)
}

/// Reads a quoted run starting just after its opening quote; returns the text and the index just
/// after the closing quote.
fn read_quoted(chars: &[char], mut i: usize, whole: &str) -> Result<(String, usize)> {
    let mut out = String::new();
    loop {
        match chars.get(i) {
            None => return Err(Error::option("", whole, format!("unterminated double quote: {QUOTING}"))),
            Some('"') if chars.get(i + 1) == Some(&'"') => {
                out.push('"');
                i += 2;
            }
            Some('"') => return Ok((out, i + 1)),
            Some(c) => {
                out.push(*c);
                i += 1;
            }
        }
    }
}

/// Reads an unquoted field up to the next comma; a quote directly after the field's first `=`
/// starts a quoted value (`key="a,b"`).
fn read_unquoted(chars: &[char], mut i: usize, whole: &str) -> Result<(String, usize)> {
    let mut out = String::new();
    let mut seen_eq = false;
    while let Some(&c) = chars.get(i) {
        match c {
            ',' => break,
            '\n' | '\r' => {
                return Err(Error::option(out, whole, "a line break is only accepted inside double quotes"));
            }
            '"' if seen_eq && out.ends_with('=') && out.matches('=').count() == 1 => {
                let (value, next) = read_quoted(chars, i + 1, whole)?;
                out.push_str(&value);
                return Ok((out, next));
            }
            '"' => {
                let key = out.split('=').next().unwrap_or_default().to_owned();
                return Err(Error::option(key, whole, format!("bare double quote in an unquoted field: {QUOTING}")));
            }
            '=' => {
                seen_eq = true;
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok((out, i))
}

/// The key of the field starting at `i`, for error messages.
fn field_key(chars: &[char], i: usize) -> String {
    chars[i..].iter().skip_while(|c| **c == '"').take_while(|c| **c != '=' && **c != ',').collect()
}

fn split_field(text: String) -> Field {
    match text.split_once('=') {
        Some((k, v)) => Field::Pair(k.to_owned(), v.to_owned()),
        None => Field::Bare(text),
    }
}

/// Formats pairs as one record that [`parse_csv`] and Go's `encoding/csv` read back unchanged:
/// a field holding a comma, a quote, a line break or a leading space is wrapped in quotes.
pub fn to_csv<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut out = String::new();
    for (n, (k, v)) in pairs.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let field = format!("{}={}", k.as_ref(), v.as_ref());
        let needs_quotes = field.contains([',', '"', '\n', '\r']) || field.starts_with([' ', '\t']);
        if needs_quotes {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_csv(s).unwrap()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn plain_fields_split_at_first_equals() {
        assert_eq!(pairs("type=local,dest=/a=b"), vec![p("type", "local"), p("dest", "/a=b")]);
        assert_eq!(pairs("k="), vec![p("k", "")]);
        assert_eq!(pairs(""), vec![]);
        assert_eq!(pairs("a=1\n"), vec![p("a", "1")]);
    }

    #[test]
    fn quoted_whole_field_may_hold_commas_and_quotes() {
        assert_eq!(pairs("\"name=a,b\",push=true"), vec![p("name", "a,b"), p("push", "true")]);
        assert_eq!(pairs("\"k=say \"\"hi\"\"\""), vec![p("k", "say \"hi\"")]);
        assert_eq!(pairs("\"k=line\nbreak\""), vec![p("k", "line\nbreak")]);
    }

    #[test]
    fn quoted_value_after_key() {
        assert_eq!(pairs("name=\"a,b\",push=true"), vec![p("name", "a,b"), p("push", "true")]);
        assert_eq!(pairs("k=\"x\"\"y\""), vec![p("k", "x\"y")]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_csv("type=local,oops").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Option);
        assert!(e.to_string().contains("oops") && e.to_string().contains("KEY=VALUE"), "{e}");
        assert!(parse_csv("a=1,").unwrap_err().to_string().contains("trailing"));
        let e = parse_csv("k=a\"b").unwrap_err().to_string();
        assert!(e.contains("bare double quote") && e.contains("k="), "{e}");
        assert!(parse_csv("\"k=a").unwrap_err().to_string().contains("unterminated"));
        assert!(parse_csv("\"k=a\"x").unwrap_err().to_string().contains("after a closing quote"));
        assert!(parse_csv("k=\"a\"x").unwrap_err().to_string().contains("after a closing quote"));
        assert!(parse_csv("a=1\nb=2").unwrap_err().to_string().contains("line break"));
    }

    #[test]
    fn bare_words_are_kept_for_forms_that_allow_them() {
        assert_eq!(parse_fields("ref").unwrap(), vec![Field::Bare("ref".into())]);
    }

    #[test]
    fn to_csv_round_trips() {
        let cases: Vec<Vec<(String, String)>> = vec![
            vec![p("type", "local"), p("dest", "/tmp/a,b")],
            vec![p("k", "say \"hi\""), p("x", " lead")],
            vec![p("k", "a=b=c"), p("e", "")],
        ];
        for c in cases {
            assert_eq!(parse_csv(&to_csv(&c)).unwrap(), c);
        }
        assert_eq!(to_csv(&[("dest", "a,b")]), "\"dest=a,b\"");
    }
}

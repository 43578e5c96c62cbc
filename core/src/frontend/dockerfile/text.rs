//! Small text helpers shared by the Dockerfile modules: Go's `strconv.Quote` (BuildKit's error
//! messages and AST dumps quote with it, so ours must too) and BuildKit's "did you mean"
//! suggestions (`util/suggest`).

/// `s` quoted as Go's `strconv.Quote` does: `"` and `\` escaped, control characters as `\n`,
/// `\x00`, `\u0085`, printable Unicode kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols and
/// the ASCII space): controls, format characters, separators other than ' ' and private-use or
/// unassigned surrogate-range code points are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    // Format characters (Cf) Go escapes: soft hyphen, zero-width marks, bidi controls, BOM.
    !matches!(u, 0xad | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0xfeff | 0xe000..=0xf8ff)
}

/// Go's `%q` of a list of strings (`["a" "b"]`), as `fmt` prints a `[]string`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// The closest of `options` to `value` (Levenshtein distance below 3), as BuildKit suggests a
/// correction: `None` when nothing is close or when `value` is itself one of the options (the
/// error is then about something else). Case-insensitive matching returns the option in the
/// case `value` was written in when that was all-lower or all-upper.
pub fn suggest<'a>(value: &str, options: impl IntoIterator<Item = &'a str>, case_sensitive: bool) -> Option<String> {
    let val = if case_sensitive { value.to_owned() } else { value.to_lowercase() };
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let opt = if case_sensitive { opt.to_owned() } else { opt.to_lowercase() };
        if opt == val {
            return None;
        }
        let d = levenshtein(&val, &opt);
        if d < min {
            min = d;
            best = Some(if case_sensitive { opt } else { match_case(&opt, value) });
        }
    }
    best
}

/// `err` followed by BuildKit's suggestion suffix when there is one.
pub fn with_suggestion(err: String, suggestion: Option<String>) -> String {
    match suggestion {
        Some(s) => format!("{err} (did you mean {s}?)"),
        None => err,
    }
}

fn match_case(val: &str, orig: &str) -> String {
    if orig == orig.to_lowercase() {
        val.to_lowercase()
    } else if orig == orig.to_uppercase() {
        val.to_uppercase()
    } else {
        val.to_owned()
    }
}

/// Edit distance over characters (insert, delete, substitute all cost 1).
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Go's `unicode.IsSpace` (Rust's `char::is_whitespace` is the same White_Space set).
pub fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace`.
pub fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Splits like Go's `regexp.MustCompile("[\t\v\f\r ]+").Split(s, n)` with `n` = `limit` (`None`
/// for all): a leading separator yields an empty first element, as in Go.
pub fn split_ws(s: &str, limit: Option<usize>) -> Vec<&str> {
    let is_sep = |c: char| matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ');
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit.is_some_and(|n| out.len() + 1 >= n) {
            out.push(rest);
            return out;
        }
        match rest.find(is_sep) {
            Some(i) => {
                out.push(&rest[..i]);
                let after = &rest[i..];
                let skip = after.find(|c: char| !is_sep(c)).unwrap_or(after.len());
                rest = &after[skip..];
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{0}♥"), "\"a\\\"b\\\\c\\n\\x00♥\"");
        assert_eq!(go_quote_list(&["--a".into(), "b c".into()]), "[\"--a\" \"b c\"]");
    }

    #[test]
    fn suggests_close_names() {
        let names = ["RUN", "COPY", "FROM"];
        assert_eq!(suggest("RUNN", names, false).as_deref(), Some("RUN"));
        assert_eq!(suggest("runn", names, false).as_deref(), Some("run"));
        assert_eq!(suggest("Runn", names, false).as_deref(), Some("run"));
        assert_eq!(suggest("XYZZY", names, false), None);
        assert_eq!(suggest("run", names, false), None);
    }

    #[test]
    fn splits_like_go_regexp() {
        assert_eq!(split_ws("a  b\tc", None), vec!["a", "b", "c"]);
        assert_eq!(split_ws("a  b\tc", Some(2)), vec!["a", "b\tc"]);
        assert_eq!(split_ws("a", Some(2)), vec!["a"]);
        assert_eq!(split_ws("", None), vec![""]);
    }
}

//! The image history a Dockerfile writes (BuildKit's `commitToHistory`): one entry per
//! instruction that changes the image, with the text BuildKit formats for it (Go's `%q` and `%v`
//! of the values, which this module reproduces), `# buildkit` after the instructions that make
//! a layer from a state (RUN, COPY, ADD), and the comment `buildkit.dockerfile.v0`.

use super::stages::Ds;
use crate::frontend::dockerfile::units::format_go_duration;
use crate::graph::{Healthcheck, HistoryEntry};

/// The comment of every entry the Dockerfile frontend writes.
pub(super) const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Appends an entry: `layer` when the instruction made a layer; `from_state` for RUN, COPY and
/// ADD (BuildKit appends ` # buildkit` to those).
pub(super) fn commit(d: &mut Ds, msg: String, layer: bool, from_state: bool) {
    let created_by = if from_state { format!("{msg} # buildkit") } else { msg };
    d.image.history.push(HistoryEntry { created_by, comment: Some(HISTORY_COMMENT.into()), empty_layer: !layer });
}

/// Go's `strconv.Quote` for valid UTF-8 (`%q` of a string).
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// One character of a Go quoted literal (the escapes `strconv` uses), quotes already handled.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => {
            let n = c as u32;
            if n < 0x10000 {
                out.push_str(&format!("\\u{n:04x}"));
            } else {
                out.push_str(&format!("\\U{n:08x}"));
            }
        }
        c => out.push(c),
    }
}

/// `%q` of a `[]string`: `["a" "b"]`.
pub(super) fn go_quote_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" "))
}

/// `%v` of a `[]string`: `[a b]`.
pub(super) fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// `%v` of the `map[nat.Port]struct{}` EXPOSE builds: `map[443/tcp:{} 80/tcp:{}]` (keys sorted).
pub(super) fn go_port_map(ports: &std::collections::BTreeSet<String>) -> String {
    format!("map[{}]", ports.iter().map(|p| format!("{p}:{{}}")).collect::<Vec<_>>().join(" "))
}

/// `%q` of a rune (`strconv.QuoteRune`): `'\x03'`, `'A'`.
fn go_quote_rune(n: i64) -> String {
    match u32::try_from(n).ok().and_then(char::from_u32) {
        Some('\'') => "'\\''".into(),
        Some('\\') => "'\\\\'".into(),
        Some(c) => {
            let mut s = String::from("'");
            push_escaped(&mut s, c);
            s.push('\'');
            s
        }
        None => "'\u{fffd}'".into(),
    }
}

/// `HEALTHCHECK %q` of BuildKit's `*HealthConfig`: `&{["CMD" "true"] "5s" "0s" "0s" '\x02'}`.
pub(super) fn healthcheck_message(h: &Healthcheck) -> String {
    let d = |v: Option<i64>| go_quote(&format_go_duration(v.unwrap_or(0)));
    format!(
        "HEALTHCHECK &{{{} {} {} {} {}}}",
        go_quote_list(&h.test),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        go_quote_rune(h.retries.unwrap_or(0))
    )
}

/// BuildKit's `runCommandString`: `|N K=V ...` for the stage's build args (values from the
/// environment when set there, else the arg's own), then the command.
pub(super) fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &[(String, String)],
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in build_args {
        let v = env
            .iter()
            .rev()
            .find(|(ek, _)| ek == k)
            .map(|(_, ev)| ev.clone())
            .or_else(|| v.clone())
            .unwrap_or_default();
        parts.push(format!("{k}={v}"));
    }
    if !parts.is_empty() {
        parts.insert(0, format!("|{}", parts.len()));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(go_quote("a \"b\"\n\\"), "\"a \\\"b\\\"\\n\\\\\"");
        assert_eq!(go_quote_list(&["a".into(), "b c".into()]), "[\"a\" \"b c\"]");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(go_quote_rune(10), "'\\n'");
        assert_eq!(go_quote_rune(65), "'A'");
        let h = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(5_000_000_000),
            retries: Some(2),
            ..Default::default()
        };
        assert_eq!(healthcheck_message(&h), "HEALTHCHECK &{[\"CMD\" \"true\"] \"5s\" \"0s\" \"0s\" '\\x02'}");
        let ports = ["80/tcp".to_owned(), "443/tcp".to_owned()].into_iter().collect();
        assert_eq!(go_port_map(&ports), "map[443/tcp:{} 80/tcp:{}]");
        let b = vec![("A".to_owned(), Some("1".to_owned())), ("B".to_owned(), None)];
        assert_eq!(run_command_string(&["sh".into(), "-c".into(), "x".into()], &b, &[]), "|2 A=1 B= sh -c x");
    }
}

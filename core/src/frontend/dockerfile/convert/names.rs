//! The progress names BuildKit gives a Dockerfile's ops (`[stage-1 2/5] RUN make`): the
//! instruction text with variables shown expanded, the first word upper-cased, and the stage's
//! step counter in front.

use crate::frontend::dockerfile::shell::Lex;

/// BuildKit's `uppercaseCmd`: the first word in upper case.
pub(super) fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((a, b)) => format!("{} {b}", a.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// BuildKit's `processCmdEnv`: `cmd` with variables expanded by `lex`, or as written when
/// expansion fails.
pub(super) fn process_cmd_env(lex: &Lex, cmd: &str, env: &[(String, String)]) -> String {
    lex.process_word(cmd, &env.to_vec()).unwrap_or_else(|_| cmd.to_owned())
}

/// The `[stage N/M] ` prefix of a stage's op names (BuildKit's `prefixCommand`): the counter is
/// padded to the width of the total, and advanced by each call.
pub(super) fn prefix_command(stage_name: &str, index: &mut usize, total: usize, s: &str) -> String {
    if total == 0 {
        return s.to_owned();
    }
    let mut out = String::from("[");
    if !stage_name.is_empty() {
        out.push_str(stage_name);
        out.push(' ');
    }
    *index += 1;
    let width = total.to_string().len();
    out.push_str(&format!("{:>width$}/{total}] ", *index));
    out + s
}

/// BuildKit's `summarizeHeredoc`: the first line of a heredoc, `...` when there are more.
pub(super) fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let doc = doc.replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().to_owned();
    if lines.next().is_some() {
        first + "..."
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_buildkit() {
        let mut i = 0;
        assert_eq!(prefix_command("stage-1", &mut i, 12, "RUN x"), "[stage-1  1/12] RUN x");
        assert_eq!(prefix_command("", &mut i, 3, "COPY a b"), "[2/3] COPY a b");
        assert_eq!(prefix_command("", &mut i, 0, "FROM x"), "FROM x");
        assert_eq!(uppercase_cmd("run echo hi"), "RUN echo hi");
        assert_eq!(summarize_heredoc("\n echo a\necho b\n"), "echo a...");
        let env = vec![("A".to_owned(), "1".to_owned())];
        let mut raw = Lex::new('\\');
        raw.raw_quotes = true;
        raw.skip_unset_env = true;
        assert_eq!(process_cmd_env(&raw, "RUN echo \"$A\" $B", &env), "RUN echo \"1\" $B");
    }
}

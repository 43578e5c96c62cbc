//! Heredocs (`<<EOF`, `<<-EOF`, `3<<EOF`, `<<"EOF"`): recognising heredoc words in an
//! instruction line, and BuildKit's rules for them (a quoted delimiter disables expansion of
//! the content, `-` strips leading tabs).

use std::collections::HashMap;

use super::shell::Lex;

/// A heredoc attached to an instruction: its delimiter and the lines up to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF` for `<<"EOF"`); also the file name a
    /// `COPY <<EOF /dst` creates.
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when none.
    pub file_descriptor: u32,
    /// Whether variables in the content are expanded (false when any part of the delimiter
    /// was quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from content lines (see [`chomp_heredoc_content`]).
    pub chomp: bool,
    /// The lines between the instruction and the delimiter, each with its line ending.
    pub content: String,
}

/// The heredoc `word` introduces (`<<EOF`, `3<<-"EOF"`), `None` when it is not one (including
/// `<<EOF sh`, which is several words). An unterminated quote in the delimiter is an error.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    // ^(\d*)<<(-?)([^<]*)$
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else { return Ok(None) };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // An out-of-range descriptor reads as the largest value, as Go's ParseUint reports it.
    let fd = if digits == 0 { 0 } else { word[..digits].parse::<u32>().unwrap_or(u32::MAX) };

    // Lexing with and without quote removal: if the quote counts differ, part of the
    // delimiter was quoted and the content is taken literally.
    let empty: HashMap<String, String> = HashMap::new();
    let mut lex = Lex::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &empty).map_err(|e| e.0)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &empty).map_err(|e| e.0)?;
    if raw.len() != words.len() {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let word = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&word) == quotes(&raw[0]);
    Ok(Some(Heredoc { name: word, file_descriptor: fd, expand, chomp, content: String::new() }))
}

/// The heredocs an instruction line opens, in order (`COPY <<A <<B /dst` opens two). The line
/// is split into words as BuildKit does (always with `\` as escape, quotes kept), so a quoted
/// `"<<EOF"` is not a heredoc.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let empty: HashMap<String, String> = HashMap::new();
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // A line that does not lex (an open quote) simply has no heredocs.
    let words = lex.process_words(line, &empty).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// `content` with the leading tabs of every line removed (the `<<-` form).
pub fn chomp_heredoc_content(content: &str) -> String {
    content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_words() {
        for src in ["<<EOF", "<<'EOF'", "<<\"EOF\"", "<<-EOF", "<<-'EOF'", "<<-\"EOF\"", "<<EO\"F\""] {
            assert_eq!(parse_heredoc(src).unwrap().unwrap().name, "EOF", "{src}");
        }
        for src in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(src).is_err(), "{src}");
        }
        for src in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(src).unwrap(), None, "{src}");
        }
        let h = parse_heredoc("3<<-'EOF'").unwrap().unwrap();
        assert_eq!((h.file_descriptor, h.chomp, h.expand), (3, true, false));
        assert!(parse_heredoc("<<EOF").unwrap().unwrap().expand);
    }

    #[test]
    fn heredocs_in_lines() {
        let names =
            |line: &str| -> Vec<String> { heredocs_from_line(line).unwrap().into_iter().map(|h| h.name).collect() };
        assert_eq!(names("RUN <<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<-EOF"), ["EOF"]);
        assert_eq!(names("RUN <<'EOF'"), ["EOF"]);
        assert_eq!(names("RUN 4<<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
    }

    #[test]
    fn chomp() {
        assert_eq!(chomp_heredoc_content("\thello\n\tworld\n"), "hello\nworld\n");
        assert_eq!(chomp_heredoc_content("\t\ta\n b\n\t"), "a\n b\n");
    }
}

//! `.dockerignore` files (moby's `dockerignore.ReadAll`): one pattern a line, `#` comments,
//! surrounding spaces trimmed, `!` exceptions, each pattern cleaned (`filepath.Clean`) and made
//! relative to the context root.

/// The exclude patterns of a `.dockerignore` file's text.
pub fn read_dockerignore(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        // A comment only at the very start of the line, as moby's reader.
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = if pattern.is_empty() { String::new() } else { crate::graph::state::clean_path(pattern) };
        if p.len() > 1 && p.starts_with('/') {
            p.remove(0);
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_moby() {
        let text = "# comment\n  *.log \n\n!keep.log\n/abs/./x/\n ! spaced\n#x\nsub/../y\n";
        assert_eq!(read_dockerignore(text), ["*.log", "!keep.log", "abs/x", "!spaced", "y"]);
    }
}

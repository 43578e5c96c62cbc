//! BuildKit's parser tests (parser_test.go, parser_heredoc_test.go) on their fixture files.

use std::path::PathBuf;

use super::*;
use crate::frontend::dockerfile::heredoc::Heredoc;

fn fixtures(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfile/parser").join(dir)
}

fn subdirs(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(fixtures(dir)).unwrap().map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn testfiles_dump_as_buildkit() {
    let dirs = subdirs("testfiles");
    assert!(dirs.len() >= 30);
    for dir in dirs {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(dir.join("result")).unwrap();
        let ast = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(ast.dump() + "\n", expected, "{}", dir.display());
    }
}

#[test]
fn negative_testfiles_fail() {
    for dir in subdirs("testfiles-negative") {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        assert!(parse(&text).is_err(), "{}", dir.display());
    }
    assert_eq!(parse("").unwrap_err().message, "file with no instructions");
    assert_eq!(parse("# only\n\n# comments\n").unwrap_err().message, "file with no instructions");
    assert_eq!(parse("ENV A\n").unwrap_err().to_string(), "Dockerfile:1: ENV must have two arguments");
}

#[test]
fn line_numbers() {
    let text = std::fs::read_to_string(fixtures("testfile-line/Dockerfile")).unwrap();
    let ast = parse(&text).unwrap();
    let got: Vec<(usize, usize)> = ast.children.iter().map(|c| (c.location.start, c.location.end)).collect();
    assert_eq!(got, [(5, 5), (11, 12), (17, 31)]);
    assert_eq!(ast.directive("escape"), Some("\\"));
}

#[test]
fn warns_on_empty_continuation_lines() {
    let text = "
FROM alpine:3.6

RUN valid \\
    continuation

RUN something \\

    following \\

    more

RUN another \\

    thing

RUN non-indented \\
# this is a comment
   after-comment

RUN indented \\
    # this is an indented comment
    comment
\t";
    let ast = parse(text).unwrap();
    assert_eq!(ast.warnings.len(), 2);
    assert!(ast.warnings[0].short.contains("Empty continuation line found in"));
    assert!(ast.warnings[0].short.contains("RUN something     following     more"));
    assert!(ast.warnings[1].short.contains("RUN another     thing"));
    assert!(ast.warnings[0].detail.contains("will become errors in a future release"));
    assert_eq!(ast.warnings[0].location, Location::line(11));
    assert_eq!(ast.warning_lines().len(), 3);
    assert_eq!(ast.children[4].args, ["non-indented    after-comment"]);
    assert_eq!(ast.children[5].args, ["indented     comment"]);
}

#[test]
fn too_long_lines_fail_like_the_scanner() {
    let label = "a".repeat(65536);
    let text = format!("\n\t\tFROM image\n\t\tLABEL test={label}\n");
    assert_eq!(parse(&text).unwrap_err().message, "dockerfile line greater than max allowed size of 65535");
    let ok = format!("FROM image\nLABEL a={}\n", "a".repeat(65535 - 8));
    assert!(parse(&ok).is_ok());
}

#[test]
fn directives_and_escape() {
    let ast = parse("# syntax=docker/dockerfile:1.5\n# escape=`\nFROM a\nRUN echo \\\nRUN b `\n  c\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!(ast.directive("syntax"), Some("docker/dockerfile:1.5"));
    assert_eq!(ast.dump(), "(from \"a\")\n(run \"echo \\\\\")\n(run \"b   c\")");
    // Directives only count at the top.
    let ast = parse("FROM a\n# escape=`\nRUN b `\n").unwrap();
    assert_eq!(ast.escape, '\\');
    assert!(ast.directives.is_empty());
    let e = parse("# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:1: invalid escape token 'x' does not match ` or \\");
    let e = parse("# escape=`\n# escape=\\\nFROM a\n").unwrap_err();
    assert_eq!(e.message, "only one escape parser directive can be used");
    // A byte-order mark is skipped; CRLF line endings are handled.
    let ast = parse("\u{feff}# escape=`\r\nFROM a `\r\n  b\r\n").unwrap();
    assert_eq!(ast.dump(), "(from \"a\" \"b\")");
}

#[test]
fn comments_before_instructions() {
    let ast = parse("# foo sets foo\nARG foo=bar\n\n# base defines\n#\n# first stage\nFROM x\n").unwrap();
    assert_eq!(ast.children[0].comments, ["foo sets foo"]);
    assert_eq!(ast.children[1].comments, ["first stage"]);
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool, fd: u32) -> Heredoc {
    Heredoc { name: name.into(), content: content.into(), expand, chomp, file_descriptor: fd }
}

#[test]
fn extracts_heredocs() {
    let text = r#"
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN "<<NOHEREDOC"

RUN <<INDENT
	foo
	bar
INDENT

RUN <<-UNINDENT
	baz
	quux
UNINDENT

RUN <<-UNINDENT2
	baz
	quux
	UNINDENT2

RUN <<-EXPAND
	expand $NAME
EXPAND

RUN <<-'NOEXPAND'
	don't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
"foo"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\'f
echo foo
eo'f

RUN <<'e'o\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF
	"#;
    let expected: Vec<Vec<Heredoc>> = vec![
        vec![],
        vec![],
        vec![],
        vec![],
        vec![heredoc("EMPTY", "", true, false, 0)],
        vec![heredoc("EMPTY2", "", true, false, 3)],
        vec![],
        vec![heredoc("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![heredoc("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![heredoc("UNINDENT2", "\tbaz\n\tquux\n", true, true, 0)],
        vec![heredoc("EXPAND", "\texpand $NAME\n", true, true, 0)],
        vec![heredoc("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)],
        vec![heredoc("COPY", "echo hello world\necho foo bar\n", true, false, 0)],
        vec![heredoc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            0,
        )],
        vec![heredoc("MOUNT", "echo hello\n", true, false, 0)],
        vec![heredoc("FILE1", "content 1\n", true, false, 0), heredoc("FILE2", "content 2\n", true, false, 0)],
        vec![heredoc("EOF", "\"foo\"\n'bar'\n", true, false, 0)],
        vec![heredoc("X", "Y\n", true, false, 0), heredoc("Y", "X\n", true, false, 0)],
        vec![heredoc("COMPLEX", "print('hello world')\n", true, false, 0)],
        vec![heredoc("file.txt", "hello world\n", true, false, 0)],
        vec![heredoc("eof", "echo foo\n", false, false, 0)],
        vec![heredoc("eo'f", "echo foo\n", true, false, 0)],
        vec![heredoc("eo'f", "echo foo\n", false, false, 0)],
        vec![heredoc("one two", "echo bar\n", false, false, 0)],
        vec![heredoc("$EOF", "", true, false, 0)],
    ];
    let ast = parse(text).unwrap();
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&ast.children[i + 1].heredocs, want, "instruction {}", i + 1);
    }
    // The heredoc body belongs to the instruction's line range.
    let copy = ast.children.iter().find(|c| c.original == "COPY <<FILE1 <<FILE2 /dest").unwrap();
    assert_eq!(copy.location.end - copy.location.start, 4);
}

#[test]
fn json_forms_take_no_heredocs() {
    let ast = parse("\nFROM alpine:3.6\n\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n\t").unwrap();
    for i in 1..=3 {
        assert!(ast.children[i].heredocs.is_empty());
    }
    let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
    assert_eq!(e.message, "unterminated heredoc");
    assert_eq!(e.location, Some(Location::new(2, 3)));
    let ast = parse("FROM a\nONBUILD RUN <<EOF\necho\nEOF\n").unwrap();
    assert_eq!(ast.children[1].heredocs[0].content, "echo\n");
}

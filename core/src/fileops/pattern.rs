//! `.dockerignore`-style path patterns (moby/patternmatcher semantics) and the filtered, sorted
//! directory walk shared by copies, local sources and checksums.
//!
//! Syntax: `*` (any run of non-`/` characters), `?` (one non-`/` character), `[...]` / `[^...]`
//! classes with ranges, `\` escapes, `**` (any number of directories, even none), and a leading
//! `!` that turns a pattern into an exception. Patterns are cleaned paths relative to the walked
//! root (a leading `/` is ignored). A pattern matches a path when it matches the path itself or
//! one of its parent directories; the last matching pattern decides.

use super::resolve::{clean_abs, resolve_in_root, resolve_wildcards};
use crate::error::{Error, ErrorKind, IoContext, Result};
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    One,
    /// `[...]`: one non-`/` character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: `(.*/)?`.
    DoubleStarSlash,
    /// `**` at the end: `.*`.
    DoubleStarEnd,
}

/// A compiled glob: the pattern language of this module (or of Go's `filepath.Match` for single
/// components, where `**` is just two stars).
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    /// The pattern when it has no wildcard (the common case), matched without the DP table.
    literal: Option<Vec<char>>,
}

impl Glob {
    fn compile(p: &str, double_star: bool) -> std::result::Result<Glob, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if double_star && chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i == chars.len() { Tok::DoubleStarEnd } else { Tok::DoubleStarSlash });
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => {
                    let Some(&e) = chars.get(i) else {
                        return Err("trailing backslash escapes nothing".into());
                    };
                    i += 1;
                    toks.push(Tok::Lit(e));
                }
                '[' => {
                    let mut negated = false;
                    if chars.get(i) == Some(&'^') {
                        negated = true;
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        match chars.get(i) {
                            None => return Err("unterminated character class '['".into()),
                            Some(']') if !ranges.is_empty() => {
                                i += 1;
                                break;
                            }
                            _ => {}
                        }
                        let lo = class_char(&chars, &mut i)?;
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') {
                            i += 1;
                            hi = class_char(&chars, &mut i)?;
                            if hi < lo {
                                return Err(format!("character range {lo}-{hi} is reversed"));
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let literal = toks.iter().map(|t| if let Tok::Lit(c) = t { Some(*c) } else { None }).collect();
        Ok(Glob { toks, literal })
    }

    /// A `filepath.Match` glob for one path component (no `/`, `**` means `*`).
    pub(crate) fn single_component(p: &str) -> std::result::Result<Glob, String> {
        Glob::compile(p, false)
    }

    /// Whether the whole of `s` matches.
    pub(crate) fn matches(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        self.run(&chars, false)
    }

    /// `prefix == false`: the glob matches exactly `s`. `prefix == true`: some string starting
    /// with `s` could match (used to decide whether a directory's descendants can match).
    fn run(&self, s: &[char], prefix: bool) -> bool {
        let (m, n) = (self.toks.len(), s.len());
        if let Some(lit) = &self.literal {
            return if prefix { lit.starts_with(s) } else { lit.as_slice() == s };
        }
        // dp[i][j]: toks[i..] matches s[j..] (or a continuation of it in prefix mode).
        let w = n + 1;
        let mut dp = vec![false; (m + 1) * w];
        dp[m * w + n] = true;
        if prefix {
            for i in 0..m {
                dp[i * w + n] = true;
            }
        }
        for i in (0..m).rev() {
            // any_slash: exists k >= j with s[k] == '/' && dp[i+1][k+1]
            let mut any_slash = false;
            for j in (0..=n).rev() {
                let next = |jj: usize| dp[(i + 1) * w + jj];
                let v = if j == n {
                    prefix || matches!(self.toks[i], Tok::Star | Tok::DoubleStarSlash | Tok::DoubleStarEnd) && next(n)
                } else {
                    let c = s[j];
                    match &self.toks[i] {
                        Tok::Lit(l) => *l == c && next(j + 1),
                        Tok::One => c != '/' && next(j + 1),
                        Tok::Class { negated, ranges } => {
                            c != '/'
                                && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
                                && next(j + 1)
                        }
                        Tok::Star => next(j) || (c != '/' && dp[i * w + j + 1]),
                        Tok::DoubleStarEnd => next(j) || dp[i * w + j + 1],
                        Tok::DoubleStarSlash => {
                            any_slash = any_slash || (c == '/' && next(j + 1));
                            next(j) || any_slash
                        }
                    }
                };
                dp[i * w + j] = v;
            }
        }
        dp[0]
    }
}

fn class_char(chars: &[char], i: &mut usize) -> std::result::Result<char, String> {
    match chars.get(*i) {
        None => Err("unterminated character class '['".into()),
        Some('-') | Some(']') => Err("character class has an empty range or a stray '-' or ']'".into()),
        Some('\\') => {
            let c = chars.get(*i + 1).copied().ok_or("unterminated character class '['")?;
            *i += 2;
            Ok(c)
        }
        Some(&c) => {
            *i += 1;
            Ok(c)
        }
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    glob: Glob,
    exclusion: bool,
    /// The pattern cleaned to `.`: it matches every path.
    match_all: bool,
}

/// An ordered list of patterns where the last matching one decides.
#[derive(Debug, Clone)]
struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    fn new(raw: &[String]) -> Result<Option<PatternSet>> {
        let mut patterns = Vec::new();
        for orig in raw {
            let p = orig.trim();
            if p.is_empty() {
                continue;
            }
            let (exclusion, body) = match p.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, p),
            };
            if exclusion && body.is_empty() {
                return Err(bad_pattern(orig, "a lone \"!\" excepts nothing"));
            }
            let cleaned = clean_abs(body);
            let rel = cleaned.trim_start_matches('/');
            let glob = Glob::compile(rel, true).map_err(|m| bad_pattern(orig, &m))?;
            patterns.push(Pattern { glob, exclusion, match_all: rel.is_empty() });
        }
        Ok(if patterns.is_empty() { None } else { Some(PatternSet { patterns }) })
    }

    /// moby's `MatchesOrParentMatches`.
    fn matches(&self, path: &[char]) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let hit = p.match_all
                || p.glob.run(path, false)
                || path.iter().enumerate().any(|(k, c)| *c == '/' && p.glob.run(&path[..k], false));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a pattern of the given polarity could match a path below directory `dir`.
    fn descendant_may_match(&self, dir: &[char], exclusion: bool) -> bool {
        let mut with_slash = dir.to_vec();
        with_slash.push('/');
        self.patterns.iter().any(|p| p.exclusion == exclusion && (p.match_all || p.glob.run(&with_slash, true)))
    }
}

fn bad_pattern(p: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Definition,
        format!(
            "invalid path pattern {p:?}: {why}; patterns accept *, ?, [...] classes, ** across directories, \\ escapes and a leading ! for exceptions"
        ),
    )
}

/// What a walk does with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The path is selected (a selected directory is walked too).
    Include,
    /// The path and everything below it are left out.
    Exclude,
    /// The directory itself is not selected, but paths below it may be; it is kept only as the
    /// parent of selected descendants.
    ExcludeButDescend,
}

/// Include and exclude pattern lists, as in BuildKit's local sources and copies: a path is
/// selected when it matches the includes (or there are none) and does not match the excludes.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    raw_include: Vec<String>,
    raw_exclude: Vec<String>,
    include: Option<PatternSet>,
    exclude: Option<PatternSet>,
}

#[derive(PartialEq)]
enum Tri {
    No,
    Partial,
    Full,
}

impl PatternMatcher {
    /// Compiles the pattern lists; a malformed pattern is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PatternMatcher> {
        Ok(PatternMatcher {
            raw_include: include.to_vec(),
            raw_exclude: exclude.to_vec(),
            include: PatternSet::new(include)?,
            exclude: PatternSet::new(exclude)?,
        })
    }

    /// True when the matcher selects everything.
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Decides about `rel_path` (relative to the walked root, `/`-separated, no leading `/`).
    pub fn is_included(&self, rel_path: &str, is_dir: bool) -> Decision {
        if self.is_empty() {
            return Decision::Include;
        }
        let path: Vec<char> = rel_path.trim_matches('/').chars().collect();
        if path.is_empty() {
            return Decision::Include;
        }
        let inc = match &self.include {
            None => Tri::Full,
            Some(set) if set.matches(&path) => Tri::Full,
            Some(set) if is_dir && set.descendant_may_match(&path, false) => Tri::Partial,
            Some(_) => Tri::No,
        };
        if inc == Tri::No {
            return Decision::Exclude;
        }
        let exc = match &self.exclude {
            Some(set) if set.matches(&path) => {
                if is_dir && set.descendant_may_match(&path, true) {
                    Tri::Partial
                } else {
                    Tri::Full
                }
            }
            _ => Tri::No,
        };
        match (inc, exc) {
            (_, Tri::Full) => Decision::Exclude,
            (Tri::Full, Tri::No) => Decision::Include,
            _ if is_dir => Decision::ExcludeButDescend,
            _ => Decision::Exclude,
        }
    }

    fn with_extra_includes(&self, extra: Vec<String>) -> Result<PatternMatcher> {
        let mut inc = self.raw_include.clone();
        inc.extend(extra);
        PatternMatcher::new(&inc, &self.raw_exclude)
    }
}

/// One selected path of a walk.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Path relative to the walked root, `/`-separated, no leading `/`.
    pub rel: String,
    /// The host path.
    pub path: PathBuf,
    /// `lstat` metadata (symlinks are not followed).
    pub meta: Metadata,
}

/// Walks `root` (not following symlinks below it) and returns every selected path, sorted by
/// path components (a directory comes right before its contents). A directory that is only
/// [`Decision::ExcludeButDescend`] appears only when something below it is selected.
///
/// `follow_paths` (BuildKit's FollowPaths) name paths whose symlinks must be resolved: each path
/// and the targets of its symlinks (resolved inside `root`) are added to the include patterns, so
/// with no include patterns only they are selected.
pub fn walk_matching(root: &Path, matcher: &PatternMatcher, follow_paths: &[String]) -> Result<Vec<WalkEntry>> {
    let extended;
    let matcher = if follow_paths.is_empty() {
        matcher
    } else {
        extended = matcher.with_extra_includes(follow_targets(root, follow_paths)?)?;
        &extended
    };
    let mut out = Vec::new();
    walk_dir(root, "", matcher, &mut out)?;
    Ok(out)
}

fn walk_dir(dir: &Path, rel: &str, matcher: &PatternMatcher, out: &mut Vec<WalkEntry>) -> Result<()> {
    let mut names: Vec<OsString> = Vec::new();
    for ent in std::fs::read_dir(dir).with_path("walk: cannot read directory", dir)? {
        names.push(ent.with_path("walk: cannot read directory", dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let child_rel = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        let meta = std::fs::symlink_metadata(&path).with_path("walk: cannot stat", &path)?;
        let is_dir = meta.is_dir();
        match matcher.is_included(&child_rel, is_dir) {
            Decision::Exclude => {}
            Decision::Include => {
                out.push(WalkEntry { rel: child_rel.clone(), path: path.clone(), meta });
                if is_dir {
                    walk_dir(&path, &child_rel, matcher, out)?;
                }
            }
            Decision::ExcludeButDescend => {
                let at = out.len();
                walk_dir(&path, &child_rel, matcher, out)?;
                if out.len() > at {
                    out.insert(at, WalkEntry { rel: child_rel, path, meta });
                }
            }
        }
    }
    Ok(())
}

/// The follow paths plus the in-root targets of symlinks along them, relative to `root`.
fn follow_targets(root: &Path, follow_paths: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for fp in follow_paths {
        for p in resolve_wildcards(root, fp)? {
            out.push(p.trim_start_matches('/').to_owned());
            let resolved = resolve_in_root(root, &p, true)?;
            if let Ok(rel) = resolved.strip_prefix(root) {
                let rel = rel.to_string_lossy().into_owned();
                if !rel.is_empty() && !out.contains(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    // An empty list would otherwise mean "no include filter": select nothing instead.
    if out.is_empty() {
        out.push("\u{0}nothing".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(inc: &[&str], exc: &[&str]) -> PatternMatcher {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PatternMatcher::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::compile(p, true).unwrap();
        assert!(g("*.txt").matches("a.txt"));
        assert!(!g("*.txt").matches("d/a.txt"));
        assert!(g("**/*.txt").matches("d/e/a.txt"));
        assert!(g("**/*.txt").matches("a.txt"));
        assert!(g("a/**").matches("a/b/c"));
        assert!(!g("a/**").matches("a"));
        assert!(g("a/**/b").matches("a/b"));
        assert!(g("a/**/b").matches("a/x/y/b"));
        assert!(g("f?o").matches("foo"));
        assert!(!g("f?o").matches("f/o"));
        assert!(g("[a-c]x").matches("bx"));
        assert!(!g("[^a-c]x").matches("bx"));
        assert!(g("\\*").matches("*"));
        assert!(!g("\\*").matches("a"));
        for bad in ["[", "[]", "a\\", "[a-]", "[z-a]"] {
            assert!(Glob::compile(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn decisions() {
        let x = m(&[], &["dir", "!dir/keep"]);
        assert_eq!(x.is_included("dir", true), Decision::ExcludeButDescend);
        assert_eq!(x.is_included("dir/keep", false), Decision::Include);
        assert_eq!(x.is_included("dir/other", false), Decision::Exclude);
        assert_eq!(x.is_included("other", false), Decision::Include);

        let x = m(&[], &["*.log", "**/tmp"]);
        assert_eq!(x.is_included("a.log", false), Decision::Exclude);
        assert_eq!(x.is_included("d/a.log", false), Decision::Include);
        assert_eq!(x.is_included("d/e/tmp", true), Decision::Exclude);
        assert_eq!(x.is_included("d/e/tmp/f", false), Decision::Exclude);

        let x = m(&["src/**/*.rs"], &[]);
        assert_eq!(x.is_included("src", true), Decision::ExcludeButDescend);
        assert_eq!(x.is_included("src/a/b.rs", false), Decision::Include);
        assert_eq!(x.is_included("src/a/b.c", false), Decision::Exclude);
        assert_eq!(x.is_included("doc", true), Decision::Exclude);

        let x = m(&["/app/"], &["app/node_modules"]);
        assert_eq!(x.is_included("app", true), Decision::Include);
        assert_eq!(x.is_included("app/x/y", false), Decision::Include);
        assert_eq!(x.is_included("app/node_modules", true), Decision::Exclude);
    }

    #[test]
    fn bad_pattern_named() {
        let e = PatternMatcher::new(&[], &["a[".into()]).unwrap_err();
        assert!(e.to_string().contains("\"a[\""), "{e}");
        assert!(PatternMatcher::new(&["!".into()], &[]).is_err());
    }
}

//! COPY and ADD (BuildKit's `dispatchCopy`): one FileOp with a copy action per source — local
//! paths with wildcards, directory contents, symlink following and (ADD) archive unpacking;
//! `http(s)` URLs through an HTTP source (ADD); heredoc files through an inline mkfile — and
//! `--link` as a merge of the stage with the copy onto scratch.

use super::dispatch::{join_root, state_env, Env};
use super::history::commit;
use super::names::{prefix_command, process_cmd_env, uppercase_cmd};
use super::stages::Ds;
use crate::frontend::dockerfile::instructions::SourcesAndDest;
use crate::graph::{CopyOptions, HttpOptions, MkfileOptions, State};

/// One COPY or ADD to dispatch.
pub(super) struct CopyConfig<'a> {
    pub files: &'a SourcesAndDest,
    pub source: State,
    pub is_add: bool,
    pub chown: &'a str,
    pub chmod: &'a str,
    pub link: bool,
    pub code: &'a str,
}

/// An `http://` or `https://` source.
pub(super) fn is_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// What BuildKit's `gitutil.ParseGitRef` takes for a git repository (not a local path).
fn is_git_ref(s: &str) -> bool {
    let url_git = |u: &str| {
        let path = u.split(['#', '?']).next().unwrap_or(u);
        path.ends_with(".git")
    };
    s.starts_with("git://")
        || s.starts_with("git@")
        || s.starts_with("ssh://")
        || (is_http(s) && url_git(s))
        || ((s.starts_with("github.com/") || s.starts_with("gitlab.com/")) && !s.contains(".."))
}

/// The base name of a URL's path (`__unnamed__` when it has none), as BuildKit names downloads.
fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let base = crate::graph::state::clean_path(if path.is_empty() { "." } else { path });
    match base.rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." => b.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

/// Dispatches a COPY or ADD.
pub(super) fn dispatch_copy(d: &mut Ds, cfg: CopyConfig, env: &mut Env) -> Result<(), String> {
    let dest_path = &cfg.files.dest_path;
    let rel = if dest_path.starts_with('/') { dest_path.clone() } else { format!("{}/{dest_path}", d.state.cwd()) };
    let mut dest = join_root(&rel);
    if dest_path == "." || dest_path.is_empty() || dest_path.ends_with('/') {
        dest.push('/');
    }
    let user = (!cfg.chown.is_empty()).then(|| cfg.chown.to_owned());
    // An invalid --chmod is ignored, as BuildKit's `strconv.ParseUint` failure is.
    let mode = if cfg.chmod.is_empty() { None } else { u32::from_str_radix(cfg.chmod, 8).ok() };

    // `--link` (without `--chmod`, which BuildKit does not link) copies onto scratch and merges.
    let linked = cfg.link && cfg.chmod.is_empty();
    // The actions are chained onto `base` into one FileOp.
    let base = if linked { State::scratch() } else { d.state.clone().seal() };
    let mut st: Option<State> = None;
    let mut add = |src_state: &State, src: &str, o: CopyOptions| {
        let on = st.take().unwrap_or_else(|| base.clone());
        st = Some(on.copy(src_state, src, &dest, o));
    };
    for src in &cfg.files.source_paths {
        if is_git_ref(src) {
            if !cfg.is_add {
                return Err("source can't be a git ref for COPY".into());
            }
            return Err("instruction ADD <git ref> requires the labs channel".into());
        }
        if is_http(src) {
            if !cfg.is_add {
                return Err("source can't be a URL for COPY".into());
            }
            let f = url_file_name(src);
            let http = State::http(src.clone(), HttpOptions { filename: Some(f.clone()), ..Default::default() })
                .with_description(super::base::COMMAND_DESCRIPTION, "");
            add(&http, &f, CopyOptions { mode, create_dest_path: true, user: user.clone(), ..Default::default() });
        } else {
            let o = CopyOptions {
                mode,
                follow_symlinks: true,
                dir_copy_contents: true,
                attempt_unpack: cfg.is_add,
                create_dest_path: true,
                allow_wildcard: true,
                allow_empty_wildcard: true,
                user: user.clone(),
                ..Default::default()
            };
            add(&cfg.source, &join_root(src), o);
        }
    }
    for content in &cfg.files.source_contents {
        let inline = State::scratch()
            .mkfile(&content.path, 0o664, content.data.clone().into_bytes(), MkfileOptions::default())
            .with_custom_name("[internal] preparing inline document");
        add(
            &inline,
            &content.path,
            CopyOptions { mode, create_dest_path: true, user: user.clone(), ..Default::default() },
        );
    }
    let Some(copied) = st else {
        return Err("no sources to copy".into());
    };

    let vars = state_env(d);
    let name = uppercase_cmd(&process_cmd_env(&env.lex, cfg.code, &vars));
    if linked {
        // BuildKit names only the merge (`LINK COPY ...`); the copy onto scratch is unnamed, and
        // the step counter advances once.
        let merge_name = prefix_command(&d.name, &mut d.cmd_index, d.cmd_total, &format!("LINK {name}"));
        let two = !d.state.is_scratch();
        let merged = State::merge(vec![d.state.clone(), copied]);
        let merged = if two { merged.with_custom_name(merge_name) } else { merged };
        d.state = merged.with_meta_of(&d.state).seal();
    } else {
        let name = prefix_command(&d.name, &mut d.cmd_index, d.cmd_total, &name);
        let mut s = copied.with_custom_name(name);
        if d.ignore_cache {
            s = s.ignore_cache();
        }
        d.state = s.with_meta_of(&d.state);
    }
    let mut msg = String::from(if cfg.is_add { "ADD" } else { "COPY" });
    for src in &cfg.files.source_paths {
        msg.push_str(&format!(" {src}"));
    }
    for content in &cfg.files.source_contents {
        msg.push_str(&format!(" <<{}", content.path));
    }
    msg.push_str(&format!(" {}", cfg.files.dest_path));
    commit(d, msg, true, true);
    Ok(())
}

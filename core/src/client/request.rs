//! One solve on a daemon: [`SolveOptions`] become a `Control.Solve` request (the exporter and
//! its attributes, cache exports and imports, entitlements), a session serves the locals,
//! secrets and the client-side output, and `Control.Status` is followed beside the solve.
//!
//! BuildKit v0.11's API carries one exporter per solve, so a connected solve takes at most one
//! output (and one `type=local` cache export: the response names one cache manifest). Local
//! cache directories are served to the daemon as content stores ([`super::content`]), and so is
//! a `type=oci,tar=false` output's directory (store `export`, tagged here after the solve).

use super::content::{self, Stores};
use super::services::{OutputTarget, SessionServices};
use super::session::{random_id, ClientSession};
use super::status::StatusFollower;
use super::{status_error, Client, Target};
use crate::api::control::{CacheOptions, CacheOptionsEntry, SolveRequest, StatusRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::options::{csv, CacheExportSpec, CacheImportSource, CacheImportSpec, CacheTarget, OutputSpec};
use crate::solver::{SolveOptions, SolveResult};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The exporter response key naming an exported cache's manifest descriptor (BuildKit's).
pub const CACHE_MANIFEST_KEY: &str = "cache.manifest";

/// How long the status stream may trail the solve's answer (its last updates).
const STATUS_DRAIN: Duration = Duration::from_secs(10);

fn unsupported(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, msg)
}

/// A CSV option's attributes without its `type`.
pub(crate) fn attrs_of(csv_form: &str) -> Result<(String, BTreeMap<String, String>)> {
    let mut kind = String::new();
    let mut attrs = BTreeMap::new();
    for (k, v) in csv::parse_csv(csv_form)? {
        if k == "type" {
            kind = v;
        } else {
            attrs.insert(k, v);
        }
    }
    Ok((kind, attrs))
}

/// The exporter of the request and where its client-side part goes.
fn exporter(opts: &SolveOptions) -> Result<(String, BTreeMap<String, String>, Option<OutputTarget>)> {
    let out = match opts.outputs.as_slice() {
        [] => return Ok((String::new(), BTreeMap::new(), None)),
        [one] => one,
        more => {
            return Err(unsupported(format!(
                "a solve through a daemon takes one output (BuildKit's API carries one exporter per solve); {} given",
                more.len()
            )))
        }
    };
    let (kind, mut attrs) = attrs_of(&out.to_csv())?;
    let target = match out {
        OutputSpec::Local { dest } => Some(OutputTarget::Dir(dest.clone())),
        OutputSpec::Tar { dest } => Some(OutputTarget::File(dest.clone())),
        OutputSpec::Oci { dest, tar: true, .. } => Some(OutputTarget::File(dest.clone())),
        OutputSpec::Oci { dest, tar: false, .. } => Some(OutputTarget::Layout(dest.clone())),
        OutputSpec::Image { .. } => None,
    };
    // The destination is ours; the daemon only sends.
    attrs.remove("dest");
    if matches!(out, OutputSpec::Oci { .. } | OutputSpec::Image { .. })
        && !attrs.contains_key("containerimage.config")
        && opts.image_config != Default::default()
    {
        attrs.insert("containerimage.config".into(), opts.image_config.to_oci_json().to_string());
    }
    if let Some(epoch) = opts.source_date_epoch {
        attrs.entry("source-date-epoch".into()).or_insert_with(|| epoch.to_string());
    }
    Ok((kind, attrs, target))
}

/// The request's cache options, the content stores serving its local directories, and the
/// local export to tag after the solve (its directory and tag).
type CachePlan = (Option<CacheOptions>, Stores, Option<(PathBuf, String)>);

fn cache_entries(opts: &SolveOptions) -> Result<CachePlan> {
    let mut stores = Stores::default();
    let mut tag_after = None;
    if opts.cache_exports.is_empty() && opts.cache_imports.is_empty() {
        return Ok((None, stores, tag_after));
    }
    let mut cache = CacheOptions::default();
    for e in &opts.cache_exports {
        let mut entry = entry(&CacheExportSpec::to_csv(e))?;
        if let CacheTarget::Local { dir, tag } = &e.target {
            if tag_after.is_some() {
                return Err(unsupported(
                    "a solve through a daemon takes one cache export of type=local (the daemon answers with one \
                     cache manifest)",
                ));
            }
            content::open_layout(dir)?;
            entry.attrs.insert("dest".into(), dir.display().to_string());
            stores.0.insert(content::store_id(dir), dir.clone());
            tag_after = Some((dir.clone(), tag.clone()));
        }
        cache.exports.push(entry);
    }
    for i in &opts.cache_imports {
        let CacheImportSource::Local { dir, tag, digest } = &i.source else {
            cache.imports.push(entry(&CacheImportSpec::to_csv(i))?);
            continue;
        };
        // As buildctl does: the daemon is told the manifest's digest, read from index.json here.
        let digest = match content::import_digest(dir, tag.as_deref(), digest.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                opts.progress.emit(crate::progress::ProgressEvent::Warning {
                    message: format!("local cache import from {} skipped: {e}", dir.display()),
                });
                continue;
            }
        };
        let attrs = [("src".to_owned(), dir.display().to_string()), ("digest".to_owned(), digest.to_string())];
        cache.imports.push(CacheOptionsEntry { r#type: "local".into(), attrs: attrs.into_iter().collect() });
        stores.0.insert(content::store_id(dir), dir.clone());
    }
    Ok((Some(cache), stores, tag_after))
}

fn entry(csv_form: &str) -> Result<CacheOptionsEntry> {
    let (kind, attrs) = attrs_of(csv_form)?;
    Ok(CacheOptionsEntry { r#type: kind, attrs })
}

/// Runs one solve on the daemon (see [`Client::solve`]).
pub async fn solve(client: &Client, target: Target<'_>, opts: SolveOptions) -> Result<SolveResult> {
    run(client, target, opts, None::<fn(String) -> std::future::Ready<Result<()>>>).await
}

/// Runs one `Control.Solve` on the daemon; with `driver`, a client-side build whose function
/// the driver runs against the daemon's bridge (given the build id) while the solve waits for
/// its result. The function's own error wins over the daemon's answer.
pub(crate) async fn run<D, DFut>(
    client: &Client,
    target: Target<'_>,
    opts: SolveOptions,
    driver: Option<D>,
) -> Result<SolveResult>
where
    D: FnOnce(String) -> DFut,
    DFut: std::future::Future<Output = Result<()>>,
{
    if opts.local_provider.is_some()
        || opts.secret_provider.is_some()
        || opts.ssh_provider.is_some()
        || opts.registry_credentials.is_some()
    {
        return Err(unsupported(
            "local, secret, ssh and credential providers apply to an embedded engine, not a connected one",
        ));
    }
    let (exporter, exporter_attrs, output) = exporter(&opts)?;
    let (cache, mut stores, tag_after) = cache_entries(&opts)?;
    if let Some(OutputTarget::Layout(dir)) = &output {
        content::open_layout(dir)?;
        stores.0.insert(content::EXPORT_STORE.to_owned(), dir.clone());
    }
    let layout_output = match &output {
        Some(OutputTarget::Layout(dir)) => Some(dir.clone()),
        _ => None,
    };
    let services = SessionServices {
        locals: opts.locals.clone(),
        secrets: opts.secrets.clone(),
        ssh: opts.ssh.clone(),
        output,
        stores,
        failure: Default::default(),
    };
    let session = ClientSession::start(client, &services).await?;
    let build_ref = random_id()?;
    let (definition, frontend, mut frontend_attrs, counted) = match target {
        Target::Definition(def) => {
            let digests = def.vertices().iter().map(|v| v.digest.to_string()).collect();
            (Some(def.to_pb()), String::new(), BTreeMap::new(), Some(digests))
        }
        Target::Frontend { name, attrs } => (None, name.to_owned(), attrs.clone(), None),
    };
    if let Some(p) = &opts.platform {
        frontend_attrs.entry("platform".into()).or_insert_with(|| p.to_string());
    }
    let req = SolveRequest {
        r#ref: build_ref.clone(),
        definition,
        exporter,
        exporter_attrs,
        session: session.id().to_owned(),
        frontend,
        frontend_attrs,
        cache,
        entitlements: opts.entitlements.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };

    let sink = opts.progress.clone();
    let mut status_client = client.control();
    let status_ref = build_ref.clone();
    let status = tokio::spawn(async move {
        let mut follower = StatusFollower::new(counted);
        if let Ok(resp) = status_client.status(StatusRequest { r#ref: status_ref }).await {
            let mut stream = resp.into_inner();
            while let Ok(Some(update)) = stream.message().await {
                follower.update(update, &sink);
            }
        }
        follower
    });
    let status_abort = status.abort_handle();
    let _stop_status = scopeguard(move || status_abort.abort());

    let mut control = client.control();
    let call = control.solve(req);
    let work = async {
        let Some(d) = driver else { return Ok(call.await) };
        let drive = d(build_ref.clone());
        tokio::pin!(call);
        tokio::pin!(drive);
        tokio::select! {
            // The daemon ended the build before the function returned (it failed there).
            a = &mut call => Ok(a),
            r = &mut drive => match r {
                // Dropping the call ends the build on the daemon.
                Err(e) => Err(e),
                Ok(()) => Ok(call.await),
            },
        }
    };
    let answer = match &opts.cancel {
        Some(token) => tokio::select! {
            r = work => r?,
            _ = token.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "the solve was cancelled")),
        },
        None => work.await?,
    };
    let transfer_failure = services.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    let answer = match (answer, transfer_failure) {
        (_, Some(e)) => return Err(e),
        (a, None) => a,
    };
    // The status stream ends with the build; its last updates may trail the answer.
    let follower = tokio::time::timeout(STATUS_DRAIN, status).await.ok().and_then(|r| r.ok());
    let mut reported = None;
    let resp = match answer {
        Ok(r) => {
            let count =
                |key: &str| r.metadata().get(key).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
            if let (Some(c), Some(e)) = (count(super::CACHED_KEY), count(super::EXECUTED_KEY)) {
                reported = Some((c, e));
            }
            r.into_inner()
        }
        Err(s) => {
            let e = status_error("the daemon's solve failed", s);
            return Err(match (e.kind(), follower.as_ref().and_then(StatusFollower::failure)) {
                (ErrorKind::Exec, Some((vertex, log_tail))) => exec_error(&e, vertex, log_tail).unwrap_or(e),
                _ => e,
            });
        }
    };
    let (cached, executed) = reported.or_else(|| follower.map(|f| f.counts())).unwrap_or((0, 0));
    if let Some((dir, tag)) = tag_after {
        let Some(desc) = resp.exporter_response.get(CACHE_MANIFEST_KEY) else {
            return Err(Error::new(
                ErrorKind::Cache,
                format!("the daemon exported the cache to {} but named no cache manifest", dir.display()),
            ));
        };
        content::tag_export(&dir, &tag, desc)?;
    }
    if let Some(dir) = layout_output {
        content::tag_image(&dir, &resp.exporter_response)?;
    }
    session.close();
    Ok(SolveResult { exporter_response: resp.exporter_response, cached, executed })
}

/// A daemon's exec failure as kiln's [`Error::Exec`]: the command and exit code read from the
/// message both BuildKit and kiln write (`process "CMD" … did not complete successfully: exit
/// code: N`), the vertex and its output's last lines from the status stream.
fn exec_error(e: &Error, vertex: String, log_tail: Vec<String>) -> Option<Error> {
    let msg = e.to_string();
    let exit_code = msg.rsplit_once("exit code: ")?.1.trim().parse::<i32>().ok()?;
    let after = msg.split_once("process \"")?.1;
    let end = after.find("\" did not").or_else(|| after.find("\" in vertex"))?;
    Some(Error::Exec { vertex, command: after[..end].to_owned(), exit_code, log_tail })
}

/// Runs `f` when dropped (stops the status follower when the solve future is dropped).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

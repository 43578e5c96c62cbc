//! `kiln`: the command-line face of the kiln build engine. `kiln build` is buildctl-compatible:
//! it reads a marshalled LLB definition from stdin or `--definition`, takes `--local`, `--output`,
//! `--secret` and `--progress` as buildctl does, and solves in-process (no daemon).

mod size;

use clap::{Parser, Subcommand};
use kiln::engine::{Engine, EngineOptions, SolveOptions};
use kiln::graph::Definition;
use kiln::options::{Entitlement, OutputSpec, SecretSpec};
use kiln::solver::display::{DisplayMode, StderrDisplay};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "kiln: an embeddable BuildKit-style build engine")]
struct Cli {
    /// Engine root directory (default: $XDG_DATA_HOME/kiln, or /var/lib/kiln as root).
    #[arg(long, global = true, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// Log level for kiln's own logs (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "KILN_LOG")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the build variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Build a marshalled LLB definition (stdin or --definition).
    Build(BuildArgs),
    /// Show disk usage of the build cache.
    Du {
        /// One line per record.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Remove build cache.
    Prune {
        /// Remove everything.
        #[arg(long)]
        all: bool,
        /// Keep at most this much (plain numbers are MB as in buildctl; or 512MB, 10GiB, ...).
        #[arg(long, value_parser = size::parse_size)]
        keep_storage: Option<u64>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List the engine's workers.
    Workers {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Manage local cache directories (exported with --export-cache type=local).
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
    /// Serve BuildKit's gRPC API (moby.buildkit.v1.Control) so buildctl and BuildKit clients
    /// drive this engine. Runs until SIGTERM or SIGINT, then lets running calls finish.
    ///
    /// TLS (tcp:// addresses only, as buildkitd): --tlscert and --tlskey enable it; --tlscacert
    /// then requires every client to present a certificate signed by that CA.
    Serve {
        /// Address to listen on, repeatable: unix:///PATH or tcp://HOST:PORT (default
        /// unix:///run/kiln/kiln.sock as root, $XDG_RUNTIME_DIR/kiln/kiln.sock otherwise).
        #[arg(long = "addr")]
        addrs: Vec<String>,
        /// The server's TLS certificate (PEM) for tcp:// addresses; needs --tlskey.
        #[arg(long)]
        tlscert: Option<PathBuf>,
        /// The private key (PEM) of --tlscert.
        #[arg(long)]
        tlskey: Option<PathBuf>,
        /// A CA certificate (PEM): clients must present a certificate it signed (mutual TLS).
        #[arg(long)]
        tlscacert: Option<PathBuf>,
    },
    /// Debugging helpers.
    Debug {
        #[command(subcommand)]
        cmd: DebugCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CacheCmd {
    /// List the tags of a local cache directory with their records and bytes.
    Ls {
        /// The cache directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove tags (and the blobs only they use) from a local cache directory.
    Prune {
        /// The cache directory.
        #[arg(long)]
        dir: PathBuf,
        /// Keep only the N most recently written tags.
        #[arg(long)]
        keep_tags: Option<usize>,
        /// Keep only tags written within this duration (e.g. 30m, 12h, 7d).
        #[arg(long, value_parser = size::parse_duration)]
        keep_duration: Option<std::time::Duration>,
    },
}

#[derive(Subcommand, Debug)]
enum DebugCmd {
    /// Print a definition (stdin or FILE) as JSON lines, one op per line.
    DumpLlb {
        /// The definition file (default: stdin).
        file: Option<PathBuf>,
    },
}

/// Where the engine runs: in this process (the default) or on a daemon that speaks BuildKit's
/// API (`kiln serve`, buildkitd), reached as buildctl reaches it.
#[derive(clap::Args, Debug, Default, Clone)]
struct DaemonArgs {
    /// Run on the daemon at ADDR instead of in-process: unix:///PATH or tcp://HOST:PORT (`kiln
    /// serve` or a BuildKit daemon). Locals, secrets and local/tar/oci outputs stay on this side.
    #[arg(long, env = "KILN_ADDR", value_name = "ADDR")]
    addr: Option<String>,
    /// CA certificate the daemon's TLS certificate must chain to (tcp:// only).
    #[arg(long, value_name = "FILE", requires = "addr")]
    tlscacert: Option<PathBuf>,
    /// Client certificate for daemons that require one.
    #[arg(long, value_name = "FILE", requires = "addr")]
    tlscert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, value_name = "FILE", requires = "addr")]
    tlskey: Option<PathBuf>,
    /// Server name the daemon's certificate must carry (default: the address's host).
    #[arg(long, value_name = "NAME", requires = "addr")]
    tlsservername: Option<String>,
}

#[derive(Parser, Debug)]
struct BuildArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Read the definition from FILE instead of stdin.
    #[arg(long)]
    definition: Option<PathBuf>,
    /// A local directory: NAME=DIR (repeatable).
    #[arg(long = "local", value_name = "NAME=DIR")]
    locals: Vec<String>,
    /// An output: type=local,dest=DIR | type=tar,dest=FILE | type=oci,dest=FILE|DIR |
    /// type=image,name=REF[,push=true] (repeatable). Image outputs also take BuildKit's
    /// containerimage.config=JSON, source-date-epoch=N and annotation[-manifest|-manifest-descriptor].KEY=VALUE.
    #[arg(long = "output", short = 'o', value_name = "CSV")]
    outputs: Vec<String>,
    /// A secret: id=X,src=FILE or id=X,env=VAR (repeatable).
    #[arg(long = "secret", value_name = "CSV")]
    secrets: Vec<String>,
    /// Export the build cache: type=local,dest=DIR[,mode=max] | type=registry,ref=REF (repeatable).
    /// A bare REF is the legacy registry form; add options with --export-cache-opt.
    #[arg(long = "export-cache", value_name = "CSV")]
    export_cache: Vec<String>,
    /// Legacy: KEY=VALUE options for bare-REF --export-cache values (repeatable).
    #[arg(long = "export-cache-opt", value_name = "KEY=VALUE")]
    export_cache_opts: Vec<String>,
    /// Import a build cache: type=local,src=DIR | type=registry,ref=REF (repeatable).
    #[arg(long = "import-cache", value_name = "CSV")]
    import_cache: Vec<String>,
    /// Legacy: KEY=VALUE options for bare-REF --import-cache values (repeatable).
    #[arg(long = "import-cache-opt", value_name = "KEY=VALUE")]
    import_cache_opts: Vec<String>,
    /// Progress display: auto, tty, plain, rawjson (or quiet).
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Forward an SSH agent socket to `ssh` mounts: ID=SOCKET, or `default` (or any bare ID)
    /// for $SSH_AUTH_SOCK (repeatable).
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Grant an entitlement: security.insecure or network.host (repeatable).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// The image config of type=oci and type=image outputs: a JSON file holding either a whole
    /// OCI/Docker image config (its "config" key is used) or just that config object
    /// ({"Env": [..], "Cmd": [..], "ExposedPorts": {..}, "Healthcheck": {..}, ...}). An output's
    /// containerimage.config= attribute replaces it for that output.
    #[arg(long = "image-config", value_name = "FILE.json")]
    image_config: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH (seconds since 1970): images get this `created` time and no layer entry
    /// newer than it, so rebuilds give the same digest. Default: $SOURCE_DATE_EPOCH.
    #[arg(long = "source-date-epoch", value_name = "SECONDS")]
    source_date_epoch: Option<String>,
    /// The build platform, os/arch[/variant] or `local` (default: this host). kiln has no
    /// emulator: another platform is refused. Recorded in exported image configs.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// buildctl's frontend options (repeatable). With --frontend dockerfile.v0: BuildKit's
    /// names (filename, target, build-arg:NAME, label:NAME, no-cache, platform, context:NAME,
    /// cache-imports, ...). Without a frontend only build-arg:SOURCE_DATE_EPOCH=N and
    /// platform=PLATFORM.
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// Build with a frontend instead of reading LLB: `dockerfile.v0` (the Dockerfile from
    /// --local dockerfile=DIR, the context from --local context=DIR).
    #[arg(long, value_name = "NAME")]
    frontend: Option<String>,
}

/// One setting given by the flag `--FLAG` and by `--opt KEY=`: both must agree.
fn one_of(flag: &str, key: &str, from_flag: Option<&str>, from_opt: Option<&str>) -> kiln::Result<Option<String>> {
    match (from_flag, from_opt) {
        (Some(a), Some(b)) if a != b => {
            Err(kiln::Error::option(key, b, format!("--opt {key}={b} disagrees with --{flag} {a}; give one")))
        }
        (a, b) => Ok(a.or(b).map(str::to_owned)),
    }
}

/// Applies `--image-config`, `--source-date-epoch`, `--platform` and `--opt` to `opts`;
/// `env_epoch` is the caller's `$SOURCE_DATE_EPOCH` (used when neither flag nor --opt gives one;
/// empty means unset, as in BuildKit).
fn apply_image_args(opts: &mut SolveOptions, b: &BuildArgs, env_epoch: Option<&str>) -> kiln::Result<()> {
    let (mut opt_epoch, mut opt_platform) = (None, None);
    for o in &b.opts {
        match o.split_once('=') {
            Some(("build-arg:SOURCE_DATE_EPOCH", v)) => opt_epoch = Some(v),
            Some(("platform", v)) => opt_platform = Some(v),
            // A frontend takes every option (see frontend_attrs).
            Some(_) if b.frontend.is_some() => {}
            _ => return Err(kiln::Error::option(
                "opt",
                o.as_str(),
                "kiln has no frontend: --opt takes build-arg:SOURCE_DATE_EPOCH=SECONDS and platform=os/arch[/variant]",
            )),
        }
    }
    let epoch = one_of("source-date-epoch", "build-arg:SOURCE_DATE_EPOCH", b.source_date_epoch.as_deref(), opt_epoch)?
        .or_else(|| env_epoch.filter(|v| !v.trim().is_empty()).map(str::to_owned));
    if let Some(e) = epoch {
        opts.source_date_epoch = Some(kiln::options::image_export::parse_source_date_epoch("source-date-epoch", &e)?);
    }
    if let Some(p) = one_of("platform", "platform", b.platform.as_deref(), opt_platform)? {
        *opts = std::mem::take(opts).platform(&p)?;
    }
    if let Some(path) = &b.image_config {
        let bytes = std::fs::read(path).map_err(|e| kiln::Error::io("reading --image-config", path, e))?;
        opts.image_config = kiln::graph::ImageConfig::from_oci_json(&bytes)
            .map_err(|e| e.context(format!("--image-config {}", path.display())))?;
    }
    Ok(())
}

/// Adds `--ssh` and `--allow` values to `opts` as buildctl parses them; `ssh_auth_sock` is the
/// caller's `$SSH_AUTH_SOCK`. Every socket must exist (buildctl checks them up front too).
fn apply_grants(
    opts: &mut SolveOptions,
    ssh: &[String],
    allow: &[String],
    ssh_auth_sock: Option<&str>,
) -> kiln::Result<()> {
    for a in allow {
        opts.entitlements.insert(a.parse::<Entitlement>()?);
    }
    for s in ssh {
        let (id, path) = kiln::options::parse_ssh(s, ssh_auth_sock)?;
        if opts.ssh.contains_key(&id) {
            return Err(kiln::Error::option("ssh", s.as_str(), format!("invalid duplicate ID {id}")));
        }
        kiln::options::check_ssh_socket(&id, &path)?;
        opts.ssh.insert(id, path);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(run(cli));
    // Blocking threads still running (a registry request whose connect is still bounded by its
    // timeout) do not keep the process: the solve released everything it held before returning.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                e.report_for(|input, name| match input {
                    kiln::MissingInput::Local => format!("--local {name}=DIR"),
                    kiln::MissingInput::Secret => format!("--secret id={name},src=FILE"),
                    kiln::MissingInput::Ssh => format!("--ssh {name}=SOCKET"),
                })
            );
            if let kiln::Error::Exec { log_tail, .. } = &e {
                for l in log_tail {
                    eprintln!("  | {l}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn read_definition(file: Option<&PathBuf>) -> kiln::Result<Definition> {
    Definition::from_bytes(&read_definition_bytes(file)?)
}

/// The marshalled definition from FILE or stdin (refusing a terminal or empty stdin).
fn read_definition_bytes(file: Option<&PathBuf>) -> kiln::Result<Vec<u8>> {
    let bytes = match file {
        Some(f) => std::fs::read(f).map_err(|e| kiln::Error::io("read definition", f, e))?,
        None => {
            // A terminal on stdin means nothing was piped: say so rather than wait for input.
            if std::io::stdin().is_terminal() {
                return Err(kiln::Error::option(
                    "definition",
                    "stdin",
                    "stdin is a terminal: pipe a marshalled LLB definition into kiln or pass --definition FILE",
                ));
            }
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map_err(|e| kiln::Error::io("read definition from", "stdin", e))?;
            if b.is_empty() {
                return Err(kiln::Error::option(
                    "definition",
                    "stdin",
                    "stdin was empty: pipe a marshalled LLB definition into kiln or pass --definition FILE",
                ));
            }
            b
        }
    };
    Ok(bytes)
}

/// `kiln serve`: the engine behind BuildKit's API until SIGTERM/SIGINT.
async fn serve(root: Option<PathBuf>, addrs: &[String], tls: Option<kiln::server::TlsFiles>) -> kiln::Result<()> {
    use kiln::server::ListenAddr;
    let addrs: Vec<ListenAddr> = if addrs.is_empty() {
        vec![ListenAddr::default_for_user()]
    } else {
        addrs.iter().map(|a| a.parse()).collect::<kiln::Result<_>>()?
    };
    if tls.is_some() && !addrs.iter().any(|a| matches!(a, ListenAddr::Tcp(_))) {
        return Err(kiln::Error::option(
            "tlscert",
            "",
            "a tcp://HOST:PORT --addr (TLS applies to TCP addresses; unix sockets are guarded by their permissions)",
        ));
    }
    let engine = open_engine(root)?;
    let io = |e| kiln::Error::with_source(kiln::ErrorKind::Io, "install signal handlers", e);
    // Installed here, not inherited: under nohup or in the background SIGINT may be ignored.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(io)?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: waiting for running calls");
    };
    for a in &addrs {
        let mode = match (a, &tls) {
            (ListenAddr::Tcp(_), Some(t)) if t.ca.is_some() => " (TLS, client certificates required)",
            (ListenAddr::Tcp(_), Some(_)) => " (TLS)",
            _ => "",
        };
        eprintln!("kiln serve: listening on {a}{mode}");
    }
    kiln::server::serve_with_tls(engine, &addrs, tls.as_ref(), shutdown).await
}

fn open_engine(root: Option<PathBuf>) -> kiln::Result<Engine> {
    Engine::open(EngineOptions::new(root.unwrap_or_else(EngineOptions::default_root)))
}

/// The engine of a client command: connected to `--addr`, else opened on the root.
async fn engine_for(root: Option<PathBuf>, d: &DaemonArgs) -> kiln::Result<Engine> {
    let Some(addr) = &d.addr else { return open_engine(root) };
    let tls = kiln::client::TlsOptions {
        ca_cert: d.tlscacert.clone(),
        cert: d.tlscert.clone(),
        key: d.tlskey.clone(),
        server_name: d.tlsservername.clone(),
    };
    Engine::connect(addr, &kiln::client::ConnectOptions { tls }).await
}

async fn run(cli: Cli) -> kiln::Result<()> {
    match cli.cmd {
        Cmd::Build(b) => build(cli.root, b).await,
        Cmd::Serve { addrs, tlscert, tlskey, tlscacert } => {
            let tls = kiln::server::TlsFiles::from_flags(tlscert, tlskey, tlscacert)?;
            serve(cli.root, &addrs, tls).await
        }
        Cmd::Du { verbose, daemon } => {
            let engine = engine_for(cli.root, &daemon).await?;
            let usage = engine.disk_usage().await?;
            let total: u64 = usage.iter().map(|u| u.size).sum();
            if verbose {
                for u in &usage {
                    println!("{:<20} {:>12} {:<18} {}", u.id, size::human(u.size), u.worker, u.description);
                }
            } else {
                println!("{:<20} {:>12}", "ID", "SIZE");
                for u in &usage {
                    println!("{:<20} {:>12}", u.id, size::human(u.size));
                }
            }
            println!("Total:\t{}", size::human(total));
            Ok(())
        }
        Cmd::Prune { all, keep_storage, daemon } => {
            let engine = engine_for(cli.root, &daemon).await?;
            let r = engine.prune(keep_storage.unwrap_or(0), all || keep_storage.is_none()).await?;
            println!("Removed {} snapshots, freed {}", r.removed, size::human(r.freed_bytes));
            Ok(())
        }
        Cmd::Workers { daemon } => {
            let engine = engine_for(cli.root, &daemon).await?;
            println!("{:<20} LABELS", "NAME");
            for w in engine.workers() {
                let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{:<20} {}", w.name, labels.join(","));
            }
            Ok(())
        }
        Cmd::Cache { cmd: CacheCmd::Ls { dir } } => {
            println!("{:<24} {:>8} {:>8} {:>12}", "TAG", "RECORDS", "RESULTS", "SIZE");
            for t in kiln::local_cache::list(&dir)? {
                println!("{:<24} {:>8} {:>8} {:>12}", t.tag, t.records, t.results, size::human(t.bytes));
            }
            Ok(())
        }
        Cmd::Cache { cmd: CacheCmd::Prune { dir, keep_tags, keep_duration } } => {
            if keep_tags.is_none() && keep_duration.is_none() {
                return Err(kiln::Error::option(
                    "keep-tags",
                    "",
                    "give --keep-tags N and/or --keep-duration D (e.g. 7d); `kiln cache prune` never empties a directory by default",
                ));
            }
            let r = kiln::local_cache::prune(&dir, keep_tags, keep_duration)?;
            println!("Removed tags: {}", if r.tags.is_empty() { "(none)".to_owned() } else { r.tags.join(", ") });
            println!("Removed {} blobs, freed {}", r.blobs, size::human(r.bytes));
            Ok(())
        }
        Cmd::Debug { cmd: DebugCmd::DumpLlb { file } } => {
            // Decoded without validation, as buildctl does: invalid definitions dump too.
            print!("{}", kiln::graph::json::dump_llb(&read_definition_bytes(file.as_ref())?)?);
            Ok(())
        }
    }
}

/// The `--opt KEY=VALUE` values as frontend attributes (buildctl sends a bare KEY as KEY="").
fn frontend_attrs(b: &BuildArgs) -> std::collections::BTreeMap<String, String> {
    b.opts
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (o.clone(), String::new()),
        })
        .collect()
}

async fn build(root: Option<PathBuf>, b: BuildArgs) -> kiln::Result<()> {
    let def = match &b.frontend {
        Some(_) => None,
        None => Some(read_definition(b.definition.as_ref())?),
    };
    let mut opts = SolveOptions::default();
    for l in &b.locals {
        let (name, dir) =
            l.split_once('=').ok_or_else(|| kiln::Error::option("local", l.as_str(), "expected NAME=DIR"))?;
        opts.locals.insert(name.to_owned(), PathBuf::from(dir));
    }
    for o in &b.outputs {
        opts.outputs.push(o.parse::<OutputSpec>()?);
    }
    let secrets = b.secrets.iter().map(|s| s.parse::<SecretSpec>()).collect::<kiln::Result<Vec<_>>>()?;
    opts.secrets = kiln::options::read_secrets(&secrets)?;
    for c in &b.export_cache {
        opts.cache_exports.push(if c.contains('=') {
            c.parse()?
        } else {
            kiln::options::CacheExportSpec::parse_legacy(c, &b.export_cache_opts)?
        });
    }
    for c in &b.import_cache {
        opts.cache_imports.push(if c.contains('=') {
            c.parse()?
        } else {
            kiln::options::CacheImportSpec::parse_legacy(c, &b.import_cache_opts)?
        });
    }
    let ssh_auth_sock = std::env::var("SSH_AUTH_SOCK").ok();
    apply_grants(&mut opts, &b.ssh, &b.allow, ssh_auth_sock.as_deref())?;
    apply_image_args(&mut opts, &b, std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
    let mode: DisplayMode = b.progress.parse()?;
    let display = StderrDisplay::new(mode);
    if let Some(d) = &display {
        opts.progress = d.sink();
    }
    let engine = engine_for(root, &b.daemon).await?;
    let cancel = kiln::CancelToken::new();
    opts.cancel = Some(cancel.clone());
    let solve: std::pin::Pin<Box<dyn std::future::Future<Output = kiln::Result<kiln::SolveResult>> + Send>> =
        match (&b.frontend, &def) {
            (Some(f), _) => {
                let build_opts = kiln::engine::BuildOptions { solve: opts, frontend_attrs: frontend_attrs(&b) };
                Box::pin(engine.build_frontend(f, build_opts))
            }
            (None, Some(def)) => Box::pin(engine.solve(def, opts)),
            (None, None) => return Err(kiln::Error::new(kiln::ErrorKind::Internal, "no definition read")),
        };
    tokio::pin!(solve);
    // SIGINT, SIGTERM and SIGHUP all cancel: the solve ends its registry requests, kills its
    // containers and releases its mounts, snapshots and staged secrets, then returns Cancelled.
    // A second signal (or 30 s of cleanup) stops waiting: dropping the solve still aborts it.
    let res = tokio::select! {
        r = &mut solve => r,
        _ = termination() => {
            cancel.cancel();
            tokio::select! {
                r = &mut solve => r,
                _ = termination() => Err(kiln::Error::Cancelled),
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => Err(kiln::Error::Cancelled),
            }
        }
    };
    if let Some(d) = &display {
        d.finish();
    }
    let res = res?;
    for (k, v) in &res.exporter_response {
        eprintln!("{k}: {v}");
    }
    Ok(())
}

/// Resolves on the first SIGINT, SIGTERM or SIGHUP (handlers are installed also where a signal
/// was inherited as ignored, e.g. SIGINT in a background job). A signal whose handler cannot be
/// installed keeps its default action.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    async fn one(kind: SignalKind) {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install a signal handler");
                std::future::pending::<()>().await
            }
        }
    }
    tokio::select! {
        _ = one(SignalKind::interrupt()) => {}
        _ = one(SignalKind::terminate()) => {}
        _ = one(SignalKind::hangup()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_args(args: &[&str]) -> BuildArgs {
        let mut argv = vec!["kiln", "build"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|c| c.cmd) {
            Ok(Cmd::Build(b)) => b,
            other => panic!("not a build: {other:?}"),
        }
    }

    #[test]
    fn ssh_and_allow_flags_parse_like_buildctl() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let other = dir.path().join("other.sock");
        let _l2 = std::os::unix::net::UnixListener::bind(&other).unwrap();
        let b = build_args(&[
            "--ssh",
            "default",
            "--ssh",
            &format!("gh={}", other.display()),
            "--allow",
            "network.host",
            "--allow",
            "security.insecure",
        ]);
        let mut opts = SolveOptions::default();
        apply_grants(&mut opts, &b.ssh, &b.allow, Some(sock.to_str().unwrap())).unwrap();
        assert_eq!(opts.ssh.get("default"), Some(&sock));
        assert_eq!(opts.ssh.get("gh"), Some(&other));
        assert!(opts.entitlements.contains(&Entitlement::NetworkHost));
        assert!(opts.entitlements.contains(&Entitlement::SecurityInsecure));

        // Unknown entitlement, missing SSH_AUTH_SOCK, duplicate id, a path that is no socket.
        let e = apply_grants(&mut SolveOptions::default(), &[], &["network.none".into()], None).unwrap_err();
        assert!(e.to_string().contains("unknown entitlement network.none"), "{e}");
        let e = apply_grants(&mut SolveOptions::default(), &["default".into()], &[], None).unwrap_err();
        assert!(e.to_string().contains("SSH_AUTH_SOCK"), "{e}");
        let dup = vec![format!("a={}", sock.display()), format!("a={}", other.display())];
        let e = apply_grants(&mut SolveOptions::default(), &dup, &[], None).unwrap_err();
        assert!(e.to_string().contains("duplicate ID a"), "{e}");
        let file = dir.path().join("id_rsa");
        std::fs::write(&file, "key").unwrap();
        let e = apply_grants(&mut SolveOptions::default(), &[format!("k={}", file.display())], &[], None).unwrap_err();
        assert!(e.to_string().contains("not a unix socket"), "{e}");
    }

    #[test]
    fn image_flags_and_buildctl_opts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg.json");
        std::fs::write(&cfg, r#"{"Env":["A=1"],"StopSignal":"SIGINT"}"#).unwrap();
        let host = kiln::graph::Platform::host().to_string();
        let b =
            build_args(&["--image-config", cfg.to_str().unwrap(), "--source-date-epoch", "10", "--platform", &host]);
        let mut opts = SolveOptions::default();
        apply_image_args(&mut opts, &b, Some("99")).unwrap();
        assert_eq!(opts.source_date_epoch, Some(10), "the flag wins over $SOURCE_DATE_EPOCH");
        assert_eq!(opts.platform.as_ref().map(ToString::to_string).as_deref(), Some(host.as_str()));
        assert_eq!(opts.image_config.env, vec!["A=1"]);
        assert_eq!(opts.image_config.stop_signal.as_deref(), Some("SIGINT"));

        let platform_opt = format!("platform={host}");
        let b = build_args(&["--opt", "build-arg:SOURCE_DATE_EPOCH=20", "--opt", &platform_opt]);
        let mut opts = SolveOptions::default();
        apply_image_args(&mut opts, &b, None).unwrap();
        assert_eq!(opts.source_date_epoch, Some(20));
        assert!(opts.platform.is_some());
        let mut opts = SolveOptions::default();
        apply_image_args(&mut opts, &build_args(&[]), Some("30")).unwrap();
        assert_eq!(opts.source_date_epoch, Some(30));
        apply_image_args(&mut SolveOptions::default(), &build_args(&[]), Some("")).unwrap();

        for (args, what) in [
            (vec!["--opt", "build-arg:FOO=1"], "no frontend"),
            (vec!["--source-date-epoch", "1", "--opt", "build-arg:SOURCE_DATE_EPOCH=2"], "disagrees"),
            (vec!["--source-date-epoch", "yesterday"], "seconds"),
            (vec!["--platform", "linux"], "os/arch"),
            (vec!["--image-config", "/nonexistent.json"], "/nonexistent.json"),
        ] {
            let e = apply_image_args(&mut SolveOptions::default(), &build_args(&args), None).unwrap_err();
            assert!(e.to_string().contains(what), "{args:?}: {e}");
        }
    }
}

//! streamd: parses its flags, sets up logging, locks its data directory and runs the
//! daemon until SIGINT or SIGTERM; SIGHUP checks the config file.

use std::{io::IsTerminal, num::NonZeroU32, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use streamhandler::{
    auth::{Access, TlsFiles, Token, load_tls},
    config::{Config, check_host_name, check_nats_url, check_node_id, parse_size},
    connection::Limits,
    lanes::QuietLane,
    listen::{ListenAddr, Listener},
    lock::{DataDirLock, DatabaseLock},
    server::Listeners,
    services::Environment,
    web::HttpListener,
};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt,
};

/// jemalloc, whose background thread gives freed memory back to the system within
/// seconds even while the daemon is idle: glibc's malloc kept most of what stalled
/// subscribers' buffers had held after they were gone.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Supervises long-running services and streams their events over gRPC.
#[derive(Parser)]
#[command(name = "streamd", version)]
struct Args {
    /// Address of the gRPC control plane: IP:PORT, or unix:/PATH for a Unix socket
    /// only its owner may use. Any address other hosts can reach needs --tls-cert,
    /// --tls-key and --token-file.
    #[arg(long, env = "STREAMD_LISTEN", default_value = "127.0.0.1:50051")]
    listen: ListenAddr,
    /// PEM certificate chain to serve TLS with (rustls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate: clients must present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// File holding the bearer token every RPC must carry (`authorization: Bearer
    /// TOKEN`); read once at start.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Client connections open at once; more are closed as they arrive [default:
    /// 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// RPCs each connection may start per second; more are refused with
    /// RESOURCE_EXHAUSTED [default: 5000].
    #[arg(long, value_name = "N")]
    max_request_rate: Option<NonZeroU32>,
    /// How long a new connection may take to send its first bytes, to finish its TLS
    /// handshake and, with --token-file, to make a request with the token, before it
    /// is closed [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = streamhandler::duration::parse_positive)]
    handshake_timeout: Option<Duration>,
    /// Connections from one address (an IPv6 /64) that may be in their handshake at
    /// once; more from it are closed as they arrive [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes_per_peer: Option<u32>,
    /// Serve the dashboard, and the API as gRPC-Web for it, on this IP:PORT [default:
    /// the config file's [http] listen; off without either]. The same TLS, token and
    /// limits apply as to --listen.
    #[arg(long, env = "STREAMD_HTTP", value_name = "IP:PORT")]
    http: Option<std::net::SocketAddr>,
    /// A further host name by which browsers reach --http (a reverse proxy's, say);
    /// requests naming any other host are refused. Repeatable.
    #[arg(long, value_name = "NAME", value_parser = parse_host_name)]
    http_host: Vec<String>,
    /// TOML file that changes services, intervals and what starts at boot.
    #[arg(long, env = "STREAMD_CONFIG")]
    config: Option<PathBuf>,
    /// Where the daemon keeps its files: streamd in this user's data directory.
    #[arg(long, env = "STREAMD_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// The database: postgres://USER@HOST/DB, or sqlite://FILE [default: streamd.db in
    /// the data directory].
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Do not start the services that were running when streamd last stopped.
    #[arg(long)]
    no_resume: bool,
    /// Bytes of events held for a subscriber that reads slower than they come, unless
    /// it asks for another amount [default: 64MiB, or the config file's].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    subscriber_buffer: Option<usize>,
    /// The largest buffer a subscriber may ask for [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_subscriber_buffer: Option<usize>,
    /// What all subscribers may hold together; past it, each is held to an equal share
    /// [default: a quarter of the machine's memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_buffered: Option<usize>,
    /// A topic of clients' that nobody publishes to or follows for this long is
    /// forgotten [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = streamhandler::duration::parse_positive)]
    topic_retention: Option<Duration>,
    /// Clients' topics kept at most: beyond, the least recently published that no
    /// subscriber names are forgotten [default: 10000].
    #[arg(long, value_name = "N")]
    max_topics: Option<usize>,
    /// Join a cluster through these NATS servers (with JetStream): nats://HOST:PORT,
    /// comma-separated for several [default: the config file's [cluster] nats; a
    /// single node without either].
    #[arg(long, env = "STREAMD_CLUSTER", value_name = "URL",
          value_parser = parse_nats_url, requires = "node_id")]
    cluster: Option<String>,
    /// A NATS credentials file (user JWT and NKey seed) to join the cluster with
    /// [default: the config file's [cluster] credentials]. A password goes in the URL:
    /// nats://USER:PASSWORD@HOST:PORT.
    #[arg(long, value_name = "FILE")]
    cluster_creds: Option<PathBuf>,
    /// PEM CA certificate to trust for the cluster's NATS; TLS is then required
    /// [default: the config file's [cluster] tls_ca].
    #[arg(long, value_name = "FILE")]
    cluster_tls_ca: Option<PathBuf>,
    /// PEM certificate to present to NATS servers that verify clients, with
    /// --cluster-tls-key [default: the config file's [cluster] tls_cert].
    #[arg(long, value_name = "FILE")]
    cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert [default: the config file's [cluster]
    /// tls_key].
    #[arg(long, value_name = "FILE")]
    cluster_tls_key: Option<PathBuf>,
    /// This node's name in the cluster: letters, digits, '-' and '_'.
    #[arg(long, env = "STREAMD_NODE_ID", value_name = "ID", value_parser = parse_node_id)]
    node_id: Option<String>,
    /// Threads that run services and connections [default: one per CPU]. On a machine
    /// whose CPUs its clients keep busy, fewer spend less CPU per event.
    #[arg(long, env = "STREAMD_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// How the gRPC listener's quiet connections are served: off serves every
    /// connection on the same threads; otherwise a connection starts on a thread of
    /// its own (scheduled as asked: the daemon does not start where the host refuses
    /// realtime or raised) and moves to the other threads once it moves more than
    /// 1 MiB in a second.
    #[arg(long, env = "STREAMD_QUIET_LANE", value_enum, default_value_t = QuietLane::Off)]
    quiet_lane: QuietLane,
    /// How log lines are written to stderr: text, or json (one object per line, with
    /// the service or RPC each came from). RUST_LOG filters them either way.
    #[arg(long, env = "STREAMD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Export the spans of services' steps and RPCs to an OpenTelemetry collector over
    /// OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces (a build with the `otlp`
    /// feature only).
    #[arg(long, env = "STREAMD_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    streamhandler::auth::install_crypto_provider();
    let exporter = match log(&args) {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("streamd: {e}");
            return ExitCode::from(2);
        }
    };
    // A panicking service is restarted by its supervisor, a panicking RPC answered with
    // INTERNAL; the panic and where it came from belong in the log.
    std::panic::set_hook(Box::new(|panic| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("{panic}\n{backtrace}");
    }));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("streamd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = {
        // Dropped at the end of the run: the spans not yet exported go then.
        let _exporter = exporter;
        runtime.block_on(run(args))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the log on stderr, filtered by RUST_LOG, and with --otlp-endpoint the
/// export of spans, which is flushed when what this returns is dropped.
fn log(args: &Args) -> Result<Option<SpanExport>, String> {
    // Whichever crate logs a URL, its password and keys stay out of the log.
    let writer = || streamhandler::secret::RedactingWriter(std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer().with_writer(writer);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![match args.log_format {
        LogFormat::Text => stderr.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // The event's fields beside timestamp, level and target; the innermost span
        // (the service, or the RPC) under "span".
        LogFormat::Json => stderr
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }];
    let exporter = match &args.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let (layer, exporter) = span_export(endpoint)?;
            layers.push(layer);
            Some(exporter)
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .init();
    Ok(exporter)
}

#[cfg(feature = "otlp")]
type SpanExport = ShutDownOnDrop;

/// The OTLP exporter, shut down (its last batch sent) when dropped.
#[cfg(feature = "otlp")]
struct ShutDownOnDrop(opentelemetry_sdk::trace::SdkTracerProvider);

#[cfg(feature = "otlp")]
impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("streamd: --otlp-endpoint: the last spans were not sent: {e}");
        }
    }
}

#[cfg(feature = "otlp")]
fn span_export(
    endpoint: &str,
) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, SpanExport), String> {
    let (layer, provider) = streamhandler::otlp::layer(endpoint)?;
    Ok((layer, ShutDownOnDrop(provider)))
}

/// None: a build without the `otlp` feature exports nothing.
#[cfg(not(feature = "otlp"))]
enum SpanExport {}

#[cfg(not(feature = "otlp"))]
fn span_export(_: &str) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, SpanExport), String> {
    Err(
        "--otlp-endpoint: this streamd was built without OTLP export; build it with \
         `cargo build --release --features otlp`"
            .into(),
    )
}

fn parse_host_name(name: &str) -> Result<String, String> {
    check_host_name(name).map(|()| name.to_owned())
}

fn parse_nats_url(url: &str) -> Result<String, String> {
    check_nats_url(url).map(|()| url.to_owned())
}

fn parse_node_id(id: &str) -> Result<String, String> {
    check_node_id(id).map(|()| id.to_owned())
}

/// `streamd` in the platform's data directory (e.g. ~/.local/share on Linux), or in the
/// working directory where there is none.
fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("streamd")
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("freed memory goes back to the system only as memory is used: {e}");
    }
    let access = access(&args).map_err(|e| anyhow::anyhow!(e))?;
    raise_open_files(access.limits.max_connections);
    let data_dir = args.data_dir;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display()))?;
    // Held until the process ends.
    let _data_dir_lock = DataDirLock::acquire(&data_dir)?;
    let mut env =
        Environment::new(data_dir, args.database_url.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    // Also held until the process ends.
    let _database_lock = env
        .store
        .sqlite_file()
        .map(DatabaseLock::acquire)
        .transpose()?;
    let mut config = match &args.config {
        Some(path) => Config::load(path, &env).map_err(|e| anyhow::anyhow!("bad config: {e}"))?,
        None => Config::builtin(),
    };
    let bus = &mut config.bus;
    bus.subscriber_buffer = args.subscriber_buffer.unwrap_or(bus.subscriber_buffer);
    bus.max_subscriber_buffer = args
        .max_subscriber_buffer
        .unwrap_or(bus.max_subscriber_buffer);
    bus.max_buffered = args.max_buffered.unwrap_or(bus.max_buffered);
    bus.topic_retention = args.topic_retention.unwrap_or(bus.topic_retention);
    bus.max_topics = args.max_topics.unwrap_or(bus.max_topics);
    bus.check()
        .map_err(|(key, message)| anyhow::anyhow!("--{}: {message}", key.replace('_', "-")))?;
    let cluster = &mut config.cluster;
    cluster.nats = args.cluster.or(cluster.nats.take());
    cluster.node_id = args.node_id.or(cluster.node_id.take());
    cluster.credentials = args.cluster_creds.or(cluster.credentials.take());
    cluster.tls_ca = args.cluster_tls_ca.or(cluster.tls_ca.take());
    cluster.tls_cert = args.cluster_tls_cert.or(cluster.tls_cert.take());
    cluster.tls_key = args.cluster_tls_key.or(cluster.tls_key.take());
    env.node_id = cluster
        .resolve()
        .map_err(|e| anyhow::anyhow!(e))?
        .map(|cluster| cluster.node_id);
    // A reload waits while the daemon starts; more than one waiting adds nothing.
    let (reloads_in, reloads) = tokio::sync::mpsc::channel(1);
    // Installed before the daemon says it listens, so that no signal finds the default
    // action, which ends the process.
    let shutdown = shutdown_signal()?;
    #[cfg(unix)]
    {
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGHUP: {e}"))?;
        tokio::spawn(reload_on_hangup(
            hangup,
            args.config.clone(),
            env.clone(),
            reloads_in,
        ));
    }
    let listener = Listener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(
        "listening on {}",
        listener.local_addr().unwrap_or(args.listen)
    );
    let http = match args.http.or(config.http.listen) {
        None => None,
        Some(addr) => {
            access
                .check(&ListenAddr::Tcp(addr))
                .map_err(|e| anyhow::anyhow!("--http: {e}"))?;
            let mut names = config.http.hosts.clone();
            names.extend(args.http_host.iter().cloned());
            let http = HttpListener::bind(addr, &names, access.tls.is_some())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let shown = http.local_addr().unwrap_or(addr);
            let scheme = if access.tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!("dashboard on {scheme}://{shown}/");
            Some(http)
        }
    };
    let resume = !args.no_resume;
    streamhandler::run(
        Listeners {
            grpc: listener,
            http,
            quiet_lane: args.quiet_lane,
        },
        access,
        config,
        env,
        resume,
        reloads,
        shutdown,
    )
    .await
}

/// Raises the soft limit on open files to the hard one, as a server that holds up to
/// `max_connections` sockets on each listener must: many systems start processes at
/// 1024. Warns when even the hard limit leaves too little room.
fn raise_open_files(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Both listeners at their cap, and room for the database, files and NATS.
    let wanted = (2 * max_connections + 256) as u64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
    if hard < wanted {
        tracing::warn!(
            "the open-file limit is {hard}: fewer than --max-connections ({max_connections}) \
             on each listener may be open at once; raise it (ulimit -n, systemd LimitNOFILE)"
        );
    }
}

/// Reads the TLS files and the token once, and checks they suffice for the address.
fn access(args: &Args) -> Result<Access, String> {
    let defaults = Limits::default();
    let limits = Limits {
        max_connections: args
            .max_connections
            .map_or(defaults.max_connections, |n| n as usize),
        request_rate: args.max_request_rate.unwrap_or(defaults.request_rate),
        handshake_timeout: args.handshake_timeout.unwrap_or(defaults.handshake_timeout),
        handshakes_per_peer: args
            .max_handshakes_per_peer
            .map_or(defaults.handshakes_per_peer, |n| n as usize),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(load_tls(&TlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca.as_deref(),
        })?),
        _ => None,
    };
    let token = args.token_file.as_deref().map(Token::read).transpose()?;
    let access = Access { tls, token, limits };
    access.check(&args.listen)?;
    Ok(access)
}

/// SIGHUP re-reads the config file: a valid one goes to the daemon, whose services
/// take it; a bad one is reported and the running configuration kept, so a hangup
/// never ends the daemon.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    config: Option<PathBuf>,
    env: Environment,
    reloads: tokio::sync::mpsc::Sender<Config>,
) {
    while hangup.recv().await.is_some() {
        let Some(path) = &config else {
            tracing::info!("SIGHUP: no --config file, nothing to reload");
            continue;
        };
        match Config::load(path, &env) {
            Err(e) => tracing::error!("SIGHUP: bad config: {e}; the running config is kept"),
            Ok(config) => {
                tracing::info!(
                    "SIGHUP: reloading {}; its [bus] and [supervisor] settings apply at the \
                     next start",
                    path.display()
                );
                if reloads.send(config).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (a signal that finds the default
/// action ends the process at once, with no clean shutdown) and resolves on the first.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handle = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot handle {name}: {e}"))
        };
        let mut interrupt = handle(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = handle(SignalKind::terminate(), "SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

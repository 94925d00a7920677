//! Starts the real `streamd` binary on a free port with its own data directory, and
//! drives it with a tonic client and the real `streamctl` binary.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

mod proxy;

use futures::StreamExt;
use streamhandler::pb::{self, stream_handler_client::StreamHandlerClient};
use tonic::transport::Channel;

pub use self::proxy::Proxy;

pub const STREAMD: &str = env!("CARGO_BIN_EXE_streamd");
pub const STREAMCTL: &str = env!("CARGO_BIN_EXE_streamctl");

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Every service a daemon without configuration knows: the original dashboard's cards.
pub const SERVICES: [&str; 10] = [
    "activities",
    "aq",
    "emojis",
    "images",
    "kraken",
    "leaderboard",
    "reader",
    "slugs",
    "streamer",
    "system",
];

pub struct Daemon {
    child: Child,
    /// The TCP address it listens on; unspecified for a daemon on a Unix socket.
    pub addr: SocketAddr,
    /// Where it listens, as it printed it: `127.0.0.1:PORT` or `unix:/PATH`.
    pub listening: String,
    /// Shared by a daemon and those restarted from it.
    pub data_dir: Arc<tempfile::TempDir>,
    /// Everything the daemon has written to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts streamd with no configuration.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts streamd with extra arguments, on a free port, and waits until it listens.
    pub fn start_with(args: &[&str]) -> Self {
        Self::try_start(args, "127.0.0.1:0")
            .unwrap_or_else(|log| panic!("streamd did not start:\n{log}"))
    }

    /// Starts streamd listening on `listen`; on failure returns what it wrote.
    pub fn try_start(args: &[&str], listen: &str) -> Result<Self, String> {
        Self::launch(args, listen, &[], None)
    }

    /// Starts streamd with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(args, "127.0.0.1:0", env, None)
            .unwrap_or_else(|log| panic!("streamd did not start:\n{log}"))
    }

    /// Starts another streamd on the same data directory, as after a restart; this
    /// one should have exited.
    pub fn restart(&self, args: &[&str]) -> Self {
        self.restart_with_env(args, &[])
    }

    /// Restarts, as [`Daemon::restart`], with extra environment variables.
    pub fn restart_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(args, "127.0.0.1:0", env, Some(self.data_dir.clone()))
            .unwrap_or_else(|log| panic!("streamd did not start again:\n{log}"))
    }

    fn launch(
        args: &[&str],
        listen: &str,
        env: &[(&str, &str)],
        data_dir: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Self, String> {
        let data_dir = data_dir.unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let mut child = Command::new(STREAMD)
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir.path())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("STREAMD_CONFIG")
            .env_remove("OPEN_AQ_KEY")
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (listening, addr) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    // The rest of the line, or of the message in a JSON line.
                    let addr = addr.split('"').next().unwrap_or_default();
                    let _ = listening.send(addr.trim().to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        match addr.recv_timeout(PATIENCE) {
            Ok(listening) => Ok(Self {
                child,
                addr: listening
                    .parse()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                listening,
                data_dir,
                log,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log.lock().unwrap().clone())
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The dashboard's URL (`http://IP:PORT/`), as the daemon printed it when started
    /// with --http.
    pub fn dashboard(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(url) = self.log().split("dashboard on ").nth(1) {
                return url.lines().next().unwrap_or_default().trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "streamd printed no dashboard address:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn client(&self) -> StreamHandlerClient<Channel> {
        StreamHandlerClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Every service as ListServices shows it now.
    pub async fn services(&self) -> Vec<pb::ServiceInfo> {
        self.client()
            .await
            .list_services(pb::ListServicesRequest {})
            .await
            .unwrap()
            .into_inner()
            .services
    }

    /// One service as ListServices shows it now.
    pub async fn service(&self, name: &str) -> pb::ServiceInfo {
        self.services()
            .await
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// A `streamctl` command aimed at this daemon.
    pub fn streamctl(&self) -> Command {
        streamctl_at(&self.listening)
    }

    /// Runs `streamctl ARGS` and returns what it did.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.streamctl().args(args).output().unwrap()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// The daemon's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        self.wait().await
    }

    /// Waits for the daemon to exit by itself. Asynchronously: the test's own clients
    /// (and anything else it serves, such as a proxy in front of the database) must
    /// go on answering the daemon while it shuts down.
    pub async fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "streamd did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `streamctl` command aimed at `addr`, with colour off.
pub fn streamctl_at(addr: &str) -> Command {
    let mut command = Command::new(STREAMCTL);
    command
        .env("STREAMD_ADDR", addr)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// A daemon whose config file holds `config` (TOML), and the directory of that file.
pub fn with_config(config: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "streamd.toml", config);
    let daemon = Daemon::start_with(&["--config", file.to_str().unwrap()]);
    (daemon, dir)
}

/// The user and group a test drops to for what an unprivileged user meets: `nobody`
/// when the tests run as root, None when they already run unprivileged.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    nix::unistd::geteuid().is_root().then(|| {
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("a root that runs the tests has a user nobody");
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    })
}

/// `program`, to be run as `user` (see [`unprivileged_user`]) when one is given.
pub fn command_as(program: &str, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        // Dropping from root to another uid drops root's capabilities with it.
        command.uid(uid).gid(gid);
    }
    command.stdin(Stdio::null()).env("RUST_LOG", "info");
    command
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads a Subscribe stream's first event, which must be Subscribed, within
/// [`PATIENCE`].
pub async fn subscribed(stream: &mut tonic::Streaming<pb::Event>) -> pb::Subscribed {
    let first = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("no Subscribed in time")
        .expect("stream ended")
        .expect("stream failed");
    let pb::Event {
        topic,
        seq: 0,
        payload: Some(pb::event::Payload::Subscribed(subscribed)),
        ..
    } = first
    else {
        panic!("the stream began with {first:?}");
    };
    assert_eq!(topic, "", "Subscribed has no topic");
    subscribed
}

/// A live Subscribe stream, past its Subscribed event.
pub struct Events {
    stream: tonic::Streaming<pb::Event>,
    /// What the stream's first event said.
    pub subscribed: pb::Subscribed,
}

impl Events {
    /// Subscribes and waits for the subscription to be live.
    pub async fn open(
        client: &mut StreamHandlerClient<Channel>,
        topics: &[&str],
        last: bool,
    ) -> Self {
        let request = pb::SubscribeRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            last,
            ..Default::default()
        };
        Self::live(
            client.subscribe(request).await.unwrap().into_inner(),
            topics,
        )
        .await
    }

    /// Waits for a stream's Subscribed event and checks it names `topics`.
    pub async fn live(mut stream: tonic::Streaming<pb::Event>, topics: &[&str]) -> Self {
        let subscribed = subscribed(&mut stream).await;
        assert_eq!(subscribed.topics, topics);
        Self { stream, subscribed }
    }

    /// The positions Subscribed gave, as (topic, seq).
    pub fn positions(&self) -> Vec<(&str, u64)> {
        self.subscribed
            .positions
            .iter()
            .map(|p| (p.topic.as_str(), p.seq))
            .collect()
    }

    /// The next event; fails the test if none comes within [`PATIENCE`].
    pub async fn next(&mut self) -> pb::Event {
        tokio::time::timeout(PATIENCE, self.stream.next())
            .await
            .expect("no event in time")
            .expect("stream ended")
            .expect("stream failed")
    }

    /// The next event that `want` accepts, skipping others.
    pub async fn next_where(&mut self, want: impl Fn(&pb::Event) -> bool) -> pb::Event {
        loop {
            let event = self.next().await;
            if want(&event) {
                return event;
            }
        }
    }

    /// The next event if one comes within `wait`.
    pub async fn within(&mut self, wait: Duration) -> Option<pb::Event> {
        match tokio::time::timeout(wait, self.stream.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }

    /// Whether the stream ends (cleanly) within [`PATIENCE`], draining events before.
    pub async fn ends_cleanly(&mut self) -> bool {
        loop {
            match tokio::time::timeout(PATIENCE, self.stream.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(None) => return true,
                _ => return false,
            }
        }
    }
}

/// A StartService request with an interval and parameter overrides.
pub fn start_request(name: &str, millis: u64, params: &[(&str, &str)]) -> pb::StartServiceRequest {
    pb::StartServiceRequest {
        name: name.into(),
        interval: Some(Duration::from_millis(millis).try_into().unwrap()),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Subscribes to a service's topic, then starts it: the events begin with its start.
pub async fn start_watching(
    daemon: &Daemon,
    name: &str,
    millis: u64,
    params: &[(&str, &str)],
) -> Events {
    let mut client = daemon.client().await;
    let events = Events::open(&mut client, &[name], false).await;
    client
        .start_service(start_request(name, millis, params))
        .await
        .unwrap();
    events
}

pub fn is_lifecycle(event: &pb::Event, kind: pb::lifecycle::Kind) -> bool {
    matches!(&event.payload, Some(pb::event::Payload::Lifecycle(l)) if l.kind() == kind)
}

pub fn is_data(event: &pb::Event) -> bool {
    !matches!(
        event.payload,
        Some(pb::event::Payload::Lifecycle(_) | pb::event::Payload::Lagged(_))
    )
}

/// A config file with a service, `feed`, that crashes: its websocket server refuses
/// every upgrade with 404, for good. It restarts twice, quickly, then fails.
pub async fn crashing_feed(dir: &std::path::Path) -> std::path::PathBuf {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let refusal = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, refusal).await;
            });
        }
    });
    let config = format!(
        "[supervisor]\nmax_restarts = 2\ninitial_backoff = \"20ms\"\nmax_backoff = \"50ms\"\n\n\
         [services.feed]\nkind = \"websocket\"\nparams = {{ url = \"ws://127.0.0.1:{port}/\" }}\n"
    );
    write(dir, "streamd.toml", &config)
}

/// A loopback port free now: for a daemon that must come back on the same one, or a
/// server that is not there.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a file into `dir` and returns its path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The environment variable naming the NATS server (with JetStream) cluster tests use.
pub const NATS: &str = "STREAMD_TEST_NATS_URL";

/// The NATS server for cluster tests, or None with a printed reason when none is set.
pub fn nats_url() -> Option<String> {
    let url = std::env::var(NATS).ok();
    if url.is_none() {
        eprintln!("skipped: {NATS} is not set (.ci/run sets it where NATS with JetStream runs)");
    }
    url
}

/// The nats-server binary to spawn, or `None` after saying the test is skipped.
pub fn nats_server() -> Option<String> {
    match std::env::var("STREAMD_TEST_NATS_SERVER") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("skipped: STREAMD_TEST_NATS_SERVER does not name a nats-server binary");
            None
        }
    }
}

/// A nats-server with JetStream of a test's own, keeping its streams in a directory
/// of its own: a cluster no other test shares. Killed when dropped.
pub struct Nats {
    child: Child,
    binary: String,
    flags: Vec<String>,
    pub port: u16,
    pub url: String,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts one on a free port, or None after saying the test is skipped.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts one with further nats-server flags (logins, TLS).
    pub fn start_with(flags: &[&str]) -> Option<Self> {
        let binary = nats_server()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let child = Self::spawn(&binary, &flags, port, store.path());
        Some(Self {
            child,
            binary,
            flags,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
        })
    }

    fn spawn(binary: &str, flags: &[String], port: u16, store: &Path) -> Child {
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.binary, &self.flags, self.port, self.store.path());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A name no other test, or earlier run, uses: clusters share their NATS server.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// The environment variable naming the PostgreSQL server tests may use.
pub const POSTGRES: &str = "STREAMD_TEST_DATABASE_URL";

/// A PostgreSQL schema of a test's own, dropped afterwards, so that tests never collide.
pub struct PgSchema {
    /// A database URL whose connections use the schema.
    pub url: String,
    base: String,
    name: String,
}

impl PgSchema {
    /// A fresh schema, or None with a printed reason when no server is configured.
    pub async fn create() -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES) else {
            eprintln!("skipped: {POSTGRES} is not set (tests/run.sh sets it when PostgreSQL runs)");
            return None;
        };
        let name = format!("streamd_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("the test server accepts us");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        Some(Self {
            url: format!("{base}{separator}options=-c%20search_path%3D{name}"),
            base,
            name,
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop cannot await, and may run inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let admin = sqlx::PgPool::connect(&base).await?;
                sqlx::query(&format!("DROP SCHEMA {name} CASCADE"))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test schema {} left behind: {e}", self.name);
        }
    }
}

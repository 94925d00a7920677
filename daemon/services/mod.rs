//! Service kinds: what a service does, one module per kind behind the [`Worker`] trait.
//!
//! A kind turns parameters into a worker; the supervisor runs the worker's steps on a
//! timer. Workers never see gRPC or the supervisor's bookkeeping: a step gets a
//! [`StepContext`] to publish through and to notice a stop request.

mod confined;
mod context;
mod http;
pub mod images;
mod kraken;
mod leaderboard;
mod reader;
mod streamer;
mod system;
mod websocket;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;

use self::confined::Confined;
pub use self::context::StepContext;
pub(crate) use self::context::{DaemonView, Outlet};
use crate::{metrics::Metrics, store::Store};

/// A service's parameters: names to raw values, parsed by its kind.
pub type Params = BTreeMap<String, String>;

/// What a kind needs from the daemon to build a worker.
#[derive(Clone, Debug)]
pub struct Environment {
    /// The daemon's data directory, which holds the built-in texts and images.
    pub data_dir: PathBuf,
    /// One HTTP client for every poller, so they share its connection pool.
    pub http: reqwest::Client,
    /// The client of pollers that send the daemon's credentials (a key, configured
    /// headers): it follows redirects only within the same origin, so that no
    /// credential goes to a server the operator did not name.
    pub http_same_origin: reqwest::Client,
    /// The daemon's database.
    pub store: Store,
    /// This node's id when the daemon is a node of a cluster, whose nodes share one
    /// database.
    pub node_id: Option<String>,
    /// The node's connection to the cluster's NATS, whose state it reports.
    pub nats: Option<async_nats::Client>,
    /// What the daemon counts as it runs, for /metrics.
    pub metrics: Metrics,
}

impl Environment {
    /// Sets up the HTTP client and opens (without connecting) the database at
    /// `database_url`, or the default SQLite file in `data_dir`.
    pub fn new(data_dir: PathBuf, database_url: Option<&str>) -> Result<Self, String> {
        let client = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .user_agent(concat!("streamd/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                .redirect(redirects)
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {e}"))
        };
        let http = client(reqwest::redirect::Policy::default())?;
        let http_same_origin = client(same_origin_redirects())?;
        let store = Store::open(database_url, &data_dir)?;
        Ok(Self {
            data_dir,
            http,
            http_same_origin,
            store,
            node_id: None,
            nats: None,
            metrics: Metrics::default(),
        })
    }
}

/// Follows up to 10 redirects that stay on the first request's scheme, host and port;
/// one to another origin is not followed, and becomes the step's error.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(reqwest::Url::origin);
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if first.as_ref() == Some(&attempt.url().origin()) {
            attempt.follow()
        } else {
            let to = crate::secret::redact(attempt.url().as_str()).into_owned();
            attempt.error(format!(
                "redirected to another origin ({to}); not followed, since the request \
                 carries credentials"
            ))
        }
    })
}

/// Does a service's work, one step at a time.
#[async_trait]
pub trait Worker: Send {
    /// Does one step's work and publishes its results. Services that hold a connection
    /// or follow a file may keep one step going until `ctx.cancelled()` fires.
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError>;

    /// Called once when the service is stopped (not when it crashes), after its last
    /// step, to write back what it holds. The stop timeout bounds it.
    async fn finish(&mut self, _ctx: &StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// This step failed; the service reports it and carries on at its next tick.
    #[error("{0}")]
    Step(String),
    /// The worker cannot go on; the supervisor restarts it with a fresh worker.
    #[error("{0}")]
    Fatal(String),
}

/// A parameter that a kind could not accept.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("params.{key}: {message}")]
pub struct ParamError {
    pub key: String,
    pub message: String,
}

impl ParamError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// One parameter a kind accepts. A name ending in `.*` stands for a family of
/// parameters: `header.*` accepts `header.Accept`, `header.X-Api-Key` and so on.
#[derive(Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub help: &'static str,
    /// The value in force when neither the config file nor a client sets it; None
    /// when the parameter is then unset. Builds read it through [`ParamSpec::value`],
    /// so that what clients are shown is what the service uses.
    pub default: Option<&'static str>,
    /// Who may set it: the config file only, or also a client starting the service.
    pub authority: Authority,
}

/// Who may set a parameter. The config file sets any; a client's StartService may
/// set an operator's parameter only where the service's `allow_override` lists it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Authority {
    /// Changes only what the service produces (an interval, a count, a pair): any
    /// client may set it.
    Client,
    /// Where the service connects. A client may choose it while the service carries
    /// none of the operator's credentials; the kind accepts only its own schemes.
    Endpoint,
    /// Decides what the daemon reads, or how it talks to a server (a directory, a
    /// method): the operator's.
    Operator,
    /// Sent to the service's endpoint and may hold a secret (a header, a body, an
    /// opening message): the operator's. In the config file `${VAR}` in it reads an
    /// environment variable, and while one is configured the endpoint is the
    /// operator's too.
    Credential,
}

impl ParamSpec {
    fn accepts(&self, key: &str) -> bool {
        family_accepts(self.name, key)
    }

    /// The value `params` sets, or else the default.
    pub fn value<'a>(&self, params: &'a Params) -> Option<&'a str> {
        params.get(self.name).map(String::as_str).or(self.default)
    }
}

/// Whether `key` is the parameter `name`, or one of the family `name` ends in `.*`.
pub fn family_accepts(name: &str, key: &str) -> bool {
    match name.strip_suffix('*') {
        Some(prefix) => key.len() > prefix.len() && key.starts_with(prefix),
        None => key == name,
    }
}

/// Builds a worker from its parameters: parses and checks them, does no I/O.
pub type BuildFn = fn(&Params, &Environment) -> Result<Box<dyn Worker>, Build>;

/// A kind of service.
#[derive(Debug)]
pub struct Kind {
    pub name: &'static str,
    pub description: &'static str,
    pub default_interval: Duration,
    pub params: &'static [ParamSpec],
    pub build: BuildFn,
}

impl Kind {
    /// The spec of the parameter `key`, if the kind takes it.
    pub fn param(&self, key: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.accepts(key))
    }

    /// Checks the parameter names against the kind's, then builds a worker.
    pub fn build(&self, params: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
        if let Some(unknown) = params
            .keys()
            .find(|k| !self.params.iter().any(|p| p.accepts(k)))
        {
            let known: Vec<_> = self.params.iter().map(|p| p.name).collect();
            let message = if known.is_empty() {
                format!("{} takes no parameters", self.name)
            } else {
                format!(
                    "unknown parameter; {} takes {}",
                    self.name,
                    known.join(", ")
                )
            };
            return Err(Build::Param(ParamError::new(unknown, message)));
        }
        (self.build)(params, env)
    }
}

/// Why a kind built no worker.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Build {
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The daemon lacks something the service needs, such as an environment variable.
    #[error("{0}")]
    Precondition(String),
}

/// The kinds of the dashboard's cards: each has a service of its own name out of the
/// box.
pub static KINDS: &[Kind] = &[
    http::ACTIVITIES,
    http::AQ,
    http::EMOJIS,
    images::KIND,
    kraken::KIND,
    leaderboard::KIND,
    reader::KIND,
    http::SLUGS,
    streamer::KIND,
    system::KIND,
];

/// Kinds that do nothing until configured (which URL to poll, say): services of these
/// kinds exist only where the configuration adds them.
pub static GENERIC_KINDS: &[Kind] = &[http::HTTP, websocket::KIND];

/// Every kind.
pub fn kinds() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().chain(GENERIC_KINDS)
}

/// Looks a kind up by name.
pub fn kind(name: &str) -> Option<&'static Kind> {
    kinds().find(|k| k.name == name)
}

/// Writes the built-in texts and images into the data directory, where the reader and
/// images services find them by default, unless they are there already.
pub fn install_assets(data_dir: &std::path::Path) -> std::io::Result<()> {
    reader::install_builtin(data_dir)?;
    images::install_builtin(data_dir)
}

/// Creates `dir` holding the given files, unless `dir` exists already (then it is the
/// user's to change).
fn install_files(dir: &Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// The regular, non-hidden files in `dir` that `keep` accepts given their path and
/// size, in name order. Symbolic links count by their target; opening through
/// [`Confined`] then refuses those that lead outside.
async fn files_in(
    dir: &Confined,
    keep: impl Fn(&Path, u64) -> bool,
) -> Result<Vec<PathBuf>, StepError> {
    let failed = |e: std::io::Error| StepError::Step(format!("{}: {e}", dir.root().display()));
    let mut entries = tokio::fs::read_dir(dir.root()).await.map_err(failed)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(failed)? {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if let Ok(metadata) = tokio::fs::metadata(&path).await
            && metadata.is_file()
            && !hidden
            && keep(&path, metadata.len())
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses a whole-number parameter within bounds.
fn parse_count(
    key: &str,
    value: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ParamError> {
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ParamError::new(
                key,
                format!(
                    "{value:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

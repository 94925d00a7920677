//! The daemon's database: SQLite in the data directory by default, PostgreSQL when a
//! `postgres://` URL is given. Both run the same embedded migrations and the same SQL;
//! each query is written once and compiled for both drivers.
//!
//! The store connects lazily and migrates on first use, so a database that is down
//! when the daemon starts delays only what needs it, and every operation returns an
//! error the caller can report and retry rather than a crash.

use std::{collections::BTreeMap, path::Path, str::FromStr, sync::Arc, time::Duration};

use chrono::{NaiveDateTime, Utc};
use sqlx::{
    PgPool, Row, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::secret::Secret;

static MIGRATOR: Migrator = sqlx::migrate!();

/// How long an operation waits for a connection, or for SQLite's lock, before failing.
const WAIT: Duration = Duration::from_secs(2);

/// A row of `user_score`.
#[derive(Clone, Debug, PartialEq)]
pub struct UserScore {
    pub id: Uuid,
    pub username: String,
    pub score: i64,
    pub joined: NaiveDateTime,
}

/// What a client last asked of a service: running (with these overrides) or not.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    pub name: String,
    pub running: bool,
    pub interval: Option<Duration>,
    pub params: BTreeMap<String, String>,
}

/// A cheap-to-clone handle to the database.
#[derive(Clone, Debug)]
pub struct Store {
    /// Holds the database password: never shown, whatever prints the store.
    connect: Arc<Secret<Connect>>,
    /// The pool, made on first use (it needs the async runtime), once the migrations
    /// have run on the database.
    pool: Arc<OnceCell<Pool>>,
    /// Where the database is, for messages: the file, or the URL without its password.
    pub location: String,
}

impl Store {
    /// Whether the database is a file of this machine's, which other nodes cannot share.
    pub fn is_local_file(&self) -> bool {
        matches!(self.connect.expose(), Connect::Sqlite(_))
    }

    /// The SQLite database's file, if the database is one (not PostgreSQL, nor SQLite
    /// in memory).
    pub fn sqlite_file(&self) -> Option<&Path> {
        match self.connect.expose() {
            Connect::Sqlite(options) => {
                let file = options.get_filename();
                // sqlx names an in-memory database `file:sqlx-in-memory-N`.
                let in_memory = file.as_os_str().is_empty()
                    || file == Path::new(":memory:")
                    || file.as_os_str().as_encoded_bytes().starts_with(b"file:");
                (!in_memory).then_some(file)
            }
            Connect::Postgres(_) => None,
        }
    }
}

#[derive(Debug)]
enum Connect {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

#[derive(Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store has: `$pool` is bound to a
/// `SqlitePool` in one arm and a `PgPool` in the other, so the body is type-checked
/// for both drivers.
macro_rules! with_pool {
    ($pool_ref:expr, $pool:ident => $body:expr) => {
        match $pool_ref {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Raises a service's fence on `executor`, giving [`Written::Fenced`] if a later
/// owner's is already higher. A macro, as `with_pool!`'s bodies are: the executor's
/// type depends on the database.
macro_rules! raise_fence {
    ($executor:expr, $fence:expr) => {{
        let token = i64::try_from($fence.token).unwrap_or(i64::MAX);
        let raised = sqlx::query(
            "INSERT INTO service_fence (service, token) VALUES ($1, $2) \
             ON CONFLICT (service) DO UPDATE SET token = excluded.token \
             WHERE service_fence.token <= excluded.token",
        )
        .bind(&$fence.service)
        .bind(token)
        .execute(&mut *$executor)
        .await?;
        if raised.rows_affected() == 1 {
            Written::Done
        } else {
            let newer: i64 =
                sqlx::query_scalar("SELECT token FROM service_fence WHERE service = $1")
                    .bind(&$fence.service)
                    .fetch_one(&mut *$executor)
                    .await?;
            Written::Fenced {
                newer: u64::try_from(newer).unwrap_or_default(),
            }
        }
    }};
}

/// What a cluster node's service carries on its writes: the service, and the number
/// of the lease by which its node owns it. Each new owner's number is higher than
/// every earlier owner's.
#[derive(Clone, Debug, PartialEq)]
pub struct Fence {
    pub service: String,
    pub token: u64,
}

/// How a fenced write went.
#[derive(Debug, PartialEq)]
pub enum Written {
    Done,
    /// Refused: an owner with the higher token `newer` has written since.
    Fenced {
        newer: u64,
    },
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("database {location}: {source}")]
pub struct StoreError {
    location: String,
    #[source]
    source: sqlx::Error,
}

impl Store {
    /// Opens the store named by `url` (`postgres://...`, `sqlite://...`), or the SQLite
    /// file `streamd.db` in `data_dir` when there is none. Does not connect yet.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let (connect, location) = match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| format!("bad database URL: {e}"))?;
                let location = format!(
                    "postgres://{}@{}:{}/{}",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                );
                (Connect::Postgres(options), location)
            }
            Some(url) if url.starts_with("sqlite:") => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| format!("bad database URL: {e}"))?;
                (Connect::Sqlite(options), url.to_owned())
            }
            Some(url) => {
                return Err(format!(
                    "bad database URL {:?}: use postgres://... or sqlite://...",
                    crate::secret::redact(url)
                ));
            }
            None => {
                let path = data_dir.join("streamd.db");
                let location = path.display().to_string();
                (
                    Connect::Sqlite(SqliteConnectOptions::new().filename(path)),
                    location,
                )
            }
        };
        Ok(Self {
            connect: Arc::new(Secret::new(connect)),
            pool: Default::default(),
            location,
        })
    }

    fn error(&self, source: sqlx::Error) -> StoreError {
        StoreError {
            location: self.location.clone(),
            source,
        }
    }

    /// The pool, after the migrations have run: once, before the first operation
    /// that needs the tables, and again on the next operation if they failed.
    async fn ready(&self) -> Result<&Pool, StoreError> {
        self.pool
            .get_or_try_init(|| async {
                let pool = match self.connect.expose() {
                    Connect::Sqlite(options) => sqlite(options.clone()),
                    Connect::Postgres(options) => Pool::Postgres(
                        PgPoolOptions::new()
                            .max_connections(4)
                            .acquire_timeout(WAIT)
                            .connect_lazy_with(options.clone()),
                    ),
                };
                with_pool!(&pool, pool => MIGRATOR.run(pool).await)
                    .map_err(|e| self.error(e.into()))?;
                tracing::info!(database = %self.location, "database ready");
                Ok(pool)
            })
            .await
    }

    /// Connects, migrates and inserts the seed users if this database never had them.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.seed().await
    }

    /// Inserts the original dashboard's nine users, once per database: a database whose
    /// users were all deleted stays empty.
    async fn seed(&self) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let now = Utc::now().naive_utc();
        with_pool!(pool, pool => async {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO streamd_meta (key, value) VALUES ('seeded', $1) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(now.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                for (username, score, joined) in SEED_USERS {
                    let joined = NaiveDateTime::parse_from_str(joined, "%Y-%m-%d %H:%M:%S")
                        .expect("the seed dates are well-formed");
                    sqlx::query(
                        "INSERT INTO user_score (id, username, score, joined, inserted_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (username) DO NOTHING",
                    )
                    .bind(Uuid::new_v4())
                    .bind(username)
                    .bind(score)
                    .bind(joined)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await
        }
        .await)
        .map_err(|e| self.error(e))
    }

    /// Every user's score.
    pub async fn user_scores(&self) -> Result<Vec<UserScore>, StoreError> {
        let pool = self.ready().await?;
        with_pool!(pool, pool => async {
            let rows = sqlx::query("SELECT id, username, score, joined FROM user_score ORDER BY username")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(UserScore {
                        id: row.try_get("id")?,
                        username: row.try_get("username")?,
                        score: row.try_get("score")?,
                        joined: row.try_get("joined")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }
        .await)
        .map_err(|e| self.error(e))
    }

    /// Writes these users' scores in one transaction: all of them or none. Rows are
    /// matched by id; a row that is not there yet is inserted. With a `fence`, nothing
    /// is written once a later owner of the service has raised it.
    pub async fn save_scores(
        &self,
        rows: &[UserScore],
        fence: Option<&Fence>,
    ) -> Result<Written, StoreError> {
        let pool = self.ready().await?;
        let now = Utc::now().naive_utc();
        with_pool!(pool, pool => async {
            let mut tx = pool.begin().await?;
            if let Some(fence) = fence
                && let Written::Fenced { newer } = raise_fence!(&mut *tx, fence)
            {
                return Ok(Written::Fenced { newer });
            }
            for row in rows {
                sqlx::query(
                    "INSERT INTO user_score (id, username, score, joined, inserted_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (id) DO UPDATE SET username = excluded.username, \
                     score = excluded.score, joined = excluded.joined, updated_at = excluded.updated_at",
                )
                .bind(row.id)
                .bind(&row.username)
                .bind(row.score)
                .bind(row.joined)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(Written::Done)
        }
        .await)
        .map_err(|e| self.error(e))
    }

    /// Raises the service's fence to `fence`, so that from now on writes of an owner
    /// with a lower token are refused: a new owner does this before it reads what the
    /// one before it wrote.
    pub async fn raise_fence(&self, fence: &Fence) -> Result<Written, StoreError> {
        let pool = self.ready().await?;
        with_pool!(pool, pool => async {
            let mut connection = pool.acquire().await?;
            Ok(raise_fence!(&mut *connection, fence))
        }
        .await)
        .map_err(|e: sqlx::Error| self.error(e))
    }

    /// Records what a client asked of a service.
    pub async fn save_desired(&self, desired: &DesiredState) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let params = serde_json::to_string(&desired.params).expect("a map of strings serialises");
        let interval_ms = desired
            .interval
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let now = Utc::now().naive_utc();
        with_pool!(pool, pool => sqlx::query(
            "INSERT INTO service_state (name, running, interval_ms, params, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET running = excluded.running, \
             interval_ms = excluded.interval_ms, params = excluded.params, \
             updated_at = excluded.updated_at",
        )
        .bind(&desired.name)
        .bind(desired.running)
        .bind(interval_ms)
        .bind(params)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))
        .map_err(|e| self.error(e))
    }

    /// What clients last asked of each service that they ever started or stopped.
    pub async fn desired(&self) -> Result<Vec<DesiredState>, StoreError> {
        let pool = self.ready().await?;
        with_pool!(pool, pool => async {
            let rows = sqlx::query(
                "SELECT name, running, interval_ms, params FROM service_state ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let interval_ms: Option<i64> = row.try_get("interval_ms")?;
                    let params: String = row.try_get("params")?;
                    Ok(DesiredState {
                        name: row.try_get("name")?,
                        running: row.try_get("running")?,
                        interval: interval_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                        params: serde_json::from_str(&params)
                            .map_err(|e| sqlx::Error::Decode(e.into()))?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }
        .await)
        .map_err(|e| self.error(e))
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            with_pool!(pool, pool => pool.close().await)
        }
    }
}

fn sqlite(options: SqliteConnectOptions) -> Pool {
    // WAL: readers never block the writer, and a crash never leaves a torn write.
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(WAIT);
    Pool::Sqlite(
        SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(WAIT)
            .connect_lazy_with(options),
    )
}

/// The users of the original dashboard: username, score, joined.
const SEED_USERS: [(&str, i64, &str); 9] = [
    ("admin", 103, "2020-07-24 21:00:07"),
    ("jim_the_og", 84, "2021-02-22 21:00:07"),
    ("aaron", 92, "2021-08-05 20:00:07"),
    ("mn_voter", 99, "2022-09-08 23:00:07"),
    ("wi_voter", 94, "2023-04-11 19:00:07"),
    ("ia_voter", 77, "2018-12-12 13:00:07"),
    ("ca_voter", 88, "2022-11-02 23:00:07"),
    ("il_voter", 77, "2019-06-06 14:00:07"),
    ("tx_voter", 68, "2023-03-05 23:00:07"),
];

/// A store for tests: a SQLite file in a temporary directory of its own.
#[cfg(test)]
pub(crate) fn sqlite_for_test() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open(None, dir.path()).unwrap(), dir)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn only_a_sqlite_database_on_disk_has_a_file_to_lock() {
        let dir = Path::new("/data");
        let file = |url: Option<&str>| {
            Store::open(url, dir)
                .unwrap()
                .sqlite_file()
                .map(Path::to_path_buf)
        };
        assert_eq!(file(None), Some(dir.join("streamd.db")));
        assert_eq!(file(Some("sqlite:///x/y.db")), Some("/x/y.db".into()));
        assert_eq!(file(Some("sqlite::memory:")), None);
        assert_eq!(file(Some("postgres://u@h/db")), None);
    }

    #[tokio::test]
    async fn usernames_longer_than_255_characters_are_refused() {
        let too_long = UserScore {
            id: Uuid::new_v4(),
            username: "é".repeat(256),
            score: 1,
            joined: NaiveDate::from_ymd_opt(2020, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
        };
        let (store, _dir) = sqlite_for_test();
        assert!(store.save_scores(&[too_long], None).await.is_err());
    }

    #[tokio::test]
    async fn seeds_once_and_keeps_desired_state() {
        let (store, _dir) = sqlite_for_test();
        store.prepare().await.unwrap();
        store.prepare().await.unwrap();
        let users = store.user_scores().await.unwrap();
        assert_eq!(users.len(), 9);
        let admin = users.iter().find(|u| u.username == "admin").unwrap();
        assert_eq!(admin.score, 103);
        assert_eq!(admin.joined.to_string(), "2020-07-24 21:00:07");

        let wish = DesiredState {
            name: "streamer".into(),
            running: true,
            interval: Some(Duration::from_millis(700)),
            params: BTreeMap::from([("series".into(), "2".into())]),
        };
        store.save_desired(&wish).await.unwrap();
        let stopped = DesiredState {
            name: "reader".into(),
            running: false,
            interval: None,
            params: BTreeMap::new(),
        };
        store.save_desired(&stopped).await.unwrap();
        assert_eq!(store.desired().await.unwrap(), [stopped, wish]);
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_and_an_unreachable_database_is_an_error() {
        let err = Store::open(Some("mysql://root:pw1@db/x"), Path::new("/tmp")).unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
        assert!(!err.contains("pw1"), "the password shows: {err}");
        let store =
            Store::open(Some("postgres://me:pw2@127.0.0.1:1/x"), Path::new("/tmp")).unwrap();
        assert!(!format!("{store:?}").contains("pw2"), "{store:?}");
        // Nothing listens on port 1: operations fail, and say where.
        let store = Store::open(
            Some("postgres://nobody@127.0.0.1:1/none"),
            Path::new("/tmp"),
        )
        .unwrap();
        let err = store.user_scores().await.unwrap_err().to_string();
        assert!(
            err.starts_with("database postgres://nobody@127.0.0.1:1/none:"),
            "{err}"
        );
    }
}

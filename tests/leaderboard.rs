//! The leaderboard and persistence, through the real daemon: what the database holds
//! after SIGTERM and after `kill -9`, services resumed after a restart, and a database
//! that goes away and comes back. Each test runs on SQLite, and on PostgreSQL when
//! `STREAMD_TEST_DATABASE_URL` is set, in a schema of its own.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use nix::sys::signal::{Signal, kill};
use streamhandler::{
    pb::{self, Health, event::Payload, lifecycle::Kind},
    store::Store,
};
use tokio::sync::Mutex;

use crate::harness::{Daemon, Events, PgSchema, Proxy, is_lifecycle};

/// Scores by username.
type Scores = BTreeMap<String, i64>;

/// Where a test's daemon keeps its data: the SQLite default, or a PostgreSQL schema.
enum Db {
    Sqlite,
    Postgres(PgSchema),
}

impl Db {
    fn args(&self) -> Vec<&str> {
        match self {
            Db::Sqlite => vec![],
            Db::Postgres(schema) => vec!["--database-url", &schema.url],
        }
    }

    /// The scores the database holds (SQLite's write-ahead log lets them be read while
    /// the daemon runs).
    async fn scores(&self, daemon: &Daemon) -> Scores {
        let url = match self {
            Db::Sqlite => None,
            Db::Postgres(schema) => Some(schema.url.as_str()),
        };
        let store = Store::open(url, daemon.data_dir.path()).unwrap();
        let scores = store
            .user_scores()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.username, u.score))
            .collect();
        store.close().await;
        scores
    }
}

/// Runs a test on SQLite, then on PostgreSQL if there is one.
macro_rules! on_both_stores {
    ($sqlite:ident, $postgres:ident, $body:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $body(Db::Sqlite).await;
        }

        #[tokio::test]
        async fn $postgres() {
            if let Some(schema) = PgSchema::create().await {
                $body(Db::Postgres(schema)).await;
            }
        }
    };
}

fn start_request(millis: u64, params: &[(&str, &str)]) -> pb::StartServiceRequest {
    crate::harness::start_request("leaderboard", millis, params)
}

/// The scores of a Leaderboard event, if it is one.
fn scores_of(event: &pb::Event) -> Option<Scores> {
    match &event.payload {
        Some(Payload::Leaderboard(board)) => Some(
            board
                .entries
                .iter()
                .map(|e| (e.username.clone(), e.score))
                .collect(),
        ),
        _ => None,
    }
}

fn time_of(event: &pb::Event) -> SystemTime {
    SystemTime::try_from(event.time.unwrap()).unwrap()
}

async fn the_board_is_the_seed_users_ranked(db: Db) {
    let daemon = Daemon::start_with(&db.args());
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["leaderboard"], false).await;
    client.start_service(start_request(100, &[])).await.unwrap();
    let event = events.next_where(|e| scores_of(e).is_some()).await;
    let Some(Payload::Leaderboard(board)) = event.payload else {
        unreachable!()
    };
    let names: Vec<_> = board.entries.iter().map(|e| e.username.as_str()).collect();
    assert_eq!(board.entries.len(), 9, "{names:?}");
    for name in ["admin", "jim_the_og", "tx_voter", "il_voter"] {
        assert!(names.contains(&name), "{names:?}");
    }
    for pair in board.entries.windows(2) {
        assert!(pair[0].score >= pair[1].score, "best first");
        assert!(pair[0].rank <= pair[1].rank);
    }
    assert_eq!(board.entries[0].rank, 1);
    let admin = board
        .entries
        .iter()
        .find(|e| e.username == "admin")
        .unwrap();
    assert!(
        (103 - 25..=103 + 25).contains(&admin.score),
        "one round from 103"
    );
    assert_eq!(admin.change, admin.score - 103);
    assert_eq!(
        admin.joined.unwrap().seconds,
        1_595_624_407,
        "2020-07-24 21:00:07"
    );
}
on_both_stores!(
    the_board_is_the_seed_users_ranked_on_sqlite,
    the_board_is_the_seed_users_ranked_on_postgres,
    the_board_is_the_seed_users_ranked
);

async fn after_sigterm_the_database_holds_the_last_published_scores(db: Db) {
    let daemon = Daemon::start_with(&db.args());
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["leaderboard"], false).await;
    // A flush interval far longer than the test: only the final flush writes.
    client
        .start_service(start_request(50, &[("flush_interval", "1h")]))
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..10 {
        last = scores_of(&events.next_where(|e| scores_of(e).is_some()).await);
    }
    stop_and_compare(daemon, &db, events, last).await;
}

/// Sends SIGTERM and checks that once the daemon has exited cleanly the database
/// holds the last scores published before the service stopped (`last`, unless later
/// events come before the stop).
async fn stop_and_compare(
    mut daemon: Daemon,
    db: &Db,
    mut events: Events,
    mut last: Option<Scores>,
) {
    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    loop {
        let event = events.next().await;
        if is_lifecycle(&event, Kind::Stopped) {
            break;
        }
        last = scores_of(&event).or(last);
    }
    assert_eq!(daemon.wait().await.code(), Some(0), "{}", daemon.log());
    assert_eq!(db.scores(&daemon).await, last.unwrap());
}
on_both_stores!(
    after_sigterm_the_database_holds_the_last_published_scores_on_sqlite,
    after_sigterm_the_database_holds_the_last_published_scores_on_postgres,
    after_sigterm_the_database_holds_the_last_published_scores
);

async fn after_kill_9_at_most_one_flush_interval_is_lost_and_nothing_is_torn(db: Db) {
    let flush = Duration::from_millis(500);
    let mut daemon = Daemon::start_with(&db.args());
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["leaderboard"], false).await;
    client
        .start_service(start_request(50, &[("flush_interval", "500ms")]))
        .await
        .unwrap();
    let mut published = Vec::new();
    while published.len() < 40 {
        let event = events.next().await;
        if let Some(scores) = scores_of(&event) {
            published.push((time_of(&event), scores));
        }
    }
    kill(daemon.pid(), Signal::SIGKILL).unwrap();
    daemon.wait().await;
    // Whatever was published while the signal travelled counts too.
    while let Some(event) = events.within(Duration::from_millis(200)).await {
        if let Some(scores) = scores_of(&event) {
            published.push((time_of(&event), scores));
        }
    }
    let saved = db.scores(&daemon).await;
    // Every row from one and the same round: a flush lands whole or not at all.
    let round = published
        .iter()
        .rposition(|(_, scores)| *scores == saved)
        .unwrap_or_else(|| panic!("{saved:?} is no published round"));
    let (saved_at, _) = published[round];
    let (last_at, _) = published.last().unwrap();
    let lost = last_at.duration_since(saved_at).unwrap();
    // One flush interval, plus a round and the write itself on a busy machine.
    assert!(
        lost <= flush + Duration::from_millis(500),
        "lost {lost:?} of rounds"
    );
}
on_both_stores!(
    after_kill_9_at_most_one_flush_interval_is_lost_on_sqlite,
    after_kill_9_at_most_one_flush_interval_is_lost_on_postgres,
    after_kill_9_at_most_one_flush_interval_is_lost_and_nothing_is_torn
);

async fn services_left_running_run_again_after_a_restart(db: Db) {
    let mut daemon = Daemon::start_with(&db.args());
    let ok = |args: &[&str]| assert!(daemon.ctl(args).status.success(), "{args:?}");
    ok(&["start", "leaderboard"]);
    ok(&[
        "start",
        "streamer",
        "--interval",
        "700ms",
        "--set",
        "series=2",
    ]);
    ok(&["start", "reader"]);
    ok(&["stop", "reader"]);
    assert_eq!(daemon.terminate().await.code(), Some(0));

    let mut again = daemon.restart(&db.args());
    let streamer = again.service("streamer").await;
    assert_eq!(streamer.state(), pb::ServiceState::Running);
    assert_eq!(streamer.interval.unwrap().nanos, 700_000_000);
    assert_eq!(streamer.params["series"], "2");
    assert_eq!(
        again.service("leaderboard").await.state(),
        pb::ServiceState::Running
    );
    assert_eq!(
        again.service("reader").await.state(),
        pb::ServiceState::Stopped
    );
    assert_eq!(
        again.service("system").await.state(),
        pb::ServiceState::Stopped
    );
    assert_eq!(again.terminate().await.code(), Some(0));

    let quiet = again.restart(&[db.args(), vec!["--no-resume"]].concat());
    for name in ["leaderboard", "streamer"] {
        assert_eq!(quiet.service(name).await.state(), pb::ServiceState::Stopped);
    }
}
on_both_stores!(
    services_left_running_run_again_after_a_restart_on_sqlite,
    services_left_running_run_again_after_a_restart_on_postgres,
    services_left_running_run_again_after_a_restart
);

/// The start of an error event about saving scores.
fn is_save_error(event: &pb::Event) -> bool {
    matches!(&event.payload, Some(Payload::Lifecycle(l))
        if l.kind() == Kind::Error && l.message.contains("cannot save scores"))
}

/// Plays with the database gone for a while, then checks that once it is back every
/// change lands: after SIGTERM it holds the last published scores.
async fn outlive_an_outage(
    daemon: Daemon,
    db: &Db,
    outage: impl AsyncFnOnce(),
    recovery: impl AsyncFnOnce(),
) {
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["leaderboard"], false).await;
    client
        .start_service(start_request(50, &[("flush_interval", "200ms")]))
        .await
        .unwrap();
    events.next_where(|e| scores_of(e).is_some()).await;
    outage().await;
    events.next_where(is_save_error).await;
    // The table goes on without the database, but not well: it stays failing, and the
    // log warns once.
    let played = events.next_where(|e| scores_of(e).is_some()).await;
    events.next_where(|e| scores_of(e).is_some()).await;
    let service = daemon.service("leaderboard").await;
    assert_eq!(service.health(), Health::Failing, "{service:?}");
    recovery().await;
    // The retry, not the final flush at stop, lands the pending changes: while the
    // service runs, the database comes to hold a round played since the outage.
    let mut since_outage = vec![scores_of(&played).unwrap()];
    let give_up = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        if let Some(scores) = scores_of(&events.next().await) {
            since_outage.push(scores);
        }
        if since_outage.len() % 5 == 0 && since_outage.contains(&db.scores(&daemon).await) {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "no round played since the outage reached the database"
        );
    }
    let log = daemon.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("step failed") && l.contains("service=leaderboard"))
        .count();
    assert_eq!(warned, 1, "one warning for the outage:\n{log}");
    stop_and_compare(daemon, db, events, since_outage.pop()).await;
}

#[tokio::test]
async fn a_locked_sqlite_database_delays_saving_and_loses_nothing() {
    let daemon = Daemon::start();
    let file = daemon.data_dir.path().join("streamd.db");
    let locker: Arc<Mutex<Option<sqlx::SqliteConnection>>> = Arc::default();
    let (take, give) = (locker.clone(), locker.clone());
    outlive_an_outage(
        daemon,
        &Db::Sqlite,
        async move || {
            use sqlx::Connection;
            let mut connection =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                    .await
                    .unwrap();
            // Holds the write lock until released: every write elsewhere waits, then fails.
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut connection)
                .await
                .unwrap();
            *take.lock().await = Some(connection);
        },
        async move || {
            let mut connection = give.lock().await.take().unwrap();
            sqlx::query("ROLLBACK")
                .execute(&mut connection)
                .await
                .unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_postgres_delays_saving_and_loses_nothing() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let url = reqwest::Url::parse(&schema.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = Arc::new(Proxy::start(target).await);
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.port)).unwrap();
    let daemon = Daemon::start_with(&["--database-url", proxied.as_str()]);
    let (cut, restore) = (proxy.clone(), proxy.clone());
    outlive_an_outage(
        daemon,
        &Db::Postgres(schema),
        async move || cut.cut().await,
        async move || restore.restore(),
    )
    .await;
}

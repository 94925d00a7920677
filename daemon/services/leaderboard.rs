//! `leaderboard`: the original dashboard's ETS card, with its scores kept.
//!
//! On its first step the service loads every user's score from the database into an
//! in-memory table. Each step plays a round: every score moves by a random amount
//! within bounds, and the sorted table is published. Changed rows are written back in
//! one transaction every flush interval, by a background task that reads a snapshot
//! of the table, so a slow or unavailable database never holds up a round. A failed
//! flush is reported and retried with backoff, its rows kept pending until they land.
//! When the service stops, the last round's scores are written before it ends.

use std::{
    collections::BTreeSet,
    ops::RangeInclusive,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rand::Rng;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{
    Build, Environment, Kind, ParamError, ParamSpec, Params, StepContext, StepError, Worker,
};
use crate::{
    duration,
    metrics::Metrics,
    pb::{self, event::Payload},
    store::{Fence, Store, StoreError, UserScore, Written},
};

pub const KIND: Kind = Kind {
    name: "leaderboard",
    description: "user scores kept in memory and in the database",
    default_interval: Duration::from_secs(1),
    params: &[CHANGE_MIN, CHANGE_MAX, FLUSH_INTERVAL],
    build,
};

const CHANGE_MIN: ParamSpec = ParamSpec {
    name: "change_min",
    help: "the lowest change of a score in one round",
    default: Some("-25"),
    authority: super::Authority::Client,
};

const CHANGE_MAX: ParamSpec = ParamSpec {
    name: "change_max",
    help: "the highest change of a score in one round",
    default: Some("25"),
    authority: super::Authority::Client,
};

const FLUSH_INTERVAL: ParamSpec = ParamSpec {
    name: "flush_interval",
    help: "how often changed scores are written to the database",
    default: Some("5s"),
    authority: super::Authority::Client,
};

/// The longest wait between attempts to write to a database that keeps failing.
const MAX_FLUSH_BACKOFF: Duration = Duration::from_secs(60);
/// The wait between attempts at the final flush of a stopping service, which goes on
/// until it succeeds or the stop timeout ends it.
const FINAL_FLUSH_RETRY: Duration = Duration::from_millis(250);

fn build(params: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
    if env.node_id.is_some() && env.store.is_local_file() {
        return Err(Build::Precondition(format!(
            "the leaderboard in a cluster needs a database every node shares, and {} is a \
             file of this machine's: start streamd with --database-url postgres://...",
            env.store.location
        )));
    }
    let number = |spec: &ParamSpec| -> Result<i64, ParamError> {
        let v = spec.value(params).unwrap_or_default();
        v.parse()
            .map_err(|_| ParamError::new(spec.name, format!("{v:?} is not a whole number")))
    };
    let (min, max) = (number(&CHANGE_MIN)?, number(&CHANGE_MAX)?);
    if min > max {
        return Err(
            ParamError::new("change_max", format!("{max} is below change_min {min}")).into(),
        );
    }
    let flush_every = duration::parse(
        FLUSH_INTERVAL.value(params).unwrap_or_default(),
        duration::Zero::Refused,
    )
    .map_err(|message| ParamError::new(FLUSH_INTERVAL.name, message))?;
    Ok(Box::new(Leaderboard {
        store: env.store.clone(),
        metrics: env.metrics.clone(),
        change: min..=max,
        flush_every,
        table: None,
        dirty: BTreeSet::new(),
        flushing: None,
        flush_began: Instant::now(),
        next_flush: Instant::now() + flush_every,
        flush_failures: 0,
        deposed: None,
    }))
}

/// A flush that failed: the users it did not write, and why.
type FailedFlush = (BTreeSet<Uuid>, StoreError);

/// One user's row in the in-memory table.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    user: UserScore,
    /// How the score moved in the last round.
    change: i64,
}

struct Leaderboard {
    store: Store,
    /// Counts the flushes.
    metrics: Metrics,
    change: RangeInclusive<i64>,
    flush_every: Duration,
    /// The in-memory table, best first; None until loaded. Each round replaces the
    /// snapshot rather than changing it, so a flush in progress reads a consistent
    /// table without locking it.
    table: Option<Arc<Vec<Entry>>>,
    /// Users whose scores changed since they were last written.
    dirty: BTreeSet<Uuid>,
    /// The flush in progress.
    flushing: Option<JoinHandle<Result<Written, FailedFlush>>>,
    flush_began: Instant,
    next_flush: Instant,
    /// Failed flushes in a row, for the backoff.
    flush_failures: u32,
    /// In a cluster: why the store refuses this run's writes, once another node has
    /// taken the leaderboard over. The run plays no more rounds.
    deposed: Option<String>,
}

impl Leaderboard {
    /// Plays one round on the table: every score moves, then the table is sorted.
    fn play(&mut self, table: &[Entry]) -> Vec<Entry> {
        let mut rng = rand::rng();
        let mut next: Vec<Entry> = table
            .iter()
            .map(|entry| {
                let change = rng.random_range(self.change.clone());
                let mut user = entry.user.clone();
                user.score = user.score.saturating_add(change);
                Entry {
                    change: user.score - entry.user.score,
                    user,
                }
            })
            .collect();
        sort(&mut next);
        self.dirty
            .extend(next.iter().filter(|e| e.change != 0).map(|e| e.user.id));
        next
    }

    /// Starts writing the changed rows in the background, unless a write is under way.
    fn start_flush(&mut self, fence: Option<&Fence>) {
        let Some(table) = &self.table else { return };
        if self.dirty.is_empty() || self.flushing.is_some() {
            return;
        }
        let ids = std::mem::take(&mut self.dirty);
        let rows = changed_rows(table, &ids);
        let store = self.store.clone();
        let fence = fence.cloned();
        self.flush_began = Instant::now();
        self.flushing = Some(tokio::spawn(async move {
            store
                .save_scores(&rows, fence.as_ref())
                .await
                .map_err(|e| (ids, e))
        }));
    }

    /// Collects a finished flush (with `wait`, the one under way): on failure its rows
    /// are pending again, the next attempt waits longer, and the error says so.
    async fn collect_flush(&mut self, wait: bool, fence: Option<&Fence>) -> Result<(), String> {
        let Some(handle) = self.flushing.take_if(|h| wait || h.is_finished()) else {
            return Ok(());
        };
        let flushed = handle
            .await
            .map_err(|e| format!("flush task failed: {e}"))?;
        let saved = matches!(flushed, Ok(Written::Done));
        let pending = self.dirty.len() + flushed.as_ref().err().map_or(0, |(ids, _)| ids.len());
        self.metrics
            .flush(saved, self.flush_began.elapsed(), pending);
        match flushed {
            Ok(Written::Done) => {
                self.flush_failures = 0;
                self.next_flush = Instant::now() + self.flush_every;
                Ok(())
            }
            Ok(Written::Fenced { newer }) => {
                let dropped = std::mem::take(&mut self.dirty).len();
                let ours = fence.map_or(0, |f| f.token);
                let why = format!(
                    "another node has taken this leaderboard over (lease {newer}, this run's \
                     {ours}): its scores are not saved ({dropped} more changes dropped)"
                );
                // Said at once, whatever the log's summary of failing steps holds back:
                // it is why this node's last rounds are gone.
                tracing::warn!(service = "leaderboard", "{why}");
                self.deposed = Some(why.clone());
                Err(why)
            }
            Err((ids, error)) => {
                self.dirty.extend(ids);
                self.flush_failures += 1;
                let backoff = self
                    .flush_every
                    .saturating_mul(1 << self.flush_failures.min(16))
                    .min(MAX_FLUSH_BACKOFF.max(self.flush_every));
                self.next_flush = Instant::now() + backoff;
                Err(format!(
                    "cannot save scores ({} pending, next try in {backoff:?}): {error}",
                    self.dirty.len()
                ))
            }
        }
    }

    /// Writes every pending change, retrying until it lands; the caller bounds it.
    async fn flush_all(&mut self, fence: Option<&Fence>, report: impl Fn(String)) {
        if let Err(e) = self.collect_flush(true, fence).await {
            report(e);
        }
        while !self.dirty.is_empty() {
            self.start_flush(fence);
            if let Err(e) = self.collect_flush(true, fence).await {
                report(e);
                tokio::time::sleep(FINAL_FLUSH_RETRY).await;
            }
        }
    }
}

/// Best first; equal scores by username, so the order is stable.
fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        b.user
            .score
            .cmp(&a.user.score)
            .then_with(|| a.user.username.cmp(&b.user.username))
    });
}

/// The in-memory table of the users loaded from the database.
fn table_of(users: Vec<UserScore>) -> Vec<Entry> {
    let mut table: Vec<_> = users
        .into_iter()
        .map(|user| Entry { user, change: 0 })
        .collect();
    sort(&mut table);
    table
}

fn changed_rows(table: &[Entry], ids: &BTreeSet<Uuid>) -> Vec<UserScore> {
    table
        .iter()
        .filter(|e| ids.contains(&e.user.id))
        .map(|e| e.user.clone())
        .collect()
}

/// The event for a table: ranks shared by equal scores (1, 2, 2, 4).
fn leaderboard(table: &[Entry]) -> pb::Leaderboard {
    let mut rank = 0;
    let entries = table
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            if i == 0 || table[i - 1].user.score != entry.user.score {
                rank = i as u32 + 1;
            }
            pb::LeaderboardEntry {
                rank,
                username: entry.user.username.clone(),
                score: entry.user.score,
                change: entry.change,
                joined: Some(prost_types::Timestamp {
                    seconds: entry.user.joined.and_utc().timestamp(),
                    nanos: entry.user.joined.and_utc().timestamp_subsec_nanos() as i32,
                }),
            }
        })
        .collect();
    pb::Leaderboard { entries }
}

#[async_trait]
impl Worker for Leaderboard {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        if let Some(why) = &self.deposed {
            return Err(StepError::Step(why.clone()));
        }
        let table = match &self.table {
            Some(table) => table.clone(),
            None => {
                // First fenced off, so that the owner before cannot write after the read.
                if let Some(fence) = ctx.fence() {
                    let raised =
                        self.store.raise_fence(fence).await.map_err(|e| {
                            StepError::Step(format!("cannot claim the scores: {e}"))
                        })?;
                    if let Written::Fenced { newer } = raised {
                        return Err(StepError::Step(format!(
                            "another node has taken this leaderboard over (lease {newer}, \
                             this run's {})",
                            fence.token
                        )));
                    }
                }
                let users = self
                    .store
                    .user_scores()
                    .await
                    .map_err(|e| StepError::Step(format!("cannot load scores: {e}")))?;
                Arc::new(table_of(users))
            }
        };
        let next = Arc::new(self.play(&table));
        self.table = Some(next.clone());
        ctx.publish(Payload::Leaderboard(leaderboard(&next)))?;
        if let Err(e) = self.collect_flush(false, ctx.fence()).await {
            ctx.report(e);
        } else if self.flush_failures > 0 {
            // The scores wait for the next try: the table goes on, but not well.
            ctx.still_failing();
        }
        if Instant::now() >= self.next_flush {
            self.start_flush(ctx.fence());
        }
        Ok(())
    }

    /// Writes every pending change: the database then holds the last published scores.
    async fn finish(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        self.flush_all(ctx.fence(), |e| ctx.report(e)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn entry(username: &str, score: i64) -> Entry {
        Entry {
            user: UserScore {
                id: Uuid::new_v4(),
                username: username.into(),
                score,
                joined: NaiveDate::from_ymd_opt(2020, 7, 24)
                    .unwrap()
                    .and_hms_opt(21, 0, 7)
                    .unwrap(),
            },
            change: 0,
        }
    }

    #[test]
    fn equal_scores_share_a_rank() {
        let table = [entry("a", 9), entry("b", 5), entry("c", 5), entry("d", 1)];
        let ranks: Vec<_> = leaderboard(&table).entries.iter().map(|e| e.rank).collect();
        assert_eq!(ranks, [1, 2, 2, 4]);
        assert_eq!(
            leaderboard(&table).entries[0].joined.unwrap().seconds,
            1_595_624_407
        );
    }

    fn board(store: Store, change: RangeInclusive<i64>) -> Leaderboard {
        Leaderboard {
            store,
            change,
            flush_every: Duration::from_secs(5),
            table: None,
            dirty: BTreeSet::new(),
            flushing: None,
            flush_began: Instant::now(),
            metrics: Metrics::default(),
            next_flush: Instant::now(),
            flush_failures: 0,
            deposed: None,
        }
    }

    #[test]
    fn a_round_moves_scores_within_bounds_and_marks_them_dirty() {
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        let mut board = board(env.store, 1..=3);
        let table = vec![entry("a", i64::MAX - 1), entry("b", 0)];
        let next = board.play(&table);
        let b = next.iter().find(|e| e.user.username == "b").unwrap();
        assert!((1..=3).contains(&b.user.score) && b.change == b.user.score);
        let a = next.iter().find(|e| e.user.username == "a").unwrap();
        assert_eq!(a.user.score, i64::MAX, "saturates rather than wrapping");
        assert_eq!(a.change, 1);
        assert_eq!(board.dirty.len(), 2);
        assert!(next[0].user.score >= next[1].user.score);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Round,
        Flush,
    }

    /// Plays `ops` against a store, then stops as the service does, and compares.
    async fn table_and_database_agree(store: Store, ops: &[Op]) {
        store.prepare().await.unwrap();
        let mut board = board(store.clone(), -1000..=1000);
        let mut table = Arc::new(table_of(store.user_scores().await.unwrap()));
        board.table = Some(table.clone());
        for op in ops {
            match op {
                Op::Round => {
                    table = Arc::new(board.play(&table));
                    board.table = Some(table.clone());
                }
                Op::Flush => {
                    board.start_flush(None);
                    board.collect_flush(true, None).await.unwrap();
                }
            }
        }
        board.flush_all(None, |e| panic!("{e}")).await;
        let mut saved = store.user_scores().await.unwrap();
        saved.sort_by(|a, b| a.username.cmp(&b.username));
        let mut held: Vec<_> = table.iter().map(|e| e.user.clone()).collect();
        held.sort_by(|a, b| a.username.cmp(&b.username));
        assert_eq!(saved, held);
        store.close().await;
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        #[test]
        fn the_table_and_the_database_agree_after_any_rounds_and_flushes(
            ops in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(Op::Round), proptest::strategy::Just(Op::Flush)],
                0..25,
            )
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let (store, _dir) = crate::store::sqlite_for_test();
                table_and_database_agree(store, &ops).await;
            });
        }
    }

    #[tokio::test]
    async fn a_replaced_owners_flush_is_refused_and_ends_its_rounds() {
        let (store, _dir) = crate::store::sqlite_for_test();
        store.prepare().await.unwrap();
        let before = store.user_scores().await.unwrap();
        let fence = |token| Fence {
            service: "leaderboard".into(),
            token,
        };
        // The new owner (lease 7) claimed the scores; the old one (lease 5) flushes late.
        assert_eq!(store.raise_fence(&fence(7)).await.unwrap(), Written::Done);
        let mut old = board(store.clone(), 1..=1);
        let table = Arc::new(table_of(before.clone()));
        old.table = Some(Arc::new(old.play(&table)));
        old.start_flush(Some(&fence(5)));
        let refused = old.collect_flush(true, Some(&fence(5))).await.unwrap_err();
        assert!(refused.contains("lease 7"), "{refused}");
        assert!(old.deposed.is_some() && old.dirty.is_empty());
        assert_eq!(
            store.user_scores().await.unwrap(),
            before,
            "nothing written"
        );
        // The owner with the higher lease writes; a lower one cannot claim again.
        let mut new = board(store.clone(), 1..=1);
        new.table = Some(Arc::new(new.play(&table)));
        new.flush_all(Some(&fence(7)), |e| panic!("{e}")).await;
        assert!(store.user_scores().await.unwrap() != before);
        assert_eq!(
            store.raise_fence(&fence(6)).await.unwrap(),
            Written::Fenced { newer: 7 }
        );
        store.close().await;
    }

    #[test]
    fn bounds_are_checked() {
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        let params = Params::from([
            ("change_min".to_owned(), "5".to_owned()),
            ("change_max".to_owned(), "1".to_owned()),
        ]);
        assert!(matches!(build(&params, &env), Err(Build::Param(e)) if e.key == "change_max"));
        let params = Params::from([("flush_interval".to_owned(), "soon".to_owned())]);
        assert!(matches!(build(&params, &env), Err(Build::Param(e)) if e.key == "flush_interval"));
    }
}

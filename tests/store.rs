//! The store through its public API, against SQLite and, when configured, PostgreSQL:
//! any rows go in and come back unchanged.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use proptest::{collection::btree_map, prelude::*};
use streamhandler::store::{Fence, Store, UserScore, Written};
use uuid::Uuid;

use crate::harness::PgSchema;

fn date() -> impl Strategy<Value = NaiveDateTime> {
    // Whole microseconds, which both stores keep exactly, in years both can write.
    let at = |year| {
        NaiveDate::from_ymd_opt(year, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    (at(1000)..at(9999)).prop_map(|us| DateTime::from_timestamp_micros(us).unwrap().naive_utc())
}

fn username() -> impl Strategy<Value = String> {
    // Any printable text, quotes and all, short or as long as allowed (255 characters).
    prop_oneof!["\\PC{1,40}", "[\"'\\\\;%_]{1,10}", "\\PC{240,255}"]
}

fn rows() -> impl Strategy<Value = Vec<UserScore>> {
    btree_map(username(), (any::<i64>(), date()), 1..12).prop_map(|users| {
        users
            .into_iter()
            .map(|(username, (score, joined))| UserScore {
                id: Uuid::new_v4(),
                username,
                score,
                joined,
            })
            .collect()
    })
}

async fn round_trip(store: &Store, mut rows: Vec<UserScore>) {
    store.save_scores(&rows, None).await.unwrap();
    // Again with other scores: an update as well as an insert.
    for row in &mut rows {
        row.score = row.score.wrapping_neg();
    }
    store.save_scores(&rows, None).await.unwrap();
    let mut back = store.user_scores().await.unwrap();
    back.sort_by_key(|r| r.id);
    rows.sort_by_key(|r| r.id);
    assert_eq!(back, rows);
    store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn rows_round_trip_through_both_stores(rows in rows()) {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            round_trip(&Store::open(None, dir.path()).unwrap(), rows.clone()).await;
            if let Some(schema) = PgSchema::create().await {
                round_trip(&Store::open(Some(&schema.url), dir.path()).unwrap(), rows).await;
            }
        });
    }
}

/// A cluster's owners of a service write with rising fences: once a later owner has
/// written or claimed, an earlier one's writes change nothing.
async fn fences_refuse_replaced_owners(store: &Store) {
    let fence = |token| Fence {
        service: "leaderboard".into(),
        token,
    };
    let row = |score| UserScore {
        id: Uuid::from_u128(7),
        username: "fenced".into(),
        score,
        joined: NaiveDate::from_ymd_opt(2020, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    };
    let score = || async {
        let users = store.user_scores().await.unwrap();
        users
            .into_iter()
            .find(|u| u.username == "fenced")
            .map(|u| u.score)
    };
    let written = store.save_scores(&[row(1)], Some(&fence(3))).await.unwrap();
    assert_eq!(written, Written::Done);
    // The same owner writes again; then a new owner claims the service.
    let written = store.save_scores(&[row(2)], Some(&fence(3))).await.unwrap();
    assert_eq!(written, Written::Done);
    assert_eq!(store.raise_fence(&fence(9)).await.unwrap(), Written::Done);
    let late = store
        .save_scores(&[row(100)], Some(&fence(3)))
        .await
        .unwrap();
    assert_eq!(late, Written::Fenced { newer: 9 });
    assert_eq!(
        score().await,
        Some(2),
        "the replaced owner's late write changed nothing"
    );
    let written = store.save_scores(&[row(3)], Some(&fence(9))).await.unwrap();
    assert_eq!(written, Written::Done);
    assert_eq!(score().await, Some(3));
    // Other services' fences are their own.
    let other = Fence {
        service: "other".into(),
        token: 1,
    };
    assert_eq!(store.raise_fence(&other).await.unwrap(), Written::Done);
    store.close().await;
}

#[tokio::test]
async fn fences_refuse_replaced_owners_in_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    fences_refuse_replaced_owners(&Store::open(None, dir.path()).unwrap()).await;
    if let Some(schema) = PgSchema::create().await {
        fences_refuse_replaced_owners(&Store::open(Some(&schema.url), dir.path()).unwrap()).await;
    }
}

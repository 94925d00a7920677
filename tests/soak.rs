//! Churn soak: thousands of Subscribe streams and connections opened and abandoned (read
//! then dropped, never read, killed mid-read, PublishStreams cut off) leave the daemon's
//! fds, threads, RSS and subscriber count where they were. Short by default; run it long
//! with `STREAMD_SOAK_SECS=600 cargo nextest run --test tests -E 'test(/soak/)'`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use streamhandler::pb::{self, event::Payload};

use crate::harness::{Daemon, Events, PATIENCE, start_request};

/// What the daemon holds, from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: usize,
}

fn usage(daemon: &Daemon) -> Usage {
    let proc = format!("/proc/{}", daemon.pid());
    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap();
    let field = |name: &str| -> usize {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    Usage {
        fds: std::fs::read_dir(format!("{proc}/fd")).unwrap().count(),
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
    }
}

/// Back where it started, give or take: a few fds and threads for the runtime's
/// blocking pool, which keeps idle threads for a while, and 64 MiB of RSS that the
/// allocator may keep after freeing.
fn settled(now: Usage, baseline: Usage) -> bool {
    now.fds <= baseline.fds + 4
        && now.threads <= baseline.threads + 4
        && now.rss_kib <= baseline.rss_kib + 64 * 1024
}

/// One round: 20 connections of 5 streams each, abandoned in every way a client can.
async fn churn(daemon: &Daemon) {
    let mut held = Vec::new();
    for connection in 0..20 {
        let mut client = daemon.client().await;
        for stream in 0..5 {
            let mut events = Events::open(&mut client, &["system", "soak/*"], true).await;
            match (connection + stream) % 4 {
                // Read a little, then drop.
                0 => drop(events.within(Duration::from_millis(5)).await),
                // Never read; dropped with its connection at the end of the round.
                1 => held.push(events),
                // Killed mid-read.
                2 => tokio::spawn(async move { events.next().await }).abort(),
                // A PublishStream cut off after a few events, beside the subscriber.
                _ => {
                    held.push(events);
                    let requests = futures::stream::iter((0..10).map(|i| pb::PublishRequest {
                        topic: format!("soak/{i}"),
                        data: Some(Default::default()),
                    }))
                    .chain(futures::stream::pending());
                    let mut publisher = client.clone();
                    let publishing =
                        tokio::spawn(async move { publisher.publish_stream(requests).await });
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    publishing.abort();
                }
            }
        }
        held.push(Events::open(&mut client, &["never-read"], false).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_streams_and_connections_leave_nothing_behind() {
    let soak = std::env::var("STREAMD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    client
        .start_service(start_request("system", 100, &[]))
        .await
        .unwrap();
    let mut watch = Events::open(&mut client, &["system"], false).await;
    watch.next().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = usage(&daemon);

    let end = Instant::now() + soak;
    let mut rounds = 0;
    while Instant::now() < end {
        churn(&daemon).await;
        rounds += 1;
    }
    assert!(rounds * 120 >= 1000, "only {rounds} rounds in {soak:?}");

    // The watcher is the one subscriber left.
    watch
        .next_where(
            |event| matches!(&event.payload, Some(Payload::System(s)) if s.subscribers == 1),
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    let mut now = usage(&daemon);
    while !settled(now, baseline) {
        assert!(
            Instant::now() < deadline,
            "after {rounds} rounds: {now:?}, baseline {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = usage(&daemon);
    }
}

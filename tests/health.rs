//! Health: a service whose steps fail is shown failing, `start` tells of its first
//! step, and the log hears of a run of failures once and of the recovery.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, http::StatusCode, routing::get};
use serde_json::json;
use streamhandler::pb::{Health, ServiceInfo};

use crate::harness::{Daemon, PATIENCE, text};

/// An activities API that fails with 500 until `up` is set.
async fn api(up: Arc<AtomicBool>) -> SocketAddr {
    let app = Router::new().route(
        "/activity",
        get(move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if !up {
                    return Err(StatusCode::INTERNAL_SERVER_ERROR);
                }
                Ok(Json(
                    json!({"activity": "Go for a walk", "type": "relaxation",
                    "participants": 1, "price": 0, "accessibility": 0.1, "link": "", "key": "1"}),
                ))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Waits until `activities` satisfies `want`.
async fn activities_until(daemon: &Daemon, want: impl Fn(&ServiceInfo) -> bool) -> ServiceInfo {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let service = daemon.service("activities").await;
        if want(&service) {
            return service;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "activities never got there: {service:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Two threads: the API goes on answering while the test waits for streamctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_looks_failing_until_it_recovers() {
    let up = Arc::new(AtomicBool::new(false));
    let addr = api(up.clone()).await;
    let daemon = Daemon::start();
    let url = format!("url=http://{addr}/activity");
    let start = |extra: &[&str]| {
        let mut args = vec!["start", "activities", "--interval", "100ms", "--set", &url];
        args.extend_from_slice(extra);
        daemon.ctl(&args)
    };

    // With --wait-healthy, a first step that fails is an error.
    let output = start(&["--wait-healthy"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("activities: started, but its first step failed:")
            && stdout.contains("500"),
        "{stdout}"
    );
    let failing = activities_until(&daemon, |s| s.consecutive_failures >= 3).await;
    assert_eq!(failing.health(), Health::Failing);
    assert!(failing.failing_since.is_some(), "{failing:?}");
    let (list, _) = text(&daemon.ctl(&["list"]));
    let row = list.lines().find(|l| l.starts_with("activities")).unwrap();
    assert!(row.contains("failing") && !row.contains("running"), "{row}");
    let (show, _) = text(&daemon.ctl(&["show", "activities"]));
    assert!(show.contains("health:      failing: "), "{show}");

    up.store(true, Ordering::SeqCst);
    let healthy = activities_until(&daemon, |s| s.health() == Health::Healthy).await;
    assert_eq!(healthy.consecutive_failures, 0);
    assert!(healthy.failing_since.is_none());
    let log = daemon.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("activities"))
        .count();
    assert_eq!(warned, 1, "one warning for the run of failures:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("recovered after") && l.contains("activities")),
        "{log}"
    );

    // Started again against a working API, it reports a good first step.
    daemon.ctl(&["stop", "activities"]);
    let output = start(&["--wait-healthy"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "activities: started");
}

#[tokio::test]
async fn start_without_waiting_returns_before_the_first_step() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["start", "streamer", "--interval", "1h", "--no-wait"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    assert_eq!(stdout.trim(), "streamer: started");
    // A stopped service has no health to speak of.
    daemon.ctl(&["stop", "streamer"]);
    assert_eq!(
        daemon.service("streamer").await.health(),
        Health::Unspecified
    );
}

//! `streamctl bench` against a real daemon: correctness only, never speed.

use crate::harness::{Daemon, text};

/// Runs `streamctl bench ARGS --json` and returns its report.
fn bench(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let output = daemon.ctl(&[&["bench", "--json"], args].concat());
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn every_event_reaches_every_subscriber_once_and_in_order() {
    let daemon = Daemon::start();
    // A rate the subscribers keep up with, even in a debug build on a busy machine:
    // faster publishers are paced only by flow control, and a subscriber that falls
    // a ring's worth behind skips ahead.
    let report = bench(
        &daemon,
        &[
            "--subs", "3", "--msgs", "2000", "--size", "128", "--rate", "10000",
        ],
    );
    let ours = &report["streamd"];
    assert_eq!(ours["published"], 2000, "{report:#}");
    assert_eq!(ours["delivered"], 6000, "{report:#}");
    for key in ["lost", "lagged", "duplicates", "out_of_order"] {
        assert_eq!(ours[key], 0, "{key}: {report:#}");
    }
    let subscribers = ours["subscribers"].as_array().unwrap();
    assert_eq!(subscribers.len(), 3);
    for s in subscribers {
        assert_eq!(s["received"], 2000, "{s}");
        assert_eq!(s["ok"], true, "{s}");
    }
    assert_eq!(ours["ok"], true);
    assert!(report["nats"].is_null());
}

#[test]
fn shared_connections_and_several_publishers_lose_nothing() {
    let daemon = Daemon::start();
    let report = bench(
        &daemon,
        &[
            "--subs", "4", "--conns", "2", "--pubs", "3", "--msgs", "1500", "--rate", "5000",
        ],
    );
    let ours = &report["streamd"];
    assert_eq!(ours["delivered"], 6000, "{report:#}");
    assert_eq!(ours["ok"], true, "{report:#}");
}

#[test]
fn the_control_bench_starts_and_stops_a_service() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["bench", "--control", "5", "--json"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["cycles"], 5);
    assert_eq!(report["start"]["count"], 5);
    assert_eq!(report["first_event"]["count"], 5);
}

#[test]
fn errors_are_one_line() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["bench", "--size", "8"]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--size"), "{stderr}");

    // Nothing listens on a port just bound and closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = daemon.ctl(&[
        "bench",
        "--msgs",
        "10",
        "--against-nats",
        &format!("nats://{closed}"),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nats-server is not reachable"), "{stderr}");

    let output = crate::harness::streamctl_at(&closed.to_string())
        .args(["bench", "--msgs", "10"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("streamd is not running"), "{stderr}");
}

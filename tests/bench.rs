//! `streamctl bench` against a real daemon: correctness only, never speed. The tests
//! that run nats-server need `STREAMD_TEST_NATS_SERVER` to name its binary (.ci/run
//! sets it); without it they say they are skipped and pass.

use crate::harness::{Daemon, STREAMD, nats_server, streamctl_at, text};

/// Runs `streamctl bench --spawn ARGS` with the test's own streamd (no daemon at the
/// default address is used) and returns its stdout.
fn spawned(args: &[&str]) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = streamctl_at(&closed.to_string())
        .args(["bench", "--spawn", "--streamd-bin", STREAMD])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    stdout
}

/// A small, slow run: what a debug build on a busy machine always keeps up with.
const SLOW: [&str; 6] = ["--duration", "1s", "--warmup", "200ms", "--size", "128"];

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
            "--subs", "3", "--msgs", "2000", "--size", "128", "--rate", "10000", "--warmup",
            "500ms",
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
    // The harness's daemon listens on loopback, so the bench finds its process.
    assert!(ours["server_cpu_secs"].is_f64(), "{report:#}");
    assert!(ours["server_rss_kib_after"].is_u64(), "{report:#}");
}

#[test]
fn shared_connections_and_several_publishers_lose_nothing() {
    let daemon = Daemon::start();
    let report = bench(
        &daemon,
        &[
            "--subs", "4", "--conns", "2", "--pubs", "3", "--msgs", "1500", "--rate", "5000",
            "--warmup", "500ms",
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

#[test]
fn stalled_connections_and_a_quiet_topic_cost_the_live_subscribers_nothing() {
    let daemon = Daemon::start();
    for stall in [&["--stall", "tcp"][..], &["--stall-shared", "--conns", "1"]] {
        let args = [
            &SLOW[..],
            &[
                "--subs",
                "2",
                "--stalled",
                "2",
                "--rate",
                "500",
                "--quiet-rate",
                "50",
            ],
            stall,
        ]
        .concat();
        let report = bench(&daemon, &args);
        let ours = &report["streamd"];
        assert_eq!(ours["ok"], true, "{stall:?}: {report:#}");
        assert_eq!(ours["lost"], 0, "{stall:?}: {report:#}");
        assert_eq!(ours["delivered"], 1000, "{stall:?}: {report:#}");
        assert_eq!(ours["stall"]["subscribers"], 2, "{report:#}");
        let quiet = &ours["quiet"];
        assert_eq!(quiet["lost"], 0, "{report:#}");
        assert_eq!(quiet["ok"], true, "{report:#}");
        assert_eq!(quiet["received"], quiet["published"], "{report:#}");
    }
}

/// The JSON lines of a ladder: one object per run, then the summary. Its runs are
/// sustained under a p99 of a minute: a debug build beside the other tests may pause
/// past 100 ms, and these tests are of the ladder, not of the speed.
fn ladder(args: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let lenient = ["--json", "--sustained-p99", "60s"];
    let stdout = spawned(&[&SLOW[..], &lenient[..], args].concat());
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let summary = lines.pop().unwrap()["summary"].clone();
    assert!(summary.is_object(), "{stdout}");
    (lines, summary)
}

#[test]
fn a_spawned_ladder_writes_a_line_per_run_and_a_summary() {
    let (runs, summary) = ladder(&["--rates", "200,400", "--repeat", "1", "--subs", "2"]);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for (run, rate) in runs.iter().zip([200, 400]) {
        assert_eq!(run["system"], "streamd");
        assert_eq!(run["rate"], rate);
        assert_eq!(
            (run["rep"].clone(), run["order"].clone()),
            (0.into(), 0.into())
        );
        assert_eq!(run["msgs"], rate, "a second at the rate: {run}");
        assert_eq!(run["warmup_secs"], 0.2);
        assert_eq!(run["ok"], true, "{run}");
        assert_eq!(run["lost"], 0, "{run}");
        for key in [
            "delivered_rate",
            "server_cpu_secs",
            "server_cpu_ns_per_delivered",
        ] {
            assert!(run[key].is_f64(), "{key}: {run}");
        }
        for key in [
            "server_rss_kib_before",
            "server_rss_kib_after",
            "published",
            "delivered",
        ] {
            assert!(run[key].is_u64(), "{key}: {run}");
        }
        for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(run["latency"][key].is_f64(), "{key}: {run}");
        }
        assert!(run["nats_client_dropped"].is_null());
        assert!(run["date"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(summary["streamd"]["rate"], 400, "{summary}");
    assert_eq!(summary["streamd"]["top_of_ladder"], true, "{summary}");
    assert_eq!(summary["sustained_p99_ms"], 60_000.0, "{summary}");
    assert!(summary["nats"].is_null());
}

#[test]
fn a_ladder_against_nats_alternates_which_system_goes_first() {
    let Some(nats) = nats_server() else { return };
    let (runs, summary) = ladder(&[
        "--rates",
        "100,200",
        "--repeat",
        "2",
        "--against-nats",
        "--nats-server-bin",
        &nats,
    ]);
    let seen: Vec<(String, u64, u64, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["system"].as_str().unwrap().to_string(),
                r["rate"].as_u64().unwrap(),
                r["rep"].as_u64().unwrap(),
                r["order"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for rate in [100, 200] {
        for (system, rep, order) in [
            ("streamd", 0, 0),
            ("nats", 0, 1),
            ("nats", 1, 0),
            ("streamd", 1, 1),
        ] {
            expected.push((system.to_string(), rate, rep, order));
        }
    }
    assert_eq!(seen, expected, "{runs:#?}");
    for run in &runs {
        assert_eq!(run["ok"], true, "{run}");
        if run["system"] == "nats" {
            assert_eq!(run["nats_client_dropped"], 0, "{run}");
            assert!(run["server_cpu_secs"].is_f64(), "{run}");
        }
    }
    assert_eq!(summary["nats"]["rate"], 200, "{summary}");
    let ratios = &summary["rates"][0]["ratios"];
    assert_eq!(ratios["delivered_rate"]["n"], 2, "{summary}");
}

#[test]
fn stalled_and_quiet_subscribers_against_nats_lose_nothing_live() {
    let Some(nats) = nats_server() else { return };
    for stall in ["tcp", "grpc"] {
        let stdout = spawned(
            &[
                &SLOW[..],
                &[
                    "--json",
                    "--rate",
                    "500",
                    "--subs",
                    "2",
                    "--stalled",
                    "2",
                    "--stall",
                    stall,
                    "--quiet-rate",
                    "50",
                    "--against-nats",
                    "--nats-server-bin",
                    &nats,
                ],
            ]
            .concat(),
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for system in ["streamd", "nats"] {
            let run = &report[system];
            assert_eq!(run["ok"], true, "{stall} {system}: {run:#}");
            assert_eq!(run["delivered"], 1000, "{stall} {system}: {run:#}");
            assert_eq!(run["quiet"]["lost"], 0, "{stall} {system}: {run:#}");
            assert_eq!(run["stall"]["level"], stall, "{run:#}");
        }
    }
    // A stalled subscription cannot share a live one's connection in NATS: said, not faked.
    let stdout = spawned(
        &[
            &SLOW[..],
            &[
                "--json",
                "--rate",
                "200",
                "--subs",
                "2",
                "--conns",
                "1",
                "--stalled",
                "1",
                "--stall-shared",
                "--against-nats",
                "--nats-server-bin",
                &nats,
            ],
        ]
        .concat(),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["streamd"]["stall"]["shared"], true, "{report:#}");
    assert!(report["nats"]["stall"].is_null(), "{report:#}");
    assert!(
        !report["nats"]["notes"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

#[test]
fn publishing_to_ever_new_names_leaves_the_daemon_holding_its_cap() {
    let daemon = Daemon::start_with(&["--max-topics", "100"]);
    let report = bench(&daemon, &["--names", "2000"]);
    assert_eq!(report["names"], 2000, "{report:#}");
    let topics = report["topics_after"].as_u64().unwrap();
    // The clients' topics within the cap, and the system service's own.
    assert!((90..=101).contains(&topics), "{report:#}");
    assert!(report["rss_kib_after"].as_u64().unwrap() > 0, "{report:#}");
}

#[test]
fn repeat_without_a_ladder_runs_the_one_workload_at_full_speed() {
    let stdout = spawned(&["--msgs", "2000", "--repeat", "2", "--json"]);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (runs, summary) = lines.split_at(2);
    for run in runs {
        assert_eq!(run["system"], "streamd", "{run:#}");
        assert_eq!(
            (run["rate"].as_u64(), run["ok"].as_bool()),
            (Some(0), Some(true)),
            "{run:#}"
        );
    }
    let rungs = summary[0]["summary"]["rates"].as_array().unwrap();
    assert_eq!(rungs.len(), 1);
    assert_eq!(rungs[0]["streamd"]["runs"], 2, "{summary:#?}");
}

//! The gRPC listener's two lanes through the real daemon: a connection that floods
//! moves to the busy lane while a quiet one stays, both go on being served; by default
//! (`--quiet-lane off`) every connection is on the busy lane; a raised scheduling the
//! host refuses keeps the daemon from starting.

use streamhandler::pb;

use crate::{
    bus::flood,
    harness::{Daemon, Events},
};

/// The gRPC connections open on each lane, (quiet, busy), as /metrics counts them.
async fn connections(daemon: &Daemon) -> (u64, u64) {
    let metrics = reqwest::get(format!("{}metrics", daemon.dashboard()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let on = |lane: &str| {
        let sample = format!("streamd_connections{{lane=\"{lane}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&sample))
            .unwrap_or_else(|| panic!("no {sample}in\n{metrics}"))
            .parse()
            .unwrap()
    };
    (on("quiet"), on("busy"))
}

fn event(topic: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        topic: topic.into(),
        data: Some(Default::default()),
    }
}

#[tokio::test]
async fn a_flooding_connection_moves_to_the_busy_lane_and_a_quiet_one_stays() {
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0", "--quiet-lane", "normal"]);
    let mut quiet = daemon.client().await;
    let mut calm = Events::open(&mut quiet, &["calm"], false).await;
    quiet.publish(event("calm")).await.unwrap();
    assert_eq!(calm.next().await.topic, "calm");
    let mut loud = daemon.client().await;
    assert_eq!(connections(&daemon).await, (2, 0));

    // 8 MiB in one stream: past the quiet lane's 1 MiB a second on any machine.
    flood(&mut loud, "flood", 8 * 1024, 1024).await;
    assert_eq!(connections(&daemon).await, (1, 1), "{}", daemon.log());

    // Both are served on from where they are.
    quiet.publish(event("calm")).await.unwrap();
    assert_eq!(calm.next().await.topic, "calm");
    flood(&mut loud, "flood", 10, 16).await;
    drop(loud);
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while connections(&daemon).await != (1, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn by_default_every_connection_is_on_the_busy_lane() {
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0"]);
    let mut client = daemon.client().await;
    let mut calm = Events::open(&mut client, &["calm"], false).await;
    client.publish(event("calm")).await.unwrap();
    assert_eq!(calm.next().await.topic, "calm");
    assert_eq!(connections(&daemon).await, (0, 1));
}

/// As a user without CAP_SYS_NICE (root drops to `nobody` for it), realtime and raised
/// are refused at start, saying what they need, rather than quietly run at the
/// daemon's priority.
#[test]
fn a_refused_realtime_or_raised_lane_is_an_error_at_start() {
    let data_dir = tempfile::tempdir().unwrap();
    let unprivileged = crate::harness::unprivileged_user();
    if let Some((uid, _)) = unprivileged {
        std::os::unix::fs::chown(data_dir.path(), Some(uid), None).unwrap();
    }
    for (mode, refused) in [
        ("realtime", "SCHED_FIFO was refused"),
        ("raised", "nice -15 was refused"),
    ] {
        let mut command = crate::harness::command_as(crate::harness::STREAMD, unprivileged);
        let output = command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--quiet-lane",
                mode,
                "--data-dir",
            ])
            .arg(data_dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{mode}: started\n{stderr}");
        assert!(stderr.contains(refused), "{mode}: {stderr}");
        assert!(stderr.contains("CAP_SYS_NICE"), "{mode}: {stderr}");
    }
}

//! streamd's configuration file, as a user writes it.

use std::process::Command;

use streamhandler::pb;

use crate::harness::{Daemon, STREAMD, write};

#[tokio::test]
async fn a_file_adds_services_changes_intervals_and_starts_them_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts");
    std::fs::create_dir(&texts).unwrap();
    write(&texts, "one.txt", "First Title\n\nbody\n");
    let config = write(
        dir.path(),
        "streamd.toml",
        &format!(
            r#"
start = ["notes", "streamer"]

[supervisor]
stop_timeout = "2s"

[services.streamer]
interval = "150ms"

[services.notes]
kind = "reader"
interval = "100ms"
params = {{ dir = "{}" }}
"#,
            texts.display()
        ),
    );
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let mut client = daemon.client().await;
    let list = client
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let find = |name: &str| {
        list.services
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .clone()
    };
    let notes = find("notes");
    assert_eq!(
        (notes.kind.as_str(), notes.state()),
        ("reader", pb::ServiceState::Running)
    );
    assert_eq!(notes.params["dir"], texts.display().to_string());
    let streamer = find("streamer");
    assert_eq!(streamer.state(), pb::ServiceState::Running);
    assert_eq!(streamer.interval.unwrap().nanos, 150_000_000);
    assert_eq!(find("reader").state(), pb::ServiceState::Stopped);

    let mut events = crate::harness::Events::open(&mut client, &["notes"], true).await;
    let event = events.next_where(crate::harness::is_data).await;
    let Some(pb::event::Payload::Text(text)) = event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(text.title, "First Title");
}

/// Runs streamd with a config file and returns its exit status, its stderr and the
/// file's path.
pub(crate) fn refused(contents: &str) -> (std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "bad.toml", contents);
    let output = Command::new(STREAMD)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        config.display().to_string(),
    )
}

#[test]
fn a_bad_file_is_refused_with_file_line_and_key() {
    let cases = [
        (
            "[services.streamer]\ninterval = \"soon\"\n",
            ":2: services.streamer.interval: invalid duration \"soon\": expected a number \
             and a unit, like 500ms or 2s",
        ),
        (
            "[services.x]\nkind = \"teleporter\"\n",
            ":2: services.x.kind: unknown kind",
        ),
        (
            "start = [\"ghost\"]\n",
            ":1: start: no service named \"ghost\"",
        ),
        ("[services.streamer]\n\nspeed = 3\n", ":3:"),
        (
            "[services.reader.params]\ndir = \"/a\"\nfollow = \"/b\"\n",
            "services.reader.params.follow",
        ),
        ("not toml at all", ":1:"),
    ];
    for (contents, expected) in cases {
        let (status, stderr, path) = refused(contents);
        assert!(!status.success(), "accepted {contents:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&format!("{path}{expected}"))
                || stderr.contains(expected) && stderr.contains(&path),
            "{contents:?} gave: {stderr}"
        );
    }
}

#[test]
fn a_missing_file_and_a_taken_port_are_refused() {
    let output = Command::new(STREAMD)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/nonexistent/streamd.toml",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/streamd.toml: cannot read"),
        "{stderr}"
    );

    let daemon = Daemon::start();
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(STREAMD)
        .args(["--listen", &daemon.addr.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", daemon.addr)),
        "{stderr}"
    );
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "env.toml", "start = [\"nope\"]\n");
    let output = Command::new(STREAMD)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("STREAMD_CONFIG", &config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("env.toml:1: start"));
}

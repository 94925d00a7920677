//! The built-in services, run by the real daemon against real files.

use std::{fs::OpenOptions, io::Write, path::Path, time::Duration};

use streamhandler::pb::{self, event::Payload, lifecycle::Kind};

use crate::harness::{Daemon, Events, is_data, is_lifecycle, start_watching, write};

async fn next_line(events: &mut Events) -> (u64, String) {
    let event = events.next_where(is_data).await;
    match event.payload {
        Some(Payload::Line(line)) => (line.number, line.text),
        other => panic!("not a line: {other:?}"),
    }
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A daemon whose reader and images take their paths from clients, as the operator
/// may allow.
fn daemon_taking_paths_from_clients() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        "[services.reader]\nallow_override = [\"dir\", \"follow\"]\n\
         [services.images]\nallow_override = [\"dir\"]\n",
    );
    Daemon::start_with(&["--config", config.to_str().unwrap()])
}

#[tokio::test]
async fn reader_publishes_the_built_in_poems() {
    let daemon = Daemon::start();
    let mut events = start_watching(&daemon, "reader", 100, &[]).await;
    let poems = daemon.data_dir.path().join("poems");
    for _ in 0..3 {
        let event = events.next_where(is_data).await;
        let Some(Payload::Text(text)) = event.payload else {
            panic!("{event:?}")
        };
        assert!(
            text.path.starts_with(poems.to_str().unwrap()),
            "{}",
            text.path
        );
        assert_eq!(std::fs::read_to_string(&text.path).unwrap(), text.body);
        assert!(!text.title.is_empty() && text.body.starts_with(&text.title));
    }
}

/// Starts the reader following `file` in `dir`, ticking every 100 ms.
async fn start_following(daemon: &Daemon, dir: &Path, file: &Path) -> Events {
    start_watching(
        daemon,
        "reader",
        100,
        &[
            ("dir", dir.to_str().unwrap()),
            ("follow", file.to_str().unwrap()),
        ],
    )
    .await
}

#[tokio::test]
async fn reader_follows_appends_truncation_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "app.log", "old line, not followed\n");
    let daemon = daemon_taking_paths_from_clients();
    let mut events = start_following(&daemon, dir.path(), &log).await;
    events.next().await; // started
    // Give it a moment to look at the file before it grows.
    tokio::time::sleep(Duration::from_millis(500)).await;

    append(&log, "one\ntw");
    assert_eq!(next_line(&mut events).await, (1, "one".into()));
    append(&log, "o\r\nthree\n");
    assert_eq!(next_line(&mut events).await, (2, "two".into()));
    assert_eq!(next_line(&mut events).await, (3, "three".into()));

    // Truncated: it starts over from the top.
    std::fs::write(&log, "").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&log, "after truncation\n");
    assert_eq!(next_line(&mut events).await, (1, "after truncation".into()));

    // Rotated: the rest of the old file, then the new file from its start.
    append(&log, "last of the old file\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    write(dir.path(), "app.log", "first of the new file\n");
    assert_eq!(
        next_line(&mut events).await,
        (2, "last of the old file".into())
    );
    assert_eq!(
        next_line(&mut events).await,
        (1, "first of the new file".into())
    );
}

#[tokio::test]
async fn reader_waits_for_a_followed_file_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.log");
    let daemon = daemon_taking_paths_from_clients();
    let mut events = start_following(&daemon, dir.path(), &path).await;
    let error = events.next_where(|e| !is_lifecycle(e, Kind::Started)).await;
    assert!(is_lifecycle(&error, Kind::Error), "{error:?}");
    append(&path, "hello\n");
    assert_eq!(next_line(&mut events).await, (1, "hello".into()));
}

#[tokio::test]
async fn images_reports_size_type_and_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let fox = include_bytes!("../daemon/assets/images/fox.png");
    std::fs::write(dir.path().join("fox.png"), fox).unwrap();
    write(dir.path(), "notes.txt", "not an image");
    let daemon = daemon_taking_paths_from_clients();
    let mut events = start_watching(
        &daemon,
        "images",
        100,
        &[("dir", dir.path().to_str().unwrap())],
    )
    .await;
    for _ in 0..3 {
        let event = events.next_where(is_data).await;
        let Some(Payload::Image(image)) = event.payload else {
            panic!("{event:?}")
        };
        assert_eq!(image.path, dir.path().join("fox.png").display().to_string());
        assert_eq!(image.size_bytes, fox.len() as u64);
        assert_eq!(image.media_type, "image/png");
        assert_eq!((image.width, image.height), (64, 64));
    }
}

#[tokio::test]
async fn a_failing_step_is_an_error_event_and_the_service_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_taking_paths_from_clients();
    let mut events = start_watching(
        &daemon,
        "images",
        100,
        &[("dir", dir.path().to_str().unwrap())],
    )
    .await;
    let mut errors = 0;
    while errors < 2 {
        let event = events.next().await;
        if let Some(Payload::Lifecycle(l)) = &event.payload
            && l.kind() == Kind::Error
        {
            assert!(l.message.contains("no image files"), "{}", l.message);
            errors += 1;
        }
    }
    // Once there is something to read, it publishes again.
    std::fs::write(
        dir.path().join("owl.png"),
        include_bytes!("../daemon/assets/images/owl.png"),
    )
    .unwrap();
    events.next_where(is_data).await;
    let images = daemon.service("images").await;
    assert_eq!(images.state(), pb::ServiceState::Running);
    assert!(images.errors >= 2);
    assert!(
        images.last_error.contains("no image files"),
        "{}",
        images.last_error
    );
}

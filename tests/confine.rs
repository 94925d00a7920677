//! Confinement and limits: what a hostile config value or client request tried against
//! the real daemon, and what it must get instead of the daemon's files, memory or life.
//! Hostile directories come from the config file, where an operator's value holds the
//! same rules as a client's.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tonic::Code;

use crate::{
    config::refused,
    harness::{Daemon, Events, PATIENCE, start_request, with_config, write},
};

/// A reader service named `name` over `dir`, ticking every 50 ms.
fn reader(name: &str, params: &str) -> String {
    format!("[services.{name}]\nkind = \"reader\"\ninterval = \"50ms\"\nparams = {{ {params} }}\n")
}

fn error_message(event: &pb::Event) -> Option<&str> {
    match &event.payload {
        Some(Payload::Lifecycle(l)) if l.kind() == Kind::Error => Some(&l.message),
        _ => None,
    }
}

/// Subscribes to `name`, starts it, and returns its stream.
async fn watch(daemon: &Daemon, name: &str) -> Events {
    let mut client = daemon.client().await;
    let events = Events::open(&mut client, &[name], false).await;
    client
        .start_service(pb::StartServiceRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    events
}

#[tokio::test]
async fn a_directory_under_proc_is_refused_and_the_service_stops_cleanly() {
    let (daemon, _config) = with_config(&reader("procs", "dir = \"/proc/self\""));
    let mut events = watch(&daemon, "procs").await;
    let error = events.next_where(|e| error_message(e).is_some()).await;
    let message = error_message(&error).unwrap();
    assert!(
        message.contains("/proc/self") && message.contains("refused"),
        "{message}"
    );
    // Many steps later, nothing has been read into memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.rss_kib() < 200 * 1024,
        "RSS {} KiB",
        daemon.rss_kib()
    );
    let service = daemon.service("procs").await;
    assert!(service.last_error.contains("refused"), "{service:?}");
    let stopped = daemon
        .client()
        .await
        .stop_service(pb::StopServiceRequest {
            name: "procs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.was_running && !stopped.forced, "{stopped:?}");
}

#[tokio::test]
async fn symlinks_out_of_the_directory_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = write(outside.path(), "secret.txt", "root:SECRET-HASH\n");
    let texts = tempfile::tempdir().unwrap();
    write(texts.path(), "poem.txt", "A Title\nbody\n");
    std::os::unix::fs::symlink(&secret, texts.path().join("secret.txt")).unwrap();
    std::os::unix::fs::symlink("/proc/self/pagemap", texts.path().join("pagemap.txt")).unwrap();
    let (daemon, _config) = with_config(&reader(
        "texts",
        &format!("dir = \"{}\"", texts.path().display()),
    ));
    let mut events = watch(&daemon, "texts").await;
    let (mut refused, mut published) = (BTreeSet::new(), 0);
    while refused.len() < 2 || published == 0 {
        let event = events.next().await;
        if let Some(message) = error_message(&event) {
            assert!(message.contains("resolves outside"), "{message}");
            for link in ["secret.txt", "pagemap.txt"] {
                if message.contains(link) {
                    refused.insert(link);
                }
            }
        }
        if let Some(Payload::Text(text)) = &event.payload {
            assert!(!text.body.contains("SECRET"), "{text:?}");
            assert_eq!(text.title, "A Title");
            published += 1;
        }
    }
}

#[tokio::test]
async fn a_fifo_is_skipped_and_never_holds_a_step() {
    let texts = tempfile::tempdir().unwrap();
    write(texts.path(), "poem.txt", "A Title\nbody\n");
    nix::unistd::mkfifo(
        &texts.path().join("pipe.txt"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let (daemon, _config) = with_config(&reader(
        "texts",
        &format!("dir = \"{}\"", texts.path().display()),
    ));
    let mut events = watch(&daemon, "texts").await;
    for _ in 0..5 {
        let event = events
            .next_where(|e| {
                matches!(e.payload, Some(Payload::Text(_))) || error_message(e).is_some()
            })
            .await;
        assert!(error_message(&event).is_none(), "{event:?}");
    }
    let stopped = daemon
        .client()
        .await
        .stop_service(pb::StopServiceRequest {
            name: "texts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stopped.forced, "{stopped:?}");
}

#[tokio::test]
async fn a_file_over_the_cap_is_passed_over_with_a_clear_error() {
    let texts = tempfile::tempdir().unwrap();
    write(texts.path(), "huge.txt", &"x".repeat(10 << 20));
    let (daemon, _config) = with_config(&reader(
        "texts",
        &format!("dir = \"{}\"", texts.path().display()),
    ));
    let mut events = watch(&daemon, "texts").await;
    let error = events.next_where(|e| error_message(e).is_some()).await;
    assert!(
        error_message(&error)
            .unwrap()
            .contains("at most 32768 bytes"),
        "{error:?}"
    );
    assert!(
        daemon.rss_kib() < 200 * 1024,
        "RSS {} KiB",
        daemon.rss_kib()
    );
}

#[tokio::test]
async fn follow_stays_inside_its_directory() {
    let outside = tempfile::tempdir().unwrap();
    let secret = write(outside.path(), "secret.log", "");
    let logs = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&secret, logs.path().join("app.log")).unwrap();

    // Named outside: the file is refused at start.
    let (status, stderr, _) = refused(&reader(
        "tail",
        &format!(
            "dir = \"{}\", follow = \"{}\"",
            logs.path().display(),
            secret.display()
        ),
    ));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":4: services.tail.params.follow: ") && stderr.contains("not inside dir"),
        "{stderr}"
    );

    // Reached through a symlink inside: refused when opened.
    let (daemon, _config) = with_config(&reader(
        "tail",
        &format!("dir = \"{}\", follow = \"app.log\"", logs.path().display()),
    ));
    let mut events = watch(&daemon, "tail").await;
    let error = events.next_where(|e| error_message(e).is_some()).await;
    assert!(
        error_message(&error).unwrap().contains("resolves outside"),
        "{error:?}"
    );
    std::fs::write(&secret, "SECRET line\n").unwrap();
    while let Some(event) = events.within(Duration::from_secs(1)).await {
        assert!(
            !matches!(event.payload, Some(Payload::Line(_))),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn an_overflowing_flush_interval_is_invalid_not_a_panic() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for value in ["300000000000y", "18446744073709551615s", "366d"] {
        let status = client
            .start_service(start_request(
                "leaderboard",
                1000,
                &[("flush_interval", value)],
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{value}: {status:?}");
        assert!(
            status.message().starts_with("params.flush_interval: "),
            "{value}: {status:?}"
        );
    }
    let mut huge_interval = start_request("streamer", 1000, &[]);
    huge_interval.interval = Some(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    });
    let status = client.start_service(huge_interval).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("interval: "), "{status:?}");
    // The daemon is still there for everyone.
    assert_eq!(
        daemon.service("leaderboard").await.state(),
        pb::ServiceState::Stopped
    );

    for (contents, key) in [
        (
            "[services.leaderboard]\nparams = { flush_interval = \"300000000000y\" }\n",
            ":2: services.leaderboard.params.flush_interval: ",
        ),
        (
            "[services.streamer]\ninterval = \"300000000000y\"\n",
            ":2: services.streamer.interval: ",
        ),
    ] {
        let (status, stderr, _) = refused(contents);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("bad config") && stderr.contains(key) && !stderr.contains("panic"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn huge_names_and_values_are_refused_without_being_echoed() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let name = "n".repeat(20_000);
    let status = client
        .start_service(start_request(&name, 1000, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("name: ") && status.message().len() < 300);
    let status = client
        .stop_service(pb::StopServiceRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // streamctl shows the refusal, not a daemon that seems gone.
    let output = daemon.ctl(&["start", &name]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no service named") && !stderr.contains("not running"),
        "{stderr}"
    );
    assert!(stderr.len() < 2_000, "the name echoed whole: {stderr}");

    let value = "v".repeat(100 << 10);
    let status = client
        .start_service(start_request("streamer", 1000, &[("series", &value)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("params.series: ") && status.message().len() < 300,
        "{}",
        &status.message()[..300.min(status.message().len())]
    );
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let status = client
        .start_service(start_request("streamer", 1000, &many))
        .await
        .unwrap_err();
    assert!(status.message().starts_with("params: "), "{status:?}");

    let status = client
        .publish(pb::PublishRequest {
            topic: "t".repeat(1 << 20),
            data: Some(Default::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 300, "{}", status.message().len());
}

#[test]
fn a_config_value_over_64_kib_is_refused_with_its_line_and_key() {
    let (status, stderr, _) = refused(&format!(
        "[services.reader]\nparams = {{ dir = \"{}\" }}\n",
        "d".repeat(10 << 20)
    ));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":2: services.reader.params.dir: ") && stderr.contains("65536"),
        "{}",
        &stderr[..stderr.len().min(400)]
    );
    assert!(stderr.len() < 1000, "the value is not echoed");
}

#[tokio::test]
async fn twenty_thousand_services_load_and_list() {
    let services: String = (0..20_000)
        .map(|i| format!("[services.s{i}]\nkind = \"streamer\"\n"))
        .collect();
    let started = Instant::now();
    let (daemon, _config) = with_config(&services);
    assert_eq!(
        daemon.services().await.len(),
        20_000 + crate::harness::SERVICES.len()
    );
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

/// Loading takes time in proportion to the services: a search of those loaded so far
/// for each one (as it once was) spends minutes on 100,000.
#[tokio::test]
async fn a_hundred_thousand_services_load_in_linear_time() {
    let services: String = (0..100_000)
        .map(|i| format!("[services.s{i}]\nkind = \"streamer\"\n"))
        .collect();
    let started = Instant::now();
    let (daemon, _config) = with_config(&services);
    let reply = daemon
        .client()
        .await
        .start_service(start_request("s99999", 1000, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.service.unwrap().name, "s99999");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

#[tokio::test]
async fn last_snapshots_of_many_topics_leave_publishing_prompt() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let topics: Vec<pb::PublishRequest> = (0..10_000)
        .map(|i| pb::PublishRequest {
            topic: format!("t/{i}"),
            data: Some(Default::default()),
        })
        .collect();
    client
        .publish_stream(futures::stream::iter(topics))
        .await
        .unwrap();
    let patterns: Vec<String> = (0..64).map(|i| format!("t/{i}*")).collect();
    let addr = daemon.addr;
    let subscribing = tokio::spawn(async move {
        let mut client =
            pb::stream_handler_client::StreamHandlerClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut snapshots = 0;
        while Instant::now() < deadline {
            let mut events = client
                .subscribe(pb::SubscribeRequest {
                    topics: patterns.clone(),
                    last: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            events.message().await.unwrap().unwrap();
            snapshots += 1;
        }
        snapshots
    });
    let mut slowest = Duration::ZERO;
    while !subscribing.is_finished() {
        let before = Instant::now();
        client
            .publish(pb::PublishRequest {
                topic: "t/1".into(),
                data: Some(Default::default()),
            })
            .await
            .unwrap();
        client
            .list_services(pb::ListServicesRequest {})
            .await
            .unwrap();
        slowest = slowest.max(before.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(subscribing.await.unwrap() > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "a publish took {slowest:?}"
    );
}

#[tokio::test]
async fn images_keep_to_their_directory_too() {
    let outside = tempfile::tempdir().unwrap();
    let secret = write(outside.path(), "secret.png", "not for clients");
    let images = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&secret, images.path().join("secret.png")).unwrap();
    let (daemon, _config) = with_config(&format!(
        "[services.pics]\nkind = \"images\"\ninterval = \"50ms\"\nparams = {{ dir = \"{}\" }}\n\
         [services.kernel]\nkind = \"images\"\ninterval = \"50ms\"\nparams = {{ dir = \"/sys/kernel\" }}\n",
        images.path().display()
    ));
    for (service, expected) in [("pics", "resolves outside"), ("kernel", "refused")] {
        let mut events = watch(&daemon, service).await;
        let error = events.next_where(|e| error_message(e).is_some()).await;
        assert!(
            error_message(&error).unwrap().contains(expected),
            "{service}: {error:?}"
        );
    }
}

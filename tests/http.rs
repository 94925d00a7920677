//! The HTTP pollers against a real HTTP server on 127.0.0.1: typed payloads, every
//! failure as an error event while the service carries on, backoff and recovery, and
//! the OpenAQ key that must never show.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use serde_json::json;
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tonic::Code;

use crate::harness::{Daemon, Events, is_data, is_lifecycle, start_request, start_watching};

/// A local API server; `hits` counts requests to `/flaky` and records their times.
pub(crate) struct Api {
    addr: SocketAddr,
    flaky_times: Arc<Mutex<Vec<Instant>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Api {
    pub(crate) async fn start() -> Self {
        let flaky_times = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let flaky_calls = Arc::new(AtomicUsize::new(0));
        let (times, seen) = (flaky_times.clone(), headers.clone());
        let app = Router::new()
            .route("/slugs", get(|| async { Json(json!({"Strings": ["abc", "def"]})) }))
            .route(
                "/emoji",
                get(|| async {
                    Json(json!({"name": "grinning face", "category": "smileys and people",
                        "group": "face positive", "htmlCode": ["&#128512;"], "unicode": ["U+1F600"]}))
                }),
            )
            .route(
                "/activity",
                get(|| async {
                    Json(json!({"activity": "Learn Express.js", "type": "education", "participants": 1,
                        "price": 0.1, "accessibility": 0.25, "link": "https://expressjs.com/", "key": "3943506"}))
                }),
            )
            .route(
                "/aq",
                get(move |headers: HeaderMap| {
                    seen.lock().unwrap().push(headers.clone());
                    async move {
                        if headers.get("x-api-key").is_none_or(|k| k != "k3y-for-tests") {
                            return Err(StatusCode::UNAUTHORIZED);
                        }
                        Ok(Json(json!({"results": [{"id": 2178, "name": "Del Norte", "locality": "Denver",
                            "country": {"code": "US"}, "coordinates": {"latitude": 39.8, "longitude": -104.9},
                            "datetimeLast": {"utc": "2026-11-27T12:00:00Z"},
                            "sensors": [{"parameter": {"name": "pm25"}}]}]})))
                    }
                }),
            )
            .route(
                "/generic",
                get(|headers: HeaderMap| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    Json(json!({"data": {"price": 12.5, "currency": "EUR"}, "auth": auth}))
                }),
            )
            .route("/unavailable", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/garbage", get(|| async { "<html>surely not json</html>" }))
            .route("/missing", get(|| async { Json(json!({"strings": []})) }))
            .route("/mistyped", get(|| async { Json(json!({"Strings": 42})) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Json(json!({"Strings": []}))
                }),
            )
            .route(
                "/flaky",
                get(move || {
                    times.lock().unwrap().push(Instant::now());
                    let call = flaky_calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        // Four failures, then steady success.
                        if call < 4 {
                            Err(StatusCode::INTERNAL_SERVER_ERROR)
                        } else {
                            Ok(Json(json!({"Strings": ["back"]})))
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            flaky_times,
            headers,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start(daemon: &Daemon, name: &str, params: &[(&str, &str)]) -> Events {
    start_watching(daemon, name, 100, params).await
}

async fn stop(daemon: &Daemon, name: &str) {
    let mut client = daemon.client().await;
    client
        .stop_service(pb::StopServiceRequest { name: name.into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_cards_publish_typed_payloads() {
    let api = Api::start().await;
    let daemon = Daemon::start();

    let mut events = start(&daemon, "slugs", &[("url", &api.url("/slugs"))]).await;
    let event = events.next_where(is_data).await;
    assert_eq!(
        event.payload,
        Some(Payload::Slugs(pb::Slugs {
            strings: vec!["abc".into(), "def".into()]
        }))
    );

    let mut events = start(&daemon, "emojis", &[("url", &api.url("/emoji"))]).await;
    let Some(Payload::Emoji(emoji)) = events.next_where(is_data).await.payload else {
        panic!()
    };
    assert_eq!(
        (emoji.name.as_str(), emoji.character.as_str()),
        ("grinning face", "😀")
    );
    assert_eq!(emoji.unicode, ["U+1F600"]);

    let mut events = start(&daemon, "activities", &[("url", &api.url("/activity"))]).await;
    let Some(Payload::Activity(activity)) = events.next_where(is_data).await.payload else {
        panic!()
    };
    assert_eq!(activity.activity, "Learn Express.js");
    assert_eq!(
        (
            activity.r#type.as_str(),
            activity.participants,
            activity.price
        ),
        ("education", 1, 0.1)
    );
    assert_eq!(activity.link, "https://expressjs.com/");
}

#[tokio::test]
async fn every_failure_is_an_error_event_and_the_service_carries_on() {
    let api = Api::start().await;
    let daemon = Daemon::start();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases = [
        (format!("http://{closed_port}/"), vec![], "cannot connect"),
        // An empty label fails name resolution inside the resolver, before any query
        // leaves the machine.
        (
            "http://a..invalid/".to_owned(),
            vec![],
            "failed to lookup address",
        ),
        (api.url("/unavailable"), vec![], "HTTP 503"),
        (api.url("/garbage"), vec![], "reply is not JSON"),
        (api.url("/missing"), vec![], "field /Strings is missing"),
        (
            api.url("/mistyped"),
            vec![],
            "field /Strings is a number, not a list of strings",
        ),
        (api.url("/slow"), vec![("timeout", "300ms")], "timed out"),
    ];
    for (url, extra, expected) in cases {
        let mut params = vec![("url", url.as_str())];
        params.extend(extra.iter().copied());
        let mut events = start(&daemon, "slugs", &params).await;
        for _ in 0..2 {
            let event = events.next_where(|e| !is_lifecycle(e, Kind::Started)).await;
            let Some(Payload::Lifecycle(l)) = &event.payload else {
                panic!("{event:?}")
            };
            assert_eq!(l.kind(), Kind::Error, "{event:?}");
            assert!(l.message.contains(expected), "{url}: {}", l.message);
            assert!(l.message.contains(&url), "names the URL: {}", l.message);
        }
        let slugs = daemon.service("slugs").await;
        assert_eq!(slugs.state(), pb::ServiceState::Running, "{url}");
        assert!(slugs.last_error.contains(expected));
        stop(&daemon, "slugs").await;
    }
    // The daemon is unharmed.
    let mut events = start(&daemon, "slugs", &[("url", &api.url("/slugs"))]).await;
    events.next_where(is_data).await;
}

#[tokio::test]
async fn repeated_failures_back_off_and_the_first_success_resets() {
    let api = Api::start().await;
    let daemon = Daemon::start();
    let interval = Duration::from_millis(150);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["slugs"], false).await;
    client
        .start_service(start_request(
            "slugs",
            interval.as_millis() as u64,
            &[("url", &api.url("/flaky"))],
        ))
        .await
        .unwrap();
    let mut errors = 0;
    while errors < 4 {
        if is_lifecycle(&events.next().await, Kind::Error) {
            errors += 1;
        }
    }
    // Recovery: data flows again at the plain interval.
    for _ in 0..3 {
        let event = events.next_where(is_data).await;
        assert_eq!(
            event.payload,
            Some(Payload::Slugs(pb::Slugs {
                strings: vec!["back".into()]
            }))
        );
    }
    let times = api.flaky_times.lock().unwrap().clone();
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // After failure n the wait is at least interval × 2^(n-2) (jitter takes off at most
    // half of interval × 2^(n-1)); a busy machine only lengthens waits.
    for (n, min) in [(2, 1), (3, 2), (4, 4)] {
        assert!(
            gaps[n - 1] >= interval * min - Duration::from_millis(5),
            "gaps {gaps:?}"
        );
    }
    // The backoff grew past anything the plain interval would give; after the first
    // success the service is back to its interval, well below the last backoff.
    assert!(gaps[3] >= interval * 4 - Duration::from_millis(5));
    assert!(gaps[4] < gaps[3], "gaps {gaps:?}");
    let slugs = daemon.service("slugs").await;
    assert_eq!(slugs.errors, 4);
    assert!(slugs.events_published >= 3);
}

#[tokio::test]
async fn aq_needs_its_key_and_never_shows_it() {
    let api = Api::start().await;
    // The key goes to aq's url, so only the operator names it.
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write(
        dir.path(),
        "streamd.toml",
        &format!("[services.aq]\nparams = {{ url = {:?} }}\n", api.url("/aq")),
    );
    let config = ["--config", config.to_str().unwrap()];
    let daemon = Daemon::start_with(&config);
    let mut client = daemon.client().await;
    let status = client
        .start_service(start_request("aq", 100, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("OPEN_AQ_KEY"),
        "{}",
        status.message()
    );
    assert_eq!(
        daemon.service("aq").await.state(),
        pb::ServiceState::Stopped
    );
    drop(daemon);

    let key = "k3y-for-tests";
    let daemon = Daemon::start_with_env(&config, &[("OPEN_AQ_KEY", key), ("RUST_LOG", "trace")]);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &[], false).await;
    client
        .start_service(start_request("aq", 100, &[]))
        .await
        .unwrap();
    let event = events.next_where(is_data).await;
    let Some(Payload::AirQuality(aq)) = &event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(aq.locations[0].name, "Del Norte");
    assert_eq!(aq.locations[0].parameters, ["pm25"]);
    let sent = api.headers.lock().unwrap()[0].clone();
    assert_eq!(sent["x-api-key"], key);
    assert_eq!(sent["accept"], "application/json");

    let listed = format!(
        "{:?}",
        client
            .list_services(pb::ListServicesRequest {})
            .await
            .unwrap()
            .into_inner()
    );
    let system = {
        client
            .start_service(start_request("system", 100, &[]))
            .await
            .unwrap();
        events
            .next_where(|e| e.topic == "system" && is_data(e))
            .await
    };
    for (what, text) in [
        ("events", format!("{event:?}{system:?}")),
        ("ListServices", listed),
        ("logs", daemon.log()),
    ] {
        assert!(!text.contains(key), "the key shows in {what}");
    }
}

#[tokio::test]
async fn a_generic_poller_picks_fields_and_reads_headers_from_the_environment() {
    let api = Api::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write(
        dir.path(),
        "streamd.toml",
        &format!(
            r#"
[services.prices]
kind = "http"
interval = "100ms"
params = {{ url = "{}", "header.Authorization" = "Bearer ${{PRICES_TOKEN}}", "field.price" = "/data/price", "field.auth" = "/auth" }}
"#,
            api.url("/generic")
        ),
    );
    let daemon = Daemon::start_with_env(
        &["--config", config.to_str().unwrap()],
        &[("PRICES_TOKEN", "t0k")],
    );
    let mut events = start(&daemon, "prices", &[]).await;
    let event = events.next_where(is_data).await;
    let Some(Payload::Data(data)) = event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(
        streamhandler::json::from_struct(&data),
        json!({"price": 12.5, "auth": "Bearer t0k"})
    );
    let prices = daemon.service("prices").await;
    assert_eq!(prices.params["header.Authorization"], "<redacted>");
    assert_eq!(prices.params["field.price"], "/data/price");

    // Without the variable the service cannot start, and says which it lacks.
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let status = daemon
        .client()
        .await
        .start_service(start_request("prices", 100, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("PRICES_TOKEN"),
        "{}",
        status.message()
    );
}

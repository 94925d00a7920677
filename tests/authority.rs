//! Two kinds of authority, and secrets: what a client may change on a service, where
//! the daemon's credentials may go, and that they never show. Each case is an attack a
//! client could try against the real daemon, with local servers that record what
//! reached them.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    http::{HeaderMap, StatusCode, Uri, header::LOCATION},
    response::{IntoResponse, Response},
};
use serde_json::json;
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tonic::Code;

use crate::harness::{Daemon, Events, is_data, is_lifecycle, start_request, text, write};

/// The API key the daemon holds for aq.
const AQ_KEY: &str = "aq-k3y-never-leaves";

/// What `/garbage` replies, which no client should read through the daemon.
const UPSTREAM_BODY: &str = "upstream-body-for-the-operator-only";

/// A local HTTP server that records every request it receives (path and query,
/// headers) and answers by path: `/aq` with an OpenAQ reply, `/garbage` with a page
/// that is not JSON, `/redirect-home` with a redirect to its own `/aq`,
/// `/redirect-away` with one to another server's `/aq`, and anything else with
/// `{"ok": true}`.
struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

impl Recorder {
    async fn start(away: Option<SocketAddr>) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            seen.lock().unwrap().push((uri.to_string(), headers));
            async move { answer(uri.path(), away) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<(String, HeaderMap)> {
        self.requests.lock().unwrap().clone()
    }

    /// Everything it received, headers included, as one text to search.
    fn received(&self) -> String {
        format!("{:?}", self.requests())
    }
}

fn answer(path: &str, away: Option<SocketAddr>) -> Response {
    let redirect = |to: String| (StatusCode::FOUND, [(LOCATION, to)]).into_response();
    match (path, away) {
        ("/aq", _) => Json(
            json!({"results": [{"id": 1, "name": "Del Norte", "locality": "Denver",
            "country": {"code": "US"}, "coordinates": {"latitude": 39.8, "longitude": -104.9},
            "datetimeLast": {"utc": "2026-11-27T12:00:00Z"}, "sensors": []}]}),
        )
        .into_response(),
        ("/garbage", _) => format!("<html>{UPSTREAM_BODY}</html>").into_response(),
        ("/redirect-home", _) => redirect("/aq".into()),
        ("/redirect-away", Some(away)) => redirect(format!("http://{away}/aq")),
        _ => Json(json!({"ok": true})).into_response(),
    }
}

/// Starts streamd with this configuration file and these environment variables.
fn daemon_with(config: &str, env: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "streamd.toml", config);
    Daemon::start_with_env(&["--config", path.to_str().unwrap()], env)
}

/// Waits for what a service does at most this long: an attack that works shows as a
/// failure, not a test that hangs.
async fn soon<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), what)
        .await
        .expect("within 10 s")
}

/// Lets a service that was started run a few of its 100 ms steps.
async fn let_it_run() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_client_cannot_send_aq_s_key_to_a_server_of_its_choosing() {
    let catcher = Recorder::start(None).await;
    let daemon = Daemon::start_with_env(&[], &[("OPEN_AQ_KEY", AQ_KEY)]);
    let url = format!("url={}", catcher.url("/"));
    let output = daemon.ctl(&["start", "aq", "--interval", "100ms", "--set", &url]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("params.url") && stderr.contains("operator setting"),
        "{stderr}"
    );
    assert!(stderr.contains("allow_override"), "says how: {stderr}");

    let status = daemon
        .client()
        .await
        .start_service(start_request("aq", 100, &[("url", &catcher.url("/"))]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let_it_run().await;
    assert_eq!(catcher.requests().len(), 0, "{}", catcher.received());
    assert_eq!(
        daemon.service("aq").await.state(),
        pb::ServiceState::Stopped
    );
}

#[tokio::test]
async fn allow_override_lets_the_operator_open_a_parameter_to_clients() {
    let api = Recorder::start(None).await;
    let daemon = daemon_with(
        "[services.aq]\nallow_override = [\"url\"]\n",
        &[("OPEN_AQ_KEY", AQ_KEY)],
    );
    let url = format!("url={}", api.url("/aq"));
    let output = daemon.ctl(&["start", "aq", "--interval", "100ms", "--set", &url]);
    assert!(output.status.success(), "{:?}", text(&output));
    let mut events = Events::open(&mut daemon.client().await, &["aq"], false).await;
    let event = soon(events.next_where(is_data)).await;
    assert!(
        matches!(event.payload, Some(Payload::AirQuality(_))),
        "{event:?}"
    );
    let (path, headers) = api.requests().remove(0);
    assert_eq!(path, "/aq");
    assert_eq!(headers["x-api-key"], AQ_KEY);

    // Opening one parameter opens no other.
    let refused = daemon_with("[services.reader]\nallow_override = [\"follow\"]\n", &[])
        .ctl(&["start", "reader", "--set", "dir=/etc"]);
    let (_, stderr) = text(&refused);
    assert!(
        !refused.status.success() && stderr.contains("params.dir"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_s_header_never_reads_the_daemon_s_environment() {
    let api = Recorder::start(None).await;
    let secret = "db-pa55word-in-env";
    let config = format!(
        r#"
[services.prices]
kind = "http"
interval = "100ms"
params = {{ url = "{url}", "header.Authorization" = "Bearer ${{PRICES_TOKEN}}" }}

[services.open]
kind = "http"
interval = "100ms"
params = {{ url = "{url}" }}
allow_override = ["header.*"]
"#,
        url = api.url("/prices")
    );
    let daemon = daemon_with(
        &config,
        &[
            ("PRICES_TOKEN", "t0k"),
            ("DATABASE_SECRET_FOR_TESTS", secret),
        ],
    );

    // On a service with the operator's headers: no header, url, method or body of the
    // client's.
    for set in [
        "header.X=${DATABASE_SECRET_FOR_TESTS}",
        "url=http://127.0.0.1:9/",
        "method=POST",
        "body={\"x\": \"${DATABASE_SECRET_FOR_TESTS}\"}",
    ] {
        let output = daemon.ctl(&["start", "prices", "--set", set]);
        let (_, stderr) = text(&output);
        let key = set.split('=').next().unwrap();
        assert!(!output.status.success(), "{set} was accepted");
        assert!(stderr.contains(&format!("params.{key}")), "{stderr}");
        assert!(!stderr.contains(secret), "{stderr}");
    }

    // Where headers are open to clients, a client's ${VAR} is sent as written,
    // whether the variable exists or not: nothing tells which variables the daemon has.
    for (name, var) in [
        ("x-set", "${DATABASE_SECRET_FOR_TESTS}"),
        ("x-unset", "${NOT_SET_ANYWHERE}"),
    ] {
        let set = format!("header.{name}={var}");
        let output = daemon.ctl(&["start", "open", "--set", &set]);
        assert!(output.status.success(), "{:?}", text(&output));
        let_it_run().await;
        let stopped = daemon.ctl(&["stop", "open"]);
        assert!(stopped.status.success(), "{:?}", text(&stopped));
        let sent = api.requests();
        let (_, headers) = sent
            .iter()
            .rev()
            .find(|(_, h)| h.contains_key(name))
            .unwrap();
        assert_eq!(headers[name], var);
    }
    assert!(!api.received().contains(secret), "{}", api.received());
    assert!(!daemon.log().contains(secret));
}

#[tokio::test]
async fn a_client_s_url_must_be_http_or_websocket_as_the_kind_speaks() {
    let api = Recorder::start(None).await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for (service, url) in [
        ("slugs", "file:///etc/passwd"),
        ("emojis", "gopher://127.0.0.1:70/"),
        ("slugs", "ws://127.0.0.1:9/"),
        ("kraken", "http://127.0.0.1:9/"),
        ("kraken", "file:///etc/passwd"),
    ] {
        let status = client
            .start_service(start_request(service, 100, &[("url", url)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{service} {url}");
        assert!(status.message().starts_with("params.url: "), "{status:?}");
    }
    // A service without credentials polls the client's http URL.
    let mut events = Events::open(&mut client, &["activities"], false).await;
    let output = daemon.ctl(&[
        "start",
        "activities",
        "--set",
        &format!("url={}", api.url("/x")),
    ]);
    assert!(output.status.success(), "{:?}", text(&output));
    soon(events.next_where(|e| is_lifecycle(e, Kind::Error))).await;
    assert_eq!(api.requests()[0].0, "/x");
}

#[tokio::test]
async fn redirects_carry_credentials_only_within_the_same_origin() {
    let elsewhere = Recorder::start(None).await;
    let api = Recorder::start(Some(elsewhere.addr)).await;
    let config = format!(
        r#"
[services.aq]
interval = "100ms"
params = {{ url = "{away}" }}

[services.keyed]
kind = "http"
interval = "100ms"
params = {{ url = "{home}", "header.X-Api-Key" = "${{OPEN_AQ_KEY}}" }}
"#,
        away = api.url("/redirect-away"),
        home = api.url("/redirect-home"),
    );
    let daemon = daemon_with(&config, &[("OPEN_AQ_KEY", AQ_KEY)]);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["aq", "keyed"], false).await;
    for name in ["aq", "keyed"] {
        client
            .start_service(start_request(name, 100, &[]))
            .await
            .unwrap();
    }
    let aq_error = |e: &pb::Event| e.topic == "aq" && is_lifecycle(e, Kind::Error);
    let error = soon(events.next_where(aq_error)).await;
    let Some(Payload::Lifecycle(lifecycle)) = &error.payload else {
        unreachable!()
    };
    assert!(
        lifecycle.message.contains("another origin"),
        "{}",
        lifecycle.message
    );
    // Within the same origin the redirect is followed, key and all.
    let keyed_data = |e: &pb::Event| e.topic == "keyed" && is_data(e);
    let data = soon(events.next_where(keyed_data)).await;
    assert!(matches!(data.payload, Some(Payload::Data(_))), "{data:?}");
    let followed = api.requests();
    assert!(
        followed
            .iter()
            .any(|(path, h)| path == "/aq" && h["x-api-key"] == AQ_KEY),
        "{followed:?}"
    );
    let_it_run().await;
    assert_eq!(elsewhere.requests().len(), 0, "{}", elsewhere.received());
}

#[tokio::test]
async fn secrets_never_show_to_clients_or_in_the_log() {
    let api = Recorder::start(None).await;
    let (password, key, cookie) = ("pa55word-in-url", "k3y-in-query", "c00kie-value");
    let url = format!(
        "http://user:{password}@{}/garbage?api_key={key}&page=1",
        api.addr
    );
    let config = format!(
        r#"
[services.leaky]
kind = "http"
interval = "100ms"
params = {{ url = "{url}", "header.Cookie" = "session={cookie}" }}
"#
    );
    let daemon = daemon_with(&config, &[("RUST_LOG", "debug")]);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["leaky"], false).await;
    client
        .start_service(start_request("leaky", 100, &[]))
        .await
        .unwrap();
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let event = soon(events.next()).await;
        if is_lifecycle(&event, Kind::Error) {
            errors.push(format!("{event:?}"));
        }
    }
    // The secrets were used: the server received each.
    let received = api.received();
    for secret in [key, cookie] {
        assert!(received.contains(secret), "{secret} not sent: {received}");
    }
    assert!(received.contains("authorization"), "{received}");

    let service = daemon.service("leaky").await;
    let shown = daemon.ctl(&["show", "leaky"]);
    let listed = daemon.ctl(&["list"]);
    let places = [
        ("error events", errors.join("\n")),
        ("ListServices", format!("{service:?}")),
        ("streamctl show", text(&shown).0),
        ("streamctl list", text(&listed).0),
        ("the log", daemon.log()),
    ];
    for (place, text) in &places {
        for secret in [password, key, cookie] {
            assert!(!text.contains(secret), "{secret} shows in {place}:\n{text}");
        }
    }
    // What is not secret still shows, so the error says where it went wrong; the
    // reply itself only in the log.
    assert!(
        errors[0].contains(&format!("{}/garbage", api.addr)),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("api_key=redacted&page=1"),
        "{}",
        errors[0]
    );
    assert!(
        service.last_error.contains("reply is not JSON"),
        "{}",
        service.last_error
    );
    for (place, text) in &places[..4] {
        assert!(!text.contains(UPSTREAM_BODY), "the reply shows in {place}");
    }
    assert!(daemon.log().contains(UPSTREAM_BODY), "{}", daemon.log());
    assert_eq!(service.params["header.Cookie"], "<redacted>");
    assert!(
        text(&shown).0.contains("user:redacted@"),
        "{:?}",
        text(&shown)
    );
    assert!(
        daemon.log().contains("step failed"),
        "the debug log was captured"
    );
}

#[tokio::test]
async fn a_database_url_s_password_is_never_shown() {
    let error = Daemon::try_start(
        &["--database-url", "mysql://root:db-pa55word@127.0.0.1/x"],
        "127.0.0.1:0",
    )
    .err()
    .expect("an unsupported database is refused");
    assert!(error.contains("mysql://root:redacted@"), "{error}");
    assert!(!error.contains("db-pa55word"), "{error}");
}

#[tokio::test]
async fn a_websocket_url_s_token_never_shows_in_its_status_or_errors() {
    // A port that was free a moment ago: connecting is refused, and reported.
    let port = crate::harness::free_port();
    let token = "ws-t0ken-in-query";
    let url = format!("ws://127.0.0.1:{port}/?token={token}");
    let config = format!("[services.feed]\nkind = \"websocket\"\nparams = {{ url = {url:?} }}\n");
    let daemon = daemon_with(&config, &[("RUST_LOG", "debug")]);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["feed"], false).await;
    client
        .start_service(start_request("feed", 100, &[]))
        .await
        .unwrap();
    let error = soon(events.next_where(|e| is_lifecycle(e, Kind::Error))).await;
    let service = daemon.service("feed").await;
    assert!(
        service.status["connection"].contains("token=redacted"),
        "{:?}",
        service.status
    );
    for (place, text) in [
        ("the error event", format!("{error:?}")),
        ("ListServices", format!("{service:?}")),
        ("the log", daemon.log()),
    ] {
        assert!(!text.contains(token), "the token shows in {place}:\n{text}");
    }
}

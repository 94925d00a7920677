//! The generic `websocket` service against a real websocket server on 127.0.0.1, and
//! that server, which the `kraken` tests share.

use futures::{SinkExt, StreamExt};
use prost_types::value::Kind as ValueKind;
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use crate::harness::{Daemon, Events, PATIENCE, is_data, is_lifecycle, start_watching, write};

/// A websocket server on a free local port that hands each accepted connection to the
/// test.
pub struct Server {
    pub url: String,
    connections: mpsc::UnboundedReceiver<Connection>,
}

impl Server {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (accepted, connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    if let Ok(socket) = tokio_tungstenite::accept_async(tcp).await {
                        let _ = accepted.send(Connection(socket));
                    }
                });
            }
        });
        Self { url, connections }
    }

    /// The next connection made, whenever it comes; None once the server is gone.
    pub async fn accepted(&mut self) -> Option<Connection> {
        self.connections.recv().await
    }

    /// The next connection the service makes.
    pub async fn connection(&mut self) -> Connection {
        tokio::time::timeout(PATIENCE, self.connections.recv())
            .await
            .expect("no connection in time")
            .unwrap()
    }
}

/// One accepted connection, seen from the server's side.
pub struct Connection(WebSocketStream<tokio::net::TcpStream>);

impl Connection {
    pub async fn send(&mut self, text: &str) {
        self.0.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_message(&mut self, message: Message) {
        self.0.send(message).await.unwrap();
    }

    /// The next message from the client, whatever it is; None once the stream ends.
    pub async fn message(&mut self) -> Option<Message> {
        tokio::time::timeout(PATIENCE, self.0.next())
            .await
            .expect("no message in time")
            .and_then(Result::ok)
    }

    /// The next text message from the client, as JSON, passing over pings and pongs.
    pub async fn json(&mut self) -> serde_json::Value {
        loop {
            match self.message().await {
                Some(Message::Text(text)) => return serde_json::from_str(&text).unwrap(),
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads until the client's Close frame, which it returns; fails if the stream ends
    /// without one.
    pub async fn close_frame(&mut self) -> Message {
        loop {
            match self.message().await {
                Some(close @ Message::Close(_)) => return close,
                Some(_) => continue,
                None => panic!("the connection ended without a Close frame"),
            }
        }
    }
}

/// Subscribes to `name`'s events, then starts it with `params` and a short interval.
pub async fn start(daemon: &Daemon, name: &str, params: &[(&str, &str)]) -> Events {
    let mut events = start_watching(daemon, name, 100, params).await;
    let started = events.next().await;
    assert!(is_lifecycle(&started, Kind::Started), "{started:?}");
    events
}

pub async fn stop(daemon: &Daemon, name: &str) -> pb::StopServiceResponse {
    daemon
        .client()
        .await
        .stop_service(pb::StopServiceRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

/// A daemon with a service `feed` of kind websocket aimed at `url`. Configured rather
/// than built in, so the tests hold wherever the kind is listed.
fn daemon_with_feed(url: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        &format!(
            "[services.feed]\nkind = \"websocket\"\nparams = {{ url = {url:?} }}\n\
             allow_override = [\"send.*\"]\n"
        ),
    );
    Daemon::start_with(&["--config", config.to_str().unwrap()])
}

/// The next data event's free-form payload.
async fn next_struct(events: &mut Events) -> prost_types::Struct {
    match events.next_where(is_data).await.payload {
        Some(Payload::Data(data)) => data,
        other => panic!("not free-form data: {other:?}"),
    }
}

fn field<'a>(data: &'a prost_types::Struct, key: &str) -> &'a ValueKind {
    data.fields
        .get(key)
        .and_then(|v| v.kind.as_ref())
        .unwrap_or_else(|| panic!("no {key} in {data:?}"))
}

#[tokio::test]
async fn websocket_sends_its_messages_and_publishes_json_frames() {
    let mut server = Server::start().await;
    let daemon = daemon_with_feed(&server.url);
    let mut events = start(
        &daemon,
        "feed",
        &[
            ("send.10", r#"{"op":"third"}"#),
            ("send.1", r#"{"op":"first"}"#),
            ("send.2", r#"{"op":"second"}"#),
        ],
    )
    .await;
    let mut connection = server.connection().await;
    for op in ["first", "second", "third"] {
        assert_eq!(connection.json().await, serde_json::json!({ "op": op }));
    }

    connection
        .send(r#"{"price": 1.5, "name": "widget", "tags": ["a"]}"#)
        .await;
    let data = next_struct(&mut events).await;
    assert_eq!(field(&data, "price"), &ValueKind::NumberValue(1.5));
    assert_eq!(
        field(&data, "name"),
        &ValueKind::StringValue("widget".into())
    );
    assert!(matches!(field(&data, "tags"), ValueKind::ListValue(l) if l.values.len() == 1));

    // Garbage is skipped and counted; what follows still arrives.
    connection.send("not json {").await;
    connection
        .send_message(Message::binary(vec![0u8, 159, 146, 150]))
        .await;
    connection.send("[1, 2]").await;
    let data = next_struct(&mut events).await;
    let ValueKind::ListValue(list) = field(&data, "value") else {
        panic!("{data:?}")
    };
    assert_eq!(list.values.len(), 2);
    connection.send("7").await;
    let data = next_struct(&mut events).await;
    assert_eq!(field(&data, "value"), &ValueKind::NumberValue(7.0));

    let service = daemon.service("feed").await;
    assert_eq!(
        service.status["skipped_frames"], "2",
        "{:?}",
        service.status
    );
    assert_eq!(
        service.status["connection"],
        format!("connected {}", server.url)
    );

    // Stopping closes the connection with a Close frame the server sees.
    let stopping = tokio::spawn(async move { connection.close_frame().await });
    let stopped = stop(&daemon, "feed").await;
    assert!(stopped.was_running);
    assert!(matches!(stopping.await.unwrap(), Message::Close(_)));
    let event = events.next().await;
    assert!(is_lifecycle(&event, Kind::Stopped), "{event:?}");
    let Some(Payload::Lifecycle(lifecycle)) = event.payload else {
        unreachable!()
    };
    assert_eq!(lifecycle.message, "", "stopped without being forced");
}

#[tokio::test]
async fn websocket_reconnects_after_the_server_closes() {
    let mut server = Server::start().await;
    let daemon = daemon_with_feed(&server.url);
    let mut events = start(&daemon, "feed", &[("send.1", "hello")]).await;
    let mut first = server.connection().await;
    assert_eq!(first.message().await, Some(Message::text("hello")));
    first.send(r#"{"n": 1}"#).await;
    next_struct(&mut events).await;
    first.send_message(Message::Close(None)).await;
    let error = events.next().await;
    assert!(is_lifecycle(&error, Kind::Error), "{error:?}");

    let mut second = server.connection().await;
    assert_eq!(second.message().await, Some(Message::text("hello")));
    second.send(r#"{"n": 2}"#).await;
    let data = next_struct(&mut events).await;
    assert_eq!(field(&data, "n"), &ValueKind::NumberValue(2.0));
}

#[tokio::test]
async fn websocket_needs_a_websocket_url() {
    // Refused in the configuration, naming the key...
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        "[services.feed]\nkind = \"websocket\"\n",
    );
    let log = Daemon::try_start(&["--config", config.to_str().unwrap()], "127.0.0.1:0")
        .err()
        .expect("a websocket service without a url is refused");
    assert!(log.contains("services.feed.params.url"), "{log}");

    // ...and at start.
    let daemon = daemon_with_feed("ws://127.0.0.1:1");
    let status = daemon
        .client()
        .await
        .start_service(pb::StartServiceRequest {
            name: "feed".into(),
            interval: None,
            params: [("url".to_string(), "http://127.0.0.1:1".to_string())].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("params.url"), "{status:?}");
}

#[tokio::test]
async fn websocket_reports_a_server_that_is_not_there_and_retries() {
    // A port that was free a moment ago: connecting is refused.
    let port = crate::harness::free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let daemon = daemon_with_feed(&url);
    let mut events = start(&daemon, "feed", &[]).await;
    for _ in 0..2 {
        let error = events.next().await;
        assert!(is_lifecycle(&error, Kind::Error), "{error:?}");
    }
    let service = daemon.service("feed").await;
    assert_eq!(service.state(), pb::ServiceState::Running);
    assert!(
        service.status["connection"].starts_with(&format!("closed {url}: cannot connect")),
        "{:?}",
        service.status
    );
}

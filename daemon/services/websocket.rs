//! `websocket`: JSON messages from any websocket server as free-form events, and the
//! [`Session`] that every websocket service (this one and `kraken`) runs its
//! connection with.
//!
//! A session is one step: it connects, sends its opening messages, hands each text
//! frame to its [`Protocol`] and runs until the service stops (then it closes politely
//! and returns Ok) or the connection fails (then it returns a step error, and the
//! supervisor calls the step again after its interval, backing off while connecting
//! keeps failing). So reconnecting is the supervisor's job, not the session's.

use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::{StatusCode, Uri},
        protocol::WebSocketConfig,
    },
};

use super::{
    Authority, Build, Environment, Kind, ParamError, ParamSpec, Params, StepContext, StepError,
    Worker,
};
use crate::{pb::event::Payload, secret::excerpt};

pub const KIND: Kind = Kind {
    name: "websocket",
    description: "JSON messages from a websocket server",
    default_interval: Duration::from_secs(1),
    params: &[
        ParamSpec {
            name: "url",
            help: "the server, ws:// or wss:// (required)",
            default: None,
            authority: Authority::Endpoint,
        },
        ParamSpec {
            name: "send.*",
            help: "messages sent on connect, in order: send.1, send.2, ... send.10",
            default: None,
            authority: Authority::Credential,
        },
    ],
    build,
};

/// How long connecting (TCP, TLS and the websocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sending one message may take before the connection counts as stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's Close after ours, or for the end of the stream
/// after the server's.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Larger messages end the session: far above any event (64 KiB) or Kraken snapshot,
/// and it bounds what a misbehaving server can make the daemon buffer.
const MAX_MESSAGE_BYTES: usize = 8 << 20;

fn build(params: &Params, _: &Environment) -> Result<Box<dyn Worker>, Build> {
    Ok(Box::new(generic(params)?))
}

fn generic(params: &Params) -> Result<Generic, ParamError> {
    let url = params
        .get("url")
        .ok_or_else(|| ParamError::new("url", "required: the ws:// or wss:// server"))?;
    let url = parse_url("url", url)?;
    // Numbered keys in numeric order (send.2 before send.10), then any others by name.
    let mut sends: Vec<(Option<u64>, &str, &str)> = params
        .iter()
        .filter_map(|(k, v)| {
            let suffix = k.strip_prefix("send.")?;
            Some((suffix.parse().ok(), suffix, v.as_str()))
        })
        .collect();
    sends.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(b.1),
    });
    Ok(Generic {
        opening: sends.into_iter().map(|(_, _, v)| v.to_owned()).collect(),
        session: Session::new(url, None),
    })
}

/// Checks that `value` is a ws:// or wss:// URL with a host, without connecting.
pub(super) fn parse_url(key: &str, value: &str) -> Result<String, ParamError> {
    let bad = |why: &str| ParamError::new(key, format!("{value:?} {why}"));
    let uri: Uri = value.parse().map_err(|_| bad("is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(bad("is not a ws:// or wss:// URL"));
    }
    uri.into_client_request().map_err(|_| bad("has no host"))?;
    Ok(value.to_owned())
}

/// Publishes every JSON text frame: objects as they are, anything else as `{"value": ...}`.
struct Generic {
    opening: Vec<String>,
    session: Session,
}

#[async_trait]
impl Worker for Generic {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        self.session.run(ctx, &self.opening, &mut Json).await
    }
}

struct Json;

impl Protocol for Json {
    fn text(&mut self, text: &str, ctx: &StepContext, _: &mut Vec<String>) -> bool {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return false;
        };
        match crate::json::to_struct_wrapped(value) {
            Ok(data) => publish(ctx, Payload::Data(data)),
            Err(too_deep) => {
                ctx.report(format!("a frame was skipped: its {too_deep}"));
                return false;
            }
        }
        true
    }
}

/// Publishes an event, reporting rather than ending the session when the bus refuses
/// it (too large): one bad message is no reason to drop the connection.
pub(super) fn publish(ctx: &StepContext, payload: Payload) {
    if let Err(StepError::Step(message) | StepError::Fatal(message)) = ctx.publish(payload) {
        ctx.report(message);
    }
}

/// What a websocket service does with the text frames of its connection.
pub(super) trait Protocol: Send {
    /// Handles one text frame: publishes, reports or updates status through `ctx`, and
    /// pushes any messages to send back onto `replies`. Returns false for a frame it
    /// does not understand, which the session counts as skipped.
    fn text(&mut self, text: &str, ctx: &StepContext, replies: &mut Vec<String>) -> bool;
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket service's connection, one per step, and what outlives each one.
pub(super) struct Session {
    url: String,
    /// With Some, a connection that receives no frame at all for this long has failed.
    silence: Option<Duration>,
    /// Frames skipped since the service started, across connections.
    skipped: u64,
}

impl Session {
    pub(super) fn new(url: String, silence: Option<Duration>) -> Self {
        Self {
            url,
            silence,
            skipped: 0,
        }
    }

    /// Connects, sends `opening` and passes frames to `protocol` until the service is
    /// stopped (Ok) or the connection fails (a step error saying why).
    pub(super) async fn run(
        &mut self,
        ctx: &StepContext,
        opening: &[String],
        protocol: &mut impl Protocol,
    ) -> Result<(), StepError> {
        ctx.set_status("connection", format!("connecting {}", self.url));
        ctx.set_status("skipped_frames", self.skipped.to_string());
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(&self.url, Some(config), true);
        let connected = tokio::select! {
            _ = ctx.cancelled() => {
                ctx.set_status("connection", format!("closed {}", self.url));
                return Ok(());
            }
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect) => connected,
        };
        let mut socket = match connected {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
                if refused_for_good(response.status()) =>
            {
                // The same request cannot succeed later: a crash, so that the restart
                // policy, not endless retries, decides what comes of it.
                let why = format!(
                    "the server refused the websocket: HTTP {}",
                    response.status()
                );
                return Err(StepError::Fatal(self.closed(ctx, why)));
            }
            Ok(Err(e)) => return Err(self.failed(ctx, format!("cannot connect: {e}"))),
            Err(_) => {
                return Err(self.failed(ctx, format!("no connection within {CONNECT_TIMEOUT:?}")));
            }
        };
        ctx.set_status("connection", format!("connected {}", self.url));
        tracing::debug!(url = %self.url, "websocket connected");
        for message in opening {
            self.send(ctx, &mut socket, message).await?;
        }
        let mut replies = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = ctx.cancelled() => {
                    close(&mut socket).await;
                    ctx.set_status("connection", format!("closed {}", self.url));
                    return Ok(());
                }
                next = next_frame(&mut socket, self.silence) => next,
            };
            let message = match next {
                Next::Frame(message) => message,
                Next::Failed(e) => return Err(self.failed(ctx, format!("connection failed: {e}"))),
                Next::Ended => return Err(self.failed(ctx, "connection ended".into())),
                // Only services with heartbeats (Kraken) set a silence timeout.
                Next::Silent => {
                    let silence = self.silence.unwrap_or_default().as_secs();
                    return Err(self.failed(ctx, format!("no heartbeat for {silence}s")));
                }
            };
            match message {
                Message::Text(text) => {
                    if !protocol.text(text.as_str(), ctx, &mut replies) {
                        self.skip(ctx);
                    }
                    for reply in std::mem::take(&mut replies) {
                        self.send(ctx, &mut socket, &reply).await?;
                    }
                }
                Message::Binary(_) => self.skip(ctx),
                Message::Close(frame) => {
                    // Reading on lets tungstenite send its reply and finish the handshake.
                    let _ = tokio::time::timeout(CLOSE_WAIT, drain(&mut socket)).await;
                    let why = frame
                        .map(|f| format!(" ({} {})", f.code, excerpt(&f.reason)))
                        .unwrap_or_default();
                    return Err(self.failed(ctx, format!("server closed the connection{why}")));
                }
                // tungstenite answers pings itself while the stream is read.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn send(
        &self,
        ctx: &StepContext,
        socket: &mut Socket,
        message: &str,
    ) -> Result<(), StepError> {
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.failed(ctx, format!("cannot send: {e}"))),
            Err(_) => Err(self.failed(ctx, format!("send took over {SEND_TIMEOUT:?}"))),
        }
    }

    fn skip(&mut self, ctx: &StepContext) {
        self.skipped += 1;
        ctx.set_status("skipped_frames", self.skipped.to_string());
    }

    /// Marks the connection closed and turns why into the step's error.
    fn failed(&self, ctx: &StepContext, why: String) -> StepError {
        StepError::Step(self.closed(ctx, why))
    }

    /// Marks the connection closed; gives why, naming the URL.
    fn closed(&self, ctx: &StepContext, why: String) -> String {
        ctx.set_status("connection", format!("closed {}: {why}", self.url));
        format!("{}: {why}", self.url)
    }
}

/// What reading the connection gave.
enum Next {
    Frame(Message),
    Failed(tokio_tungstenite::tungstenite::Error),
    Ended,
    /// No frame within the silence timeout.
    Silent,
}

async fn next_frame(socket: &mut Socket, silence: Option<Duration>) -> Next {
    let next = match silence {
        Some(silence) => match tokio::time::timeout(silence, socket.next()).await {
            Ok(next) => next,
            Err(_) => return Next::Silent,
        },
        None => socket.next().await,
    };
    match next {
        Some(Ok(message)) => Next::Frame(message),
        Some(Err(e)) => Next::Failed(e),
        None => Next::Ended,
    }
}

/// Sends our Close and waits briefly for the server's, so it sees a clean close.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if socket.close(None).await.is_ok() {
            drain(socket).await;
        }
    })
    .await;
}

/// Whether a server's answer to the upgrade means the URL or its credentials are
/// wrong: a client error other than a timeout or a request to slow down.
fn refused_for_good(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

/// Reads until the stream ends or fails: the end of a close handshake.
async fn drain(socket: &mut Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Cases kept few enough to run in seconds; PROPTEST_CASES=100000 runs them longer.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        /// What `Json::text` does with a frame short of publishing it: any text, nested
        /// as deep as it likes, is skipped or becomes a Struct.
        #[test]
        fn any_frame_is_skipped_or_becomes_a_struct(
            text in prop_oneof!["\\PC{0,200}", "[\\[\\]{}\":,0-9a-z]{0,200}"],
            depth in 0usize..400,
        ) {
            for frame in [text.clone(), format!("{}{text}{}", "[".repeat(depth), "]".repeat(depth))] {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&frame) {
                    let _ = crate::json::to_struct_wrapped(value);
                }
            }
        }
    }

    #[test]
    fn urls_must_be_websocket_urls_with_a_host() {
        assert_eq!(
            parse_url("url", "ws://127.0.0.1:9/x").unwrap(),
            "ws://127.0.0.1:9/x"
        );
        assert!(parse_url("url", "wss://ws.kraken.com").is_ok());
        for bad in ["", "http://example.com", "ws://", "not a url", "ws:///path"] {
            let e = parse_url("url", bad).unwrap_err();
            assert_eq!(e.key, "url", "{bad}");
        }
    }

    #[test]
    fn build_needs_a_url_and_orders_sends_numerically() {
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        let params = |pairs: &[(&str, &str)]| -> Params {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = generic(&params(&[])).err().unwrap();
        assert_eq!(e.key, "url");
        let worker = generic(&params(&[
            ("url", "ws://localhost:1"),
            ("send.10", "ten"),
            ("send.2", "two"),
            ("send.b", "b"),
            ("send.1", "one"),
            ("send.a", "a"),
        ]))
        .unwrap();
        assert_eq!(worker.opening, ["one", "two", "ten", "a", "b"]);
        assert!(
            KIND.build(
                &params(&[("url", "ws://localhost:1"), ("send.1", "{}")]),
                &env
            )
            .is_ok()
        );
        assert!(
            KIND.build(
                &params(&[("url", "ws://localhost:1"), ("sendx", "{}")]),
                &env
            )
            .is_err()
        );
    }
}

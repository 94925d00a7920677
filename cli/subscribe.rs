//! `streamctl subscribe`: prints events as they arrive and rides out daemon restarts
//! by reconnecting with backoff and subscribing again. Each stream counts as open once
//! the daemon's Subscribed event says it is live. Events are decoded here, one by one,
//! so that one this streamctl cannot decode or print is reported and passed over
//! rather than ending the stream.

use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use streamhandler::{
    pb::{Event, SubscribeRequest, event::Payload},
    wire::EncodedEvent,
};
use tonic::{
    Code, Status, Streaming,
    codec::{Codec, DecodeBuf, Decoder},
};

use crate::{
    args::{Output, SubscribeArgs},
    client,
    client::Addr,
    error::{Error, status_message, transport_reason},
    json::EventEncoder,
    render::EventPrinter,
    term::{self, Palette},
};

/// The first wait before reconnecting; it doubles after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between attempts, so that a returning daemon is found quickly.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Follows the stream until Ctrl-C (a success), a closed stdout (a quiet success) or
/// an error that reconnecting cannot fix.
pub async fn run(addr: &Addr, args: SubscribeArgs) -> Result<(), Error> {
    let request = SubscribeRequest {
        topics: args.topics,
        last: args.last,
        buffer_bytes: args.buffer.map_or(0, |b| b as u64),
        on_overflow: streamhandler::pb::OverflowPolicy::from(args.on_overflow).into(),
    };
    let mut printer = Printer::new(args.output)?;
    tokio::select! {
        result = follow(addr, &request, &mut printer) => result,
        // If the handler cannot be installed, this branch is disabled and the default
        // signal behaviour remains.
        Ok(()) = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Prints the stream's events; when the stream breaks after it was established,
/// reconnects and resubscribes with the same request.
async fn follow(
    addr: &Addr,
    request: &SubscribeRequest,
    printer: &mut Printer,
) -> Result<(), Error> {
    // The first connection is not retried: failing here means the daemon is not running.
    let (subscribed, mut stream) = open(addr, request).await?;
    printer.print(&subscribed)?;
    loop {
        let reason = loop {
            match stream.message().await {
                Ok(Some(bytes)) => match decode(bytes) {
                    Ok(event) => printer.print(&event)?,
                    Err(odd) => term::warn(&odd),
                },
                Ok(None) => break "the stream ended".to_string(),
                // Asked for: the stream ends rather than skip events.
                Err(status) if status.code() == Code::ResourceExhausted => {
                    return Err(Error::from_status(status, addr));
                }
                Err(status) => {
                    break transport_reason(&status).unwrap_or_else(|| status_message(&status));
                }
            }
        };
        term::warn(&format!("lost streamd at {addr} ({reason}); reconnecting…"));
        let subscribed;
        (subscribed, stream) = reopen(addr, request).await?;
        term::warn(&format!("reconnected to streamd at {addr}"));
        printer.print(&subscribed)?;
    }
}

/// Connects and subscribes once; returns the stream once it is live, with the
/// Subscribed event that said so.
async fn open(addr: &Addr, request: &SubscribeRequest) -> Result<(Event, Streaming<Bytes>), Error> {
    let mut grpc = tonic::client::Grpc::new(client::channel(addr).await?);
    grpc.ready()
        .await
        .map_err(|e| client::not_running(addr, &e))?;
    let path = http::uri::PathAndQuery::from_static("/streamhandler.v1.StreamHandler/Subscribe");
    let mut stream = grpc
        .server_streaming(addr.request(request.clone()), path, RawEvents)
        .await
        .map_err(|status| Error::from_status(status, addr))?
        .into_inner();
    let first = stream.message().await.map(|event| event.map(decode));
    match first {
        Ok(Some(Ok(event))) if matches!(event.payload, Some(Payload::Subscribed(_))) => {
            Ok((event, stream))
        }
        Ok(Some(Err(odd))) => Err(Error::Other(odd)),
        Ok(Some(Ok(event))) => Err(Error::Other(format!(
            "streamd at {addr} began the stream with an event of topic {:?} rather than \
             Subscribed; it may be older than this streamctl",
            event.topic
        ))),
        Ok(None) => Err(Error::not_running(
            addr,
            "the stream ended before the subscription was live".into(),
        )),
        Err(status) => Err(Error::from_status(status, addr)),
    }
}

/// Retries [`open`] with backoff until the daemon is back. Gives up only on an
/// answer that retrying will not change, such as a refused pattern.
async fn reopen(
    addr: &Addr,
    request: &SubscribeRequest,
) -> Result<(Event, Streaming<Bytes>), Error> {
    let mut backoff = Backoff::new();
    loop {
        tokio::time::sleep(backoff.next_delay(rand::random())).await;
        match open(addr, request).await {
            Ok(stream) => return Ok(stream),
            Err(Error::NotRunning { .. }) => {}
            // A daemon on its way up or down may answer before it can serve.
            Err(Error::Server(status)) if status.code() == Code::Unavailable => {}
            Err(err) => return Err(err),
        }
    }
}

/// An event as the daemon sent it; what cannot be decoded says which event it was,
/// as far as its first fields tell.
fn decode(bytes: Bytes) -> Result<Event, String> {
    Event::decode(bytes.clone()).map_err(|e| {
        let which = match EncodedEvent::from_bytes(bytes).topic_and_seq() {
            Some((topic, seq)) => format!("event #{seq} of {topic:?}"),
            None => "an event".to_owned(),
        };
        format!("passed over {which} that streamd sent and streamctl cannot decode: {e}")
    })
}

/// Subscribe's events left encoded, for [`decode`] to read one by one.
struct RawEvents;

impl Codec for RawEvents {
    type Encode = SubscribeRequest;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<SubscribeRequest>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        Default::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// Exponential backoff: 100 ms doubling up to 5 s, each wait jittered so that many
/// clients do not come back in step.
#[derive(Debug)]
struct Backoff {
    base: Duration,
}

impl Backoff {
    /// A backoff whose first wait is [`FIRST_RETRY`].
    fn new() -> Self {
        Backoff { base: FIRST_RETRY }
    }

    /// The next wait, given a random `fraction` in [0, 1): between half the current
    /// base and the whole of it.
    fn next_delay(&mut self, fraction: f64) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(MAX_RETRY);
        base / 2 + (base / 2).mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// Prints events in the chosen output format.
enum Printer {
    /// Human-readable lines, coloured on a terminal.
    Text(EventPrinter),
    /// proto3 JSON, one object per line.
    Json(EventEncoder),
}

impl Printer {
    /// A printer for `output`, colouring text only when stdout allows it.
    fn new(output: Output) -> Result<Self, Error> {
        Ok(match output {
            Output::Text => Printer::Text(EventPrinter::new(
                Palette::new(term::colour_stdout()),
                term::line_width(),
            )),
            Output::Json => Printer::Json(EventEncoder::new()?),
        })
    }

    /// Prints one event and flushes it. Text leaves out Subscribed, which only says
    /// the stream is live; JSON shows every event the stream carries. An event JSON
    /// cannot hold (a NaN in its data, from a daemon that let one through) is reported
    /// and passed over.
    fn print(&mut self, event: &Event) -> Result<(), Error> {
        let text = match self {
            Printer::Text(_) if matches!(event.payload, Some(Payload::Subscribed(_))) => {
                return Ok(());
            }
            Printer::Text(printer) => printer.format(event),
            Printer::Json(encoder) => match encoder.encode(event) {
                Ok(line) => line,
                Err(e) => {
                    term::warn(&format!(
                        "passed over event #{} of {:?}: {e}",
                        event.seq, event.topic
                    ));
                    return Ok(());
                }
            },
        };
        term::emit(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let waits: Vec<_> = (0..9)
            .map(|_| backoff.next_delay(1.0).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn backoff_jitter_stays_within_half_to_whole() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(50));
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(150));
    }

    #[test]
    fn printers_build() {
        assert!(Printer::new(Output::Json).is_ok());
        assert!(Printer::new(Output::Text).is_ok());
    }
}

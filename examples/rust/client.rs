//! A streamd client in Rust, on this crate's `pb` module: starts the streamer,
//! subscribes with a glob, publishes a JSON object and prints what comes back, typed.
//!
//!     STREAMD_ADDR=127.0.0.1:50051 cargo run --example client
//!
//! Exits 0 once it has received its own event and a streamer event, 1 after 10 s.

use std::{process::ExitCode, time::Duration};

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::json;
use streamhandler::pb::{
    PublishRequest, StartServiceRequest, SubscribeRequest, event::Payload,
    stream_handler_client::StreamHandlerClient,
};

/// A JSON value as a protobuf Value (every number becomes a double).
fn to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(to_struct(object)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a Struct.
fn to_struct(object: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: object.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

/// A protobuf Value back as JSON.
fn from_value(value: Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => n.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(list)) => list.values.into_iter().map(from_value).collect(),
        Some(Kind::StructValue(object)) => from_struct(object),
    }
}

/// A Struct back as a JSON object.
fn from_struct(object: Struct) -> serde_json::Value {
    serde_json::Value::Object(
        object
            .fields
            .into_iter()
            .map(|(k, v)| (k, from_value(v)))
            .collect(),
    )
}

async fn run(addr: String) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = StreamHandlerClient::connect(format!("http://{addr}")).await?;
    client
        .start_service(StartServiceRequest {
            name: "streamer".into(),
            interval: Some(Duration::from_millis(200).try_into()?),
            ..Default::default()
        })
        .await?;
    let mut events = client
        .subscribe(SubscribeRequest {
            topics: vec!["streamer".into(), "demo/*".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    // The first event says the subscription is live: what is published from now on
    // reaches this stream.
    match events.message().await?.and_then(|e| e.payload) {
        Some(Payload::Subscribed(subscribed)) => println!("subscribed to {:?}", subscribed.topics),
        other => return Err(format!("the stream began with {other:?}").into()),
    }
    let sent = json!({"greeting": "hello from rust", "n": 42, "tags": ["a", "b"]});
    let serde_json::Value::Object(sent) = sent else {
        unreachable!("a JSON object literal")
    };
    let reply = client
        .publish(PublishRequest {
            topic: "demo/hello".into(),
            data: Some(to_struct(sent)),
        })
        .await?;
    println!("published demo/hello #{}", reply.into_inner().seq);

    let (mut got_own, mut got_points) = (false, false);
    while let Some(event) = events.message().await? {
        let (topic, seq) = (&event.topic, event.seq);
        match event.payload {
            Some(Payload::Points(points)) => {
                let count: usize = points.series.iter().map(|s| s.points.len()).sum();
                println!(
                    "{topic} #{seq}: {} series, {count} points",
                    points.series.len()
                );
                got_points = true;
            }
            Some(Payload::Data(data)) => {
                println!("{topic} #{seq}: {}", from_struct(data));
                got_own |= topic == "demo/hello";
            }
            Some(Payload::Lifecycle(lifecycle)) => {
                println!(
                    "{topic} #{seq}: {:?} {}",
                    lifecycle.kind(),
                    lifecycle.message
                );
            }
            _ => {}
        }
        if got_own && got_points {
            return Ok(());
        }
    }
    Err("the stream ended".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::var("STREAMD_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    match tokio::time::timeout(Duration::from_secs(10), run(addr)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("streamd: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("timed out");
            ExitCode::FAILURE
        }
    }
}

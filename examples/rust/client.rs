//! A streamd client in Rust, on this crate's `pb` module: starts the streamer,
//! subscribes with a glob, publishes a JSON object and prints what comes back, typed.
//!
//!     STREAMD_ADDR=127.0.0.1:50051 cargo run --example client
//!
//! Exits 0 once it has received its own event and a streamer event, 1 after 10 s.

use std::{process::ExitCode, time::Duration};

use serde_json::json;
use streamhandler::{
    // The crate's helpers between JSON and Struct.
    json::{from_struct, to_struct},
    pb::{
        PublishRequest, StartServiceRequest, SubscribeRequest, event::Payload,
        stream_handler_client::StreamHandlerClient,
    },
};

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
            data: Some(to_struct(sent)?),
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
                println!("{topic} #{seq}: {}", from_struct(&data));
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

//! The workload against streamd: Subscribe streams over their connections, a
//! PublishStream from each publisher in its own task, and the stalled and quiet
//! subscribers the plan asks for. A stream counts as ready once its Subscribed event
//! has come. Events are read and payloads written as raw bytes (see `raw_event`).

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, future, stream};
use streamhandler::{
    pb::{PublishStreamResponse, SubscribeRequest},
    wire::RawPublish,
};
use tonic::{Streaming, client::Grpc, codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_prost::ProstCodec;

use super::{
    Plan,
    measure::{self, Reader, Received, Run, Schedule, Topic},
    payload::Stamp,
    raw_event::{EventPayload, RawEvent},
    report::{Report, Stall, System},
    server::Processes,
    stall::{self, Switch},
};
use crate::{
    args::StallLevel,
    client::Addr,
    client::{self, not_running},
    error::Error,
};

/// Streams opened at once while setting up.
const OPENING: usize = 64;
const SUBSCRIBE: &str = "/streamhandler.v1.StreamHandler/Subscribe";
const PUBLISH_STREAM: &str = "/streamhandler.v1.StreamHandler/PublishStream";

/// Runs the plan against the daemon at `publish_addr`, whose process is `server` if
/// known, with the subscribers there or at `subscribe_addr`.
pub async fn run(
    publish_addr: &Addr,
    subscribe_addr: Option<&Addr>,
    plan: &Plan,
    server: &Processes,
) -> Result<Report, Error> {
    // Subscribers at another node, when asked: events then cross between nodes.
    let addr = subscribe_addr.unwrap_or(publish_addr);
    let channels = connect(addr, plan.conns).await?;
    let run = Run::new(plan, 1);
    let mut tasks = Vec::new();
    let streams: Vec<Streaming<RawEvent>> = stream::iter(0..plan.subs)
        .map(|j| subscribe(addr, channels[j % plan.conns].clone(), &plan.topic))
        .buffered(OPENING)
        .try_collect()
        .await?;
    for (j, events) in streams.into_iter().enumerate() {
        tasks.push(tokio::spawn(live(run.reader(Topic::Main, j), events)));
    }
    for j in 0..plan.stalled {
        // Unless shared, a stalled subscriber has a connection of its own, as a stuck
        // client would.
        let (channel, switch) = match (plan.stall_shared, plan.stall) {
            (true, _) => (channels[j % plan.conns].clone(), None),
            (false, StallLevel::Grpc) => (client::channel(addr).await?, None),
            (false, StallLevel::Tcp) => {
                let switch = Switch::default();
                (stall::channel(addr, switch.clone()).await?, Some(switch))
            }
        };
        let events = subscribe(addr, channel, &plan.topic).await?;
        let reader = run.reader(Topic::Main, plan.subs + j);
        tasks.push(tokio::spawn(stalled(reader, events, switch)));
    }
    let quiet = measure::quiet_apart(plan)?;
    let mut quiet_publisher = None;
    if let Some((topic, apart)) = &quiet {
        let (subscriber_addr, topic) = (addr.clone(), topic.clone());
        let events = apart
            .run(async move {
                let channel = client::channel(&subscriber_addr).await?;
                subscribe(&subscriber_addr, channel, &topic).await
            })
            .await?;
        tasks.push(apart.spawn(live(run.reader(Topic::Quiet, 0), events)));
        let publisher_addr = publish_addr.clone();
        quiet_publisher = Some(
            apart
                .run(async move { client::channel(&publisher_addr).await })
                .await?,
        );
    }

    let publishers = connect(publish_addr, plan.pubs).await?;
    let ready = plan.subs + plan.stalled + usize::from(quiet.is_some());
    // As requests carry them: cloned per event without a copy.
    let topics: Vec<Bytes> = std::iter::once(plan.topic.clone())
        .chain(quiet.as_ref().map(|(topic, _)| topic.clone()))
        .map(Bytes::from)
        .collect();
    // Each stream is ready once its Subscribed event has come: nothing need be sent.
    run.warm_up(System::Streamd, plan, ready, || future::ok(()))
        .await?;

    let finished = run
        .timed(
            System::Streamd,
            plan,
            server,
            |clock, published, quiet_published| {
                let main = publishers
                    .into_iter()
                    .enumerate()
                    .map(|(p, channel)| {
                        let schedule = Schedule::main(plan, p, clock, published.clone());
                        let payloads = measure::payloads(schedule, None);
                        tokio::spawn(publish(
                            publish_addr.clone(),
                            channel,
                            topics[0].clone(),
                            payloads,
                        ))
                    })
                    .collect();
                let quiet = quiet_publisher
                    .zip(quiet.as_ref().map(|(_, apart)| apart))
                    .map(|(channel, apart)| {
                        let schedule = Schedule::quiet(plan, clock, quiet_published);
                        let topic = topics[1].clone();
                        move |done| {
                            let payloads = measure::payloads(schedule, Some(done));
                            apart.spawn(publish(publish_addr.clone(), channel, topic, payloads))
                        }
                    });
                measure::with_quiet(measure::join_publishers(main), quiet)
            },
        )
        .await?;
    let mut report = finished.release(plan).await;
    if let Some((_, apart)) = &quiet {
        apart.mark(&mut report);
    }
    for task in tasks {
        let _ = task.await;
    }
    if subscribe_addr.is_some() {
        report.notes.push(format!(
            "published at {publish_addr}, read at {addr}: the server CPU and memory are \
             those of {} processes together (the nodes, and NATS if --cluster-nats names it)",
            server.0.len()
        ));
    }
    report.stall = (plan.stalled > 0).then_some(Stall {
        subscribers: plan.stalled,
        level: plan.stall,
        shared: plan.stall_shared,
    });
    Ok(report)
}

/// `count` connections, opened a few at a time.
async fn connect(addr: &Addr, count: usize) -> Result<Vec<Channel>, Error> {
    stream::iter(0..count)
        .map(|_| client::channel(addr))
        .buffered(OPENING)
        .try_collect()
        .await
}

async fn ready(addr: &Addr, channel: Channel) -> Result<Grpc<Channel>, Error> {
    let mut grpc = Grpc::new(channel);
    grpc.ready().await.map_err(|err| not_running(addr, &err))?;
    Ok(grpc)
}

/// Opens a Subscribe stream on `topic` whose events are read as [`RawEvent`]s.
async fn subscribe(
    addr: &Addr,
    channel: Channel,
    topic: &str,
) -> Result<Streaming<RawEvent>, Error> {
    let request = SubscribeRequest {
        topics: vec![topic.to_string()],
        ..Default::default()
    };
    ready(addr, channel)
        .await?
        .server_streaming(
            addr.request(request),
            PathAndQuery::from_static(SUBSCRIBE),
            ProstCodec::<SubscribeRequest, RawEvent>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Error::from_status(status, addr))
}

/// One publisher: its payloads as one PublishStream call, so that HTTP/2 flow control
/// rather than round trips paces it.
async fn publish(
    addr: Addr,
    channel: Channel,
    topic: Bytes,
    payloads: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<(), Error> {
    let requests = payloads.map(move |data| RawPublish {
        topic: topic.clone(),
        data: Some(data),
    });
    ready(&addr, channel)
        .await?
        .client_streaming(
            addr.request(requests),
            PathAndQuery::from_static(PUBLISH_STREAM),
            ProstCodec::<RawPublish, PublishStreamResponse>::default(),
        )
        .await
        .map_err(|status| Error::from_status(status, &addr))?;
    Ok(())
}

/// A Subscribe stream as the measuring code reads it; a broken stream ends it.
fn received(events: Streaming<RawEvent>) -> impl Stream<Item = Received> + Unpin {
    events.filter_map(|event| {
        future::ready(
            event
                .ok()
                .and_then(|RawEvent { seq, payload }| match payload {
                    EventPayload::Data(Some(Stamp::Warmup)) => Some(Received::Warmup),
                    EventPayload::Data(Some(Stamp::Data { index, sent_ns })) => {
                        Some(Received::Data {
                            index,
                            sent_ns,
                            stream: 0,
                            position: seq,
                        })
                    }
                    EventPayload::Data(None) => Some(Received::Foreign),
                    EventPayload::Lagged(missed) => Some(Received::Lagged(missed)),
                    EventPayload::Subscribed => Some(Received::Subscribed),
                    EventPayload::Other => None,
                }),
        )
    })
}

async fn live(mut reader: Reader, events: Streaming<RawEvent>) {
    let mut events = received(events);
    reader.until_ready(&mut events).await;
    reader.read(&mut events).await.released().await;
}

/// Reads the warm-up, then holds the stream unread (and with a switch, stops reading
/// the connection) until the run is over.
async fn stalled(mut reader: Reader, events: Streaming<RawEvent>, switch: Option<Switch>) {
    let mut events = received(events);
    reader.until_ready(&mut events).await;
    if let Some(switch) = switch {
        switch.stall();
    }
    reader.released().await;
    drop(events);
}

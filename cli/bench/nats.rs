//! The same workload against nats-server, through async-nats: K subscriptions over
//! their connections, P publishers each on its own connection and in its own task, the
//! same payload bytes as the message body. A stalled subscriber is, at the `tcp` level,
//! a raw connection that subscribes and then never reads, as a stuck client would; at
//! the `grpc` level, a subscription on its own connection that is never read (its
//! client still reads the socket and drops what does not fit its buffer). A stalled
//! subscription cannot share a live one's connection: the client reads a connection
//! for all its subscriptions alike.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Subject};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    Plan,
    measure::{self, Reader, Received, Run, Schedule, Topic},
    payload::{self, Kind, Stamp},
    report::{Report, Stall, System},
    server::Processes,
};
use crate::{args::StallLevel, error::Error};

const OPENING: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A subscription buffer that holds any run, so that what is measured is the server,
/// not async-nats's buffer (64Ki messages by default, dropped past that). tokio's
/// channel allocates only for what it holds.
const HOLD_ALL: usize = 1 << 40;

/// Checks a `nats://host:port` URL and returns it.
pub fn url(url: &str) -> Result<String, Error> {
    let rest = url.strip_prefix("nats://").ok_or_else(|| {
        Error::Other(format!("--against-nats {url:?}: expected nats://HOST:PORT"))
    })?;
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(url.to_string())
        }
        _ => Err(Error::Other(format!(
            "--against-nats {url:?}: expected nats://HOST:PORT"
        ))),
    }
}

/// Connects once, so that an unreachable server is reported before any run.
pub async fn probe(url: &str) -> Result<(), Error> {
    connect(url, ConnectOptions::new()).await.map(drop)
}

async fn connect(url: &str, options: ConnectOptions) -> Result<Client, Error> {
    options
        .connection_timeout(CONNECT_TIMEOUT)
        .ignore_discovered_servers()
        .connect(url)
        .await
        .map_err(|err| Error::Other(format!("nats-server is not reachable at {url} ({err})")))
}

/// A subscriber's connection: with a buffer for the whole run unless the plan keeps
/// async-nats's default.
async fn connect_subscriber(url: &str, default_client: bool) -> Result<Client, Error> {
    let options = ConnectOptions::new();
    let options = if default_client {
        options
    } else {
        options.subscription_capacity(HOLD_ALL)
    };
    connect(url, options).await
}

fn nats_error(url: &str, err: impl std::fmt::Display) -> Error {
    Error::Other(format!("nats-server at {url}: {err}"))
}

async fn subscription(
    url: &str,
    client: &Client,
    subject: &str,
) -> Result<async_nats::Subscriber, Error> {
    let subscription = client
        .subscribe(subject.to_string())
        .await
        .map_err(|err| nats_error(url, err))?;
    client.flush().await.map_err(|err| nats_error(url, err))?;
    Ok(subscription)
}

/// Runs the plan against nats-server at `url`, whose process is `server` if known.
pub async fn run(url: &str, plan: &Plan, server: &Processes) -> Result<Report, Error> {
    let clients: Vec<Client> = stream::iter(0..plan.conns)
        .map(|_| connect_subscriber(url, plan.nats_default_client))
        .buffered(OPENING)
        .try_collect()
        .await?;
    let subscriptions: Vec<async_nats::Subscriber> = stream::iter(0..plan.subs)
        .map(|j| subscription(url, &clients[j % plan.conns], &plan.topic))
        .buffered(OPENING)
        .try_collect()
        .await?;
    let run = Run::new(plan, plan.pubs);
    let mut readers = Vec::new();
    for (j, subscription) in subscriptions.into_iter().enumerate() {
        readers.push(tokio::spawn(live(
            run.reader(Topic::Main, j),
            subscription,
            plan.pubs,
        )));
    }
    let mut stall = None;
    let mut notes = Vec::new();
    let mut stalled_sockets = Vec::new();
    let mut stalled_tasks = Vec::new();
    let mut ready = plan.subs;
    if plan.stalled > 0 && plan.stall_shared {
        notes.push(
            "no stalled subscribers: a stalled subscription cannot share a live one's connection \
             (async-nats reads the connection for every subscription)"
                .to_string(),
        );
    } else if plan.stalled > 0 {
        for j in 0..plan.stalled {
            match plan.stall {
                StallLevel::Tcp => {
                    stalled_sockets.push(stalled_subscriber(url, &plan.topic).await?);
                }
                StallLevel::Grpc => {
                    let client = connect_subscriber(url, plan.nats_default_client).await?;
                    let subscription = subscription(url, &client, &plan.topic).await?;
                    let reader = run.reader(Topic::Main, plan.subs + j);
                    stalled_tasks.push(tokio::spawn(stalled(
                        reader,
                        client,
                        subscription,
                        plan.pubs,
                    )));
                    ready += 1;
                }
            }
        }
        stall = Some(Stall {
            subscribers: plan.stalled,
            level: plan.stall,
            shared: false,
        });
    }
    let mut quiet_client = None;
    let quiet = measure::quiet_apart(plan)?;
    let mut quiet_publisher = None;
    if let Some((topic, apart)) = &quiet {
        let (subscriber_url, default_client) = (url.to_string(), plan.nats_default_client);
        let subject = topic.clone();
        let (client, subscription) = apart
            .run(async move {
                let client = connect_subscriber(&subscriber_url, default_client).await?;
                let subscription = subscription(&subscriber_url, &client, &subject).await?;
                Ok((client, subscription))
            })
            .await?;
        readers.push(apart.spawn(live(run.reader(Topic::Quiet, 0), subscription, 1)));
        quiet_client = Some(client);
        ready += 1;
        let publisher_url = url.to_string();
        let client = apart
            .run(async move { connect(&publisher_url, ConnectOptions::new()).await })
            .await?;
        quiet_publisher = Some((client, Subject::from(topic.as_str())));
    }

    let publishers: Vec<Client> = stream::iter(0..plan.pubs)
        .map(|_| connect(url, ConnectOptions::new()))
        .buffered(OPENING)
        .try_collect()
        .await?;
    let subject = Subject::from(plan.topic.as_str());
    let subjects: Vec<Subject> = std::iter::once(subject.clone())
        .chain(quiet_publisher.as_ref().map(|(_, subject)| subject.clone()))
        .collect();
    run.warm_up(System::Nats, plan, ready, || {
        ping(url, &publishers[0], &subjects)
    })
    .await?;

    let finished = run
        .timed(
            System::Nats,
            plan,
            server,
            |clock, published, quiet_published| {
                let main = publishers
                    .into_iter()
                    .enumerate()
                    .map(|(p, client)| {
                        let schedule = Schedule::main(plan, p, clock, published.clone());
                        let payloads = measure::payloads(schedule, None);
                        tokio::spawn(publish(url.to_string(), client, subject.clone(), payloads))
                    })
                    .collect();
                let quiet = quiet_publisher
                    .zip(quiet.as_ref().map(|(_, apart)| apart))
                    .map(|((client, subject), apart)| {
                        let schedule = Schedule::quiet(plan, clock, quiet_published);
                        move |done| {
                            let payloads = measure::payloads(schedule, Some(done));
                            apart.spawn(publish(url.to_string(), client, subject, payloads))
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
    let mut taken = 0;
    for reader in readers {
        taken += reader.await.unwrap_or(0);
    }
    for task in stalled_tasks {
        let _ = task.await;
    }
    drop(stalled_sockets);
    // What reached a reading connection but no subscriber: async-nats dropped it.
    let arrived: u64 = clients
        .iter()
        .chain(&quiet_client)
        .map(|client| {
            client
                .statistics()
                .in_messages
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let dropped = arrived.saturating_sub(taken);
    report.nats_client_dropped = Some(dropped);
    if dropped > 0 {
        report.notes.push(format!(
            "async-nats dropped {dropped} messages: a subscription's buffer was full (slow consumer)"
        ));
    }
    report.stall = stall;
    report.notes.extend(notes);
    Ok(report)
}

/// A subscriber that stops reading: subscribes over a raw connection, waits for the
/// server to confirm, then never reads again.
async fn stalled_subscriber(url: &str, subject: &str) -> Result<TcpStream, Error> {
    let addr = url.trim_start_matches("nats://");
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|err| Error::Other(format!("nats-server is not reachable at {url} ({err})")))?;
    let command = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    socket
        .write_all(command.as_bytes())
        .await
        .map_err(|err| nats_error(url, err))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"PONG") {
        let n = tokio::time::timeout(CONNECT_TIMEOUT, socket.read(&mut buf))
            .await
            .map_err(|_| nats_error(url, "no PONG from a new subscriber"))?
            .map_err(|err| nats_error(url, err))?;
        if n == 0 {
            return Err(nats_error(url, "the connection closed"));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(socket)
}

/// Publishes one readiness ping on each subject.
async fn ping(url: &str, client: &Client, subjects: &[Subject]) -> Result<(), Error> {
    for subject in subjects {
        let body = payload::encode(Kind::Warmup, 0, payload::now_ns(), 0);
        client
            .publish(subject.clone(), body)
            .await
            .map_err(|err| nats_error(url, err))?;
    }
    client.flush().await.map_err(|err| nats_error(url, err))
}

async fn publish(
    url: String,
    client: Client,
    subject: Subject,
    payloads: impl Stream<Item = bytes::Bytes> + Send + 'static,
) -> Result<(), Error> {
    let mut payloads = std::pin::pin!(payloads);
    while let Some(body) = payloads.next().await {
        client
            .publish(subject.clone(), body)
            .await
            .map_err(|err| nats_error(&url, err))?;
    }
    client.flush().await.map_err(|err| nats_error(&url, err))
}

/// A subscription as the measuring code reads it. NATS orders messages per publisher
/// only, so each publisher's messages are an ordered stream of their own.
fn received(
    subscription: async_nats::Subscriber,
    pubs: usize,
) -> impl Stream<Item = Received> + Unpin {
    subscription.map(move |message| match payload::read(&message.payload) {
        Some(Stamp::Warmup) => Received::Warmup,
        Some(Stamp::Data { index, sent_ns }) => Received::Data {
            index,
            sent_ns,
            stream: (index % pubs as u64) as usize,
            position: index,
        },
        None => Received::Foreign,
    })
}

/// Reads the run and says how many messages it took from its subscription.
async fn live(mut reader: Reader, subscription: async_nats::Subscriber, pubs: usize) -> u64 {
    let mut messages = received(subscription, pubs);
    reader.until_ready(&mut messages).await;
    let mut reader = reader.read(&mut messages).await;
    reader.drain(&mut messages);
    let taken = reader.taken();
    reader.released().await;
    taken
}

/// Reads the warm-up, then leaves the subscription unread until the run is over.
async fn stalled(
    mut reader: Reader,
    client: Client,
    subscription: async_nats::Subscriber,
    pubs: usize,
) {
    let mut messages = received(subscription, pubs);
    reader.until_ready(&mut messages).await;
    reader.released().await;
    drop((messages, client));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_the_nats_scheme_a_host_and_a_port() {
        assert_eq!(
            url("nats://127.0.0.1:4222").unwrap(),
            "nats://127.0.0.1:4222"
        );
        for bad in [
            "127.0.0.1:4222",
            "nats://:4222",
            "nats://host",
            "http://h:1",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}

//! The `kraken` service against a local websocket server that speaks Kraken's v1
//! shapes: typed events, protocol traffic kept out of the stream, garbage skipped, the
//! book's checksum enforced, reconnects and a clean close.

use serde_json::{Value, json};
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    harness::{Daemon, Events, is_data, is_lifecycle},
    websocket::{Connection, Server, start, stop},
};

const PAIR: &str = "XBT/USD";

/// What the service sends on connecting, with the default params.
fn default_subscribes() -> [Value; 3] {
    [
        json!({"event": "subscribe", "pair": [PAIR], "subscription": {"name": "ticker"}}),
        json!({"event": "subscribe", "pair": [PAIR], "subscription": {"name": "spread"}}),
        json!({"event": "subscribe", "pair": [PAIR], "subscription": {"name": "book", "depth": 10}}),
    ]
}

/// Reads the default subscribes and answers as Kraken does.
async fn handshake(connection: &mut Connection) {
    for want in default_subscribes() {
        assert_eq!(connection.json().await, want);
    }
    connection
        .send(r#"{"connectionID":1,"event":"systemStatus","status":"online","version":"1.9.0"}"#)
        .await;
    for (id, name) in [(1, "ticker"), (2, "spread"), (3, "book-10")] {
        connection.send(&subscribed(id, name, "subscribed")).await;
    }
}

fn subscribed(id: u64, channel: &str, status: &str) -> String {
    let name = channel.split('-').next().unwrap_or(channel);
    json!({"channelID": id, "channelName": channel, "event": "subscriptionStatus",
           "pair": PAIR, "status": status, "subscription": {"name": name}})
    .to_string()
}

const TICKER: &str = r#"[1,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.000"],
    "c":["5525.10000","0.00398963"],"v":["2634.11501494","3591.17907851"],
    "p":["5631.44067","5653.78939"],"t":[11493,16267],"l":["5505.00000","5501.00000"],
    "h":["5783.00000","5784.00000"],"o":["5760.70000","5763.40000"]},"ticker","XBT/USD"]"#;

const SPREAD: &str = r#"[2,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/USD"]"#;

type Level = (String, String);
type Levels = Vec<Level>;

/// `count` levels from `start`, a tick of 0.1 apart, going up or down.
fn levels(start: u32, count: u32, up: bool, volume: &str) -> Levels {
    (0..count)
        .map(|i| {
            let tenths = if up { start + i } else { start - i };
            (
                format!("{}.{}0000", tenths / 10, tenths % 10),
                volume.to_owned(),
            )
        })
        .collect()
}

/// Kraken's checksum, computed here independently of the daemon: the top ten asks
/// (lowest first) then bids (highest first), price and volume without '.' and leading
/// zeros, CRC32 as a decimal.
fn checksum(asks: &[Level], bids: &[Level]) -> String {
    let mut text = String::new();
    for (price, volume) in asks.iter().take(10).chain(bids.iter().take(10)) {
        for value in [price, volume] {
            text.push_str(value.replace('.', "").trim_start_matches('0'));
        }
    }
    crc32fast::hash(text.as_bytes()).to_string()
}

fn wire(levels: &[Level]) -> Value {
    levels
        .iter()
        .map(|(p, v)| json!([p, v, "1534614248.123678"]))
        .collect()
}

fn snapshot(asks: &[Level], bids: &[Level]) -> String {
    json!([3, {"as": wire(asks), "bs": wire(bids)}, "book-10", PAIR]).to_string()
}

/// An update in Kraken's two-object form, the checksum on the second.
fn update(asks: &[Level], bids: &[Level], checksum: &str) -> String {
    json!([3, {"a": wire(asks)}, {"b": wire(bids), "c": checksum}, "book-10", PAIR]).to_string()
}

fn book_levels(levels: &[pb::BookLevel]) -> Levels {
    levels
        .iter()
        .map(|l| (l.price.clone(), l.volume.clone()))
        .collect()
}

async fn next_book(events: &mut Events) -> pb::Book {
    match events.next_where(is_data).await.payload {
        Some(Payload::Book(book)) => book,
        other => panic!("not a book: {other:?}"),
    }
}

async fn next_error(events: &mut Events) -> String {
    let event = events.next().await;
    match event.payload {
        Some(Payload::Lifecycle(l)) if l.kind() == Kind::Error => l.message,
        other => panic!("not an error: {other:?}"),
    }
}

/// A Kraken feed for tests of other parts, until the test ends: each connection gets
/// the handshake, a ticker, a spread and a ten-level book, then a heartbeat a second.
/// Returns its URL.
pub async fn feed() -> String {
    let mut server = Server::start().await;
    let url = server.url.clone();
    tokio::spawn(async move {
        while let Some(mut connection) = server.accepted().await {
            tokio::spawn(async move {
                handshake(&mut connection).await;
                connection.send(TICKER).await;
                connection.send(SPREAD).await;
                let asks = levels(1000, 10, true, "1.50000000");
                let bids = levels(999, 10, false, "0.25000000");
                connection.send(&snapshot(&asks, &bids)).await;
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    connection.send(r#"{"event":"heartbeat"}"#).await;
                }
            });
        }
    });
    url
}

async fn start_kraken(daemon: &Daemon, server: &Server, params: &[(&str, &str)]) -> Events {
    let mut all = vec![("url", server.url.as_str())];
    all.extend_from_slice(params);
    start(daemon, "kraken", &all).await
}

#[tokio::test]
async fn kraken_publishes_typed_ticker_spread_and_book() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(&daemon, &server, &[]).await;
    let mut connection = server.connection().await;
    handshake(&mut connection).await;
    connection.send(r#"{"event":"heartbeat"}"#).await;
    connection.send(r#"{"event":"pong","reqid":1}"#).await;

    // The protocol traffic above published nothing: the ticker is the first data event.
    connection.send(TICKER).await;
    let event = events.next().await;
    let Some(Payload::Ticker(ticker)) = event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(
        ticker,
        pb::Ticker {
            pair: PAIR.into(),
            ask: "5525.40000".into(),
            bid: "5525.10000".into(),
            last: "5525.10000".into(),
            volume_24h: "3591.17907851".into(),
            vwap_24h: "5653.78939".into(),
            low_24h: "5501.00000".into(),
            high_24h: "5784.00000".into(),
            open: "5760.70000".into(),
            trades_24h: 16267,
        }
    );

    connection.send(SPREAD).await;
    let event = events.next().await;
    let Some(Payload::Spread(spread)) = event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(
        spread,
        pb::Spread {
            pair: PAIR.into(),
            bid: "5698.40000".into(),
            ask: "5700.00000".into(),
            bid_volume: "1.01234567".into(),
            ask_volume: "0.98765432".into(),
            timestamp: "1542057299.545897".into(),
        }
    );

    // A snapshot deeper than the subscription is cut to depth 10, and sent out of
    // order it is put in order.
    let asks = levels(1000, 12, true, "1.50000000");
    let bids = levels(999, 12, false, "0.25000000");
    let mut shuffled = asks.clone();
    shuffled.reverse();
    connection.send(&snapshot(&shuffled, &bids)).await;
    let book = next_book(&mut events).await;
    assert_eq!(book.pair, PAIR);
    assert_eq!(book_levels(&book.asks), asks[..10]);
    assert_eq!(book_levels(&book.bids), bids[..10]);
    assert_eq!(book.checksum.to_string(), checksum(&asks, &bids));

    // An update deletes the best ask and adds a better bid, which pushes the worst bid
    // out of depth 10.
    let new_bid = ("100.00000".to_owned(), "3.00000000".to_owned());
    let want_asks = asks[1..10].to_vec();
    let want_bids: Levels = std::iter::once(new_bid.clone())
        .chain(bids[..9].iter().cloned())
        .collect();
    let sum = checksum(&want_asks, &want_bids);
    let delete = vec![(asks[0].0.clone(), "0.00000000".to_owned())];
    connection.send(&update(&delete, &[new_bid], &sum)).await;
    let book = next_book(&mut events).await;
    assert_eq!(book_levels(&book.asks), want_asks);
    assert_eq!(book_levels(&book.bids), want_bids);
    assert_eq!(book.checksum.to_string(), sum);

    let status = daemon.service("kraken").await.status;
    assert_eq!(status["system_status"], "online");
    assert_eq!(
        status["subscriptions"],
        "ticker XBT/USD, spread XBT/USD, book-10 XBT/USD"
    );
    assert_eq!(status["connection"], format!("connected {}", server.url));
    assert_eq!(status["skipped_frames"], "0");
    let heartbeat = &status["last_heartbeat"];
    assert!(
        heartbeat.len() >= 20 && heartbeat.contains('T') && heartbeat.ends_with('Z'),
        "{heartbeat}"
    );

    // A refused subscription is an error event with Kraken's reason.
    connection
        .send(
            &json!({"errorMessage": "Currency pair not supported", "event": "subscriptionStatus",
                    "pair": "NOPE/USD", "status": "error", "subscription": {"name": "ticker"}})
            .to_string(),
        )
        .await;
    let error = next_error(&mut events).await;
    assert!(
        error.contains("NOPE/USD") && error.contains("Currency pair not supported"),
        "{error}"
    );
}

#[tokio::test]
async fn kraken_skips_and_counts_garbage_while_data_flows() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(&daemon, &server, &[]).await;
    let mut connection = server.connection().await;
    handshake(&mut connection).await;

    for garbage in [
        "not json at all",
        r#"{"event":"somethingNew"}"#,
        r#"[9,{"x":1},"trade","XBT/USD"]"#,
        r#"[1,{"a":"not a list"},"ticker","XBT/USD"]"#,
        r#"[3,{"a":[["1.0"]],"c":"1"},"book-10","XBT/USD"]"#,
    ] {
        connection.send(garbage).await;
    }
    connection
        .send_message(Message::binary(vec![0xde, 0xad]))
        .await;
    // Pings are answered.
    connection
        .send_message(Message::Ping(b"are you there".to_vec().into()))
        .await;
    assert_eq!(
        connection.message().await,
        Some(Message::Pong(b"are you there".to_vec().into()))
    );

    connection.send(SPREAD).await;
    let event = events.next().await;
    assert!(
        matches!(event.payload, Some(Payload::Spread(_))),
        "{event:?}"
    );
    let service = daemon.service("kraken").await;
    assert_eq!(service.status["skipped_frames"], "6");
    assert_eq!(service.errors, 0, "garbage is not an error");
    assert_eq!(service.state(), pb::ServiceState::Running);
}

#[tokio::test]
async fn a_bad_checksum_drops_the_book_and_resubscribes() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(&daemon, &server, &[]).await;
    let mut connection = server.connection().await;
    handshake(&mut connection).await;

    let asks = levels(1000, 10, true, "1.00000000");
    let bids = levels(999, 10, false, "1.00000000");
    connection.send(&snapshot(&asks, &bids)).await;
    next_book(&mut events).await;

    let change = vec![(asks[0].0.clone(), "2.00000000".to_owned())];
    connection.send(&update(&change, &[], "12345")).await;
    let error = next_error(&mut events).await;
    assert!(
        error.contains(PAIR) && error.contains("checksum"),
        "{error}"
    );
    let book = json!({"name": "book", "depth": 10});
    assert_eq!(
        connection.json().await,
        json!({"event": "unsubscribe", "pair": [PAIR], "subscription": book})
    );
    assert_eq!(
        connection.json().await,
        json!({"event": "subscribe", "pair": [PAIR], "subscription": book})
    );
    connection
        .send(&subscribed(3, "book-10", "unsubscribed"))
        .await;
    // An update still in flight for the dropped book is ignored.
    connection
        .send(&update(&change, &[], &checksum(&change, &bids)))
        .await;
    connection
        .send(&subscribed(4, "book-10", "subscribed"))
        .await;

    // The new snapshot is the next thing published: nothing came of the bad state.
    let asks = levels(2000, 10, true, "5.00000000");
    connection.send(&snapshot(&asks, &bids)).await;
    let book = next_book(&mut events).await;
    assert_eq!(book_levels(&book.asks), asks);
    assert_eq!(book.checksum.to_string(), checksum(&asks, &bids));
    // And updates verify against it again.
    let change = vec![(asks[9].0.clone(), "0.00000000".to_owned())];
    let sum = checksum(&asks[..9], &bids);
    connection.send(&update(&change, &[], &sum)).await;
    assert_eq!(next_book(&mut events).await.asks.len(), 9);
    let status = daemon.service("kraken").await.status;
    assert_eq!(
        status["subscriptions"],
        "ticker XBT/USD, spread XBT/USD, book-10 XBT/USD"
    );
}

#[tokio::test]
async fn kraken_reconnects_and_resubscribes_after_the_connection_drops() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(
        &daemon,
        &server,
        &[
            ("pairs", "XBT/USD,ETH/USD"),
            ("channels", "book,ticker"),
            ("depth", "25"),
        ],
    )
    .await;
    let pairs = json!(["XBT/USD", "ETH/USD"]);
    let subscribes = [
        json!({"event": "subscribe", "pair": pairs, "subscription": {"name": "ticker"}}),
        json!({"event": "subscribe", "pair": pairs, "subscription": {"name": "book", "depth": 25}}),
    ];
    let mut first = server.connection().await;
    for want in &subscribes {
        assert_eq!(&first.json().await, want);
    }
    first.send(TICKER).await;
    events.next_where(is_data).await;
    // Gone without a Close: the service reports it and connects again.
    drop(first);
    let error = next_error(&mut events).await;
    assert!(error.contains(&server.url), "{error}");

    let mut second = server.connection().await;
    for want in &subscribes {
        assert_eq!(&second.json().await, want);
    }
    second.send(TICKER).await;
    let event = events.next_where(is_data).await;
    assert!(matches!(event.payload, Some(Payload::Ticker(_))));
    let service = daemon.service("kraken").await;
    assert_eq!(
        (service.state(), service.restarts),
        (pb::ServiceState::Running, 0)
    );
}

#[tokio::test]
async fn stopping_kraken_sends_a_close_frame() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(&daemon, &server, &[]).await;
    let mut connection = server.connection().await;
    handshake(&mut connection).await;
    connection.send(TICKER).await;
    events.next_where(is_data).await;

    let closed = tokio::spawn(async move { connection.close_frame().await });
    let stopped = stop(&daemon, "kraken").await;
    assert!(stopped.was_running);
    assert!(matches!(closed.await.unwrap(), Message::Close(_)));
    let event = events.next().await;
    assert!(is_lifecycle(&event, Kind::Stopped), "{event:?}");
    let Some(Payload::Lifecycle(stopped)) = event.payload else {
        unreachable!()
    };
    assert_eq!(stopped.message, "", "stopped without being forced");
    let status = daemon.service("kraken").await.status;
    assert_eq!(status["connection"], format!("closed {}", server.url));
}

/// Takes the full heartbeat timeout, about 10 s.
#[tokio::test]
async fn a_silent_connection_is_dropped_and_reconnected() {
    let mut server = Server::start().await;
    let daemon = Daemon::start();
    let mut events = start_kraken(&daemon, &server, &[]).await;
    let mut first = server.connection().await;
    handshake(&mut first).await;
    // Then nothing at all, not even heartbeats.
    let error = next_error(&mut events).await;
    assert!(error.contains("no heartbeat for 10s"), "{error}");
    let mut second = server.connection().await;
    handshake(&mut second).await;
    drop(first);
}

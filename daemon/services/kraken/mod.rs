//! `kraken`: Kraken's public v1 websocket (wss://ws.kraken.com) as typed events: each
//! pair's ticker, spread (best bid and ask) and order book, the book kept from its
//! snapshot and updates and verified against Kraken's checksum after every update.
//!
//! Protocol traffic (heartbeats, system and subscription status) updates the service's
//! status, never the event stream. Frames it cannot use are skipped and counted. A
//! connection silent for [`SILENCE`] has failed; the supervisor reconnects, and every
//! new connection subscribes afresh.

mod book;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use self::book::{Book, Decimal, Level, Side};
use super::{
    Authority, Build, Environment, Kind, ParamError, ParamSpec, Params, StepContext, StepError,
    Worker,
    websocket::{self, Protocol, Session},
};
use crate::pb::{self, event::Payload};

pub const KIND: Kind = Kind {
    name: "kraken",
    description: "Kraken's live ticker, spread and book",
    // The wait before reconnecting; the supervisor doubles it while connecting fails.
    default_interval: Duration::from_secs(1),
    params: &[URL, PAIRS, CHANNELS, DEPTH],
    build,
};

const URL: ParamSpec = ParamSpec {
    name: "url",
    help: "Kraken's v1 websocket",
    default: Some("wss://ws.kraken.com"),
    authority: Authority::Endpoint,
};

const PAIRS: ParamSpec = ParamSpec {
    name: "pairs",
    help: "comma-separated pairs",
    default: Some("XBT/USD"),
    authority: Authority::Client,
};

const CHANNELS: ParamSpec = ParamSpec {
    name: "channels",
    help: "comma-separated, of ticker, spread and book",
    default: Some("ticker,spread,book"),
    authority: Authority::Client,
};

const DEPTH: ParamSpec = ParamSpec {
    name: "depth",
    help: "book depth: 10, 25, 100, 500 or 1000",
    default: Some("10"),
    authority: Authority::Client,
};
/// The depths Kraken's v1 book channel accepts.
const DEPTHS: [usize; 5] = [10, 25, 100, 500, 1000];
/// Kraken sends a heartbeat every second when a connection is otherwise idle, so this
/// long without any frame means the connection is dead even if TCP has not noticed.
const SILENCE: Duration = Duration::from_secs(10);
/// Levels per side in a published book: more than any display needs, and it keeps a
/// depth-1000 book well within the 64 KiB event limit.
const PUBLISHED_LEVELS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Ticker,
    Spread,
    Book,
}

impl Channel {
    const ALL: [Channel; 3] = [Channel::Ticker, Channel::Spread, Channel::Book];

    fn name(self) -> &'static str {
        match self {
            Channel::Ticker => "ticker",
            Channel::Spread => "spread",
            Channel::Book => "book",
        }
    }

    /// The channel of a data frame's channel name: "ticker", "spread", "book-10".
    fn of_frame(name: &str) -> Option<Self> {
        match name {
            "ticker" => Some(Channel::Ticker),
            "spread" => Some(Channel::Spread),
            _ => name
                .strip_prefix("book-")
                .filter(|d| d.parse::<usize>().is_ok())
                .map(|_| Channel::Book),
        }
    }
}

/// What to subscribe to, from the params.
#[derive(Debug, PartialEq)]
struct Subscriptions {
    pairs: Vec<String>,
    /// In [`Channel`] order, without repeats.
    channels: Vec<Channel>,
    depth: usize,
}

impl Subscriptions {
    /// A subscribe or unsubscribe message for one channel.
    fn message(&self, event: &str, pairs: &[String], channel: Channel) -> String {
        let subscription = match channel {
            Channel::Book => json!({"name": "book", "depth": self.depth}),
            other => json!({"name": other.name()}),
        };
        json!({"event": event, "pair": pairs, "subscription": subscription}).to_string()
    }

    /// What a new connection sends: one subscribe per channel, for every pair.
    fn opening(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|c| self.message("subscribe", &self.pairs, *c))
            .collect()
    }
}

fn build(params: &Params, _: &Environment) -> Result<Box<dyn Worker>, Build> {
    let url = websocket::parse_url(URL.name, URL.value(params).unwrap_or_default())?;
    Ok(Box::new(Kraken {
        subscriptions: subscriptions(params)?,
        session: Session::new(url, Some(SILENCE)),
    }))
}

fn subscriptions(params: &Params) -> Result<Subscriptions, ParamError> {
    let mut pairs: Vec<String> = Vec::new();
    for pair in list(params, &PAIRS)? {
        let valid = pair
            .split_once('/')
            .is_some_and(|(base, quote)| !base.is_empty() && !quote.is_empty())
            && !pair.contains(char::is_whitespace)
            && pair.matches('/').count() == 1;
        if !valid {
            return Err(ParamError::new(
                "pairs",
                format!("{pair:?} is not a pair like XBT/USD"),
            ));
        }
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let mut channels = Vec::new();
    for name in list(params, &CHANNELS)? {
        let channel = Channel::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                ParamError::new(
                    "channels",
                    format!("unknown channel {name:?}; choose from ticker, spread, book"),
                )
            })?;
        channels.push(channel);
    }
    channels.sort();
    channels.dedup();
    let depth = DEPTH.value(params).unwrap_or_default();
    let depth = depth
        .parse()
        .ok()
        .filter(|d| DEPTHS.contains(d))
        .ok_or_else(|| {
            ParamError::new(
                "depth",
                format!("{depth:?} is not one of 10, 25, 100, 500, 1000"),
            )
        })?;
    Ok(Subscriptions {
        pairs,
        channels,
        depth,
    })
}

/// A comma-separated param's items, trimmed; at least one, none empty.
fn list(params: &Params, spec: &ParamSpec) -> Result<Vec<String>, ParamError> {
    let (key, value) = (spec.name, spec.value(params).unwrap_or_default());
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(ParamError::new(
            key,
            format!("{value:?}: expected a comma-separated list with no empty items"),
        ));
    }
    Ok(items)
}

struct Kraken {
    subscriptions: Subscriptions,
    session: Session,
}

#[async_trait]
impl Worker for Kraken {
    /// One connection, from subscribing until it fails or the service stops.
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let mut feed = Feed::new(&self.subscriptions, ctx);
        let opening = self.subscriptions.opening();
        self.session.run(ctx, &opening, &mut feed).await
    }
}

/// One connection's state: its books and what Kraken confirmed it subscribed.
struct Feed<'a> {
    subscriptions: &'a Subscriptions,
    books: HashMap<String, Book>,
    /// "ticker XBT/USD", "book-10 XBT/USD", in the order Kraken confirmed them.
    subscribed: Vec<String>,
}

impl<'a> Feed<'a> {
    fn new(subscriptions: &'a Subscriptions, ctx: &StepContext) -> Self {
        let feed = Self {
            subscriptions,
            books: HashMap::new(),
            subscribed: Vec::new(),
        };
        feed.show_subscribed(ctx);
        feed
    }

    fn show_subscribed(&self, ctx: &StepContext) {
        let shown = if self.subscribed.is_empty() {
            "none".to_owned()
        } else {
            self.subscribed.join(", ")
        };
        ctx.set_status("subscriptions", shown);
    }

    fn subscription(&mut self, status: SubscriptionStatus, ctx: &StepContext) {
        let entry = format!("{} {}", status.channel, status.pair);
        self.subscribed.retain(|s| *s != entry);
        match status.status.as_str() {
            "subscribed" => self.subscribed.push(entry),
            "error" => ctx.report(format!(
                "Kraken refused subscription {entry}: {}",
                crate::secret::excerpt(&status.error)
            )),
            _ => {}
        }
        self.show_subscribed(ctx);
    }

    fn book(&mut self, frame: BookFrame, ctx: &StepContext, replies: &mut Vec<String>) {
        let subscriptions = self.subscriptions;
        let levels = subscriptions.depth.min(PUBLISHED_LEVELS);
        let book = if frame.snapshot {
            let book = Book::snapshot(subscriptions.depth, frame.asks, frame.bids);
            self.books
                .entry(frame.pair.clone())
                .insert_entry(book)
                .into_mut()
        } else {
            // None after a failed checksum, until the new subscription's snapshot: the
            // updates in between belong to the book that was dropped.
            let Some(book) = self.books.get_mut(&frame.pair) else {
                return;
            };
            book.apply(Side::Asks, frame.asks);
            book.apply(Side::Bids, frame.bids);
            let ours = book.checksum();
            if let Some(theirs) = frame.checksum
                && theirs != ours
            {
                ctx.report(format!(
                    "{}: book checksum mismatch (Kraken's {theirs}, ours {ours}); \
                     resubscribing to its book",
                    frame.pair
                ));
                self.books.remove(&frame.pair);
                let pair = std::slice::from_ref(&frame.pair);
                replies.push(subscriptions.message("unsubscribe", pair, Channel::Book));
                replies.push(subscriptions.message("subscribe", pair, Channel::Book));
                return;
            }
            book
        };
        websocket::publish(ctx, Payload::Book(book.to_pb(&frame.pair, levels)));
    }
}

impl Protocol for Feed<'_> {
    fn text(&mut self, text: &str, ctx: &StepContext, replies: &mut Vec<String>) -> bool {
        let Some(frame) = parse(text) else {
            tracing::debug!(frame = %text.chars().take(200).collect::<String>(), "skipped");
            return false;
        };
        if let Some(channel) = frame.channel()
            && !self.subscriptions.channels.contains(&channel)
        {
            return false;
        }
        match frame {
            Frame::Heartbeat => ctx.set_status("last_heartbeat", now()),
            Frame::Pong => {}
            Frame::SystemStatus(status) => ctx.set_status("system_status", status),
            Frame::Subscription(status) => self.subscription(status, ctx),
            Frame::Ticker(ticker) => websocket::publish(ctx, Payload::Ticker(ticker)),
            Frame::Spread(spread) => websocket::publish(ctx, Payload::Spread(spread)),
            Frame::Book(book) => self.book(book, ctx, replies),
        }
        true
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A frame Kraken's v1 API sends, as far as this service uses it.
#[derive(Debug, PartialEq)]
enum Frame {
    Heartbeat,
    Pong,
    /// The status it gives, e.g. "online", "maintenance".
    SystemStatus(String),
    Subscription(SubscriptionStatus),
    Ticker(pb::Ticker),
    Spread(pb::Spread),
    Book(BookFrame),
}

impl Frame {
    fn channel(&self) -> Option<Channel> {
        match self {
            Frame::Ticker(_) => Some(Channel::Ticker),
            Frame::Spread(_) => Some(Channel::Spread),
            Frame::Book(_) => Some(Channel::Book),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq)]
struct SubscriptionStatus {
    /// "subscribed", "unsubscribed" or "error".
    status: String,
    /// The channel as data frames name it: "ticker", "book-10".
    channel: String,
    pair: String,
    /// Kraken's errorMessage, for status "error".
    error: String,
}

#[derive(Debug, PartialEq)]
struct BookFrame {
    pair: String,
    /// A snapshot replaces the book; otherwise the levels update it.
    snapshot: bool,
    asks: Vec<Level>,
    bids: Vec<Level>,
    /// Kraken's checksum of the book after this update; never on snapshots.
    checksum: Option<u32>,
}

/// Parses one text frame; None for anything this service does not know.
fn parse(text: &str) -> Option<Frame> {
    match serde_json::from_str(text).ok()? {
        Value::Object(event) => parse_event(&event),
        Value::Array(frame) => parse_data(&frame),
        _ => None,
    }
}

/// `{"event": ...}`: protocol traffic.
fn parse_event(event: &Map<String, Value>) -> Option<Frame> {
    let text = |key: &str| event.get(key).and_then(Value::as_str);
    match text("event")? {
        "heartbeat" => Some(Frame::Heartbeat),
        "pong" => Some(Frame::Pong),
        "systemStatus" => Some(Frame::SystemStatus(text("status")?.to_owned())),
        "subscriptionStatus" => {
            let subscription = event.get("subscription");
            let name = subscription
                .and_then(|s| s.get("name"))
                .and_then(Value::as_str);
            let channel = match (text("channelName"), name) {
                (Some(channel), _) => channel.to_owned(),
                (None, Some("book")) => {
                    match subscription
                        .and_then(|s| s.get("depth"))
                        .and_then(Value::as_u64)
                    {
                        Some(depth) => format!("book-{depth}"),
                        None => "book".to_owned(),
                    }
                }
                (None, Some(name)) => name.to_owned(),
                (None, None) => "?".to_owned(),
            };
            Some(Frame::Subscription(SubscriptionStatus {
                status: text("status")?.to_owned(),
                channel,
                pair: text("pair").unwrap_or("?").to_owned(),
                error: text("errorMessage").unwrap_or_default().to_owned(),
            }))
        }
        _ => None,
    }
}

/// `[channelID, data, (data,) channelName, pair]`: market data.
fn parse_data(frame: &[Value]) -> Option<Frame> {
    let [id, data @ .., name, pair] = frame else {
        return None;
    };
    if !id.is_number() || data.is_empty() {
        return None;
    }
    let pair = pair.as_str()?.to_owned();
    match (Channel::of_frame(name.as_str()?)?, data) {
        (Channel::Ticker, [ticker]) => parse_ticker(pair, ticker).map(Frame::Ticker),
        (Channel::Spread, [spread]) => parse_spread(pair, spread).map(Frame::Spread),
        (Channel::Book, [_] | [_, _]) => parse_book(pair, data).map(Frame::Book),
        _ => None,
    }
}

/// A decimal string, checked.
fn decimal(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    Decimal::parse(text).map(|_| text.to_owned())
}

fn parse_ticker(pair: String, data: &Value) -> Option<pb::Ticker> {
    let field = |key: &str, index: usize| decimal(data.get(key)?.get(index)?);
    // Kraken documents "o" as [today, last 24 hours]; accept a bare string too.
    let open = match data.get("o")? {
        open @ Value::String(_) => decimal(open)?,
        open => decimal(open.get(0)?)?,
    };
    let trades = match data.get("t")?.get(1)? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(pb::Ticker {
        pair,
        ask: field("a", 0)?,
        bid: field("b", 0)?,
        last: field("c", 0)?,
        volume_24h: field("v", 1)?,
        vwap_24h: field("p", 1)?,
        low_24h: field("l", 1)?,
        high_24h: field("h", 1)?,
        open,
        trades_24h: trades,
    })
}

/// `[bid, ask, timestamp, bidVolume, askVolume]`; older servers omit the volumes.
fn parse_spread(pair: String, data: &Value) -> Option<pb::Spread> {
    let data = data.as_array()?;
    let volume = |index: usize| match data.get(index) {
        None => Some(String::new()),
        Some(v) => decimal(v),
    };
    Some(pb::Spread {
        pair,
        bid: decimal(data.first()?)?,
        ask: decimal(data.get(1)?)?,
        timestamp: decimal(data.get(2)?)?,
        bid_volume: volume(3)?,
        ask_volume: volume(4)?,
    })
}

/// A snapshot `{"as": [...], "bs": [...]}`, or an update: `{"a": [...]}` and/or
/// `{"b": [...]}`, in one object or two, with the checksum `"c"` on the last.
fn parse_book(pair: String, data: &[Value]) -> Option<BookFrame> {
    let mut book = BookFrame {
        pair,
        snapshot: false,
        asks: Vec::new(),
        bids: Vec::new(),
        checksum: None,
    };
    let mut seen = false;
    for object in data {
        let object = object.as_object()?;
        for (key, value) in object {
            match key.as_str() {
                "as" | "bs" => book.snapshot = true,
                "a" | "b" => {}
                "c" => {
                    book.checksum = Some(value.as_str()?.parse().ok()?);
                    continue;
                }
                // Room for fields Kraken may add.
                _ => continue,
            }
            let levels = parse_levels(value)?;
            seen = true;
            match key.as_str() {
                "as" | "a" => book.asks.extend(levels),
                _ => book.bids.extend(levels),
            }
        }
    }
    // A snapshot mixed with updates, or a checksum on a snapshot, is not Kraken's.
    let updates = data
        .iter()
        .any(|o| o.get("a").is_some() || o.get("b").is_some());
    if !seen || (book.snapshot && (updates || book.checksum.is_some())) {
        return None;
    }
    Some(book)
}

/// `[[price, volume, timestamp(, "r")], ...]`.
fn parse_levels(value: &Value) -> Option<Vec<Level>> {
    value
        .as_array()?
        .iter()
        .map(|level| {
            Some(Level {
                price: Decimal::parse(level.get(0)?.as_str()?)?,
                volume: Decimal::parse(level.get(1)?.as_str()?)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Frames of each shape the service reads, to damage.
    const FRAMES: [&str; 5] = [
        r#"[340,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.000"],"c":["5525.10000","0.00398963"],"v":["2634.1","3591.1"],"p":["5631.4","5653.7"],"t":[11493,16267],"l":["5505.0","5505.0"],"h":["5783.0","5783.0"],"o":["5760.7","5763.4"]},"ticker","XBT/USD"]"#,
        r#"[0,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/USD"]"#,
        r#"[0,{"as":[["5541.30000","2.50700000","1534614248.123678"]],"bs":[["5541.20000","1.52900000","1534614248.765567"]]},"book-10","XBT/USD"]"#,
        r#"[1234,{"a":[["5541.30000","2.50700000","1534614248.456738"]],"c":"974942666"},"book-10","XBT/USD"]"#,
        r#"{"event":"subscriptionStatus","status":"error","errorMessage":"Currency pair not supported"}"#,
    ];

    proptest! {
        // Cases kept few enough to run in seconds; PROPTEST_CASES=100000 runs them longer.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn any_text_is_a_frame_or_none(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn damaged_frames_are_read_or_ignored(frame in prop::sample::select(FRAMES.to_vec()), at in any::<prop::sample::Index>(), with in "[\\[\\]{}\",.0-9a-z-]{0,3}") {
            // The frames are ASCII, so every byte index is a char boundary.
            let mut text = frame.to_owned();
            let i = at.index(text.len());
            text.replace_range(i..i + 1, &with);
            let _ = parse(&text);
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn level(price: &str, volume: &str) -> Level {
        Level {
            price: Decimal::parse(price).unwrap(),
            volume: Decimal::parse(volume).unwrap(),
        }
    }

    #[test]
    fn params_default_and_validate() {
        let defaults = subscriptions(&params(&[])).unwrap();
        assert_eq!(
            defaults,
            Subscriptions {
                pairs: vec!["XBT/USD".into()],
                channels: Channel::ALL.to_vec(),
                depth: 10,
            }
        );
        let chosen = subscriptions(&params(&[
            ("pairs", "XBT/USD, ETH/EUR,XBT/USD"),
            ("channels", "book,ticker"),
            ("depth", "25"),
        ]))
        .unwrap();
        assert_eq!(chosen.pairs, ["XBT/USD", "ETH/EUR"]);
        assert_eq!(chosen.channels, [Channel::Ticker, Channel::Book]);
        assert_eq!(chosen.depth, 25);
        for (key, value) in [
            ("pairs", ""),
            ("pairs", "XBT/USD,,ETH/EUR"),
            ("pairs", "XBTUSD"),
            ("pairs", "XBT/USD/EUR"),
            ("pairs", "/USD"),
            ("channels", "trades"),
            ("channels", ""),
            ("depth", "11"),
            ("depth", "ten"),
        ] {
            let e = subscriptions(&params(&[(key, value)])).unwrap_err();
            assert_eq!(e.key, key, "{value:?}");
        }
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        let e = KIND
            .build(&params(&[("url", "https://x")]), &env)
            .err()
            .unwrap();
        assert_eq!(
            e,
            Build::Param(ParamError::new(
                "url",
                "\"https://x\" is not a ws:// or wss:// URL"
            ))
        );
        assert!(KIND.build(&params(&[]), &env).is_ok());
    }

    #[test]
    fn opening_subscribes_each_channel_for_every_pair() {
        let subs =
            subscriptions(&params(&[("pairs", "XBT/USD,ETH/USD"), ("depth", "100")])).unwrap();
        let opening: Vec<Value> = subs
            .opening()
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        let pairs = json!(["XBT/USD", "ETH/USD"]);
        assert_eq!(
            opening,
            [
                json!({"event": "subscribe", "pair": pairs, "subscription": {"name": "ticker"}}),
                json!({"event": "subscribe", "pair": pairs, "subscription": {"name": "spread"}}),
                json!({"event": "subscribe", "pair": pairs,
                       "subscription": {"name": "book", "depth": 100}}),
            ]
        );
    }

    #[test]
    fn protocol_frames() {
        assert_eq!(parse(r#"{"event":"heartbeat"}"#), Some(Frame::Heartbeat));
        assert_eq!(parse(r#"{"event":"pong","reqid":4}"#), Some(Frame::Pong));
        assert_eq!(
            parse(
                r#"{"connectionID":1,"event":"systemStatus","status":"online","version":"1.9.0"}"#
            ),
            Some(Frame::SystemStatus("online".into()))
        );
        assert_eq!(
            parse(
                r#"{"channelID":10001,"channelName":"book-10","event":"subscriptionStatus",
                    "pair":"XBT/USD","status":"subscribed","subscription":{"depth":10,"name":"book"}}"#
            ),
            Some(Frame::Subscription(SubscriptionStatus {
                status: "subscribed".into(),
                channel: "book-10".into(),
                pair: "XBT/USD".into(),
                error: String::new(),
            }))
        );
        assert_eq!(
            parse(
                r#"{"errorMessage":"Subscription depth not supported","event":"subscriptionStatus",
                    "pair":"XBT/USD","status":"error","subscription":{"depth":42,"name":"book"}}"#
            ),
            Some(Frame::Subscription(SubscriptionStatus {
                status: "error".into(),
                channel: "book-42".into(),
                pair: "XBT/USD".into(),
                error: "Subscription depth not supported".into(),
            }))
        );
    }

    #[test]
    fn ticker_frame() {
        let frame = r#"[340,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.000"],
            "c":["5525.10000","0.00398963"],"v":["2634.11501494","3591.17907851"],
            "p":["5631.44067","5653.78939"],"t":[11493,16267],"l":["5505.00000","5505.00000"],
            "h":["5783.00000","5783.00000"],"o":["5760.70000","5763.40000"]},"ticker","XBT/USD"]"#;
        assert_eq!(
            parse(frame),
            Some(Frame::Ticker(pb::Ticker {
                pair: "XBT/USD".into(),
                ask: "5525.40000".into(),
                bid: "5525.10000".into(),
                last: "5525.10000".into(),
                volume_24h: "3591.17907851".into(),
                vwap_24h: "5653.78939".into(),
                low_24h: "5505.00000".into(),
                high_24h: "5783.00000".into(),
                open: "5760.70000".into(),
                trades_24h: 16267,
            }))
        );
        // A field missing or not a number is a malformed frame.
        assert_eq!(parse(&frame.replace(r#""t":[11493,16267],"#, "")), None);
        assert_eq!(parse(&frame.replace("5525.40000", "lots")), None);
    }

    #[test]
    fn spread_frame() {
        let frame = r#"[0,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/USD"]"#;
        assert_eq!(
            parse(frame),
            Some(Frame::Spread(pb::Spread {
                pair: "XBT/USD".into(),
                bid: "5698.40000".into(),
                ask: "5700.00000".into(),
                bid_volume: "1.01234567".into(),
                ask_volume: "0.98765432".into(),
                timestamp: "1542057299.545897".into(),
            }))
        );
        assert_eq!(parse(r#"[0,["5698.4"],"spread","XBT/USD"]"#), None);
    }

    #[test]
    fn book_frames() {
        let snapshot = r#"[0,{"as":[["5541.30000","2.50700000","1534614248.123678"]],
            "bs":[["5541.20000","1.52900000","1534614248.765567"]]},"book-10","XBT/USD"]"#;
        assert_eq!(
            parse(snapshot),
            Some(Frame::Book(BookFrame {
                pair: "XBT/USD".into(),
                snapshot: true,
                asks: vec![level("5541.30000", "2.50700000")],
                bids: vec![level("5541.20000", "1.52900000")],
                checksum: None,
            }))
        );
        let two_objects = r#"[1234,{"a":[["5541.30000","2.50700000","1534614248.456738"],
            ["5542.50000","0.40100000","1534614248.456738","r"]]},
            {"b":[["5541.30000","0.00000000","1534614335.345903"]],"c":"974942666"},
            "book-10","XBT/USD"]"#;
        assert_eq!(
            parse(two_objects),
            Some(Frame::Book(BookFrame {
                pair: "XBT/USD".into(),
                snapshot: false,
                asks: vec![
                    level("5541.30000", "2.50700000"),
                    level("5542.50000", "0.40100000")
                ],
                bids: vec![level("5541.30000", "0.00000000")],
                checksum: Some(974_942_666),
            }))
        );
        let bids_only = r#"[1234,{"b":[["5541.30000","0.1","1534614335.345903"]],"c":"7"},"book-25","XBT/USD"]"#;
        let Some(Frame::Book(book)) = parse(bids_only) else {
            panic!("not a book")
        };
        assert_eq!(
            (book.asks.len(), book.bids.len(), book.checksum),
            (0, 1, Some(7))
        );
        for bad in [
            r#"[1,{"a":[["x","1","1"]]},"book-10","XBT/USD"]"#,
            r#"[1,{"a":[["1"]]},"book-10","XBT/USD"]"#,
            r#"[1,{"a":[["1","1"]],"c":"-5"},"book-10","XBT/USD"]"#,
            r#"[1,{"c":"5"},"book-10","XBT/USD"]"#,
            r#"[1,{"as":[],"a":[]},"book-10","XBT/USD"]"#,
            r#"[1,{"a":[]},{"b":[]},{"b":[]},"book-10","XBT/USD"]"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn garbage_is_not_a_frame() {
        for garbage in [
            "",
            "not json",
            "42",
            r#""text""#,
            "{}",
            r#"{"event":"somethingNew"}"#,
            r#"{"event":42}"#,
            "[]",
            r#"[1,{},"trade","XBT/USD"]"#,
            r#"[1,{},"book-x","XBT/USD"]"#,
            r#"["id",{},"ticker","XBT/USD"]"#,
            r#"[1,"ticker","XBT/USD"]"#,
            r#"[1,{"a":["1"]},"ticker",7]"#,
        ] {
            assert_eq!(parse(garbage), None, "{garbage}");
        }
    }
}

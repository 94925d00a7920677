//! The human form of events, as `subscribe --output text` prints them:
//! `HH:MM:SS.mmm TOPIC  RENDERING`, with a short rendering per payload kind and, for
//! streamer's points, a braille plot on the lines below.

use owo_colors::{AnsiColors, Style};
use streamhandler::{
    json::from_struct,
    pb::{self, event::Payload, lifecycle::Kind},
};

use crate::{
    format,
    plot::Canvas,
    term::{Palette, styles},
};

/// Plot width in characters; each holds 2×4 dots.
const PLOT_COLS: usize = 30;
/// Plot height in characters.
const PLOT_ROWS: usize = 4;
/// streamer's documented x range.
const PLOT_X: std::ops::RangeInclusive<f64> = 0.0..=3.0;
/// streamer's documented y range.
const PLOT_Y: std::ops::RangeInclusive<f64> = 0.0..=6.0;

/// Colours given to successive series in a plot.
const SERIES_COLOURS: [AnsiColors; 6] = [
    AnsiColors::Cyan,
    AnsiColors::Magenta,
    AnsiColors::Yellow,
    AnsiColors::Green,
    AnsiColors::Blue,
    AnsiColors::Red,
];

/// The narrowest the topic column gets; it widens to the longest topic seen.
const MIN_TOPIC_WIDTH: usize = 8;

/// Formats events one after another, keeping the topic column as wide as the longest
/// topic seen so far so that renderings mostly line up.
#[derive(Debug)]
pub struct EventPrinter {
    palette: Palette,
    topic_width: usize,
    /// Lines longer than this are cut rather than left to wrap; None: never cut.
    line_width: Option<usize>,
}

impl EventPrinter {
    /// A printer that colours with `palette` and cuts lines to `line_width`.
    pub fn new(palette: Palette, line_width: Option<usize>) -> Self {
        EventPrinter {
            palette,
            topic_width: MIN_TOPIC_WIDTH,
            line_width,
        }
    }

    /// The event's lines, joined by newlines, with its time shown in local time.
    pub fn format(&mut self, event: &pb::Event) -> String {
        self.format_at(&format::local_clock(event.time.as_ref()), event)
    }

    /// The event's lines with `clock` as its time of day.
    fn format_at(&mut self, clock: &str, event: &pb::Event) -> String {
        self.topic_width = self.topic_width.max(event.topic.chars().count());
        let topic = format!("{:<width$}", event.topic, width = self.topic_width);
        let lines = payload_lines(event.payload.as_ref(), &self.palette);
        let mut text = format!(
            "{} {}  {}",
            self.palette.paint(clock, styles::dim()),
            self.palette.paint(&topic, styles::topic()),
            lines.first().map_or("", String::as_str),
        );
        // Continuation lines start under the first line's rendering.
        let indent = " ".repeat(clock.chars().count() + 1 + self.topic_width + 2);
        for line in lines.iter().skip(1) {
            text.push('\n');
            text.push_str(&indent);
            text.push_str(line);
        }
        match self.line_width {
            Some(width) => text
                .lines()
                .map(|line| format::cut(line, width))
                .collect::<Vec<_>>()
                .join("\n"),
            None => text,
        }
    }
}

/// The rendering of a payload: its first line, then any lines to show beneath it.
pub fn payload_lines(payload: Option<&Payload>, palette: &Palette) -> Vec<String> {
    match payload {
        None => vec![palette.paint("(no payload)", styles::dim())],
        Some(Payload::Points(points)) => points_lines(points, palette),
        Some(Payload::Leaderboard(board)) => leaderboard_lines(board, palette),
        Some(payload) => vec![one_line(payload, palette)],
    }
}

/// What a subscriber skipped, per topic with the sequence numbers, at most a few
/// topics shown.
fn lagged_line(lagged: &pb::Lagged) -> String {
    const SHOWN: usize = 3;
    let mut line = format!(
        "lagged: missed {}",
        format::count(lagged.missed, "event", "events")
    );
    let topics: Vec<String> = lagged
        .topics
        .iter()
        .take(SHOWN)
        .map(|t| match t.first_seq == t.last_seq {
            true => format!("{} #{}", t.topic, t.first_seq),
            false => format!("{} #{}–{}", t.topic, t.first_seq, t.last_seq),
        })
        .collect();
    if !topics.is_empty() {
        line.push_str(&format!(" ({}", topics.join(", ")));
        if lagged.topics.len() > SHOWN {
            line.push_str(&format!(" and {} more topics", lagged.topics.len() - SHOWN));
        }
        line.push(')');
    }
    line
}

fn subscribed_line(subscribed: &pb::Subscribed) -> String {
    let following = if subscribed.topics.is_empty() {
        "every topic".to_owned()
    } else {
        subscribed.topics.join(", ")
    };
    format!(
        "subscribed to {following}; {} topics exist",
        subscribed.positions.len()
    )
}

/// The rendering of every payload kind that fits on one line.
fn one_line(payload: &Payload, palette: &Palette) -> String {
    match payload {
        Payload::Lifecycle(lifecycle) => lifecycle_line(lifecycle, palette),
        Payload::Lagged(lagged) => palette.paint(&lagged_line(lagged), styles::warn()),
        Payload::Subscribed(subscribed) => subscribed_line(subscribed),
        Payload::Data(data) => from_struct(data).to_string(),
        Payload::Text(text) => text_line(text),
        Payload::Line(line) => format!("{}:{}  {}", line.path, line.number, line.text),
        Payload::Image(image) => format!(
            "{}  {}x{}  {}  {}",
            image.path,
            image.width,
            image.height,
            image.media_type,
            format::bytes(image.size_bytes)
        ),
        Payload::System(system) => system_line(system),
        Payload::Points(points) => points_summary(points),
        Payload::Slugs(slugs) => slugs.strings.join(" "),
        Payload::Emoji(emoji) => format!(
            "{}  {} · {} / {}",
            emoji.character, emoji.name, emoji.category, emoji.group
        ),
        Payload::Activity(activity) => activity_line(activity),
        Payload::AirQuality(aq) => air_quality_line(aq),
        Payload::Ticker(t) => format!(
            "{}  last {}  bid {}  ask {} · 24h low {} high {} vol {} · {} trades",
            t.pair, t.last, t.bid, t.ask, t.low_24h, t.high_24h, t.volume_24h, t.trades_24h
        ),
        Payload::Spread(s) => format!(
            "{}  bid {} ({})  ask {} ({})",
            s.pair, s.bid, s.bid_volume, s.ask, s.ask_volume
        ),
        Payload::Book(book) => book_line(book),
        Payload::Leaderboard(board) => leaderboard_summary(board),
    }
}

/// `9 players · leader admin 150`.
fn leaderboard_summary(board: &pb::Leaderboard) -> String {
    let players = format::count(board.entries.len() as u64, "player", "players");
    match board.entries.first() {
        Some(leader) => format!("{players} · leader {} {}", leader.username, leader.score),
        None => players,
    }
}

/// The summary, then a compact table: rank, username, score and its change, with
/// rises in green and falls in red.
fn leaderboard_lines(board: &pb::Leaderboard, palette: &Palette) -> Vec<String> {
    let name_width = board
        .entries
        .iter()
        .map(|e| e.username.chars().count())
        .max()
        .unwrap_or(0);
    let score_width = board
        .entries
        .iter()
        .map(|e| e.score.to_string().len())
        .max()
        .unwrap_or(0);
    let mut lines = vec![leaderboard_summary(board)];
    for entry in &board.entries {
        let change = format!("{:+}", entry.change);
        let style = match entry.change.signum() {
            1 => styles::good(),
            -1 => styles::bad(),
            _ => styles::dim(),
        };
        lines.push(format!(
            "{:>3}  {:<name_width$}  {:>score_width$}  {}",
            entry.rank,
            entry.username,
            entry.score,
            palette.paint(&change, style)
        ));
    }
    lines
}

/// `activity · type · N participants · price 0.10 · link`.
fn activity_line(activity: &pb::Activity) -> String {
    let mut line = format!(
        "{} · {} · {} · price {:.2}",
        activity.activity,
        activity.r#type,
        format::count(
            u64::from(activity.participants),
            "participant",
            "participants"
        ),
        activity.price
    );
    if !activity.link.is_empty() {
        line.push_str(&format!(" · {}", activity.link));
    }
    line
}

/// `N locations · NAME (locality, CC): pm25, o3 · …`, naming the first few.
fn air_quality_line(aq: &pb::AirQuality) -> String {
    const SHOWN: usize = 3;
    let mut line = format::count(aq.locations.len() as u64, "location", "locations");
    for location in aq.locations.iter().take(SHOWN) {
        let place: Vec<_> = [location.locality.as_str(), location.country.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        line.push_str(&format!(" · {}", location.name));
        if !place.is_empty() {
            line.push_str(&format!(" ({})", place.join(", ")));
        }
        if !location.parameters.is_empty() {
            line.push_str(&format!(": {}", location.parameters.join(", ")));
        }
    }
    if aq.locations.len() > SHOWN {
        line.push_str(" · …");
    }
    line
}

/// `PAIR  bid PRICE (VOLUME) | ask PRICE (VOLUME) · N×M levels`: the top of the book.
fn book_line(book: &pb::Book) -> String {
    let level = |level: Option<&pb::BookLevel>| {
        level.map_or_else(
            || "-".to_string(),
            |l| format!("{} ({})", l.price, l.volume),
        )
    };
    format!(
        "{}  bid {} | ask {} · {}×{} levels",
        book.pair,
        level(book.bids.first()),
        level(book.asks.first()),
        book.bids.len(),
        book.asks.len()
    )
}

/// `started`, `stopped: why`, `error: what`, `restarting in 1.2s (attempt 2): why`,
/// `failed: why`, coloured by how good the news is.
fn lifecycle_line(lifecycle: &pb::Lifecycle, palette: &Palette) -> String {
    let with_message = |word: &str| {
        if lifecycle.message.is_empty() {
            word.to_string()
        } else {
            format!("{word}: {}", lifecycle.message)
        }
    };
    let (text, style) = match lifecycle.kind() {
        Kind::Started => (with_message("started"), styles::good()),
        Kind::Stopped => (with_message("stopped"), Style::new()),
        Kind::Error => (with_message("error"), styles::bad()),
        Kind::Failed => (with_message("failed"), styles::bad()),
        Kind::Restarting => {
            let wait = format::std_duration(lifecycle.backoff.as_ref())
                .map_or_else(|| "?".to_string(), format::duration);
            let word = format!("restarting in {wait} (attempt {})", lifecycle.attempt);
            (with_message(&word), styles::warn())
        }
        Kind::Unspecified => (with_message("lifecycle"), Style::new()),
    };
    palette.paint(&text, style)
}

/// `“Title” — path (N lines)`, or just `path (N lines)` for an untitled text.
fn text_line(text: &pb::Text) -> String {
    let lines = format::count(text.body.lines().count() as u64, "line", "lines");
    if text.title.is_empty() {
        format!("{} ({lines})", text.path)
    } else {
        format!("“{}” — {} ({lines})", text.title, text.path)
    }
}

/// `N services (R running, F failed) · S subscribers · T topics · RSS … · CPU …% · up …`.
fn system_line(system: &pb::SystemSnapshot) -> String {
    // In `list`'s words, so that a failing service is not counted as running.
    let in_state = |word: &str| {
        system
            .services
            .iter()
            .filter(|service| crate::table::state(service).0 == word)
            .count()
    };
    let mut line = format!(
        "{} ({} running, {} failing, {} failed) · {} · {} · RSS {} · CPU {:.1}%",
        format::count(system.services.len() as u64, "service", "services"),
        in_state("running"),
        in_state("failing"),
        in_state("failed"),
        format::count(u64::from(system.subscribers), "subscriber", "subscribers"),
        format::count(system.topics, "topic", "topics"),
        format::bytes(system.rss_bytes),
        system.cpu_percent,
    );
    if let Some(uptime) = format::std_duration(system.uptime.as_ref()) {
        // Whole seconds: a fraction of a second of uptime says nothing.
        let uptime = std::time::Duration::from_secs(uptime.as_secs());
        line.push_str(&format!(" · up {}", format::duration(uptime)));
    }
    if !system.node_id.is_empty() {
        line.push_str(&format!(
            " · node {} ({})",
            system.node_id, system.cluster_link
        ));
    }
    line
}

/// `10 series, 57 points`.
fn points_summary(points: &pb::Points) -> String {
    let total: usize = points.series.iter().map(|series| series.points.len()).sum();
    format!(
        "{}, {}",
        format::count(points.series.len() as u64, "series", "series"),
        format::count(total as u64, "point", "points")
    )
}

/// The summary, then the points as a braille plot, each series in its own colour,
/// between axes labelled with their ranges, and a legend of the colours.
fn points_lines(points: &pb::Points, palette: &Palette) -> Vec<String> {
    let mut canvas = Canvas::new(PLOT_COLS, PLOT_ROWS, PLOT_X, PLOT_Y);
    for (index, series) in points.series.iter().enumerate() {
        for point in &series.points {
            canvas.plot(point.x, point.y, index);
        }
    }
    let colour = |series: usize| Style::new().color(SERIES_COLOURS[series % SERIES_COLOURS.len()]);
    let plot = canvas.lines(|cell| match cell.series {
        Some(series) => palette.paint(&cell.glyph().to_string(), colour(series)),
        None => cell.glyph().to_string(),
    });
    let (y_low, y_high) = (PLOT_Y.start().to_string(), PLOT_Y.end().to_string());
    let margin = y_low.chars().count().max(y_high.chars().count());
    let mut lines = vec![points_summary(points)];
    for (row, line) in plot.into_iter().enumerate() {
        let (label, axis) = match row {
            0 => (y_high.as_str(), '┤'),
            row if row + 1 == PLOT_ROWS => (y_low.as_str(), '┤'),
            _ => ("", '│'),
        };
        lines.push(format!("{label:>margin$} {axis}{line}"));
    }
    lines.push(format!("{:margin$} └{}", "", "─".repeat(PLOT_COLS)));
    let (x_low, x_high) = (PLOT_X.start().to_string(), PLOT_X.end().to_string());
    let gap = PLOT_COLS.saturating_sub(x_low.chars().count());
    lines.push(format!("{:margin$}  {x_low}{x_high:>gap$}", ""));
    if !points.series.is_empty() {
        let keys: Vec<_> = (0..points.series.len())
            .map(|series| format!("{}{}", palette.paint("■", colour(series)), series + 1))
            .collect();
        lines.push(format!("series {}", keys.join(" ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use streamhandler::pb::ServiceState;

    use super::*;

    const PLAIN: Palette = Palette::new(false);

    fn event(topic: &str, payload: Payload) -> pb::Event {
        pb::Event {
            topic: topic.into(),
            seq: 1,
            time: None,
            payload: Some(payload),
        }
    }

    fn render(payload: Payload) -> String {
        payload_lines(Some(&payload), &PLAIN).join("\n")
    }

    fn lifecycle(kind: Kind, message: &str) -> Payload {
        Payload::Lifecycle(pb::Lifecycle {
            kind: kind as i32,
            message: message.into(),
            backoff: None,
            attempt: 0,
            ..Default::default()
        })
    }

    #[test]
    fn lifecycles() {
        assert_eq!(render(lifecycle(Kind::Started, "")), "started");
        assert_eq!(render(lifecycle(Kind::Stopped, "")), "stopped");
        assert_eq!(
            render(lifecycle(Kind::Stopped, "by client")),
            "stopped: by client"
        );
        assert_eq!(render(lifecycle(Kind::Error, "timeout")), "error: timeout");
        assert_eq!(
            render(lifecycle(Kind::Failed, "too many")),
            "failed: too many"
        );
        let restarting = Payload::Lifecycle(pb::Lifecycle {
            kind: Kind::Restarting as i32,
            message: "panicked".into(),
            backoff: Some(prost_types::Duration {
                seconds: 1,
                nanos: 200_000_000,
            }),
            attempt: 2,
            ..Default::default()
        });
        assert_eq!(
            render(restarting),
            "restarting in 1.2s (attempt 2): panicked"
        );
    }

    #[test]
    fn lagged() {
        let payload = Payload::Lagged(pb::Lagged {
            missed: 17,
            ..Default::default()
        });
        assert_eq!(render(payload), "lagged: missed 17 events");
        let skipped = |topic: &str, first_seq, last_seq| pb::Skipped {
            topic: topic.into(),
            missed: last_seq - first_seq + 1,
            first_seq,
            last_seq,
        };
        let payload = Payload::Lagged(pb::Lagged {
            missed: 17,
            topics: vec![skipped("a", 5, 20), skipped("b", 3, 3)],
        });
        assert_eq!(render(payload), "lagged: missed 17 events (a #5–20, b #3)");
        let payload = Payload::Lagged(pb::Lagged {
            missed: 5,
            topics: ["a", "b", "c", "d", "e"].map(|t| skipped(t, 1, 1)).into(),
        });
        assert_eq!(
            render(payload),
            "lagged: missed 5 events (a #1, b #1, c #1 and 2 more topics)"
        );
    }

    #[test]
    fn data_is_compact_json() {
        let data = crate::json::parse_object(r#"{"temp": 21.5, "ok": true}"#).unwrap();
        assert_eq!(render(Payload::Data(data)), r#"{"ok":true,"temp":21.5}"#);
    }

    #[test]
    fn text_line_and_image() {
        let text = Payload::Text(pb::Text {
            path: "/tmp/a.md".into(),
            title: "Hello".into(),
            body: "Hello\n\nworld\n".into(),
        });
        assert_eq!(render(text), "“Hello” — /tmp/a.md (3 lines)");
        let line = Payload::Line(pb::Line {
            path: "/var/log/x".into(),
            number: 12,
            text: "it works".into(),
        });
        assert_eq!(render(line), "/var/log/x:12  it works");
        let image = Payload::Image(pb::Image {
            path: "cat.png".into(),
            size_bytes: 1229,
            media_type: "image/png".into(),
            width: 640,
            height: 480,
        });
        assert_eq!(render(image), "cat.png  640x480  image/png  1.2 KiB");
    }

    #[test]
    fn network_cards() {
        let slugs = Payload::Slugs(pb::Slugs {
            strings: vec!["ab".into(), "cd".into()],
        });
        assert_eq!(render(slugs), "ab cd");
        let emoji = Payload::Emoji(pb::Emoji {
            name: "grinning face".into(),
            category: "smileys and people".into(),
            group: "face positive".into(),
            character: "😀".into(),
            ..Default::default()
        });
        assert_eq!(
            render(emoji),
            "😀  grinning face · smileys and people / face positive"
        );
        let activity = Payload::Activity(pb::Activity {
            activity: "Learn Express.js".into(),
            r#type: "education".into(),
            participants: 1,
            price: 0.1,
            link: "https://expressjs.com/".into(),
            ..Default::default()
        });
        assert_eq!(
            render(activity),
            "Learn Express.js · education · 1 participant · price 0.10 · https://expressjs.com/"
        );
        let level = |price: &str, volume: &str| pb::BookLevel {
            price: price.into(),
            volume: volume.into(),
        };
        let book = Payload::Book(pb::Book {
            pair: "XBT/USD".into(),
            asks: vec![level("5541.3", "2.5")],
            bids: vec![level("5541.2", "1.0"), level("5540.0", "3.0")],
            checksum: 0,
        });
        assert_eq!(
            render(book),
            "XBT/USD  bid 5541.2 (1.0) | ask 5541.3 (2.5) · 2×1 levels"
        );
        let spread = Payload::Spread(pb::Spread {
            pair: "XBT/USD".into(),
            bid: "1".into(),
            ask: "2".into(),
            bid_volume: "3".into(),
            ask_volume: "4".into(),
            timestamp: String::new(),
        });
        assert_eq!(render(spread), "XBT/USD  bid 1 (3)  ask 2 (4)");
    }

    #[test]
    fn leaderboard_is_a_compact_table() {
        let entry = |rank, username: &str, score, change| pb::LeaderboardEntry {
            rank,
            username: username.into(),
            score,
            change,
            joined: None,
        };
        let board = pb::Leaderboard {
            entries: vec![entry(1, "admin", 150, 12), entry(2, "jim_the_og", 9, -3)],
        };
        let lines = payload_lines(Some(&Payload::Leaderboard(board)), &Palette::new(false));
        assert_eq!(
            lines,
            [
                "2 players · leader admin 150",
                "  1  admin       150  +12",
                "  2  jim_the_og    9  -3",
            ]
        );
    }

    #[test]
    fn system_snapshot() {
        let service = |state: ServiceState| pb::ServiceInfo {
            state: state as i32,
            ..Default::default()
        };
        let system = Payload::System(pb::SystemSnapshot {
            services: vec![
                service(ServiceState::Running),
                pb::ServiceInfo {
                    health: pb::Health::Failing as i32,
                    ..service(ServiceState::Running)
                },
                service(ServiceState::Failed),
                service(ServiceState::Stopped),
            ],
            subscribers: 1,
            rss_bytes: 12_897_485,
            cpu_percent: 0.42,
            uptime: Some(prost_types::Duration {
                seconds: 3720,
                nanos: 5,
            }),
            worker_threads: 4,
            tasks: 10,
            topics: 12,
            ..Default::default()
        });
        let line = "4 services (1 running, 1 failing, 1 failed) · 1 subscriber · 12 topics · \
                    RSS 12.3 MiB · CPU 0.4% · up 1h02m";
        assert_eq!(render(system.clone()), line);
        let Payload::System(mut on_node) = system else {
            unreachable!()
        };
        on_node.node_id = "b".into();
        on_node.cluster_link = "disconnected".into();
        assert_eq!(
            render(Payload::System(on_node)),
            format!("{line} · node b (disconnected)")
        );
    }

    #[test]
    fn points_plot_between_labelled_axes_with_a_legend() {
        let points = Payload::Points(pb::Points {
            series: vec![
                pb::Series {
                    points: vec![pb::Point { x: 0.0, y: 0.0 }, pb::Point { x: 3.0, y: 6.0 }],
                },
                pb::Series {
                    points: vec![pb::Point { x: 9.0, y: 9.0 }],
                },
            ],
        });
        let lines = payload_lines(Some(&points), &PLAIN);
        let blank = "\u{2800}";
        let row = |first: &str, last: &str| format!("{first}{}{last}", blank.repeat(PLOT_COLS - 2));
        assert_eq!(
            lines,
            [
                "2 series, 3 points".to_string(),
                format!("6 ┤{}", row(blank, "\u{2808}")),
                format!("  │{}", row(blank, blank)),
                format!("  │{}", row(blank, blank)),
                format!("0 ┤{}", row("\u{2840}", blank)),
                format!("  └{}", "─".repeat(PLOT_COLS)),
                format!("   0{:>29}", "3"),
                "series ■1 ■2".to_string(),
            ]
        );
    }

    #[test]
    fn the_legend_shows_each_series_in_its_colour() {
        let points = Payload::Points(pb::Points {
            series: vec![pb::Series::default(); 7],
        });
        let lines = payload_lines(Some(&points), &Palette::new(true));
        let legend = lines.last().unwrap();
        assert!(
            legend.starts_with("series \u{1b}[36m■\u{1b}[0m1 \u{1b}[35m■"),
            "{legend:?}"
        );
        // The seventh series takes the first colour again.
        assert!(legend.ends_with(" \u{1b}[36m■\u{1b}[0m7"), "{legend:?}");
        let empty = payload_lines(Some(&Payload::Points(pb::Points::default())), &PLAIN);
        assert!(!empty.last().unwrap().starts_with("series"));
    }

    #[test]
    fn lines_wider_than_the_terminal_are_cut() {
        let text = Payload::Text(pb::Text {
            title: "word ".repeat(40),
            ..Default::default()
        });
        let mut printer = EventPrinter::new(PLAIN, Some(40));
        let cut = printer.format_at("12:00:00.000", &event("reader", text.clone()));
        assert_eq!(cut.chars().count(), 40);
        assert!(cut.ends_with('…'), "{cut}");
        let points = Payload::Points(pb::Points {
            series: vec![pb::Series::default(); 20],
        });
        let plot = printer.format_at("12:00:00.000", &event("streamer", points));
        assert!(
            plot.lines().all(|line| line.chars().count() <= 40),
            "{plot}"
        );
        // Down a pipe, nothing is cut.
        let mut uncut = EventPrinter::new(PLAIN, None);
        let whole = uncut.format_at("12:00:00.000", &event("reader", text));
        assert!(
            whole.chars().count() > 40 && !whole.contains('…'),
            "{whole}"
        );
    }

    #[test]
    fn full_lines_pad_the_topic_and_indent_the_plot() {
        let mut printer = EventPrinter::new(PLAIN, None);
        let text = printer.format_at(
            "12:00:00.000",
            &event(
                "x",
                Payload::Lagged(pb::Lagged {
                    missed: 1,
                    ..Default::default()
                }),
            ),
        );
        assert_eq!(text, "12:00:00.000 x         lagged: missed 1 event");

        let points = Payload::Points(pb::Points {
            series: vec![pb::Series {
                points: vec![pb::Point { x: 0.0, y: 0.0 }],
            }],
        });
        let text = printer.format_at("12:00:00.000", &event("streamer", points));
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "12:00:00.000 streamer  1 series, 1 point");
        let indent = " ".repeat("12:00:00.000 streamer  ".len());
        assert!(lines[1..].iter().all(|l| l.starts_with(&indent)));
        assert_eq!(
            lines.len(),
            1 + PLOT_ROWS + 3,
            "the plot, its x axis, its labels and legend"
        );
    }

    #[test]
    fn topic_column_widens() {
        let mut printer = EventPrinter::new(PLAIN, None);
        let lagged = || {
            Payload::Lagged(pb::Lagged {
                missed: 2,
                ..Default::default()
            })
        };
        printer.format_at("t", &event("a-rather-long-topic", lagged()));
        let text = printer.format_at("t", &event("b", lagged()));
        assert_eq!(text, format!("t {:<19}  lagged: missed 2 events", "b"));
    }

    #[test]
    fn missing_payload() {
        assert_eq!(
            payload_lines(None, &PLAIN),
            vec!["(no payload)".to_string()]
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let colour = Palette::new(true);
        let started = payload_lines(Some(&lifecycle(Kind::Started, "")), &colour);
        assert_eq!(started[0], "\u{1b}[32mstarted\u{1b}[0m");
        let plain = payload_lines(Some(&lifecycle(Kind::Started, "")), &PLAIN);
        assert!(!plain[0].contains('\u{1b}'));
    }
}

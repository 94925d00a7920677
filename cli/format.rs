//! Short human forms of durations, ages, byte sizes and clock times, and the
//! conversions from the protobuf well-known types they start from.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local, TimeZone};

/// A compact duration: `0s`, `250µs`, `500ms`, `2s`, `1.2s`, `1m30s`, `1h02m`, `2d03h`.
/// Shows at most two units, dropping a trailing zero one (`5m`, `1h`).
pub fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_millis(1) {
        return format!("{}µs", d.as_micros());
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(60) {
        // Tenths of a second, rounded; 59.96s becomes a minute below.
        let tenths = (d.as_millis() + 50) / 100;
        if tenths < 600 {
            let (whole, tenth) = (tenths / 10, tenths % 10);
            return if tenth == 0 {
                format!("{whole}s")
            } else {
                format!("{whole}.{tenth}s")
            };
        }
    }
    let secs = d.as_secs_f64().round() as u64;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours) {
        (0, 0) if seconds == 0 => format!("{minutes}m"),
        (0, 0) => format!("{minutes}m{seconds:02}s"),
        (0, _) if minutes == 0 => format!("{hours}h"),
        (0, _) => format!("{hours}h{minutes:02}m"),
        _ if hours == 0 => format!("{days}d"),
        _ => format!("{days}d{hours:02}h"),
    }
}

/// How long ago `then` was, in whole seconds: `3s ago`, `2m05s ago`. A time in the
/// future (clocks a little apart) counts as now.
pub fn age(then: SystemTime, now: SystemTime) -> String {
    let elapsed = now.duration_since(then).unwrap_or_default();
    format!("{} ago", duration(Duration::from_secs(elapsed.as_secs())))
}

/// A byte count in binary units: `512 B`, `1.2 KiB`, `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit before the rounded figure would read 1024.0.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1 line`, `2 lines`: the count and the noun, made plural unless the count is one.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Cuts `text` to at most `width` columns, marking a cut with `…`, and puts any
/// line breaks on one line so that a table row stays one row.
pub fn truncate(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&flat, width)
}

/// Cuts one line to at most `width` terminal columns, ending a cut with `…`. Colour
/// escapes take no columns and are kept; a cut line ends with a reset, so that its
/// colour does not run on.
pub fn cut(line: &str, width: usize) -> String {
    let pieces = pieces(line);
    if pieces.iter().map(|(_, columns)| columns).sum::<usize>() <= width {
        return line.to_owned();
    }
    let Some(room) = width.checked_sub(1) else {
        return String::new();
    };
    let (mut out, mut used, mut coloured) = (String::new(), 0, false);
    for (piece, columns) in pieces {
        if columns == 0 {
            coloured |= piece.starts_with('\u{1b}');
        } else if used + columns > room {
            break;
        }
        used += columns;
        out.push_str(piece);
    }
    out.push('…');
    if coloured {
        out.push_str("\u{1b}[0m");
    }
    out
}

/// A line as its characters and colour escapes, each with the columns it takes.
fn pieces(line: &str) -> Vec<(&str, usize)> {
    let mut pieces = Vec::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        let len = if c == '\u{1b}' {
            // CSI: ESC [, parameters, then one final byte from @ to ~.
            rest.char_indices()
                .skip(2)
                .find(|(_, c)| ('@'..='~').contains(c))
                .map_or(rest.len(), |(i, _)| i + 1)
        } else {
            c.len_utf8()
        };
        let columns = match c {
            '\u{1b}' => 0,
            c => unicode_width::UnicodeWidthChar::width(c).unwrap_or(0),
        };
        pieces.push((&rest[..len], columns));
        rest = &rest[len..];
    }
    pieces
}

/// A wall-clock time of day with milliseconds, `HH:MM:SS.mmm`, in the given zone.
pub fn clock<Tz: TimeZone>(time: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.format("%H:%M:%S%.3f").to_string()
}

/// A protobuf timestamp as local time of day; `--:--:--.---` when it is missing or
/// out of range.
pub fn local_clock(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|ts| DateTime::from_timestamp(ts.seconds, ts.nanos.try_into().ok()?))
        .map(|utc| clock(&utc.with_timezone(&Local)))
        .unwrap_or_else(|| "--:--:--.---".into())
}

/// A protobuf duration as a std one; negative or missing durations give `None`.
pub fn std_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

/// A protobuf timestamp as a `SystemTime`; `None` when missing or out of range.
pub fn system_time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|ts| SystemTime::try_from(*ts).ok())
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, Utc};

    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_micros(250)), "250µs");
        assert_eq!(duration(ms(500)), "500ms");
        assert_eq!(duration(s(2)), "2s");
        assert_eq!(duration(ms(1200)), "1.2s");
        assert_eq!(duration(ms(1249)), "1.2s");
        assert_eq!(duration(ms(59_960)), "1m");
        assert_eq!(duration(s(90)), "1m30s");
        assert_eq!(duration(s(300)), "5m");
        assert_eq!(duration(s(3720)), "1h02m");
        assert_eq!(duration(s(3600)), "1h");
        assert_eq!(duration(s(86_400 * 2 + 3 * 3600 + 59)), "2d03h");
        assert_eq!(duration(s(86_400)), "1d");
    }

    #[test]
    fn ages() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(age(now - Duration::from_millis(3400), now), "3s ago");
        assert_eq!(age(now - Duration::from_secs(125), now), "2m05s ago");
        assert_eq!(age(now - Duration::from_millis(300), now), "0s ago");
        assert_eq!(age(now + Duration::from_secs(2), now), "0s ago");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1229), "1.2 KiB");
        assert_eq!(bytes(12_897_485), "12.3 MiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "line", "lines"), "1 line");
        assert_eq!(count(0, "line", "lines"), "0 lines");
        assert_eq!(count(2, "series", "series"), "2 series");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("this is too long", 10), "this is t…");
        assert_eq!(truncate("two\nlines", 20), "two lines");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("x", 0), "");
    }

    #[test]
    fn cuts_count_columns_not_bytes_or_escapes() {
        let red = "\u{1b}[31mred\u{1b}[0m and plain";
        assert_eq!(cut(red, 100), red);
        assert_eq!(cut(red, 5), "\u{1b}[31mred\u{1b}[0m …\u{1b}[0m");
        assert_eq!(cut("\u{1b}[31mabcdef", 3), "\u{1b}[31mab…\u{1b}[0m");
        // Wide characters take two columns each.
        assert_eq!(cut("日本語です", 5), "日本…");
        assert_eq!(cut("⣿⣿⣿⣿", 3), "⣿⣿…");
        assert_eq!(cut("abc", 0), "");
    }

    #[test]
    fn clock_times() {
        let utc = DateTime::<Utc>::from_timestamp(3723, 45_000_000).unwrap();
        assert_eq!(clock(&utc), "01:02:03.045");
        let east = utc.with_timezone(&FixedOffset::east_opt(3600).unwrap());
        assert_eq!(clock(&east), "02:02:03.045");
        assert_eq!(local_clock(None), "--:--:--.---");
    }

    #[test]
    fn well_known_types() {
        let d = prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(std_duration(Some(&d)), Some(Duration::from_millis(1500)));
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(std_duration(Some(&negative)), None);
        let ts = prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        };
        assert_eq!(
            system_time(Some(&ts)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
    }
}

//! The tables streamctl prints: `list`'s, one aligned row per service with the last
//! error cut to fit the width, and `nodes`'s.

use std::time::SystemTime;

use owo_colors::Style;
use streamhandler::pb::{
    Health, ListNodesResponse, ServiceInfo, ServiceState, Setting, SettingSource,
};

use crate::{
    format,
    term::{Palette, styles},
};

/// Column headings, in order.
const HEADINGS: [&str; 9] = [
    "NAME",
    "KIND",
    "STATE",
    "INTERVAL",
    "EVENTS",
    "ERRORS",
    "RESTARTS",
    "LAST EVENT",
    "LAST ERROR",
];
/// The counters, right-aligned so that digits line up.
const NUMERIC: [usize; 3] = [4, 5, 6];
/// The state column, the only coloured one.
const STATE: usize = 2;
/// Where the NODE column goes in a cluster: before the last error.
const NODE: usize = 8;
/// Spaces between columns.
const GAP: &str = "  ";
/// The last error keeps at least this many characters however narrow the terminal.
const MIN_ERROR_WIDTH: usize = 20;

/// The table's lines, heading first, fitted to `width` characters where possible.
/// One service in full, as `streamctl show` prints it: a `key: value` line per field,
/// then its parameters and what it reports of itself, one per line.
pub fn service(service: &ServiceInfo, now: SystemTime, palette: &Palette) -> Vec<String> {
    // The health has a line of its own.
    let (state, style) = run_state(service.state());
    let mut state = palette.paint(state, style);
    if let Some(since) = format::system_time(service.started_at.as_ref()) {
        state.push_str(&format!(" since {}", format::age(since, now)));
    }
    let last_event = format::system_time(service.last_event_at.as_ref())
        .map_or_else(|| "-".to_string(), |t| format::age(t, now));
    let dash = |text: &str| {
        if text.is_empty() {
            "-".to_string()
        } else {
            text.to_string()
        }
    };
    let mut lines = vec![
        format!("name:        {}", service.name),
        format!("kind:        {} ({})", service.kind, service.description),
        format!("state:       {state}"),
        format!("health:      {}", health(service, now)),
        format!(
            "interval:    {} {}",
            format::std_duration(service.interval.as_ref())
                .map_or_else(|| "-".into(), format::duration),
            source(service.interval_source())
        ),
        format!(
            "events:      {} (last {last_event})",
            service.events_published
        ),
        format!("errors:      {}", service.errors),
        format!("restarts:    {}", service.restarts),
        format!("last error:  {}", dash(&service.last_error)),
    ];
    lines.extend(titled("settings:", settings(&service.settings)));
    let mut status: Vec<_> = service.status.iter().collect();
    status.sort();
    let status = status.into_iter().map(|(k, v)| format!("{k} = {v}"));
    lines.extend(titled("status:", status.collect()));
    lines
}

/// How the service's latest steps went, in words.
fn health(service: &ServiceInfo, now: SystemTime) -> String {
    match service.health() {
        Health::Unspecified => "-".into(),
        Health::Healthy => "healthy".into(),
        Health::Failing => {
            let mut words = format!("failing: {} step(s) in a row", service.consecutive_failures);
            if let Some(since) = format::system_time(service.failing_since.as_ref()) {
                words.push_str(&format!(", since {}", format::age(since, now)));
            }
            words
        }
    }
}

/// `rows` under a title in the first column, or `-` when there are none.
fn titled(title: &str, rows: Vec<String>) -> Vec<String> {
    if rows.is_empty() {
        return vec![format!("{title:<12} -")];
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| format!("{:<12} {row}", if i == 0 { title } else { "" }))
        .collect()
}

/// Where a value comes from, in show's words.
fn source(source: SettingSource) -> &'static str {
    match source {
        SettingSource::Default => "(default)",
        SettingSource::Config => "(config)",
        SettingSource::Override => "(override)",
        SettingSource::Unspecified => "",
    }
}

/// One aligned line per setting: its name, its value (`-` while unset), where the
/// value comes from, and what the setting does.
fn settings(settings: &[Setting]) -> Vec<String> {
    let cells: Vec<[&str; 4]> = settings
        .iter()
        .map(|s| {
            let value = if s.value.is_empty() { "-" } else { &s.value };
            [
                s.name.as_str(),
                value,
                source(s.source()),
                s.description.as_str(),
            ]
        })
        .collect();
    let width = |column: usize| {
        cells
            .iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<width$}{GAP}"));
            }
            line.push_str(row[3]);
            line.trim_end().to_string()
        })
        .collect()
}

/// In a cluster, a NODE column comes before the last error.
pub fn services(
    services: &[ServiceInfo],
    now: SystemTime,
    width: usize,
    palette: &Palette,
) -> Vec<String> {
    let clustered = services.iter().any(|s| !s.node.is_empty());
    let mut heading: Vec<String> = HEADINGS.map(String::from).into();
    if clustered {
        heading.insert(NODE, "NODE".into());
    }
    let rows: Vec<Vec<String>> = services.iter().map(|s| row(s, now, clustered)).collect();
    let fixed = heading.len() - 1;
    let widths: Vec<usize> = (0..fixed)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([heading[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let used: usize = widths.iter().sum::<usize>() + GAP.len() * fixed;
    let error_width = width.saturating_sub(used).max(MIN_ERROR_WIDTH);

    std::iter::once((&heading, None))
        .chain(rows.iter().zip(services).map(|(row, s)| (row, Some(s))))
        .map(|(cells, service)| {
            let mut line = String::new();
            for (column, cell) in cells[..fixed].iter().enumerate() {
                let pad = widths[column] - cell.chars().count();
                let padded = if NUMERIC.contains(&column) {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                };
                match service {
                    Some(service) if column == STATE => {
                        line.push_str(&palette.paint(&padded, state(service).1));
                    }
                    _ => line.push_str(&padded),
                }
                line.push_str(GAP);
            }
            line.push_str(&format::truncate(&cells[fixed], error_width));
            line.trim_end().to_string()
        })
        .collect()
}

/// The cells of one service's row, uncoloured.
fn row(service: &ServiceInfo, now: SystemTime, clustered: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let mut cells = vec![
        service.name.clone(),
        service.kind.clone(),
        state(service).0.to_string(),
        format::std_duration(service.interval.as_ref()).map_or_else(dash, format::duration),
        service.events_published.to_string(),
        service.errors.to_string(),
        service.restarts.to_string(),
        format::system_time(service.last_event_at.as_ref())
            .map_or_else(dash, |then| format::age(then, now)),
        if service.last_error.is_empty() {
            dash()
        } else {
            service.last_error.clone()
        },
    ];
    if clustered {
        let node = if service.node.is_empty() {
            dash()
        } else {
            service.node.clone()
        };
        cells.insert(NODE, node);
    }
    cells
}

/// The state's word and colour. A running service whose latest steps fail reads
/// `failing`: it must not look well.
pub fn state(service: &ServiceInfo) -> (&'static str, Style) {
    match service.state() {
        ServiceState::Running if service.health() == Health::Failing => ("failing", styles::warn()),
        state => run_state(state),
    }
}

/// Where the service is in its life, whatever its health.
fn run_state(state: ServiceState) -> (&'static str, Style) {
    match state {
        ServiceState::Stopped => ("stopped", Style::new()),
        ServiceState::Running => ("running", styles::good()),
        ServiceState::BackingOff => ("backing-off", styles::warn()),
        ServiceState::Failed => ("failed", styles::bad()),
        ServiceState::Unspecified => ("unknown", styles::dim()),
    }
}

/// The cluster's members as `streamctl nodes` prints them: one aligned row per node,
/// the node that answered marked `*`.
pub fn nodes(answered: &ListNodesResponse, now: SystemTime) -> Vec<String> {
    const NODE_HEADINGS: [&str; 5] = ["NODE", "ADDRESS", "SERVICES", "UP", "SEEN"];
    let since = |ts: Option<&prost_types::Timestamp>| {
        format::system_time(ts).map_or_else(|| "-".to_owned(), |then| format::age(then, now))
    };
    let rows: Vec<[String; 5]> = answered
        .nodes
        .iter()
        .map(|node| {
            let marker = if node.id == answered.node_id {
                " *"
            } else {
                ""
            };
            [
                format!("{}{marker}", node.id),
                node.address.clone(),
                node.services.to_string(),
                since(node.started_at.as_ref()).replace(" ago", ""),
                since(node.seen_at.as_ref()),
            ]
        })
        .collect();
    let heading = NODE_HEADINGS.map(String::from);
    let widths: Vec<usize> = (0..NODE_HEADINGS.len())
        .map(|column| {
            std::iter::once(&heading)
                .chain(&rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&heading)
        .chain(&rows)
        .map(|row| {
            let cells = row
                .iter()
                .zip(&widths)
                .map(|(cell, &width)| format!("{cell:width$}"));
            cells.collect::<Vec<_>>().join(GAP).trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PLAIN: Palette = Palette::new(false);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn streamer() -> ServiceInfo {
        ServiceInfo {
            name: "streamer".into(),
            kind: "streamer".into(),
            state: ServiceState::Running as i32,
            interval: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            events_published: 1234,
            last_event_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 - 3,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn slugs() -> ServiceInfo {
        ServiceInfo {
            name: "slugs".into(),
            kind: "slugs".into(),
            state: ServiceState::Stopped as i32,
            last_error: "a very long error message that goes on and on\nover two lines".into(),
            ..Default::default()
        }
    }

    #[test]
    fn in_a_cluster_each_service_names_its_node() {
        let on_b = ServiceInfo {
            node: "b".into(),
            ..streamer()
        };
        let lines = services(&[on_b, slugs()], now(), 200, &PLAIN);
        assert!(
            lines[0].ends_with("LAST EVENT  NODE  LAST ERROR"),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("3s ago      b     -"), "{}", lines[1]);
        assert!(
            lines[2].contains("-           -     a very long"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn rows_align_and_show_each_field() {
        let lines = services(&[streamer(), slugs()], now(), 200, &PLAIN);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "NAME      KIND      STATE    INTERVAL  EVENTS  ERRORS  RESTARTS  LAST EVENT  LAST ERROR"
        );
        assert_eq!(
            lines[1],
            "streamer  streamer  running  2s          1234       0         0  3s ago      -"
        );
        assert_eq!(
            lines[2],
            "slugs     slugs     stopped  -              0       0         0  -           \
             a very long error message that goes on and on over two lines"
        );
    }

    #[test]
    fn last_error_is_cut_to_fit() {
        let lines = services(&[slugs()], now(), 100, &PLAIN);
        assert_eq!(lines[1].chars().count(), 100);
        assert!(lines[1].ends_with('…'));
        // Never narrower than the minimum, even in a tiny terminal.
        let lines = services(&[slugs()], now(), 10, &PLAIN);
        assert!(lines[1].ends_with("a very long error m…"));
    }

    #[test]
    fn states() {
        let mut service = streamer();
        for (state, word) in [
            (ServiceState::Stopped, "stopped"),
            (ServiceState::Running, "running"),
            (ServiceState::BackingOff, "backing-off"),
            (ServiceState::Failed, "failed"),
        ] {
            service.state = state as i32;
            assert_eq!(super::state(&service).0, word);
        }
        service.state = ServiceState::Running as i32;
        for (health, word) in [
            (Health::Unspecified, "running"),
            (Health::Healthy, "running"),
            (Health::Failing, "failing"),
        ] {
            service.health = health as i32;
            assert_eq!(super::state(&service).0, word);
        }
    }

    #[test]
    fn colour_does_not_break_alignment() {
        let colour = Palette::new(true);
        let mut failed = slugs();
        failed.state = ServiceState::Failed as i32;
        let lines = services(&[streamer(), failed], now(), 200, &colour);
        // The padding sits inside the colour, and the next column starts where the
        // plain table would put it.
        assert!(
            lines[1].contains("  \u{1b}[32mrunning\u{1b}[0m  2s"),
            "{:?}",
            lines[1]
        );
        assert!(
            lines[2].contains("  \u{1b}[31mfailed \u{1b}[0m  -"),
            "{:?}",
            lines[2]
        );
    }

    #[test]
    fn settings_align_with_their_source() {
        let setting = |name: &str, value: &str, source: SettingSource, help: &str| Setting {
            name: name.into(),
            value: value.into(),
            source: source as i32,
            description: help.into(),
        };
        let mut service = streamer();
        service.settings = vec![
            setting("series", "4", SettingSource::Override, "series per event"),
            setting("max_points", "12", SettingSource::Default, "most points"),
            setting("dir", "", SettingSource::Default, ""),
            setting(
                "header.X-Key",
                "<redacted>",
                SettingSource::Config,
                "a header",
            ),
        ];
        let lines = super::service(&service, now(), &PLAIN);
        let shown: Vec<_> = lines
            .iter()
            .skip_while(|l| !l.starts_with("settings:"))
            .collect();
        assert_eq!(
            shown[..4],
            [
                "settings:    series        4           (override)  series per event",
                "             max_points    12          (default)   most points",
                "             dir           -           (default)",
                "             header.X-Key  <redacted>  (config)    a header",
            ]
        );
        assert_eq!(shown[4], "status:      -");
    }

    #[test]
    fn empty_list_has_only_the_heading() {
        assert_eq!(services(&[], now(), 80, &PLAIN).len(), 1);
    }
}

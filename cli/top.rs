//! `streamctl top`: a full-screen live view of the daemon, one row per service, in the
//! spirit of `vector top`. It asks the daemon for ListServices every second, works out
//! each service's events per second from the counters, and keeps trying while the
//! daemon is away. The terminal is restored however it ends: `q`, Ctrl-C or a panic.

use std::{
    collections::HashMap,
    io::IsTerminal,
    time::{Duration, Instant, SystemTime},
};

use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table, TableState},
};
use streamhandler::pb::{
    DaemonStats, ListServicesRequest, ServiceInfo, ServiceState, StartServiceRequest,
    StopServiceRequest,
};
use tokio::sync::mpsc;

use crate::{
    client::Addr,
    client::{self, Client},
    error::Error,
    format, table,
};

/// How often the view asks the daemon again.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one request may take before the daemon counts as away.
const PATIENCE: Duration = Duration::from_secs(3);

/// The columns, in order; a digit key sorts by the column of that number.
const COLUMNS: [&str; 8] = [
    "NAME",
    "STATE",
    "INTERVAL",
    "EVENTS/S",
    "ERRORS",
    "RESTARTS",
    "LAST EVENT",
    "LAST ERROR",
];

/// `streamctl top`.
pub async fn run(addr: &Addr) -> Result<(), Error> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Other(
            "top needs a terminal; for a script, use `streamctl list` or `streamctl \
             subscribe --output json`"
                .into(),
        ));
    }
    // Restores the terminal on a panic too.
    let mut terminal = ratatui::init();
    let keys = read_keys();
    let outcome = View::new(addr).run(&mut terminal, keys).await;
    ratatui::restore();
    outcome
}

/// Key presses, read on a thread of their own: crossterm's reads block.
fn read_keys() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (keys, received) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            match event::read() {
                Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                    if keys.send(key).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    received
}

/// What the view shows and remembers between refreshes.
struct View {
    addr: Addr,
    client: Option<Client>,
    services: Vec<ServiceInfo>,
    daemon: Option<DaemonStats>,
    /// Each service's event count at the previous refresh, and when.
    counted: HashMap<String, (u64, Instant)>,
    rates: HashMap<String, f64>,
    /// The daemon's CPU time at the previous refresh, and when.
    cpu_counted: Option<(Duration, Instant)>,
    cpu_percent: Option<f64>,
    selected: TableState,
    /// The column rows are sorted by, and whether in reverse.
    sort: (usize, bool),
    filter: String,
    typing_filter: bool,
    /// The outcome of the last action, or why the daemon cannot be reached.
    status: String,
    connected: bool,
}

impl View {
    fn new(addr: &Addr) -> Self {
        Self {
            addr: addr.clone(),
            client: None,
            services: Vec::new(),
            daemon: None,
            counted: HashMap::new(),
            rates: HashMap::new(),
            cpu_counted: None,
            cpu_percent: None,
            selected: TableState::default().with_selected(Some(0)),
            sort: (0, false),
            filter: String::new(),
            typing_filter: false,
            status: String::new(),
            connected: false,
        }
    }

    async fn run(
        mut self,
        terminal: &mut DefaultTerminal,
        mut keys: mpsc::UnboundedReceiver<KeyEvent>,
    ) -> Result<(), Error> {
        let mut ticks = tokio::time::interval(REFRESH);
        loop {
            terminal
                .draw(|frame| self.draw(frame))
                .map_err(|e| Error::Other(format!("cannot draw: {e}")))?;
            tokio::select! {
                _ = ticks.tick() => self.refresh().await,
                key = keys.recv() => match key {
                    None => return Ok(()),
                    Some(key) => {
                        if self.on_key(key).await {
                            return Ok(());
                        }
                    }
                },
            }
        }
    }

    /// Asks the daemon for its services again, connecting first if need be.
    async fn refresh(&mut self) {
        let client = match self.client.as_mut() {
            Some(client) => client,
            None => match tokio::time::timeout(PATIENCE, client::connect(&self.addr)).await {
                Ok(Ok(client)) => self.client.insert(client),
                Ok(Err(e)) => return self.lost(e.to_string()),
                Err(_) => return self.lost(format!("no answer within {PATIENCE:?}")),
            },
        };
        let listed =
            tokio::time::timeout(PATIENCE, client.list_services(ListServicesRequest {})).await;
        let listed = match listed {
            Ok(Ok(listed)) => listed.into_inner(),
            Ok(Err(status)) => {
                return self.lost(Error::from_status(status, &self.addr).to_string());
            }
            Err(_) => return self.lost(format!("no answer within {PATIENCE:?}")),
        };
        if !self.connected {
            self.status.clear();
        }
        self.connected = true;
        let now = Instant::now();
        for service in &listed.services {
            let count = service.events_published;
            let before = self.counted.insert(service.name.clone(), (count, now));
            let rate = before
                .filter(|(earlier, _)| *earlier <= count)
                .map(|(earlier, at)| {
                    (count - earlier) as f64 / now.duration_since(at).as_secs_f64().max(1e-3)
                });
            self.rates.insert(service.name.clone(), rate.unwrap_or(0.0));
        }
        if let Some(cpu) = listed
            .daemon
            .as_ref()
            .and_then(|d| format::std_duration(d.cpu_time.as_ref()))
        {
            self.cpu_percent = self
                .cpu_counted
                .replace((cpu, now))
                .and_then(|(before, at)| {
                    let wall = now.duration_since(at).as_secs_f64();
                    (wall > 0.0).then(|| 100.0 * cpu.saturating_sub(before).as_secs_f64() / wall)
                });
        }
        self.services = listed.services;
        self.daemon = listed.daemon;
    }

    /// The daemon went away: keep what was shown, say so, and connect afresh next time.
    fn lost(&mut self, why: String) {
        self.client = None;
        self.connected = false;
        self.cpu_counted = None;
        self.status = format!("reconnecting to {}: {why}", self.addr.uri);
    }

    /// Handles a key; true when the view should end.
    async fn on_key(&mut self, key: KeyEvent) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return true;
        }
        if self.typing_filter {
            match key.code {
                KeyCode::Enter => self.typing_filter = false,
                KeyCode::Esc => {
                    self.typing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected.select(Some(0));
            return false;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            KeyCode::Down | KeyCode::Char('j') => self.selected.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.selected.select_previous(),
            KeyCode::Char('/') => self.typing_filter = true,
            KeyCode::Char('s') => self.act(true).await,
            KeyCode::Char('x') => self.act(false).await,
            KeyCode::Char(digit @ '1'..='8') => {
                let column = digit as usize - '1' as usize;
                self.sort = (column, self.sort.0 == column && !self.sort.1);
            }
            _ => {}
        }
        false
    }

    /// Starts (or stops) the selected service, and says how it went.
    async fn act(&mut self, start: bool) {
        let Some(name) = self
            .shown()
            .get(self.selected_row())
            .map(|s| s.name.clone())
        else {
            return;
        };
        let Some(client) = self.client.as_mut() else {
            self.status = format!("cannot reach {}: {name} left as it is", self.addr.uri);
            return;
        };
        let outcome = if start {
            let request = StartServiceRequest {
                name: name.clone(),
                ..Default::default()
            };
            let started = client.start_service(request).await;
            started.map(|r| match r.into_inner().already_running {
                true => format!("{name} was already running"),
                false => format!("{name} started"),
            })
        } else {
            let request = StopServiceRequest { name: name.clone() };
            let stopped = client.stop_service(request).await;
            stopped.map(|r| match r.into_inner().was_running {
                true => format!("{name} stopped"),
                false => format!("{name} was not running"),
            })
        };
        self.status = match outcome {
            Ok(said) => said,
            Err(status) => Error::from_status(status, &self.addr).to_string(),
        };
        self.refresh().await;
    }

    fn selected_row(&self) -> usize {
        self.selected.selected().unwrap_or(0)
    }

    /// The services that pass the filter, sorted.
    fn shown(&self) -> Vec<&ServiceInfo> {
        let mut shown: Vec<&ServiceInfo> = self
            .services
            .iter()
            .filter(|s| s.name.contains(&self.filter))
            .collect();
        let rate = |s: &ServiceInfo| self.rates.get(&s.name).copied().unwrap_or(0.0);
        let last_event = |s: &ServiceInfo| format::system_time(s.last_event_at.as_ref());
        shown.sort_by(|a, b| {
            let order = match self.sort.0 {
                1 => table::state(a).0.cmp(table::state(b).0),
                2 => a
                    .interval
                    .map(|d| (d.seconds, d.nanos))
                    .cmp(&b.interval.map(|d| (d.seconds, d.nanos))),
                3 => rate(b).total_cmp(&rate(a)),
                4 => b.errors.cmp(&a.errors),
                5 => b.restarts.cmp(&a.restarts),
                6 => last_event(b).cmp(&last_event(a)),
                7 => a.last_error.cmp(&b.last_error),
                _ => std::cmp::Ordering::Equal,
            };
            let order = order.then_with(|| a.name.cmp(&b.name));
            if self.sort.1 { order.reverse() } else { order }
        });
        shown
    }

    fn draw(&mut self, frame: &mut Frame) {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(self.header()), header);
        let now = SystemTime::now();
        let rows: Vec<Row> = self
            .shown()
            .into_iter()
            .map(|service| self.row(service, now))
            .collect();
        let count = rows.len();
        let headings = COLUMNS.iter().enumerate().map(|(i, name)| {
            // The column sorted by, and whether the other way round.
            let mark = match self.sort {
                (column, false) if column == i => "*",
                (column, true) if column == i => "*r",
                _ => "",
            };
            Cell::from(format!("{}{name}{mark}", i + 1))
        });
        let widths = [
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Fill(1),
        ];
        let table = Table::new(rows, widths)
            .header(Row::new(headings).style(Style::new().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        if self.selected_row() >= count {
            self.selected.select(count.checked_sub(1));
        }
        frame.render_stateful_widget(table, body, &mut self.selected);
        frame.render_widget(Paragraph::new(self.footer()), footer);
    }

    fn header(&self) -> Vec<Line<'static>> {
        let mut title = format!("streamd at {}", self.addr.uri);
        if !self.connected {
            title.push_str("  (not connected)");
        }
        let figures = match &self.daemon {
            None => String::from("-"),
            Some(daemon) => {
                let uptime = format::std_duration(daemon.uptime.as_ref()).map_or_else(
                    || "-".into(),
                    |d| format::duration(Duration::from_secs(d.as_secs())),
                );
                let cpu = self
                    .cpu_percent
                    .map_or_else(|| "-".into(), |p| format!("{p:.1}%"));
                format!(
                    "up {uptime} · RSS {} · CPU {cpu} · {} · {}",
                    format::bytes(daemon.rss_bytes),
                    format::count(u64::from(daemon.subscribers), "subscriber", "subscribers"),
                    format::count(daemon.topics, "topic", "topics"),
                )
            }
        };
        vec![
            Line::styled(title, Style::new().add_modifier(Modifier::BOLD)),
            Line::from(figures),
        ]
    }

    fn footer(&self) -> Line<'static> {
        if self.typing_filter {
            return Line::from(format!(
                "filter: {}▏ (Enter keeps it, Esc clears it)",
                self.filter
            ));
        }
        let keys = "↑↓ select · s start · x stop · / filter · 1-8 sort · q quit";
        let mut line = String::from(keys);
        if !self.filter.is_empty() {
            line.push_str(&format!(" · filter {:?}", self.filter));
        }
        if !self.status.is_empty() {
            line = format!("{} · {keys}", self.status);
        }
        Line::from(line)
    }

    fn row(&self, service: &ServiceInfo, now: SystemTime) -> Row<'static> {
        let dash = || "-".to_string();
        let (state, _) = table::state(service);
        let colour = match service.state() {
            ServiceState::Running if state == "failing" => Color::Yellow,
            ServiceState::Running => Color::Green,
            ServiceState::BackingOff => Color::Yellow,
            ServiceState::Failed => Color::Red,
            _ => Color::Reset,
        };
        let rate = self.rates.get(&service.name).copied().unwrap_or(0.0);
        Row::new([
            Cell::from(service.name.clone()),
            Cell::from(state).style(Style::new().fg(colour)),
            Cell::from(
                format::std_duration(service.interval.as_ref()).map_or_else(dash, format::duration),
            ),
            Cell::from(format!("{rate:.1}")),
            Cell::from(service.errors.to_string()),
            Cell::from(service.restarts.to_string()),
            Cell::from(
                format::system_time(service.last_event_at.as_ref())
                    .map_or_else(dash, |then| format::age(then, now)),
            ),
            Cell::from(service.last_error.lines().next().unwrap_or("-").to_owned()),
        ])
    }
}

//! The terminal: whether to colour, how wide a table may be, and writing lines to
//! stdout and stderr without panicking when either has gone away.

use std::io::{self, IsTerminal, Write};

use owo_colors::{OwoColorize, Style};

use crate::error::Error;

/// The width assumed when stdout is not a terminal or `COLUMNS` is not exported.
const DEFAULT_WIDTH: usize = 120;

/// Colours on stdout only when it is a terminal and `NO_COLOR` is unset or empty.
pub fn colour_stdout() -> bool {
    colour_allowed(
        std::env::var_os("NO_COLOR").as_deref(),
        io::stdout().is_terminal(),
    )
}

/// The rule behind [`colour_stdout`], apart from the environment for testing.
fn colour_allowed(no_colour: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_colour.is_none_or(|value| value.is_empty())
}

/// The width tables should fit in: `COLUMNS` when the shell exports it, else the
/// width of the terminal on stdout, else a common terminal width.
pub fn width() -> usize {
    columns().unwrap_or(DEFAULT_WIDTH)
}

/// The columns a line on stdout may take before it wraps; None when stdout is no
/// terminal, where nothing wraps.
pub fn line_width() -> Option<usize> {
    io::stdout().is_terminal().then(columns).flatten()
}

fn columns() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.trim().parse().ok())
        .or_else(terminal_width)
        .filter(|&columns: &usize| columns > 0)
}

/// The width of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(io::stdout()).map(|(width, _)| usize::from(width.0))
}

/// Applies styles when colour is on, and passes text through unchanged otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    colour: bool,
}

impl Palette {
    /// A palette that colours only if `colour` is true.
    pub const fn new(colour: bool) -> Self {
        Palette { colour }
    }

    /// `text` in `style`, or plain when colour is off.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if self.colour {
            text.style(style).to_string()
        } else {
            text.to_string()
        }
    }
}

/// Styles with a meaning, shared by every printed form.
pub mod styles {
    use owo_colors::Style;

    /// Timestamps and other secondary detail.
    pub fn dim() -> Style {
        Style::new().dimmed()
    }
    /// Topic and service names.
    pub fn topic() -> Style {
        Style::new().bold().cyan()
    }
    /// Errors and failures.
    pub fn bad() -> Style {
        Style::new().red()
    }
    /// Things that need attention but recover: lag, restarts.
    pub fn warn() -> Style {
        Style::new().yellow()
    }
    /// Things going well: a start, a running service.
    pub fn good() -> Style {
        Style::new().green()
    }
}

/// Writes one line (or several, joined by newlines) to stdout and flushes it, so
/// that a reader down a pipe sees each event as it comes.
pub fn emit(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(Error::from_stdout)
}

/// Writes `streamctl: message` to stderr; if stderr is gone there is nobody to tell.
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "streamctl: {message}");
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_colour() {
        assert!(colour_allowed(None, true));
        assert!(colour_allowed(Some(OsStr::new("")), true));
        assert!(!colour_allowed(Some(OsStr::new("1")), true));
        assert!(!colour_allowed(None, false));
    }

    #[test]
    fn plain_palette_passes_text_through() {
        let plain = Palette::new(false);
        assert_eq!(plain.paint("x", styles::bad()), "x");
        let colour = Palette::new(true);
        assert_eq!(colour.paint("x", styles::bad()), "\u{1b}[31mx\u{1b}[0m");
    }
}

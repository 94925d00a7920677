//! A tiny scatter plot drawn with Unicode braille characters (U+2800–U+28FF).
//!
//! Each character cell holds a 2×4 grid of dots, so a canvas of `cols × rows` cells
//! has `2·cols × 4·rows` dots. Points map linearly onto the dots with y pointing up:
//! the lower-left corner of the ranges lights the bottom-left dot, the upper-right
//! corner the top-right one. Points outside the ranges, or not finite, are skipped
//! rather than clamped, so the edges never show points that are not there.

use std::ops::RangeInclusive;

/// The blank braille cell; every cell is one, plus the bits of its lit dots.
const BRAILLE_BLANK: u32 = 0x2800;

/// The bit of each dot in a braille cell, indexed `[row][column]` from the top left.
const DOT_BITS: [[u8; 2]; 4] = [[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]];

/// One character cell: its lit dots and the series that last lit one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// Braille dot bits (see [`DOT_BITS`]).
    pub dots: u8,
    /// The series of the most recent point plotted in this cell, if any.
    pub series: Option<usize>,
}

impl Cell {
    /// The braille character showing this cell's dots (blank braille when none).
    pub fn glyph(self) -> char {
        char::from_u32(BRAILLE_BLANK + u32::from(self.dots)).unwrap_or(' ')
    }
}

/// A braille scatter plot of fixed size and ranges.
#[derive(Debug, Clone)]
pub struct Canvas {
    cols: usize,
    rows: usize,
    x: RangeInclusive<f64>,
    y: RangeInclusive<f64>,
    cells: Vec<Cell>,
}

impl Canvas {
    /// A blank canvas of `cols × rows` characters showing `x` across and `y` up.
    pub fn new(cols: usize, rows: usize, x: RangeInclusive<f64>, y: RangeInclusive<f64>) -> Self {
        Canvas {
            cols,
            rows,
            x,
            y,
            cells: vec![Cell::default(); cols * rows],
        }
    }

    /// Lights the dot nearest to `(x, y)` for `series`. Returns whether the point was
    /// drawn: points outside the ranges (or NaN) are skipped.
    pub fn plot(&mut self, x: f64, y: f64, series: usize) -> bool {
        let (width, height) = (self.cols * 2, self.rows * 4);
        let (Some(dx), Some(dy)) = (scale(x, &self.x, width), scale(y, &self.y, height)) else {
            return false;
        };
        // Dot rows count down from the top; y counts up from the bottom.
        let row = height - 1 - dy;
        let cell = &mut self.cells[(row / 4) * self.cols + dx / 2];
        cell.dots |= DOT_BITS[row % 4][dx % 2];
        cell.series = Some(series);
        true
    }

    /// The plot, one string per character row, top row first; `paint` turns each cell
    /// into text, so callers can colour cells by series.
    pub fn lines(&self, mut paint: impl FnMut(Cell) -> String) -> Vec<String> {
        self.cells
            .chunks(self.cols.max(1))
            .take(self.rows)
            .map(|row| row.iter().map(|&cell| paint(cell)).collect())
            .collect()
    }
}

/// The index among `dots` evenly spaced dots nearest to `value` within `range`, or
/// `None` when the value lies outside it.
fn scale(value: f64, range: &RangeInclusive<f64>, dots: usize) -> Option<usize> {
    let (lo, hi) = (*range.start(), *range.end());
    if dots == 0 || !value.is_finite() || value < lo || value > hi {
        return None;
    }
    if hi <= lo {
        return Some(0);
    }
    let index = ((value - lo) / (hi - lo) * (dots - 1) as f64).round() as usize;
    Some(index.min(dots - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plot as plain braille text.
    fn plain(canvas: &Canvas) -> Vec<String> {
        canvas.lines(|cell| cell.glyph().to_string())
    }

    fn canvas() -> Canvas {
        Canvas::new(30, 4, 0.0..=3.0, 0.0..=6.0)
    }

    #[test]
    fn blank_canvas_is_blank_braille() {
        let lines = plain(&canvas());
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|line| line == &"\u{2800}".repeat(30)));
    }

    #[test]
    fn origin_lights_the_bottom_left_dot() {
        let mut c = canvas();
        assert!(c.plot(0.0, 0.0, 0));
        let lines = plain(&c);
        assert_eq!(lines[3].chars().next(), Some('\u{2840}'));
        // Nothing else is lit.
        let lit = lines
            .concat()
            .chars()
            .filter(|&ch| ch != '\u{2800}')
            .count();
        assert_eq!(lit, 1);
    }

    #[test]
    fn far_corner_lights_the_top_right_dot() {
        let mut c = canvas();
        assert!(c.plot(3.0, 6.0, 0));
        assert_eq!(plain(&c)[0].chars().last(), Some('\u{2808}'));
    }

    #[test]
    fn other_corners() {
        let mut c = canvas();
        c.plot(0.0, 6.0, 0);
        c.plot(3.0, 0.0, 0);
        let lines = plain(&c);
        assert_eq!(lines[0].chars().next(), Some('\u{2801}'));
        assert_eq!(lines[3].chars().last(), Some('\u{2880}'));
    }

    #[test]
    fn dots_in_one_cell_combine() {
        let mut c = Canvas::new(1, 1, 0.0..=1.0, 0.0..=3.0);
        for y in 0..4 {
            c.plot(0.0, f64::from(y), 0);
            c.plot(1.0, f64::from(y), 1);
        }
        assert_eq!(plain(&c), vec!["\u{28FF}".to_string()]);
        let series = c.lines(|cell| format!("{:?}", cell.series));
        assert_eq!(series, vec!["Some(1)".to_string()]);
    }

    #[test]
    fn out_of_range_points_are_skipped() {
        let mut c = canvas();
        assert!(!c.plot(-0.1, 1.0, 0));
        assert!(!c.plot(1.0, 6.1, 0));
        assert!(!c.plot(f64::NAN, 1.0, 0));
        assert!(!c.plot(1.0, f64::INFINITY, 0));
        assert_eq!(plain(&c), plain(&canvas()));
    }

    #[test]
    fn the_middle_lands_in_the_middle() {
        let mut c = canvas();
        c.plot(1.5, 3.0, 0);
        let lines = plain(&c);
        // 60 dots across: 1.5 of 3 → dot 29.5 → 30 → cell 15; 16 dots up: dot 7.5 → 8
        // from the bottom → dot row 7 from the top → character row 1.
        let (row, col) = lines
            .iter()
            .enumerate()
            .find_map(|(r, line)| line.chars().position(|ch| ch != '\u{2800}').map(|c| (r, c)))
            .unwrap();
        assert_eq!((row, col), (1, 15));
    }

    #[test]
    fn degenerate_canvas_does_not_panic() {
        let mut c = Canvas::new(0, 0, 0.0..=1.0, 0.0..=1.0);
        assert!(!c.plot(0.5, 0.5, 0));
        assert!(plain(&c).is_empty());
        let mut c = Canvas::new(2, 1, 1.0..=1.0, 0.0..=1.0);
        assert!(c.plot(1.0, 0.0, 0));
    }
}

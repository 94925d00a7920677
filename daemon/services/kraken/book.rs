//! One pair's order book as Kraken's v1 `book` channel builds it: a snapshot, then
//! updates that set or delete price levels, each verified against Kraken's CRC32 of the
//! top ten levels.
//!
//! Prices and volumes stay the strings Kraken sent, since the checksum is computed over
//! exactly those digits; they are ordered as exact decimals, never as floats.

use std::{cmp::Ordering, collections::BTreeMap};

use crate::pb;

/// Levels per side that Kraken's checksum covers, whatever the subscribed depth.
const CHECKSUM_LEVELS: usize = 10;

/// A price or volume as Kraken sends it: digits with at most one '.'.
#[derive(Clone, Debug)]
pub struct Decimal {
    text: String,
    /// The integer digits without leading zeros, and the fraction's digits without
    /// trailing zeros: "0.0500" and ".05" compare equal, as the same price.
    integer: String,
    fraction: String,
}

impl Decimal {
    /// Parses a non-negative decimal; None for anything else (signs, exponents, junk).
    pub fn parse(text: &str) -> Option<Self> {
        let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer.len() + fraction.len() == 0 || !digits(integer) || !digits(fraction) {
            return None;
        }
        Some(Self {
            text: text.to_owned(),
            integer: integer.trim_start_matches('0').to_owned(),
            fraction: fraction.trim_end_matches('0').to_owned(),
        })
    }

    pub fn is_zero(&self) -> bool {
        self.integer.is_empty() && self.fraction.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        // A longer integer part (leading zeros gone) is a larger number; fraction digits
        // compare left to right, and a missing digit is a zero.
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

// By value, consistent with Ord, as BTreeMap keys need.
impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One price level as received: price, then volume (Kraken's timestamp is not kept).
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub price: Decimal,
    pub volume: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    Asks,
    Bids,
}

/// The top `depth` levels of each side of one pair's book.
#[derive(Debug)]
pub struct Book {
    depth: usize,
    /// Keyed by the exact price, so a level is found by value whatever its spelling.
    asks: BTreeMap<Decimal, Level>,
    bids: BTreeMap<Decimal, Level>,
}

impl Book {
    /// A book from Kraken's snapshot. Zero volumes in a snapshot are dropped like any.
    pub fn snapshot(depth: usize, asks: Vec<Level>, bids: Vec<Level>) -> Self {
        let mut book = Self {
            depth,
            asks: BTreeMap::new(),
            bids: BTreeMap::new(),
        };
        book.apply(Side::Asks, asks);
        book.apply(Side::Bids, bids);
        book
    }

    /// Sets each level in order (Kraken sends them oldest first), deleting those of zero
    /// volume, then keeps only the best `depth`: Kraken sends no delete for a level that
    /// an insert pushes out of the subscribed depth.
    pub fn apply(&mut self, side: Side, levels: Vec<Level>) {
        let map = match side {
            Side::Asks => &mut self.asks,
            Side::Bids => &mut self.bids,
        };
        for level in levels {
            if level.volume.is_zero() {
                map.remove(&level.price);
            } else {
                map.insert(level.price.clone(), level);
            }
        }
        while map.len() > self.depth {
            // The worst level: the highest ask, the lowest bid.
            match side {
                Side::Asks => map.pop_last(),
                Side::Bids => map.pop_first(),
            };
        }
    }

    /// Asks, lowest first.
    pub fn asks(&self) -> impl Iterator<Item = &Level> {
        self.asks.values()
    }

    /// Bids, highest first.
    pub fn bids(&self) -> impl Iterator<Item = &Level> {
        self.bids.values().rev()
    }

    /// Kraken's checksum: CRC32 of the top ten asks then the top ten bids, each level
    /// its price and volume with the '.' removed and leading zeros stripped.
    pub fn checksum(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        let top = self
            .asks()
            .take(CHECKSUM_LEVELS)
            .chain(self.bids().take(CHECKSUM_LEVELS));
        for level in top {
            for value in [&level.price, &level.volume] {
                let digits = value.as_str().replace('.', "");
                hasher.update(digits.trim_start_matches('0').as_bytes());
            }
        }
        hasher.finalize()
    }

    /// The book as an event: up to `levels` levels a side, and its checksum.
    pub fn to_pb(&self, pair: &str, levels: usize) -> pb::Book {
        let level = |l: &Level| pb::BookLevel {
            price: l.price.as_str().to_owned(),
            volume: l.volume.as_str().to_owned(),
        };
        pb::Book {
            pair: pair.to_owned(),
            asks: self.asks().take(levels).map(level).collect(),
            bids: self.bids().take(levels).map(level).collect(),
            checksum: self.checksum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(price: &str, volume: &str) -> Level {
        Level {
            price: Decimal::parse(price).unwrap(),
            volume: Decimal::parse(volume).unwrap(),
        }
    }

    fn prices<'a>(levels: impl Iterator<Item = &'a Level>) -> Vec<&'a str> {
        levels.map(|l| l.price.as_str()).collect()
    }

    #[test]
    fn decimals_order_exactly_and_reject_junk() {
        let d = |s| Decimal::parse(s).unwrap();
        assert!(d("9.99") < d("10.0"));
        assert!(d("0.0502") > d("0.05011"));
        assert!(d("0.0501") < d("0.05011"));
        assert_eq!(d("0.0500").cmp(&d(".05")), Ordering::Equal);
        assert_eq!(d("0010").cmp(&d("10.000")), Ordering::Equal);
        assert!(d("0.00000000").is_zero() && d("0").is_zero() && !d("0.1").is_zero());
        for junk in ["", ".", "-1", "1e5", "1.2.3", " 1", "abc", "+1"] {
            assert_eq!(Decimal::parse(junk), None, "{junk:?}");
        }
    }

    /// The book of Kraken's documentation, whose checksum it gives as 974947235.
    fn documented() -> Book {
        let asks = [
            "0.05005", "0.05010", "0.05015", "0.05020", "0.05025", "0.05030", "0.05035", "0.05040",
            "0.05045", "0.05050",
        ];
        let bids = [
            "0.05000", "0.04995", "0.04990", "0.04980", "0.04975", "0.04970", "0.04965", "0.04960",
            "0.04955", "0.04950",
        ];
        // Given out of order, to show the book orders them.
        Book::snapshot(
            10,
            asks.iter().rev().map(|p| level(p, "0.00000500")).collect(),
            bids.iter().map(|p| level(p, "0.00000500")).collect(),
        )
    }

    #[test]
    fn checksum_matches_krakens_documented_example() {
        assert_eq!(documented().checksum(), 974_947_235);
    }

    #[test]
    fn snapshot_orders_asks_up_and_bids_down() {
        let book = documented();
        assert_eq!(prices(book.asks())[..3], ["0.05005", "0.05010", "0.05015"]);
        assert_eq!(prices(book.bids())[..3], ["0.05000", "0.04995", "0.04990"]);
    }

    #[test]
    fn updates_set_delete_and_truncate_to_depth() {
        let mut book = Book::snapshot(
            3,
            vec![
                level("101.0", "1"),
                level("102.0", "2"),
                level("103.0", "3"),
            ],
            vec![level("99.0", "1"), level("98.0", "2")],
        );
        // A better ask pushes the worst out of depth 3.
        book.apply(Side::Asks, vec![level("100.5", "0.5")]);
        assert_eq!(prices(book.asks()), ["100.5", "101.0", "102.0"]);
        // A volume change keeps the level's place; the same price spelt differently is
        // the same level.
        book.apply(Side::Asks, vec![level("101.00", "7")]);
        let volumes: Vec<_> = book.asks().map(|l| l.volume.as_str()).collect();
        assert_eq!(volumes, ["0.5", "7", "2"]);
        // Zero volume deletes; deleting a level that is not there changes nothing.
        book.apply(
            Side::Bids,
            vec![level("99.0", "0.00000000"), level("50", "0")],
        );
        assert_eq!(prices(book.bids()), ["98.0"]);
        // Bids keep the highest.
        book.apply(
            Side::Bids,
            vec![level("97", "1"), level("98.5", "1"), level("96", "1")],
        );
        assert_eq!(prices(book.bids()), ["98.5", "98.0", "97"]);
    }

    #[test]
    fn the_checksum_covers_ten_levels_and_the_event_up_to_its_limit() {
        let asks = (0..15).map(|i| level(&format!("1{i:02}.5"), "1")).collect();
        let bids = (0..15).map(|i| level(&format!("{i:02}.5"), "1")).collect();
        let book = Book::snapshot(25, asks, bids);
        let top = Book::snapshot(
            10,
            book.asks().take(10).cloned().collect(),
            book.bids().take(10).cloned().collect(),
        );
        assert_eq!(book.checksum(), top.checksum());
        let event = book.to_pb("XBT/USD", 12);
        assert_eq!((event.asks.len(), event.bids.len()), (12, 12));
        assert_eq!(event.asks[0].price, "100.5");
        assert_eq!(event.bids[0].price, "14.5");
        assert_eq!(event.checksum, book.checksum());
    }
}

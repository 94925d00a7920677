//! Durations from outside (config file, RPC parameters, streamd and streamctl flags):
//! parsed by one function and bounded, so that no value can overflow the clock
//! arithmetic it later takes part in.

use std::time::Duration;

/// The longest duration accepted anywhere: far beyond any sensible interval, and far
/// below what would overflow `Instant` or `Duration` arithmetic.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The longest text taken for a duration.
const MAX_TEXT_LEN: usize = 64;

/// Whether zero is a meaningful value where a duration is used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Zero {
    Allowed,
    Refused,
}

/// Parses a duration such as "500ms", "2s" or "1m 30s", within 0 (if `zero` allows it)
/// to one year.
pub fn parse(text: &str, zero: Zero) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {}: expected a number and a unit, like 500ms or 2s",
            crate::topic::quoted(text)
        )
    };
    // A duration is never this long.
    if text.len() > MAX_TEXT_LEN {
        return Err(invalid());
    }
    let duration = humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(text),
        _ => invalid(),
    })?;
    check(duration, zero)
}

/// Checks a duration that arrived already parsed (a protobuf Duration, say).
pub fn check(duration: Duration, zero: Zero) -> Result<Duration, String> {
    if duration.is_zero() && zero == Zero::Refused {
        return Err("must be greater than zero".to_owned());
    }
    if duration > MAX {
        return Err(too_long(&humantime::format_duration(duration).to_string()));
    }
    Ok(duration)
}

fn too_long(text: &str) -> String {
    format!(
        "{} is longer than the longest allowed, 1 year",
        crate::topic::quoted(text)
    )
}

/// Positive durations, for clap's `value_parser`.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    parse(text, Zero::Refused)
}

/// Durations that may be zero, for clap's `value_parser`.
pub fn parse_any(text: &str) -> Result<Duration, String> {
    parse(text, Zero::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_zero_to_a_year() {
        assert_eq!(
            parse("500ms", Zero::Refused),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse("1m 30s", Zero::Refused), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0s", Zero::Allowed), Ok(Duration::ZERO));
        assert_eq!(parse("365d", Zero::Refused), Ok(MAX));
        assert!(
            parse("0s", Zero::Refused)
                .unwrap_err()
                .contains("greater than zero")
        );
    }

    #[test]
    fn too_long_or_malformed_durations_are_refused_clearly() {
        for text in ["366d", "300000000000y", "18446744073709551615s"] {
            let e = parse(text, Zero::Refused).unwrap_err();
            assert!(
                e.ends_with("is longer than the longest allowed, 1 year"),
                "{text}: {e}"
            );
        }
        for text in ["fast", "5", "2 fortnights", "-1s", ""] {
            assert_eq!(
                parse(text, Zero::Allowed).unwrap_err(),
                format!(
                    "invalid duration {text:?}: expected a number and a unit, like 500ms or 2s"
                )
            );
        }
        let huge = "9".repeat(100_000);
        let e = parse(&huge, Zero::Allowed).unwrap_err();
        assert!(e.len() < 300, "a huge value is not echoed whole: {e}");
        assert!(check(Duration::MAX, Zero::Allowed).is_err());
    }
}

//! Topics: the one place their rules live. A topic is a service's name or a name a
//! client publishes to; a subscriber picks topics by name or glob pattern. Config,
//! Publish and Subscribe all check through here.

/// The longest topic name.
pub const MAX_NAME_LEN: usize = 128;
/// The most patterns one subscription may carry: every one is matched against each new
/// topic, so their number bounds the work a subscriber can cause.
pub const MAX_PATTERNS: usize = 64;
/// The longest pattern.
pub const MAX_PATTERN_LEN: usize = 256;

/// Characters of topic names besides ASCII letters and digits. None of them is glob
/// syntax, so a name always matches itself as a pattern.
const NAME_PUNCTUATION: &str = "._-/:";
/// What patterns may add to the name characters.
const GLOB_SYNTAX: &str = "*?[]!";

/// Checks a topic name: 1 to 128 letters, digits and `._-/:`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} must be 1 to {MAX_NAME_LEN} characters long",
            quoted(name)
        ));
    }
    // Bytes, not characters: every name character is ASCII, and this runs for every
    // event a client publishes.
    if name.bytes().all(|b| b.is_ascii() && is_name_char(b.into())) {
        return Ok(());
    }
    let c = name.chars().find(|&c| !is_name_char(c)).unwrap_or_default();
    Err(format!(
        "{} has {c:?}; use letters, digits and {NAME_PUNCTUATION} only",
        quoted(name)
    ))
}

/// Checks a topic name that arrived as bytes, and gives it as text.
pub fn name_from_bytes(bytes: &[u8]) -> Result<&str, String> {
    let name = std::str::from_utf8(bytes)
        .map_err(|_| format!("{} is not UTF-8", quoted(&String::from_utf8_lossy(bytes))))?;
    check_name(name).map(|()| name)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(c)
}

/// A client's text in an error message: whole if short, else its start and its length,
/// so that a huge value is not echoed back whole.
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    format!("{:?}… ({} bytes)", head(text, SHOWN), text.len())
}

/// The start of `text`, at most `max` bytes, cut at a character boundary.
pub fn head(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Which topics a subscriber wants: names, glob patterns, or every topic when empty.
#[derive(Clone, Debug, Default)]
pub struct TopicFilter {
    /// The names and patterns as given, for the subscriber to see what it follows.
    accepted: Vec<String>,
    /// Plain names, compared as strings: the common case, and no glob work.
    names: Vec<String>,
    patterns: Vec<glob::Pattern>,
}

/// A subscription's topics that the rules refuse: which one, and why.
#[derive(Debug, PartialEq)]
pub struct BadFilter {
    /// The position of the pattern at fault, or None when there are too many.
    pub index: Option<usize>,
    pub message: String,
}

impl TopicFilter {
    /// Checks and compiles a subscription's names and patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, BadFilter> {
        if patterns.len() > MAX_PATTERNS {
            return Err(BadFilter {
                index: None,
                message: format!(
                    "{} patterns; at most {MAX_PATTERNS} are allowed",
                    patterns.len()
                ),
            });
        }
        let mut filter = Self::default();
        for (index, pattern) in patterns.iter().map(AsRef::as_ref).enumerate() {
            let bad = |message| BadFilter {
                index: Some(index),
                message,
            };
            if !pattern.contains(|c| GLOB_SYNTAX.contains(c)) {
                check_name(pattern).map_err(bad)?;
                filter.names.push(pattern.to_owned());
                continue;
            }
            if pattern.len() > MAX_PATTERN_LEN {
                return Err(bad(format!(
                    "{} is longer than {MAX_PATTERN_LEN} characters",
                    quoted(pattern)
                )));
            }
            if let Some(c) = pattern
                .chars()
                .find(|&c| !is_name_char(c) && !GLOB_SYNTAX.contains(c))
            {
                return Err(bad(format!(
                    "{} has {c:?}; patterns use topic characters ({NAME_PUNCTUATION}, \
                     letters, digits) and {GLOB_SYNTAX}",
                    quoted(pattern)
                )));
            }
            let compiled = glob::Pattern::new(pattern)
                .map_err(|e| bad(format!("{}: {}", quoted(pattern), e.msg)))?;
            filter.patterns.push(compiled);
        }
        filter.names.sort();
        filter.names.dedup();
        filter.accepted = patterns.iter().map(|p| p.as_ref().to_owned()).collect();
        Ok(filter)
    }

    /// Whether an event on `topic` is for this subscriber.
    pub fn matches(&self, topic: &str) -> bool {
        self.is_everything() || self.names.iter().any(|n| n == topic) || self.matches_pattern(topic)
    }

    /// Whether one of the patterns (not a plain name) matches `topic`; every topic
    /// when the filter is empty.
    pub fn matches_pattern(&self, topic: &str) -> bool {
        self.is_everything() || self.patterns.iter().any(|p| p.matches(topic))
    }

    /// The names and patterns as given; empty for every topic.
    pub fn accepted(&self) -> &[String] {
        &self.accepted
    }

    /// The plain names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether topics not yet known may match: there are patterns, or no names at all.
    pub fn has_patterns(&self) -> bool {
        self.is_everything() || !self.patterns.is_empty()
    }

    fn is_everything(&self) -> bool {
        self.names.is_empty() && self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_letters_digits_and_a_little_punctuation() {
        assert!(check_name("sensors/room-1.temp:c_2").is_ok());
        for bad in ["", "a b", "a*", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        let long = check_name(&"x".repeat(1_000_000)).unwrap_err();
        assert!(long.len() < 200 && long.contains("1000000 bytes"), "{long}");
        assert_eq!(name_from_bytes(b"a/b"), Ok("a/b"));
        assert!(name_from_bytes(b"a\xff").unwrap_err().contains("not UTF-8"));
        assert!(name_from_bytes("é".as_bytes()).unwrap_err().contains("'é'"));
    }

    #[test]
    fn names_match_exactly_and_patterns_as_globs() {
        let filter = TopicFilter::new(&["a", "s/*", "x?", "[!q]z"]).unwrap();
        for (topic, matches) in [
            ("a", true),
            ("ab", false),
            ("s/1", true),
            ("x1", true),
            ("x12", false),
            ("rz", true),
            ("qz", false),
        ] {
            assert_eq!(filter.matches(topic), matches, "{topic}");
        }
        assert!(!filter.matches_pattern("a"), "a name is not a pattern");
        let everything = TopicFilter::new::<&str>(&[]).unwrap();
        assert!(everything.matches("anything") && everything.has_patterns());
        assert!(!TopicFilter::new(&["a"]).unwrap().has_patterns());
    }

    #[test]
    fn bad_patterns_are_named_by_position() {
        let err = TopicFilter::new(&["ok", "[oops"]).unwrap_err();
        assert_eq!(err.index, Some(1));
        assert!(err.message.contains("[oops"), "{}", err.message);
        let err = TopicFilter::new(&["ok", "a b*"]).unwrap_err();
        assert_eq!(err.index, Some(1));
        let long = format!("{}*", "x".repeat(MAX_PATTERN_LEN));
        let err = TopicFilter::new(&[long.as_str()]).unwrap_err();
        assert!(err.message.contains("longer than 256"), "{}", err.message);
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("t{i}")).collect();
        let err = TopicFilter::new(&many).unwrap_err();
        assert_eq!(err.index, None);
        assert!(err.message.contains("at most 64"), "{}", err.message);
        assert!(TopicFilter::new(&many[..MAX_PATTERNS]).is_ok());
    }
}

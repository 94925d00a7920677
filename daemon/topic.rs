//! Topics: the one place their rules live. A topic is a service's name or a name a
//! client publishes to; a subscriber picks topics by name or glob pattern. Config,
//! Publish and Subscribe all check through here.
//!
//! A subscription's patterns are compiled together into one DFA of bounded size, so
//! that matching a topic is one pass over its name however the patterns are chosen:
//! a Subscribe that reads every topic's name, and every new topic matched against
//! every subscription with patterns, cost no more than that.

use std::sync::Arc;

use regex_automata::{
    Anchored, Input,
    dfa::{Automaton, StartKind, dense},
    util::syntax,
};

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

/// Whether a subscription's entry is a glob pattern rather than a topic's name.
fn is_pattern(entry: &str) -> bool {
    entry.contains(|c| GLOB_SYNTAX.contains(c))
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
    /// The patterns, compiled together; None when there are none.
    patterns: Option<Arc<Patterns>>,
}

/// A subscription's glob patterns as one DFA that matches a whole name.
#[derive(Debug)]
struct Patterns(dense::DFA<Vec<u32>>);

/// The most memory a subscription's compiled patterns may take, and what compiling
/// them may use on the way: enough for any handful of ordinary patterns (`kraken.*`,
/// `sensors/*/temp`, `*.error`: a few KiB together), and a bound on the time a
/// Subscribe spends compiling (a few milliseconds) however the patterns are chosen.
const MAX_PATTERNS_DFA: usize = 64 * 1024;
const MAX_PATTERNS_DETERMINIZING: usize = 256 * 1024;

impl Patterns {
    fn compile(globs: &[String]) -> Result<Self, String> {
        let regexes: Vec<String> = globs.iter().map(|glob| regex_of(glob)).collect();
        dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(MAX_PATTERNS_DFA))
                    .determinize_size_limit(Some(MAX_PATTERNS_DETERMINIZING)),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build_many(&regexes)
            .map(Self)
            .map_err(|e| {
                if e.is_size_limit_exceeded() {
                    format!(
                        "these {} patterns together are too intricate to match in one pass \
                         over a name (their automaton passes {} KiB); use fewer, or fewer \
                         `*` and `?` in each",
                        globs.len(),
                        MAX_PATTERNS_DFA / 1024
                    )
                } else {
                    format!("the patterns cannot be compiled: {e}")
                }
            })
    }

    fn matches(&self, name: &str) -> bool {
        let input = Input::new(name).anchored(Anchored::Yes).earliest(true);
        matches!(self.0.try_search_fwd(&input), Ok(Some(_)))
    }
}

/// A glob pattern, which `glob::Pattern::new` accepted, as a regular expression for the
/// whole name with the same meaning: `?` one character, `*` any run, `**` as a whole
/// component any run of components, `[...]` and `[!...]` a character (in) or out of a
/// set of characters and ranges. Every other character stands for itself.
fn regex_of(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut regex = String::from("(?s-u:");
    let literal =
        |regex: &mut String, c: char| regex.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '?' => {
                regex.push('.');
                i += 1;
            }
            '*' => {
                let stars = chars[i..].iter().take_while(|&&c| c == '*').count();
                i += stars;
                if stars == 1 {
                    regex.push_str(".*");
                    continue;
                }
                // `**/` takes its separator with it; at the end it takes everything.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                regex.push_str(if i == chars.len() { ".*" } else { "(?:.*/)?" });
            }
            '[' => {
                // As glob reads a set: the first character inside (after `!`) may be
                // `]`, the set ends at the next `]`.
                let negated = chars.get(i + 1) == Some(&'!');
                let first = if negated { i + 2 } else { i + 1 };
                let end = chars[first + 1..]
                    .iter()
                    .position(|&c| c == ']')
                    .map_or(chars.len(), |j| first + 1 + j);
                let set = &chars[first..end.min(chars.len())];
                let mut class = String::new();
                let mut k = 0;
                while k < set.len() {
                    if k + 3 <= set.len() && set[k + 1] == '-' {
                        // A range whose ends are reversed holds nothing.
                        if set[k] <= set[k + 2] {
                            literal(&mut class, set[k]);
                            class.push('-');
                            literal(&mut class, set[k + 2]);
                        }
                        k += 3;
                    } else {
                        literal(&mut class, set[k]);
                        k += 1;
                    }
                }
                match (negated, class.is_empty()) {
                    (false, true) => regex.push_str("[^\\x00-\\xFF]"),
                    (true, true) => regex.push('.'),
                    (false, false) => regex.push_str(&format!("[{class}]")),
                    (true, false) => regex.push_str(&format!("[^{class}]")),
                }
                i = end + 1;
            }
            c => {
                literal(&mut regex, c);
                i += 1;
            }
        }
    }
    regex.push_str(")$");
    regex
}

/// A subscription's topics that the rules refuse: which one, and why.
#[derive(Debug, PartialEq)]
pub struct BadFilter {
    /// The position of the pattern at fault, or None when the fault is all of them.
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
        let mut globs = Vec::new();
        for (index, pattern) in patterns.iter().map(AsRef::as_ref).enumerate() {
            let bad = |message| BadFilter {
                index: Some(index),
                message,
            };
            if !is_pattern(pattern) {
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
            // glob's reading of a pattern is the rule, and its errors say what is wrong.
            glob::Pattern::new(pattern)
                .map_err(|e| bad(format!("{}: {}", quoted(pattern), e.msg)))?;
            globs.push(pattern.to_owned());
        }
        if !globs.is_empty() {
            let compiled = Patterns::compile(&globs).map_err(|message| BadFilter {
                index: None,
                message,
            })?;
            filter.patterns = Some(Arc::new(compiled));
        }
        filter.names.sort();
        filter.names.dedup();
        filter.accepted = patterns.iter().map(|p| p.as_ref().to_owned()).collect();
        Ok(filter)
    }

    /// Whether subscribing with `patterns` reads every topic's name: there are
    /// patterns among them, or none at all (every topic).
    pub fn scans_topics<S: AsRef<str>>(patterns: &[S]) -> bool {
        patterns.is_empty() || patterns.iter().any(|p| is_pattern(p.as_ref()))
    }

    /// Whether an event on `topic` is for this subscriber.
    pub fn matches(&self, topic: &str) -> bool {
        self.is_everything() || self.names.iter().any(|n| n == topic) || self.matches_pattern(topic)
    }

    /// Whether one of the patterns (not a plain name) matches `topic`; every topic
    /// when the filter is empty. One pass over the name.
    pub fn matches_pattern(&self, topic: &str) -> bool {
        self.is_everything() || self.patterns.as_ref().is_some_and(|p| p.matches(topic))
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
        self.is_everything() || self.patterns.is_some()
    }

    fn is_everything(&self) -> bool {
        self.names.is_empty() && self.patterns.is_none()
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

    proptest::proptest! {
        /// The compiled patterns mean what glob's reading of them means, `**`, sets and
        /// ranges included, on names made of a few characters so that they meet often.
        #[test]
        fn compiled_patterns_match_as_glob_matches(
            pattern in "[ab/*?\\[\\]!-]{1,12}",
            names in proptest::collection::vec("[ab/.-]{0,10}", 1..20),
        ) {
            if let Ok(glob) = glob::Pattern::new(&pattern) {
                let compiled = Patterns::compile(std::slice::from_ref(&pattern)).unwrap();
                for name in &names {
                    proptest::prop_assert_eq!(
                        compiled.matches(name), glob.matches(name),
                        "{} on {}: {}", pattern, name, regex_of(&pattern)
                    );
                }
            }
        }
    }

    #[test]
    fn patterns_too_intricate_to_match_in_one_pass_are_refused() {
        // Sixty-four patterns of many stars each: glob took a second to try them on
        // 9,000 topics; their automaton together is past the cap.
        let intricate: Vec<String> = (0..64).map(|i| format!("*a*{i}*b*c*d?e*f?g*")).collect();
        let refused = TopicFilter::new(&intricate).unwrap_err();
        assert_eq!(refused.index, None);
        assert!(
            refused.message.contains("too intricate"),
            "{}",
            refused.message
        );
        // Ordinary patterns, as many as a subscription may hold, compile small.
        let ordinary: Vec<String> = (0..MAX_PATTERNS)
            .map(|i| format!("sensors/room-{i}/*"))
            .collect();
        let filter = TopicFilter::new(&ordinary).unwrap();
        assert!(filter.matches("sensors/room-7/temp"));
        assert!(!filter.matches("sensors/room-70/temp"));
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

//! Secrets: a wrapper that keeps them out of Debug and Display, the one redaction
//! applied to whatever the daemon shows clients or writes to its log, and the
//! `${VAR}` expansion that lets the config file read credentials from the environment.
//!
//! What a client sees (ListServices, error events, last_error, status) and every log
//! line pass through [`redact`], which hides URL passwords and query values named like
//! credentials wherever a URL appears in the text; a parameter's whole value is hidden
//! when its name says it is a credential ([`redact_param`]).

use std::{borrow::Cow, fmt, io};

use reqwest::Url;

/// A value that is never shown: Debug and Display print `<redacted>`. Read it with
/// [`Secret::expose`] only where it is used.
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

/// What a hidden value is shown as.
const HIDDEN: &str = "<redacted>";
/// What a hidden part of a URL is shown as (angle brackets would be percent-encoded).
const HIDDEN_IN_URL: &str = "redacted";

/// Whether a header, query or parameter name says its value is a credential:
/// Authorization, Cookie, api_key, X-Api-Key, access_token, client-secret, sig, ...
pub fn names_a_credential(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const WHOLE: [&str; 7] = [
        "auth",
        "authorization",
        "cookie",
        "setcookie",
        "sig",
        "session",
        "sessionid",
    ];
    const ENDINGS: [&str; 8] = [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "credentials",
    ];
    WHOLE.contains(&name.as_str()) || ENDINGS.iter().any(|e| name.ends_with(e))
}

/// A service parameter as shown to clients: hidden whole when its name (or, for
/// `header.NAME`, the header's) names a credential, otherwise with any URL in it
/// redacted.
pub fn redact_param(key: &str, value: &str) -> String {
    if names_a_credential(key.strip_prefix("header.").unwrap_or(key)) {
        HIDDEN.to_owned()
    } else {
        redact(value).into_owned()
    }
}

/// `text` with every URL in it redacted: its password, and the values of query
/// parameters named like credentials. Text without such a URL comes back as it is.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let marker = from + found;
        let start = text[..marker]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = text[marker..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |i| marker + i);
        if let Some(redacted) = redact_url(&text[start..end]) {
            out.push_str(&text[copied..start]);
            out.push_str(&redacted);
            copied = end;
        }
        from = end.max(marker + 3);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// A URL with its secrets redacted, or None when it holds none (or is no URL).
fn redact_url(text: &str) -> Option<String> {
    let mut url = Url::parse(text).ok()?;
    let mut changed = false;
    if url.password().is_some() {
        url.set_password(Some(HIDDEN_IN_URL)).ok()?;
        changed = true;
    }
    if let Some(query) = url.query() {
        // Rewritten piece by piece, so that what is not secret shows as it was sent.
        let pieces: Vec<String> = query
            .split('&')
            .map(|piece| {
                let name = piece.split('=').next().unwrap_or_default();
                // As the server reads it: `api%5Fkey` is `api_key`.
                let decoded = form_urlencoded::parse(piece.as_bytes()).next();
                if decoded.is_some_and(|(name, _)| names_a_credential(&name)) {
                    format!("{name}={HIDDEN_IN_URL}")
                } else {
                    piece.to_owned()
                }
            })
            .collect();
        let redacted = pieces.join("&");
        if redacted != query {
            url.set_query(Some(&redacted));
            changed = true;
        }
    }
    changed.then(|| url.to_string())
}

/// Text from an upstream server as the daemon may quote it: at most 80 characters,
/// quoted, anything unprintable escaped, `…` where it was cut.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 80;
    let text = text.trim();
    let shown: String = text.chars().take(SHOWN).collect();
    let mut excerpt = format!("{shown:?}");
    if shown.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

/// Why a config value's `${VAR}` could not be expanded.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ExpandError {
    #[error("has \"${{\" without a closing \"}}\"")]
    Unclosed,
    #[error("needs the {0} environment variable of streamd, which is not set")]
    Unset(String),
}

/// Replaces each `${VAR}` in a config file's value with what `lookup` gives for VAR.
/// Only the config file's values go through here: a client's are taken as written.
pub fn expand_env(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Secret<String>, ExpandError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let len = rest[start..].find('}').ok_or(ExpandError::Unclosed)?;
        let var = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        out.push_str(&lookup(var).ok_or_else(|| ExpandError::Unset(var.to_owned()))?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(Secret::new(out))
}

/// A log writer that passes each line through [`redact`], so that no log line shows
/// a URL's password or key, whichever crate wrote it.
pub struct RedactingWriter<W>(pub W);

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The log formats each event whole and writes it in one call.
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_passwords_and_credential_query_values() {
        assert_eq!(
            redact("GET http://me:pw@127.0.0.1:8/x?api_key=k1&page=2: HTTP 500"),
            "GET http://me:redacted@127.0.0.1:8/x?api_key=redacted&page=2: HTTP 500"
        );
        assert_eq!(
            redact(r#"bad database URL "mysql://root:s3cret@db/x": use postgres"#),
            r#"bad database URL "mysql://root:redacted@db/x": use postgres"#
        );
        for name in [
            "token",
            "access_token",
            "apikey",
            "SIG",
            "signature",
            "password",
        ] {
            let text = format!("wss://h/feed?{name}=v4lue");
            assert!(!redact(&text).contains("v4lue"), "{name}");
        }
        // Nothing secret: the very same text.
        let plain = "GET https://api.example.com/v1?page=2&limit=10: timed out";
        assert!(matches!(redact(plain), Cow::Borrowed(t) if t == plain));
        assert_eq!(redact("ends with ://"), "ends with ://");
        assert_eq!(redact("«http://u:p@h/ »"), "«http://u:redacted@h/ »");
        assert_eq!(redact("://u:p@h/ é://x"), "://u:p@h/ é://x");
    }

    proptest::proptest! {
        /// Whatever surrounds it, a URL's password never shows, and no text makes
        /// redaction panic.
        #[test]
        fn any_text_around_a_url_keeps_its_password_hidden(
            before in "\\PC{0,40}",
            password in "[a-zA-Z0-9]{8,20}",
            after in "\\PC{0,40}",
        ) {
            proptest::prop_assume!(!before.contains(&password) && !after.contains(&password));
            let text = format!("{before} http://user:{password}@host/path {after}");
            proptest::prop_assert!(!redact(&text).contains(&password));
            let _ = redact(&before);
        }
    }

    #[test]
    fn params_named_as_credentials_are_hidden_whole() {
        for key in [
            "header.Authorization",
            "header.Cookie",
            "header.X-Api-Key",
            "header.X-Auth-Token",
            "header.Client-Secret",
            "api_key",
        ] {
            assert_eq!(redact_param(key, "hunter2"), "<redacted>", "{key}");
        }
        assert_eq!(redact_param("dir", "/srv"), "/srv");
        assert_eq!(redact_param("field.auth", "/auth"), "/auth");
        assert_eq!(redact_param("header.Accept", "text/plain"), "text/plain");
        assert_eq!(
            redact_param("url", "https://u:p@h/?token=t"),
            "https://u:redacted@h/?token=redacted"
        );
    }

    #[test]
    fn expansion_reads_variables_and_says_which_is_missing() {
        let lookup = |var: &str| (var == "TOKEN").then(|| "t0k".to_owned());
        let expanded = expand_env("Bearer ${TOKEN}!", lookup).unwrap();
        assert_eq!(expanded.expose(), "Bearer t0k!");
        assert_eq!(
            expand_env("${NOPE}", lookup).unwrap_err(),
            ExpandError::Unset("NOPE".into())
        );
        assert_eq!(
            expand_env("${TOKEN", lookup).unwrap_err(),
            ExpandError::Unclosed
        );
        assert_eq!(expand_env("no vars", lookup).unwrap().expose(), "no vars");
    }

    #[test]
    fn an_excerpt_is_short_and_printable() {
        assert_eq!(excerpt(" ok\u{7}\n"), r#""ok\u{7}""#);
        let long = excerpt(&"é".repeat(200));
        assert_eq!(
            long.chars().count(),
            80 + 3,
            "80, two quotes and the ellipsis"
        );
        assert!(long.ends_with("\"…"));
    }

    #[test]
    fn the_log_writer_redacts_what_passes() {
        use std::io::Write;
        let mut writer = RedactingWriter(Vec::new());
        writer
            .write_all(b"connecting postgres://me:pw@db/x\n")
            .unwrap();
        assert_eq!(writer.0, b"connecting postgres://me:redacted@db/x\n");
    }
}

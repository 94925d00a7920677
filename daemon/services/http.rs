//! HTTP pollers: each step makes one request and publishes what the JSON reply holds.
//!
//! `slugs`, `emojis`, `activities` and `aq` are the original dashboard's API cards, each
//! with its own typed payload; `http` polls any JSON API, picking output fields with JSON
//! pointers. They share the daemon's one HTTP client. Every failure (no connection, a
//! timeout, a non-2xx status, a body that is not JSON, a field missing or of the wrong
//! type) is a failed step: an error event, and the service polls again later, backing
//! off while failures repeat.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use reqwest::{
    Method, Url,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;

use super::{
    Authority, Build, Environment, Kind, ParamError, ParamSpec, Params, StepContext, StepError,
    Worker,
};
use crate::{
    duration,
    pb::{self, event::Payload},
    secret::{Secret, excerpt},
};

/// Replies larger than this are refused rather than read into memory.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The endpoint of a card, which polls `default` unless configured otherwise.
const fn card_url(default: &'static str) -> ParamSpec {
    ParamSpec {
        name: "url",
        help: "the endpoint to poll",
        default: Some(default),
        authority: Authority::Endpoint,
    }
}

const TIMEOUT: ParamSpec = ParamSpec {
    name: "timeout",
    help: "how long a request may take, from connecting to the end of the reply",
    default: Some("10s"),
    authority: Authority::Client,
};

const SLUGS_URL: ParamSpec = card_url("https://ciprand.p3p.repl.co/api?len=20&count=10");

pub const SLUGS: Kind = Kind {
    name: "slugs",
    description: "random strings from an HTTP API",
    default_interval: std::time::Duration::from_secs(2),
    params: &[SLUGS_URL, TIMEOUT],
    build: |params, env| card(params, env, &SLUGS_URL, slugs),
};

const EMOJIS_URL: ParamSpec = card_url("https://emojihub.yurace.pro/api/random");

pub const EMOJIS: Kind = Kind {
    name: "emojis",
    description: "a random emoji from an HTTP API",
    default_interval: std::time::Duration::from_secs(2),
    params: &[EMOJIS_URL, TIMEOUT],
    build: |params, env| card(params, env, &EMOJIS_URL, emoji),
};

const ACTIVITIES_URL: ParamSpec = card_url("https://bored-api.appbrewery.com/random");

pub const ACTIVITIES: Kind = Kind {
    name: "activities",
    description: "a random activity from an HTTP API",
    default_interval: std::time::Duration::from_secs(2),
    params: &[ACTIVITIES_URL, TIMEOUT],
    build: |params, env| card(params, env, &ACTIVITIES_URL, activity),
};

/// The environment variable that holds the OpenAQ API key.
const OPEN_AQ_KEY: &str = "OPEN_AQ_KEY";

/// aq's endpoint receives the daemon's API key, so only the operator chooses it.
const AQ_URL: ParamSpec = ParamSpec {
    name: "url",
    help: "the endpoint to poll, which receives the API key",
    default: Some(
        "https://api.openaq.org/v3/locations?coordinates=39.6,-104.8&radius=25000&limit=100",
    ),
    authority: Authority::Operator,
};

pub const AQ: Kind = Kind {
    name: "aq",
    description: "air quality monitoring locations from OpenAQ",
    default_interval: std::time::Duration::from_secs(2),
    params: &[AQ_URL, TIMEOUT],
    build: |params, env| {
        let mut poller = poller(params, env, &AQ_URL, Decode::Typed(air_quality))?;
        let key = std::env::var(OPEN_AQ_KEY).map(Secret::new).map_err(|_| {
            Build::Precondition(format!(
                "aq needs an OpenAQ API key in the {OPEN_AQ_KEY} environment variable of streamd"
            ))
        })?;
        let mut key = HeaderValue::from_str(key.expose()).map_err(|_| {
            Build::Precondition(format!("{OPEN_AQ_KEY} is not a valid header value"))
        })?;
        key.set_sensitive(true);
        poller.headers.insert("x-api-key", key);
        poller.client = env.http_same_origin.clone();
        Ok(Box::new(poller))
    },
};

const HTTP_URL: ParamSpec = ParamSpec {
    name: "url",
    help: "the endpoint to poll",
    default: None,
    authority: Authority::Endpoint,
};

const METHOD: ParamSpec = ParamSpec {
    name: "method",
    help: "GET, POST, PUT, ...",
    default: Some("GET"),
    authority: Authority::Operator,
};

pub const HTTP: Kind = Kind {
    name: "http",
    description: "any JSON API, with output fields picked by JSON pointers",
    default_interval: std::time::Duration::from_secs(10),
    params: &[
        HTTP_URL,
        TIMEOUT,
        METHOD,
        ParamSpec {
            name: "body",
            help: "a request body, sent as JSON",
            default: None,
            authority: Authority::Credential,
        },
        ParamSpec {
            name: "header.*",
            help: "a request header; in the config file, ${VAR} in the value reads that environment variable",
            default: None,
            authority: Authority::Credential,
        },
        ParamSpec {
            name: "field.*",
            help: "an output field and the JSON pointer (RFC 6901) to its value, e.g. field.price=/data/price; without any, the whole reply",
            default: None,
            authority: Authority::Client,
        },
    ],
    build: build_http,
};

/// How a reply becomes a payload.
enum Decode {
    /// A card's own reading of its API.
    Typed(fn(&Value) -> Result<Payload, String>),
    /// Named fields picked by JSON pointers, or the whole reply when there are none.
    Fields(BTreeMap<String, String>),
}

struct Poller {
    client: reqwest::Client,
    timeout: Duration,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    decode: Decode,
}

fn parse_timeout(params: &Params) -> Result<Duration, ParamError> {
    duration::parse(
        TIMEOUT.value(params).unwrap_or_default(),
        duration::Zero::Refused,
    )
    .map_err(|message| ParamError::new(TIMEOUT.name, message))
}

fn parse_url(params: &Params, spec: &ParamSpec) -> Result<Url, ParamError> {
    let text = spec
        .value(params)
        .ok_or_else(|| ParamError::new("url", "required"))?;
    let url = Url::parse(text).map_err(|e| ParamError::new("url", format!("{text:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ParamError::new(
            "url",
            format!("{other}: is not http or https"),
        )),
    }
}

fn poller(
    params: &Params,
    env: &Environment,
    url: &ParamSpec,
    decode: Decode,
) -> Result<Poller, Build> {
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    Ok(Poller {
        client: env.http.clone(),
        timeout: parse_timeout(params)?,
        method: Method::GET,
        url: parse_url(params, url)?,
        headers,
        body: None,
        decode,
    })
}

fn card(
    params: &Params,
    env: &Environment,
    url: &ParamSpec,
    decode: fn(&Value) -> Result<Payload, String>,
) -> Result<Box<dyn Worker>, Build> {
    Ok(Box::new(poller(params, env, url, Decode::Typed(decode))?))
}

fn build_http(params: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let mut fields = BTreeMap::new();
    for (key, value) in params {
        if let Some(name) = key.strip_prefix("header.") {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ParamError::new(key, format!("not a header name: {e}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|e| ParamError::new(key, format!("not a header value: {e}")))?;
            // Never shown by Debug, so no log line can carry it.
            value.set_sensitive(true);
            headers.insert(name, value);
        } else if let Some(name) = key.strip_prefix("field.") {
            if !(value.is_empty() || value.starts_with('/')) {
                return Err(ParamError::new(
                    key,
                    format!(
                        "{value:?} is not a JSON pointer: it starts with '/', e.g. /data/0/name"
                    ),
                )
                .into());
            }
            fields.insert(name.to_owned(), value.clone());
        }
    }
    let method = METHOD.value(params).unwrap_or_default();
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ParamError::new("method", format!("{method:?} is not an HTTP method")))?;
    let body = params.get("body").cloned();
    if let Some(body) = &body {
        serde_json::from_str::<Value>(body)
            .map_err(|e| ParamError::new("body", format!("not JSON: {e}")))?;
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    // Headers and a body may carry credentials: their redirects stay within the
    // same origin.
    let carries_credentials = params.keys().any(|k| {
        HTTP.param(k)
            .is_some_and(|p| p.authority == Authority::Credential)
    });
    let client = if carries_credentials {
        &env.http_same_origin
    } else {
        &env.http
    };
    Ok(Box::new(Poller {
        client: client.clone(),
        timeout: parse_timeout(params)?,
        method,
        url: parse_url(params, &HTTP_URL)?,
        headers,
        body,
        decode: Decode::Fields(fields),
    }))
}

#[async_trait]
impl Worker for Poller {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let failed =
            |what: String| StepError::Step(format!("{} {}: {what}", self.method, self.url));
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let mut response = request.send().await.map_err(|e| failed(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(describe(&e)))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(failed(format!("reply larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            // The reply itself goes only to the log: a client may have chosen the URL,
            // and the daemon is no way for it to read what it could not fetch itself.
            let start = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            tracing::debug!(url = %self.url, reply = %excerpt(&start), "reply is not JSON");
            failed(format!("reply is not JSON ({e}), {} bytes", body.len()))
        })?;
        let payload = match &self.decode {
            Decode::Typed(decode) => decode(&json),
            Decode::Fields(fields) => pick(&json, fields),
        }
        .map_err(failed)?;
        ctx.publish(payload)
    }
}

/// What went wrong with a request, in the words of its innermost cause (e.g.
/// "Connection refused"), which says more than reqwest's outer layers.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    if error.is_connect() {
        // Say so, since the innermost cause alone may be just "No such file or directory"
        // or "failed to lookup address information".
        return format!("cannot connect: {}", innermost(error));
    }
    innermost(error)
}

/// The message of the innermost cause of an error, without the "(os error N)" suffix.
fn innermost(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text = cause.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The generic poller's payload: the named fields, or the whole reply.
fn pick(json: &Value, fields: &BTreeMap<String, String>) -> Result<Payload, String> {
    let too_deep = |e: crate::json::TooDeep| format!("the reply's {e}");
    if fields.is_empty() {
        return crate::json::to_struct_wrapped(json.clone())
            .map(Payload::Data)
            .map_err(too_deep);
    }
    let mut picked = serde_json::Map::new();
    for (name, pointer) in fields {
        let value = json
            .pointer(pointer)
            .ok_or_else(|| format!("field {name}: nothing at {pointer:?} in the reply"))?;
        picked.insert(name.clone(), value.clone());
    }
    crate::json::to_struct(picked)
        .map(Payload::Data)
        .map_err(too_deep)
}

/// Reads JSON fields by pointer, with errors that say which field and why.
struct Fields<'a>(&'a Value);

impl<'a> Fields<'a> {
    fn get(&self, pointer: &str) -> Result<&'a Value, String> {
        self.0
            .pointer(pointer)
            .ok_or_else(|| format!("field {pointer} is missing"))
    }

    fn string(&self, pointer: &str) -> Result<String, String> {
        match self.get(pointer)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong_type(pointer, "a string", other)),
        }
    }

    /// A string field that may be absent or null.
    fn optional_string(&self, pointer: &str) -> Result<String, String> {
        match self.0.pointer(pointer) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => self.string(pointer),
        }
    }

    fn number(&self, pointer: &str) -> Result<f64, String> {
        self.get(pointer)?.as_f64().ok_or_else(|| {
            wrong_type(
                pointer,
                "a number",
                self.0.pointer(pointer).unwrap_or(&Value::Null),
            )
        })
    }

    fn strings(&self, pointer: &str) -> Result<Vec<String>, String> {
        match self.get(pointer)? {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, _)| self.string(&format!("{pointer}/{i}")))
                .collect(),
            other => Err(wrong_type(pointer, "a list of strings", other)),
        }
    }
}

fn wrong_type(pointer: &str, expected: &str, found: &Value) -> String {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("field {pointer} is {found}, not {expected}")
}

/// `{"Strings": ["...", ...]}`.
fn slugs(json: &Value) -> Result<Payload, String> {
    Ok(Payload::Slugs(pb::Slugs {
        strings: Fields(json).strings("/Strings")?,
    }))
}

/// `{"name", "category", "group", "htmlCode": [...], "unicode": ["U+1F600", ...]}`.
fn emoji(json: &Value) -> Result<Payload, String> {
    let fields = Fields(json);
    let unicode = fields.strings("/unicode")?;
    let character = unicode
        .iter()
        .map(|code| render_code_point(code))
        .collect::<Result<String, String>>()?;
    Ok(Payload::Emoji(pb::Emoji {
        name: fields.string("/name")?,
        category: fields.string("/category")?,
        group: fields.string("/group")?,
        html_codes: fields.strings("/htmlCode")?,
        unicode,
        character,
    }))
}

/// "U+1F600" as the character itself. One code may hold several, space-separated
/// ("U+1F468 U+200D U+1F4BB"), as some emoji are sequences.
fn render_code_point(code: &str) -> Result<String, String> {
    code.split_whitespace()
        .map(|part| {
            let hex = part
                .strip_prefix("U+")
                .or_else(|| part.strip_prefix("u+"))
                .unwrap_or(part);
            u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| {
                    format!("field /unicode holds {code:?}, not a code point like \"U+1F600\"")
                })
        })
        .collect()
}

/// `{"activity", "type", "participants", "price", "accessibility", "link", "key"}`;
/// accessibility is a number from the original API and words from its successor.
fn activity(json: &Value) -> Result<Payload, String> {
    let fields = Fields(json);
    let accessibility = match json.get("accessibility") {
        None | Some(Value::Null) => String::new(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(wrong_type("/accessibility", "a number or a string", other)),
    };
    let participants = fields.number("/participants")?;
    if participants < 0.0 || participants.fract() != 0.0 || participants > f64::from(u32::MAX) {
        return Err(format!(
            "field /participants is {participants}, not a count"
        ));
    }
    Ok(Payload::Activity(pb::Activity {
        activity: fields.string("/activity")?,
        r#type: fields.string("/type")?,
        participants: participants as u32,
        price: fields.number("/price")?,
        accessibility,
        link: fields.optional_string("/link")?,
        key: fields.optional_string("/key")?,
    }))
}

/// OpenAQ v3 `/locations`: `{"results": [{"id", "name", "locality", "country": {"code"},
/// "coordinates": {"latitude", "longitude"}, "datetimeLast": {"utc"},
/// "sensors": [{"parameter": {"name"}}]}]}`.
fn air_quality(json: &Value) -> Result<Payload, String> {
    let Value::Array(results) = Fields(json).get("/results")? else {
        return Err(wrong_type("/results", "a list", &json["results"]));
    };
    let locations = results
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let at = |field: &str| format!("/results/{i}{field}");
            let fields = Fields(json);
            let id = fields.number(&at("/id"))?;
            let parameters = match json.pointer(&at("/sensors")) {
                Some(Value::Array(sensors)) => (0..sensors.len())
                    .map(|s| fields.string(&at(&format!("/sensors/{s}/parameter/name"))))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            Ok(pb::AirQualityLocation {
                id: id as i64,
                name: fields.optional_string(&at("/name"))?,
                locality: fields.optional_string(&at("/locality"))?,
                country: fields.optional_string(&at("/country/code"))?,
                latitude: fields.number(&at("/coordinates/latitude"))?,
                longitude: fields.number(&at("/coordinates/longitude"))?,
                last_updated: fields.optional_string(&at("/datetimeLast/utc"))?,
                parameters,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Payload::AirQuality(pb::AirQuality { locations }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Any JSON document, with the keys the cards look for more likely than others.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            prop::sample::select(vec![
                "slug",
                "emoji",
                "code",
                "activity",
                "type",
                "results",
                "value",
                "parameter",
                "unit",
                "name",
                "measurements",
                "location",
                "0",
                "a",
            ])
            .prop_map(str::to_owned),
            ".{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof!["U\\+[0-9A-Fa-f]{0,9}", ".{0,12}"].prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Cases kept few enough to run in seconds; PROPTEST_CASES=100000 runs them longer.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn every_card_reads_any_json_or_says_why_not(json in json_value(), pointer in "(/[a-z0-9]{0,6}){0,3}") {
            for card in [slugs, emoji, activity, air_quality] {
                if let Err(e) = card(&json) {
                    prop_assert!(!e.is_empty());
                }
            }
            let fields = BTreeMap::from([("x".to_owned(), pointer)]);
            if let Err(e) = pick(&json, &fields) {
                prop_assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn emoji_code_points_render() {
        assert_eq!(render_code_point("U+1F600").unwrap(), "😀");
        assert_eq!(render_code_point("U+1F468 U+200D U+1F4BB").unwrap(), "👨‍💻");
        assert!(render_code_point("U+ZZZZ").is_err());
        assert!(
            render_code_point("U+D800").is_err(),
            "a surrogate is no character"
        );
    }

    #[test]
    fn cards_read_their_apis() {
        let Payload::Slugs(s) = slugs(&json!({"Strings": ["a", "b"]})).unwrap() else {
            panic!()
        };
        assert_eq!(s.strings, ["a", "b"]);
        let e = emoji(
            &json!({"name": "grinning face", "category": "smileys and people",
            "group": "face positive", "htmlCode": ["&#128512;"], "unicode": ["U+1F600"]}),
        )
        .unwrap();
        let Payload::Emoji(e) = e else { panic!() };
        assert_eq!((e.character.as_str(), e.html_codes.len()), ("😀", 1));
        let a = activity(&json!({"activity": "Learn Express.js", "type": "education",
            "participants": 1, "price": 0.1, "accessibility": 0.25, "link": "https://expressjs.com/", "key": "3943506"}))
        .unwrap();
        let Payload::Activity(a) = a else { panic!() };
        assert_eq!((a.participants, a.accessibility.as_str()), (1, "0.25"));
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        assert_eq!(slugs(&json!({})).unwrap_err(), "field /Strings is missing");
        assert_eq!(
            slugs(&json!({"Strings": "abc"})).unwrap_err(),
            "field /Strings is a string, not a list of strings"
        );
        assert_eq!(
            slugs(&json!({"Strings": ["a", 2]})).unwrap_err(),
            "field /Strings/1 is a number, not a string"
        );
        let err =
            activity(&json!({"activity": "x", "type": "y", "participants": "two", "price": 0}))
                .unwrap_err();
        assert_eq!(err, "field /participants is a string, not a number");
    }

    #[test]
    fn air_quality_reads_openaq_v3() {
        let reply = json!({"results": [{"id": 2178, "name": "Del Norte", "locality": "Denver",
            "country": {"code": "US"}, "coordinates": {"latitude": 39.8, "longitude": -104.9},
            "datetimeLast": {"utc": "2026-11-27T12:00:00Z"},
            "sensors": [{"parameter": {"name": "pm25"}}, {"parameter": {"name": "o3"}}]}]});
        let Payload::AirQuality(aq) = air_quality(&reply).unwrap() else {
            panic!()
        };
        let l = &aq.locations[0];
        assert_eq!(
            (l.id, l.country.as_str(), l.parameters.clone()),
            (2178, "US", vec!["pm25".into(), "o3".into()])
        );
        assert!(air_quality(&json!({"results": [{"id": "x"}]})).is_err());
    }

    #[test]
    fn generic_fields_follow_pointers() {
        let reply = json!({"data": {"price": 12.5, "tags": ["a"]}});
        let fields = BTreeMap::from([("price".to_owned(), "/data/price".to_owned())]);
        let Payload::Data(s) = pick(&reply, &fields).unwrap() else {
            panic!()
        };
        assert_eq!(crate::json::from_struct(&s), json!({"price": 12.5}));
        let missing = BTreeMap::from([("x".to_owned(), "/nope".to_owned())]);
        assert!(pick(&reply, &missing).unwrap_err().contains("/nope"));
        let Payload::Data(s) = pick(&json!([1, 2]), &BTreeMap::new()).unwrap() else {
            panic!()
        };
        assert_eq!(crate::json::from_struct(&s), json!({"value": [1, 2]}));
    }
}

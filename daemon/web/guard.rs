//! Which requests the --http listener answers, whatever their route: one gate in front
//! of the whole router, the unknown paths included.
//!
//! Every request must name this daemon in its `Host` (a DNS-rebinding page names its
//! own domain) and must not come from another site's page (its `Origin`, or the
//! browser's `Sec-Fetch-Site`); no CORS headers are ever sent, so no other origin can
//! read a response either. Every request spends its connection's request budget, and
//! needs the bearer token when the daemon has one, but for the page's own files, which
//! carry nothing of this daemon's: so an unauthenticated caller learns nothing, not
//! even which paths exist. The API's requests are checked the same way by its own
//! interceptor, which answers in gRPC, and their bodies must arrive whole within the
//! handshake deadline.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header, uri::Authority},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body::Frame;
use tonic::Status;

use crate::{auth::Token, connection::LimitRequestRate};

/// The names and ports under which a browser may reach this listener.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    /// Host names (lowercase) and IP addresses as they appear in a URL.
    hosts: BTreeSet<String>,
    port: u16,
    tls: bool,
}

impl AllowedHosts {
    /// The bound address itself, `localhost` when it is a loopback one, and the
    /// operator's `names` (host names by which the listener is reached, such as a
    /// reverse proxy's).
    pub fn new(bound: SocketAddr, names: &[String], tls: bool) -> Self {
        let mut hosts: BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        hosts.insert(match bound {
            SocketAddr::V4(addr) => addr.ip().to_string(),
            SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
        });
        if bound.ip().is_loopback() {
            hosts.insert("localhost".into());
        }
        Self {
            hosts,
            port: bound.port(),
            tls,
        }
    }

    /// The scheme browsers use to reach this listener.
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Whether `authority` (a `Host` header, or an origin's host and port) names this
    /// listener; a missing port is the scheme's default.
    fn names_us(&self, authority: &Authority) -> bool {
        let default_port = if self.tls { 443 } else { 80 };
        authority.port_u16().unwrap_or(default_port) == self.port
            && self.hosts.contains(&authority.host().to_ascii_lowercase())
    }

    /// Why a request is refused, if it is.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
        // HTTP/2 carries the host in the request's authority, HTTP/1.1 in `Host`.
        let host = match uri.authority() {
            Some(authority) => Some(authority.clone()),
            None => headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<Authority>().ok()),
        };
        let Some(host) = host else {
            return Err("the request names no host".into());
        };
        if !self.names_us(&host) {
            return Err(format!(
                "{host} is not a name of this daemon's dashboard; if it is yours, start \
                 streamd with --http-host {}",
                host.host()
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let from_us = origin
                .to_str()
                .ok()
                .and_then(|o| o.parse::<Uri>().ok())
                .is_some_and(|o| {
                    o.scheme_str() == Some(self.scheme())
                        && o.path() == "/"
                        && o.authority().is_some_and(|a| self.names_us(a))
                });
            if !from_us {
                return Err("requests from other sites' pages are refused".into());
            }
        }
        // Browsers that send no Origin (a GET for an image, say) still say where the
        // request came from; following a link here from elsewhere is allowed.
        let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
        let navigation = method == Method::GET
            && headers.get("sec-fetch-mode").map(|v| v.as_bytes()) == Some(b"navigate");
        if matches!(site, Some(b"cross-site" | b"same-site")) && !navigation {
            return Err("requests from other sites' pages are refused".into());
        }
        Ok(())
    }
}

/// Who may use the listener, and how: the gate every request passes.
pub struct Gate {
    pub allowed: AllowedHosts,
    pub token: Option<Token>,
    pub rate: LimitRequestRate,
    /// The paths anyone may fetch: the page's own files.
    pub public: &'static [&'static str],
    /// The API's prefix: its requests are checked by its interceptor.
    pub api: String,
}

/// Middleware: answers 403 to requests the hosts refuse, 429 to those past their
/// connection's budget and 401 to those without the token, each saying why.
pub async fn admit(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if let Err(why) = gate
        .allowed
        .check(request.method(), request.uri(), request.headers())
    {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let path = request.uri().path();
    if !path.starts_with(&gate.api) {
        if let Err(why) = gate.rate.check(request.extensions()) {
            return (StatusCode::TOO_MANY_REQUESTS, format!("{why}\n")).into_response();
        }
        if let Some(token) = &gate.token
            && !gate.public.contains(&path)
        {
            let sent = request.headers().get(header::AUTHORIZATION);
            if let Err(why) =
                crate::auth::admit(token, sent.map(HeaderValue::as_bytes), request.extensions())
            {
                let mut refused = (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
                refused
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return refused;
            }
        }
    }
    next.run(request).await
}

/// An API request's body as the gRPC-Web translation hands it on: it must arrive whole
/// by a deadline, so that one trickled in a byte at a time holds its request no
/// longer; and what the translation cannot read (bad base64, say) is the client's
/// fault, INVALID_ARGUMENT rather than INTERNAL.
pub struct ApiBody {
    body: tonic::body::Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl ApiBody {
    pub fn new(body: tonic::body::Body, limit: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| {
                frame.map_err(|status| {
                    let message = status.message();
                    Status::invalid_argument(message.strip_prefix("tonic-web: ").unwrap_or(message))
                })
            }));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request's body did not arrive whole within {:?} (--handshake-timeout)",
                self.limit
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> AllowedHosts {
        AllowedHosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["dash.example".into()],
            false,
        )
    }

    fn check(host: &str, extra: &[(&'static str, &str)]) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        for (name, value) in extra {
            headers.insert(*name, value.parse().unwrap());
        }
        allowed().check(&Method::POST, &Uri::from_static("/"), &headers)
    }

    #[test]
    fn the_listen_address_localhost_and_configured_names_are_served() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "dash.example:8080",
        ] {
            assert_eq!(check(host, &[]), Ok(()), "{host}");
        }
        let origin = [("origin", "http://localhost:8080")];
        assert_eq!(check("localhost:8080", &origin), Ok(()));
    }

    #[test]
    fn other_hosts_and_ports_are_refused() {
        for host in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost.evil:8080",
        ] {
            let why = check(host, &[]).unwrap_err();
            assert!(why.contains("--http-host"), "{host}: {why}");
        }
    }

    #[test]
    fn other_origins_are_refused() {
        for origin in [
            "http://evil.example",
            "http://localhost:8081",
            "https://localhost:8080",
            "null",
        ] {
            let refused = check("localhost:8080", &[("origin", origin)]);
            assert!(refused.is_err(), "{origin}");
        }
        let cross = check("localhost:8080", &[("sec-fetch-site", "cross-site")]);
        assert!(cross.is_err());
    }

    #[test]
    fn a_link_from_elsewhere_may_open_the_page() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "localhost:8080".parse().unwrap());
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        headers.insert("sec-fetch-mode", "navigate".parse().unwrap());
        let page = allowed().check(&Method::GET, &Uri::from_static("/"), &headers);
        assert_eq!(page, Ok(()));
        let post = allowed().check(&Method::POST, &Uri::from_static("/"), &headers);
        assert!(post.is_err());
    }
}

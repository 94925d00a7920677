//! Which browser requests the --http listener answers. The page can start and stop
//! services, so a request must name this daemon in its `Host` (a DNS-rebinding page
//! names its own domain) and must not come from another site's page (its `Origin`, or
//! the browser's `Sec-Fetch-Site`). No CORS headers are ever sent, so no other origin
//! can read a response either.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, Uri, header, uri::Authority},
    middleware::Next,
    response::{IntoResponse, Response},
};

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

/// Middleware: answers 403, saying why, to requests the hosts refuse.
pub async fn refuse_foreign(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match allowed.check(request.method(), request.uri(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(why) => (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
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

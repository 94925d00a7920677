//! The --http listener: the dashboard page, the same gRPC API translated to gRPC-Web
//! for the browser (tonic-web), the images the `images` services publish and /metrics.
//! Behind the same TLS, token and connection limits as the gRPC listener, through one
//! gate for every route (see guard.rs), answering only requests that name this daemon
//! and come from its own page.

mod dashboard;
mod guard;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{
        HeaderMap, StatusCode,
        header::{ACCEPT, CONTENT_TYPE},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Interceptor, transport::server::TcpIncoming};
use tower_http::catch_panic::CatchPanicLayer;

pub use self::guard::AllowedHosts;
use self::guard::{ApiBody, Gate};
use crate::{
    api::{self, ControlPlane, StreamHandlerServer},
    auth::{Access, RequireToken},
    connection::{self, LimitRequestRate},
    metrics,
    supervisor::Supervisor,
};

/// A bound --http listener and the host names it answers to.
pub struct HttpListener {
    pub listener: TcpListener,
    pub allowed: AllowedHosts,
}

impl HttpListener {
    /// Binds `addr`; `names` are further host names the dashboard is reached by.
    pub async fn bind(addr: SocketAddr, names: &[String], tls: bool) -> Result<Self, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--http: cannot listen on {addr}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("--http {addr}: {e}"))?;
        Ok(Self {
            listener,
            allowed: AllowedHosts::new(bound, names, tls),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// `GET /metrics`: every metric, for Prometheus, in OpenMetrics or the older text
/// format as asked; behind the bearer token, as every route is, when the daemon has one
/// (Prometheus sends it with `authorization` in its scrape config).
async fn metrics(State(supervisor): State<Supervisor>, headers: HeaderMap) -> Response {
    let bus = supervisor.bus();
    let now = metrics::Now {
        services: supervisor.services(),
        subscribers: bus.subscribers(),
        topics: bus.topics(),
        overflows: bus.overflows(),
    };
    let text = supervisor.environment().metrics.render(&now);
    // Prometheus asks for OpenMetrics; anything else (curl, older scrapers) gets the
    // older text format.
    let open_metrics = headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if open_metrics {
        ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
    } else {
        let text = metrics::classic_text(&text);
        ([(CONTENT_TYPE, metrics::CLASSIC_CONTENT_TYPE)], text).into_response()
    }
}

/// The page's own files: the same bytes in every streamd, nothing of this one's, so
/// fetched without the token (the page asks for it when the API refuses).
const PUBLIC: &[&str] = &["/", "/app.js", "/app.css", "/favicon.ico"];

/// The listener's router, and every path it was given a route for.
pub(crate) struct Routes {
    router: axum::Router,
    paths: Vec<String>,
}

impl Routes {
    fn route(mut self, path: &str, route: axum::routing::MethodRouter) -> Self {
        self.router = self.router.route(path, route);
        self.paths.push(path.to_owned());
        self
    }
}

/// The StreamHandler API as the listener serves it, and the path it is served under:
/// translated from gRPC-Web for browsers (plain gRPC passes through), each RPC passing
/// the same request budget and token checks as on the gRPC listener, answered in gRPC,
/// and its body held to the handshake deadline.
fn browser_api(control: ControlPlane, access: &Access) -> (String, axum::Router) {
    let mut budget = LimitRequestRate(access.limits.request_rate);
    let mut token = RequireToken(access.token.clone());
    let checks = move |request| budget.call(request).and_then(|request| token.call(request));
    let deadline = access.limits.handshake_timeout;
    let api = tower::ServiceBuilder::new()
        .map_request(|request: http::Request<axum::body::Body>| request.map(tonic::body::Body::new))
        .layer(tonic_web::GrpcWebLayer::new())
        .map_request(move |request: http::Request<tonic::body::Body>| {
            request.map(|body| tonic::body::Body::new(ApiBody::new(body, deadline)))
        })
        .service(StreamHandlerServer::with_interceptor(control, checks));
    let path = format!("/{}/{{*method}}", StreamHandlerServer::<ControlPlane>::NAME);
    let router = axum::Router::new().route_service(&path, api);
    (path, router)
}

/// Every route of the listener behind its gate.
pub(crate) fn routes(control: ControlPlane, access: &Access, allowed: AllowedHosts) -> Routes {
    let supervisor = control.supervisor().clone();
    let (api_path, api) = browser_api(control, access);
    let gate = Gate {
        allowed,
        token: access.token.clone(),
        rate: LimitRequestRate(access.limits.request_rate),
        public: PUBLIC,
        api: api_path.trim_end_matches("{*method}").to_owned(),
    };
    let routes = Routes {
        router: api,
        paths: vec![api_path],
    }
    .route("/", get(|| async { dashboard::INDEX.response() }))
    .route("/app.js", get(|| async { dashboard::SCRIPT.response() }))
    .route("/app.css", get(|| async { dashboard::STYLES.response() }))
    // Browsers ask for it whatever the page says; there is none to send.
    .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
    .route(
        "/images/{service}/{file}",
        get(dashboard::image).with_state(supervisor.clone()),
    )
    .route("/metrics", get(metrics).with_state(supervisor));
    Routes {
        router: routes
            .router
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(gate),
                guard::admit,
            )),
        paths: routes.paths,
    }
}

/// Serves the dashboard on `http` until `stop` resolves.
pub async fn serve(
    http: HttpListener,
    access: &Access,
    control: ControlPlane,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = routes(control, access, http.allowed).router;
    let server = connection::builder()
        .accept_http1(true)
        .layer(CatchPanicLayer::custom(api::internal_error))
        .add_routes(tonic::service::Routes::from(router));
    let incoming = TcpIncoming::from(http.listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(connection::KEEPALIVE));
    let incoming = connection::admit(incoming, access.limits, access.handshake_end());
    match &access.tls {
        None => server.serve_with_incoming_shutdown(incoming, stop).await,
        // Browsers speak either; other fetch clients (Node's, say) HTTP/1.1 only.
        Some(tls) => {
            let acceptor = tls.acceptor(&[b"h2", b"http/1.1"]);
            let incoming = connection::handshakes(incoming, acceptor, access.limits);
            server.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, header};
    use tower::ServiceExt;

    use super::*;
    use crate::{auth::Token, bus::Bus, services::Environment};

    /// Every route of a listener whose daemon has a token.
    fn listener() -> Routes {
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        let supervisor = Supervisor::new(Bus::local(), env, Default::default(), Vec::new(), None);
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret").unwrap();
        let access = Access {
            token: Some(Token::read(&token_file).unwrap()),
            ..Access::default()
        };
        let allowed = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &[], false);
        routes(ControlPlane::new(supervisor, None), &access, allowed)
    }

    /// A request for `path`, its parameters filled in, as the page or a script would
    /// send it to this listener.
    fn request(path: &str, authorization: Option<&str>) -> Request<axum::body::Body> {
        let path = path
            .replace("{service}", "images")
            .replace("{file}", "bee.png")
            .replace("{*method}", "ListServices");
        let method = if path.starts_with("/streamhandler") {
            "POST"
        } else {
            "GET"
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/grpc-web+proto");
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
            .body(axum::body::Body::from(vec![0, 0, 0, 0, 0]))
            .unwrap()
    }

    async fn send(routes: &Routes, request: Request<axum::body::Body>) -> Response {
        routes.router.clone().oneshot(request).await.unwrap()
    }

    /// The gRPC status of a refused gRPC-Web call: a trailers-only answer's.
    fn grpc_status(response: &Response) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    #[tokio::test]
    async fn every_route_but_the_pages_own_files_needs_the_token() {
        let routes = listener();
        assert!(routes.paths.len() >= 7, "{:?}", routes.paths);
        let unknown = "/no/such/path".to_owned();
        for path in routes.paths.iter().chain([&unknown]) {
            let response = send(&routes, request(path, None)).await;
            if path.starts_with("/streamhandler.v1.StreamHandler/") {
                assert_eq!(grpc_status(&response), Some("16"), "{path}");
            } else if PUBLIC.contains(&path.as_str()) {
                assert!(response.status().is_success(), "{path}: {response:?}");
            } else {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
                assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
                let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                assert!(
                    String::from_utf8_lossy(&body).contains("bearer token"),
                    "{path}: {body:?}"
                );
            }
            // A wrong token fares no better.
            let response = send(&routes, request(path, Some("Bearer guess"))).await;
            if !PUBLIC.contains(&path.as_str()) && !path.starts_with("/streamhandler") {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            }
        }
        // With the token, a route says what it knows.
        let response = send(
            &routes,
            request("/images/nope/x.png", Some("Bearer s3cret")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn every_route_refuses_a_foreign_host() {
        let routes = listener();
        for path in &routes.paths {
            let mut request = request(path, Some("Bearer s3cret"));
            request
                .headers_mut()
                .insert(header::HOST, "evil.example:8080".parse().unwrap());
            let response = send(&routes, request).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        }
    }
}

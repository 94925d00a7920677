//! The --http listener: the dashboard page, the same gRPC API translated to gRPC-Web
//! for the browser (tonic-web), and the images the `images` services publish. Behind
//! the same TLS, token and connection limits as the gRPC listener, and answering only
//! requests that name this daemon and come from its own page.

mod dashboard;
mod guard;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{
        HeaderMap, StatusCode,
        header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tower_http::catch_panic::CatchPanicLayer;

pub use self::guard::AllowedHosts;
use crate::{
    api::{self, ControlPlane},
    auth::{Access, Token},
    connection::{self, HandshakeEnd},
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
/// format as asked; behind the bearer token when the daemon has one (Prometheus sends
/// it with `authorization` in its scrape config).
async fn metrics(
    State((supervisor, token)): State<(Supervisor, Option<Token>)>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = &token {
        let sent = headers.get(AUTHORIZATION).map(|value| value.as_bytes());
        if let Err(why) = token.admits(sent) {
            return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
        }
    }
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

/// Serves the dashboard on `http` until `stop` resolves.
pub async fn serve(
    http: HttpListener,
    access: &Access,
    control: ControlPlane,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let supervisor = control.supervisor().clone();
    let router = api::browser_api(control, access)
        .route("/", get(|| async { dashboard::INDEX.response() }))
        .route("/app.js", get(|| async { dashboard::SCRIPT.response() }))
        .route("/app.css", get(|| async { dashboard::STYLES.response() }))
        // Browsers ask for it whatever the page says; there is none to send.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/images/{service}/{file}",
            get(dashboard::image).with_state(supervisor.clone()),
        )
        .route(
            "/metrics",
            get(metrics).with_state((supervisor, access.token.clone())),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(http.allowed),
            guard::refuse_foreign,
        ));
    let server = connection::builder()
        .accept_http1(true)
        .layer(CatchPanicLayer::custom(api::internal_error))
        .add_routes(Routes::from(router));
    let incoming = TcpIncoming::from(http.listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(connection::KEEPALIVE));
    match &access.tls {
        None => {
            let incoming = connection::admit(incoming, access.limits, HandshakeEnd::Greeting);
            server.serve_with_incoming_shutdown(incoming, stop).await
        }
        // Browsers speak either; other fetch clients (Node's, say) HTTP/1.1 only.
        Some(tls) => {
            let incoming = connection::admit(incoming, access.limits, HandshakeEnd::Tls);
            let acceptor = tls.acceptor(&[b"h2", b"http/1.1"]);
            let incoming = connection::handshakes(incoming, acceptor, access.limits);
            server.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}

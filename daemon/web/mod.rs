//! The --http listener: the dashboard page, the same gRPC API translated to gRPC-Web
//! for the browser (tonic-web), and the images the `images` services publish. Behind
//! the same TLS, token and connection limits as the gRPC listener, and answering only
//! requests that name this daemon and come from its own page.

mod dashboard;
mod guard;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{http::StatusCode, routing::get};
use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::{service::Routes, transport::server::TcpIncoming};
use tower_http::catch_panic::CatchPanicLayer;

use self::dashboard::Images;
pub use self::guard::AllowedHosts;
use crate::{auth::Access, connection, server, supervisor::Supervisor};

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

/// Serves the dashboard on `http` until `stop` resolves.
pub async fn serve(
    http: HttpListener,
    access: &Access,
    supervisor: Supervisor,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let images = Images {
        data_dir: Arc::new(supervisor.environment().data_dir.clone()),
        supervisor: supervisor.clone(),
    };
    let router = server::browser_api(supervisor, access)
        .route("/", get(|| async { dashboard::INDEX.response() }))
        .route("/app.js", get(|| async { dashboard::SCRIPT.response() }))
        .route("/app.css", get(|| async { dashboard::STYLES.response() }))
        // Browsers ask for it whatever the page says; there is none to send.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/images/{service}/{file}",
            get(dashboard::image).with_state(images),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(http.allowed),
            guard::refuse_foreign,
        ));
    let server = server::builder()
        .accept_http1(true)
        .layer(CatchPanicLayer::custom(server::internal_error))
        .add_routes(Routes::from(router));
    let incoming = TcpIncoming::from(http.listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(server::KEEPALIVE));
    let incoming = connection::admit(incoming, access.limits);
    match &access.tls {
        None => server.serve_with_incoming_shutdown(incoming, stop).await,
        Some(tls) => {
            let incoming = handshakes(incoming, tls.http.clone(), access.limits.handshake_timeout);
            server.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}

/// TLS handshakes with the connections `incoming` admits, side by side, each within
/// `deadline`; those that fail are dropped (and logged at debug).
fn handshakes<IO>(
    incoming: impl Stream<Item = std::io::Result<IO>>,
    config: Arc<rustls::ServerConfig>,
    deadline: Duration,
) -> impl Stream<Item = std::io::Result<TlsStream<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(config);
    incoming
        .filter_map(|accepted| std::future::ready(accepted.ok()))
        .map(move |io| tokio::time::timeout(deadline, acceptor.accept(io)))
        .buffer_unordered(MAX_HANDSHAKES)
        .filter_map(|handshake| {
            std::future::ready(match handshake {
                Ok(Ok(tls)) => Some(Ok(tls)),
                Ok(Err(e)) => {
                    tracing::debug!("dashboard TLS handshake failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!("dashboard TLS handshake past --handshake-timeout");
                    None
                }
            })
        })
}

/// Handshakes in progress at once; more connections wait their turn, and a stalled
/// one holds its place no longer than the handshake deadline.
const MAX_HANDSHAKES: usize = 128;

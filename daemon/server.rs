//! The listeners: the gRPC control plane (the StreamHandler API, gRPC health and server
//! reflection) and the dashboard's, served until shutdown and drained after it.

use std::{fmt::Display, future::Future, pin::pin, sync::Arc};

use futures::{Stream, StreamExt, TryStreamExt};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{oneshot, watch},
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    service::{InterceptorLayer, Routes},
    transport::server::{Connected, TcpIncoming},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    api::{ControlPlane, StreamHandlerServer, internal_error},
    auth::{Access, RequireToken},
    connection::{self, Admission, Admitted, KEEPALIVE, LimitRequestRate},
    lanes::{ConnectionLane, LaneExecutor, LaneIo, Lanes, QuietLane},
    listen::Listener,
    pb,
    web::{self, HttpListener},
};

/// Where the daemon is reached: the gRPC control plane, and the dashboard if asked for;
/// and how the control plane's quiet connections are served.
pub struct Listeners {
    pub grpc: Listener,
    pub http: Option<HttpListener>,
    pub quiet_lane: QuietLane,
}

/// Serves the control plane, and the dashboard when asked for, to the clients `access`
/// admits until `shutdown` resolves, then stops every service, ends every Subscribe
/// stream and returns once all connections are closed.
pub async fn serve(
    Listeners {
        grpc: listener,
        http,
        quiet_lane,
    }: Listeners,
    access: Access,
    control: ControlPlane,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let supervisor = control.supervisor().clone();
    let metrics = &supervisor.environment().metrics;
    // The quiet lane's thread stops as this returns, once the connections are closed.
    let (lanes, _quiet_thread) = Lanes::start(
        quiet_lane,
        metrics.connections("quiet"),
        metrics.connections("busy"),
    )
    .map_err(|e| anyhow::anyhow!("cannot start the quiet lane: {e}"))?;
    let dashboard_api = control.clone();
    let control = StreamHandlerServer::new(control);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StreamHandlerServer<ControlPlane>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the descriptor sets are built by build.rs and tonic-health");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the descriptor sets are built by build.rs and tonic-health");

    let (closed, bus_closed) = oneshot::channel();
    // The dashboard's listener stops with the gRPC one, once the streams have ended.
    let stopped = CancellationToken::new();
    let dashboard = http.map(|http| {
        web::serve(
            http,
            &access,
            dashboard_api,
            stopped.clone().cancelled_owned(),
        )
    });
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: stopping services");
        health
            .set_not_serving::<StreamHandlerServer<ControlPlane>>()
            .await;
        supervisor.shutdown().await;
        // Subscribe streams end once they have sent the services' last events.
        supervisor.bus().close();
        stopped.cancel();
        let _ = closed.send(());
    };
    let limits = access.limits;
    let service = ServiceBuilder::new()
        // Outermost, so that a panic anywhere below, the token check included, is
        // caught and answered.
        .layer(CatchPanicLayer::custom(internal_error))
        // Before the token check, so that guessing tokens is paced too.
        .layer(InterceptorLayer::new(LimitRequestRate(limits.request_rate)))
        .layer(InterceptorLayer::new(RequireToken(access.token.clone())))
        .service(
            Routes::new(control)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .prepare(),
        );
    let tls = access.tls.clone();
    let handshake_end = access.handshake_end();
    let grpc = async move {
        match listener {
            // Events are small and latency matters more than packet count; keepalives
            // find subscribers whose host vanished without closing the connection.
            Listener::Tcp(listener) => {
                let lanes = lanes.clone();
                let incoming = TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(KEEPALIVE))
                    .map_ok(move |socket| LaneIo::new(socket, lanes.connection()));
                match tls {
                    None => {
                        let incoming = connection::admit(incoming, limits, handshake_end);
                        serve_connections(incoming, service, stop).await
                    }
                    Some(tls) => {
                        let incoming = connection::admit(incoming, limits, handshake_end);
                        let incoming =
                            connection::handshakes(incoming, tls.acceptor(&[b"h2"]), limits);
                        serve_connections(incoming, service, stop).await
                    }
                }
            }
            // The file is removed once the server is done with it.
            Listener::Unix {
                listener,
                file: _file,
            } => {
                let incoming = UnixListenerStream::new(listener)
                    .map_ok(|socket| LaneIo::new(socket, lanes.connection()));
                let incoming = connection::admit(incoming, limits, handshake_end);
                serve_connections(incoming, service, stop).await
            }
        }
        Ok(())
    };
    let servers = async move {
        match dashboard {
            None => grpc.await,
            Some(dashboard) => {
                let (grpc, dashboard) = tokio::join!(grpc, dashboard);
                grpc.and(dashboard)
            }
        }
    };
    // A subscriber that stopped reading would hold its stream open forever.
    let drain_deadline = async {
        match bus_closed.await {
            Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = servers => Ok(result?),
        () = drain_deadline => {
            tracing::warn!("subscribers still connected {DRAIN_TIMEOUT:?} after shutdown; closing");
            Ok(())
        }
    }
}

/// How long subscribers get to receive the last events at shutdown.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves gRPC on the connections `incoming` yields, each on its lane, until `stop`
/// resolves; then stops listening, asks each connection to finish its streams, and
/// returns once all have closed.
async fn serve_connections<IO, E, S, B>(
    incoming: impl Stream<Item = Result<IO, E>>,
    service: S,
    stop: impl Future<Output = ()>,
) where
    IO: Client + AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Display,
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (closing, open) = watch::channel(());
    {
        // Dropped as soon as the loop ends: the listening socket closes with it.
        let mut incoming = pin!(incoming);
        let mut stop = pin!(stop);
        loop {
            let io = tokio::select! {
                () = &mut stop => break,
                accepted = incoming.next() => match accepted {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        tracing::debug!("accepting a connection failed: {e}");
                        continue;
                    }
                    None => break,
                },
            };
            let lane = io.lane().clone();
            let admission = io.admission();
            let service = service.clone();
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let mut request = request.map(Body::new);
                // The request-rate and token checks find the connection's here.
                request.extensions_mut().insert(admission.clone());
                service.clone().oneshot(request)
            });
            let served = connection::http2(LaneExecutor(lane.clone()))
                .serve_connection(TokioIo::new(io), service);
            let mut closing = open.clone();
            lane.spawn(async move {
                let mut served = pin!(served);
                tokio::select! {
                    result = served.as_mut() => return log_end(result),
                    _ = closing.changed() => served.as_mut().graceful_shutdown(),
                }
                log_end(served.await);
            });
        }
    }
    let _ = closing.send(());
    drop(open);
    closing.closed().await;
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!("a connection ended: {e}");
    }
}

/// What the server needs of an accepted connection, under whatever layers it has.
trait Client {
    fn lane(&self) -> &Arc<ConnectionLane>;
    fn admission(&self) -> Admission;
}

impl<S: crate::lanes::Rehome> Client for Admitted<LaneIo<S>> {
    fn lane(&self) -> &Arc<ConnectionLane> {
        self.get_ref().lane()
    }

    fn admission(&self) -> Admission {
        self.connect_info()
    }
}

impl<IO: Client> Client for TlsStream<IO> {
    fn lane(&self) -> &Arc<ConnectionLane> {
        self.get_ref().0.lane()
    }

    fn admission(&self) -> Admission {
        self.get_ref().0.admission()
    }
}

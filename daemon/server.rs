//! The listeners: the gRPC control plane (the StreamHandler API, gRPC health and server
//! reflection) and the dashboard's, served until shutdown and drained after it.

use std::future::Future;

use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{service::InterceptorLayer, transport::server::TcpIncoming};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    api::{ControlPlane, StreamHandlerServer, internal_error},
    auth::{Access, RequireToken},
    connection::{self, KEEPALIVE, LimitRequestRate, builder},
    listen::Listener,
    pb,
    web::{self, HttpListener},
};

/// Where the daemon is reached: the gRPC control plane, and the dashboard if asked for.
pub struct Listeners {
    pub grpc: Listener,
    pub http: Option<HttpListener>,
}

/// Serves the control plane, and the dashboard when asked for, to the clients `access`
/// admits until `shutdown` resolves, then stops every service, ends every Subscribe
/// stream and returns once all connections are closed.
pub async fn serve(
    Listeners {
        grpc: listener,
        http,
    }: Listeners,
    access: Access,
    control: ControlPlane,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let supervisor = control.supervisor().clone();
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
    let router = builder()
        // Outermost, so that a panic anywhere below, the token check included, is
        // caught and answered.
        .layer(CatchPanicLayer::custom(internal_error))
        // Before the token check, so that guessing tokens is paced too.
        .layer(InterceptorLayer::new(LimitRequestRate(limits.request_rate)))
        .layer(InterceptorLayer::new(RequireToken(access.token.clone())))
        .add_service(control)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let tls = access.tls.clone();
    let grpc = async move {
        match listener {
            // Events are small and latency matters more than packet count; keepalives
            // find subscribers whose host vanished without closing the connection.
            Listener::Tcp(listener) => {
                let incoming = TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(KEEPALIVE));
                let incoming = connection::admit(incoming, limits);
                match tls {
                    None => router.serve_with_incoming_shutdown(incoming, stop).await,
                    Some(tls) => {
                        let incoming =
                            connection::handshakes(incoming, tls.acceptor(&[b"h2"]), limits);
                        router.serve_with_incoming_shutdown(incoming, stop).await
                    }
                }
            }
            // The file is removed once the server is done with it.
            Listener::Unix {
                listener,
                file: _file,
            } => {
                let incoming = connection::admit(UnixListenerStream::new(listener), limits);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
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
        result = servers => result,
        () = drain_deadline => {
            tracing::warn!("subscribers still connected {DRAIN_TIMEOUT:?} after shutdown; closing");
            Ok(())
        }
    }
}

/// How long subscribers get to receive the last events at shutdown.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

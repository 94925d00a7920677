//! `--otlp-endpoint`: the daemon's spans (each service's steps, each RPC) exported to
//! an OpenTelemetry collector over OTLP/HTTP with protobuf, in batches from a thread
//! of the SDK's own. Built with the `otlp` feature only.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{Layer, Registry};

/// The layer that hands spans to the exporter, and the provider to shut down at exit
/// so that the last batch is sent.
pub fn layer(
    endpoint: &str,
) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, SdkTracerProvider), String> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("streamd").build())
        .build();
    let tracer = provider.tracer("streamd");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    Ok((layer, provider))
}

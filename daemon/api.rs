//! The `streamhandler.v1.StreamHandler` service as the daemon implements it: each RPC
//! checked and answered from the supervisor, the bus and, on a node of a cluster, the
//! placement of services; the same service as the --http listener serves it to browsers.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    bus::{Overflow, Published, SubscribeOptions},
    cluster::Placement,
    duration,
    error::Error,
    metrics::Metrics,
    pb::{self},
    services::Params,
    supervisor::{Overrides, Supervisor},
    topic::{self, TopicFilter},
    wire::{EncodedEvent, EncodedStruct, RawPublish},
};

/// The server side of the API as the daemon implements it: identical on the wire to
/// the one in `pb`, but its Subscribe stream yields pre-encoded events.
mod generated {
    include!(concat!(env!("OUT_DIR"), "/daemon/streamhandler.v1.rs"));
}

use generated::stream_handler_server::StreamHandler;
pub(crate) use generated::stream_handler_server::StreamHandlerServer;

/// The answer to an RPC whose handler panicked; the panic hook has logged it.
pub(crate) fn internal_error(
    _panic: Box<dyn std::any::Any + Send>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    Status::internal("the daemon failed while handling this request; its log says why").into_http()
}

/// What the API answers from: the supervisor, and when the daemon is a node of a
/// cluster, the cluster's placement of services and its members.
#[derive(Clone)]
pub struct ControlPlane {
    supervisor: Supervisor,
    placement: Option<Placement>,
    /// Held by the one Subscribe that compiles patterns and reads topics' names.
    scanning: Arc<tokio::sync::Semaphore>,
}

impl ControlPlane {
    pub fn new(supervisor: Supervisor, placement: Option<Placement>) -> Self {
        Self {
            supervisor,
            placement,
            scanning: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Runs one RPC's handler in a span that names it, so that what it logs says which
    /// RPC it came from, and counts it by method and outcome for /metrics. A stream's
    /// events are sent outside the span: entering one per event would cost more than
    /// the rest of the way.
    async fn observe<T>(
        &self,
        method: &'static str,
        handler: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let began = Instant::now();
        let span = tracing::info_span!("rpc", method);
        let result = handler.instrument(span).await;
        let code = result.as_ref().err().map_or(tonic::Code::Ok, Status::code);
        let metrics = &self.supervisor.environment().metrics;
        metrics.rpc(method, code, began.elapsed());
        result
    }
}

/// A Subscribe stream's life: what it delivered goes to the metrics now and then, its
/// length when it is dropped.
struct StreamLife {
    metrics: Metrics,
    began: Instant,
    /// Events delivered and not yet counted: counted in batches, as the shared counter
    /// costs more than the stream's own.
    unreported: u64,
}

impl StreamLife {
    fn delivered(&mut self) {
        const BATCH: u64 = 1024;
        self.unreported += 1;
        if self.unreported == BATCH {
            self.metrics.delivered(BATCH);
            self.unreported = 0;
        }
    }
}

impl Drop for StreamLife {
    fn drop(&mut self) {
        self.metrics.delivered(self.unreported);
        self.metrics.stream_ended(self.began.elapsed());
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<EncodedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl StreamHandler for ControlPlane {
    async fn start_service(
        &self,
        request: Request<pb::StartServiceRequest>,
    ) -> Result<Response<pb::StartServiceResponse>, Status> {
        self.observe("StartService", async move {
            let request = request.into_inner();
            let interval = request
                .interval
                .map(|d| {
                    std::time::Duration::try_from(d)
                        .map_err(|_| "must be greater than zero".to_owned())
                        .and_then(|d| duration::check(d, duration::Zero::Refused))
                        .map_err(|message| Error::invalid("interval", message))
                })
                .transpose()?;
            let mut params: Params = request.params.into_iter().collect();
            // Not a parameter of the service: where in a cluster it runs.
            let node = params.remove(NODE_PARAM);
            let overrides = Overrides { interval, params };
            let started = match (&self.placement, node) {
                (Some(placement), node) => placement.start(&request.name, overrides, node).await?,
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        format!("params.{NODE_PARAM}"),
                        "places a service on a node of a cluster, and this daemon runs alone",
                    )
                    .into());
                }
                (None, None) => self.supervisor.start(&request.name, overrides).await?,
            };
            Ok(Response::new(pb::StartServiceResponse {
                already_running: started.already_running,
                service: Some(started.service),
            }))
        })
        .await
    }

    async fn stop_service(
        &self,
        request: Request<pb::StopServiceRequest>,
    ) -> Result<Response<pb::StopServiceResponse>, Status> {
        self.observe("StopService", async move {
            let name = request.into_inner().name;
            let stopped = match &self.placement {
                Some(placement) => placement.stop(&name).await?,
                None => self.supervisor.stop(&name).await?,
            };
            Ok(Response::new(pb::StopServiceResponse {
                was_running: stopped.was_running,
                forced: stopped.forced,
                service: Some(stopped.service),
            }))
        })
        .await
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.observe("ListServices", async move {
            let daemon = Some(self.supervisor.stats());
            let Some(placement) = &self.placement else {
                return Ok(Response::new(pb::ListServicesResponse {
                    services: self.supervisor.services(),
                    daemon,
                    ..Default::default()
                }));
            };
            let listing = placement.listing().await;
            Ok(Response::new(pb::ListServicesResponse {
                services: listing.services,
                node_id: placement.membership().node_id().to_owned(),
                nodes: listing.nodes,
                cluster_warning: listing.warning,
                daemon,
            }))
        })
        .await
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.observe("ListNodes", async move {
            let Some(placement) = &self.placement else {
                return Ok(Response::new(pb::ListNodesResponse::default()));
            };
            let membership = placement.membership();
            let members = membership.members().await.map_err(Error::Unavailable)?;
            Ok(Response::new(pb::ListNodesResponse {
                node_id: membership.node_id().to_owned(),
                nodes: members.into_iter().map(|m| m.node).collect(),
            }))
        })
        .await
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.observe("Subscribe", async move {
            let request = request.into_inner();
            let overflow = match pb::OverflowPolicy::try_from(request.on_overflow) {
                Ok(pb::OverflowPolicy::Unspecified | pb::OverflowPolicy::Skip) => Overflow::Skip,
                Ok(pb::OverflowPolicy::Close) => Overflow::Close,
                Err(_) => {
                    return Err(Error::invalid(
                        "on_overflow",
                        format!("{} is not an OverflowPolicy", request.on_overflow),
                    )
                    .into());
                }
            };
            let scans = TopicFilter::scans_topics(&request.topics);
            let bus = self.supervisor.bus().clone();
            let subscribe = move || {
                let filter = TopicFilter::new(&request.topics).map_err(|bad| match bad.index {
                    Some(i) => Error::invalid(format!("topics[{i}]"), bad.message),
                    None => Error::invalid("topics", bad.message),
                })?;
                bus.subscribe(SubscribeOptions {
                    filter,
                    last: request.last,
                    buffer: (request.buffer_bytes > 0).then_some(request.buffer_bytes),
                    overflow,
                })
                .map_err(Error::from)
            };
            let events = if scans {
                // Compiling patterns and reading every topic's name take milliseconds
                // at most, but not on the threads that carry every stream's events;
                // and one Subscribe at a time, so that they take at most one core.
                let _turn = self.scanning.acquire().await;
                match tokio::task::spawn_blocking(subscribe).await {
                    Ok(subscribed) => subscribed,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => Err(Error::ShuttingDown),
                }
            } else {
                subscribe()
            }?
            .map(|event| event.map_err(|full| Error::BufferFull(full).into()));
            // Counted in the metrics when the stream ends, however it ends.
            let mut life = StreamLife {
                metrics: self.supervisor.environment().metrics.clone(),
                began: Instant::now(),
                unreported: 0,
            };
            let events = events.map(move |event| {
                life.delivered();
                event
            });
            Ok(Response::new(Box::pin(events) as EventStream))
        })
        .await
    }

    async fn publish(
        &self,
        request: Request<RawPublish>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.observe("Publish", async move {
            let published = self.publish_one(request.into_inner(), &mut CheckedTopic::default())?;
            let seq = published.seq().await.map_err(Error::from)?;
            Ok(Response::new(pb::PublishResponse { seq }))
        })
        .await
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<RawPublish>>,
    ) -> Result<Response<pb::PublishStreamResponse>, Status> {
        self.observe("PublishStream", async move {
            let mut events = request.into_inner();
            let mut published = 0;
            // A stream's events mostly go to one topic: its name is checked once.
            let mut topic = CheckedTopic::default();
            // In a cluster, events are numbered after they are taken: the stream answers
            // once every one has been, or says which was not.
            let mut pending = std::collections::VecDeque::new();
            while let Some(event) = events.message().await? {
                // Reading a stream's buffered events never waits, so without this one
                // flat-out stream would hold its worker for milliseconds at a time and
                // every other connection on it would wait that long.
                tokio::task::consume_budget().await;
                let index = published;
                match self.publish_one(event, &mut topic) {
                    Ok(Published::Numbered(_)) => {}
                    Ok(later) => pending.push_back((index, later)),
                    Err(e) => return Err(e.in_message(index).into()),
                }
                published += 1;
                if pending.len() > MAX_PENDING_PUBLISHES {
                    let (index, later) = pending.pop_front().expect("more than the limit");
                    settle(index, later).await?;
                }
            }
            for (index, later) in pending {
                settle(index, later).await?;
            }
            Ok(Response::new(pb::PublishStreamResponse { published }))
        })
        .await
    }
}

/// The StartService parameter that pins a service to a node of a cluster.
pub const NODE_PARAM: &str = "node";

/// Events of one PublishStream a cluster may have yet to number: beyond, the stream
/// waits for the oldest, so that a client cannot queue without bound.
const MAX_PENDING_PUBLISHES: usize = 4096;

/// Waits for the number of the `index`th event of a PublishStream.
async fn settle(index: u64, published: Published) -> Result<(), Status> {
    published
        .seq()
        .await
        .map(drop)
        .map_err(|e| Error::from(e).in_message(index).into())
}

/// The last topic name a Publish stream used, once checked.
#[derive(Default)]
struct CheckedTopic(Option<String>);

impl CheckedTopic {
    /// `bytes` as a topic name: checked unless they are the last one's.
    fn check(&mut self, bytes: &[u8]) -> Result<&str, Error> {
        if self.0.as_ref().is_none_or(|last| last.as_bytes() != bytes) {
            let name = topic::name_from_bytes(bytes).map_err(|e| Error::invalid("topic", e))?;
            self.0 = Some(name.to_owned());
        }
        Ok(self.0.as_deref().unwrap_or_default())
    }
}

impl ControlPlane {
    /// Checks one event from a client and publishes it; gives its sequence number, or
    /// how to wait for it.
    fn publish_one(
        &self,
        request: RawPublish,
        topic: &mut CheckedTopic,
    ) -> Result<Published, Error> {
        let topic = topic.check(&request.topic)?;
        if self.supervisor.has_service(topic) {
            return Err(Error::invalid(
                "topic",
                format!(
                    "{topic:?} belongs to the service of that name; publish to a topic of your own"
                ),
            ));
        }
        let data = request
            .data
            .ok_or_else(|| Error::invalid("data", "missing"))?;
        let data =
            EncodedStruct::check(data).map_err(|e| Error::invalid(e.field("data"), e.reason()))?;
        Ok(self.supervisor.bus().publish_data(topic, &data)?)
    }
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::{Request, Response};
    use tower::{Layer, ServiceExt, service_fn};
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    fn buggy_handler(
        _: Request<tonic::body::Body>,
    ) -> Result<Response<tonic::body::Body>, std::convert::Infallible> {
        panic!("a handler's bug")
    }

    /// A flat-out client's PublishStream: its events all there at once.
    fn publish_stream_request(events: usize) -> tonic::Request<Streaming<RawPublish>> {
        use bytes::BufMut;
        use prost::Message;
        use tonic::codec::Codec;

        let event = RawPublish {
            topic: "t".into(),
            data: Some(prost_types::Struct::default().encode_to_vec().into()),
        }
        .encode_to_vec();
        let mut frames = bytes::BytesMut::new();
        for _ in 0..events {
            frames.put_u8(0);
            frames.put_u32(event.len() as u32);
            frames.put_slice(&event);
        }
        let decoder = tonic_prost::ProstCodec::<RawPublish, RawPublish>::default().decoder();
        let body = http_body_util::Full::new(frames.freeze());
        tonic::Request::new(Streaming::new_request(decoder, body, None, None))
    }

    #[tokio::test]
    async fn a_publish_stream_with_events_waiting_lets_other_tasks_run_between_them() {
        let env = crate::services::Environment::new("/nonexistent".into(), None).unwrap();
        let supervisor = Supervisor::new(
            crate::bus::Bus::local(),
            env,
            Default::default(),
            Vec::new(),
            None,
        );
        let control = ControlPlane::new(supervisor, None);
        let mut call = std::pin::pin!(control.publish_stream(publish_stream_request(1000)));
        assert!(
            futures::poll!(&mut call).is_pending(),
            "a thousand ready events taken in one poll of the task"
        );
        assert_eq!(call.await.unwrap().into_inner().published, 1000);
    }

    #[test]
    fn a_streams_topic_is_checked_whenever_it_changes() {
        let mut topic = CheckedTopic::default();
        assert!(topic.check(b"").is_err());
        assert_eq!(topic.check(b"a/b").unwrap(), "a/b");
        assert_eq!(topic.check(b"a/b").unwrap(), "a/b");
        assert!(topic.check(b"a b").is_err());
        assert!(topic.check(b"").is_err());
        assert_eq!(topic.check(b"c").unwrap(), "c");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_internal() {
        let panicking = service_fn(|request| async { buggy_handler(request) });
        let response = CatchPanicLayer::custom(internal_error)
            .layer(panicking)
            .oneshot(Request::new(tonic::body::Body::empty()))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}

//! The one-shot commands: `start`, `stop`, `list`, `show` and `publish`. Each connects,
//! sends its requests and prints one line per result.

use std::time::{Duration, SystemTime};

use streamhandler::pb::{
    Health, ListNodesRequest, ListServicesRequest, PublishRequest, ServiceInfo, ServiceState,
    StartServiceRequest, StopServiceRequest,
};
use tonic::{Code, Status};

use crate::{
    args::{self, PublishArgs, StartArgs, StopArgs, Targets},
    client::Addr,
    client::{self, Client},
    error::{Error, status_message},
    json, table,
    term::{self, Palette},
};

/// `streamctl start NAME... | all`.
pub async fn start(addr: &Addr, args: StartArgs) -> Result<(), Error> {
    let targets = args::targets(&args.names).map_err(Error::Other)?;
    let interval = args
        .interval
        .map(prost_types::Duration::try_from)
        .transpose()
        .map_err(|err| Error::Other(format!("invalid --interval: {err}")))?;
    let params = args.params();
    let mut client = client::connect(addr).await?;
    let batch = Batch::new(&mut client, addr, &targets).await?;
    let mut outcome = Outcome::default();
    let mut started = Vec::new();
    for name in &batch.names {
        let request = StartServiceRequest {
            name: name.clone(),
            interval,
            params: params.clone(),
        };
        match client.start_service(request).await {
            Ok(response) if response.get_ref().already_running => {
                term::emit(&format!("{name}: already running"))?;
            }
            Ok(_) if args.no_wait => term::emit(&format!("{name}: started"))?,
            Ok(_) => started.push(name.clone()),
            Err(status) => outcome.failed(&batch, name, status)?,
        }
    }
    for service in first_steps(&mut client, addr, &started).await? {
        let name = &service.name;
        let healthy = service.health() == Health::Healthy;
        match service.health() {
            Health::Healthy => term::emit(&format!("{name}: started"))?,
            Health::Failing => term::emit(&format!(
                "{name}: started, but its first step failed: {}",
                service.last_error
            ))?,
            Health::Unspecified => term::emit(&format!("{name}: started; no step has ended yet"))?,
        }
        outcome.failed |= args.wait_healthy && !healthy;
    }
    outcome.into_result()
}

/// How long `start` waits for the first step of the services it started.
const FIRST_STEP_PATIENCE: Duration = Duration::from_secs(2);

/// The services named, once each has ended its first step (its health is known) or
/// stopped running, or [`FIRST_STEP_PATIENCE`] has passed.
async fn first_steps(
    client: &mut Client,
    addr: &Addr,
    names: &[String],
) -> Result<Vec<ServiceInfo>, Error> {
    let deadline = tokio::time::Instant::now() + FIRST_STEP_PATIENCE;
    loop {
        let services: Vec<ServiceInfo> = list_services(client, addr)
            .await?
            .into_iter()
            .filter(|service| names.contains(&service.name))
            .collect();
        let settled = services.iter().all(|service| {
            service.health() != Health::Unspecified || service.state() != ServiceState::Running
        });
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(services);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `streamctl stop NAME... | all`.
pub async fn stop(addr: &Addr, args: StopArgs) -> Result<(), Error> {
    let targets = args::targets(&args.names).map_err(Error::Other)?;
    let mut client = client::connect(addr).await?;
    let batch = Batch::new(&mut client, addr, &targets).await?;
    let mut outcome = Outcome::default();
    let mut stopped_any = false;
    for name in &batch.names {
        let request = StopServiceRequest { name: name.clone() };
        match client.stop_service(request).await {
            Ok(response) => {
                let response = response.get_ref();
                stopped_any |= response.was_running;
                let what = match (response.was_running, response.forced) {
                    // `all` lists only what it stopped.
                    (false, _) if batch.all => continue,
                    (false, _) => "was not running",
                    (true, false) => "stopped",
                    (true, true) => "stopped (forced after timeout)",
                };
                term::emit(&format!("{name}: {what}"))?;
            }
            Err(status) => outcome.failed(&batch, name, status)?,
        }
    }
    if batch.all && !stopped_any && !outcome.failed {
        term::emit("nothing was running")?;
    }
    outcome.into_result()
}

/// `streamctl list`.
pub async fn list(addr: &Addr) -> Result<(), Error> {
    let mut client = client::connect(addr).await?;
    let listed = client
        .list_services(ListServicesRequest {})
        .await
        .map_err(|status| Error::from_status(status, addr))?
        .into_inner();
    if !listed.cluster_warning.is_empty() {
        eprintln!("streamctl: {}", listed.cluster_warning);
    }
    let palette = Palette::new(term::colour_stdout());
    let lines = table::services(&listed.services, SystemTime::now(), term::width(), &palette);
    term::emit(&lines.join("\n"))
}

/// `streamctl nodes`.
pub async fn nodes(addr: &Addr) -> Result<(), Error> {
    let mut client = client::connect(addr).await?;
    let answered = client
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|status| Error::from_status(status, addr))?
        .into_inner();
    if answered.node_id.is_empty() {
        return term::emit(
            "this streamd runs alone: start it with --cluster and --node-id to join a cluster",
        );
    }
    term::emit(&table::nodes(&answered, SystemTime::now()).join("\n"))
}

/// `streamctl show NAME`.
pub async fn show(addr: &Addr, name: &str) -> Result<(), Error> {
    let mut client = client::connect(addr).await?;
    let services = list_services(&mut client, addr).await?;
    let service = services
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::UnknownServices(vec![name.to_owned()]))?;
    let palette = Palette::new(term::colour_stdout());
    term::emit(&table::service(service, SystemTime::now(), &palette).join("\n"))
}

/// `streamctl publish TOPIC JSON`.
pub async fn publish(addr: &Addr, args: PublishArgs) -> Result<(), Error> {
    // Bad input is reported before any connection is attempted.
    let data = json::parse_object(&args.json)?;
    let mut client = client::connect(addr).await?;
    let request = PublishRequest {
        topic: args.topic.clone(),
        data: Some(data),
    };
    let response = client
        .publish(request)
        .await
        .map_err(|status| Error::from_status(status, addr))?;
    term::emit(&format!(
        "published {} #{}",
        args.topic,
        response.get_ref().seq
    ))
}

/// Every service the daemon knows, in name order.
async fn list_services(
    client: &mut Client,
    addr: &Addr,
) -> Result<Vec<streamhandler::pb::ServiceInfo>, Error> {
    let response = client
        .list_services(ListServicesRequest {})
        .await
        .map_err(|status| Error::from_status(status, addr))?;
    Ok(response.into_inner().services)
}

/// The services one `start` or `stop` applies to.
struct Batch<'a> {
    /// Service names, in the order they are handled.
    names: Vec<String>,
    /// Whether the user asked for `all`, which tolerates services that cannot run.
    all: bool,
    /// For telling a lost daemon from a refusal.
    addr: &'a Addr,
}

impl<'a> Batch<'a> {
    /// Resolves `all` through ListServices, and checks given names against it: one
    /// unknown name, and nothing is done.
    async fn new(
        client: &mut Client,
        addr: &'a Addr,
        targets: &Targets<'_>,
    ) -> Result<Batch<'a>, Error> {
        let known: Vec<String> = list_services(client, addr)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let (names, all) = match targets {
            Targets::All => (known, true),
            Targets::Names(names) => {
                let unknown: Vec<String> = names
                    .iter()
                    .filter(|name| !known.contains(name))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(Error::UnknownServices(unknown));
                }
                (names.to_vec(), false)
            }
        };
        Ok(Batch { names, all, addr })
    }
}

/// Whether any service in a batch failed, once each failure has been printed.
#[derive(Default)]
struct Outcome {
    failed: bool,
}

impl Outcome {
    /// Reports one service's error and carries on with the rest, unless the daemon
    /// itself has gone away, which ends the batch.
    fn failed(&mut self, batch: &Batch<'_>, name: &str, status: Status) -> Result<(), Error> {
        let status = match Error::from_status(status, batch.addr) {
            Error::Server(status) => status,
            other => return Err(other),
        };
        let message = status_message(&status);
        if batch.all && skippable(status.code()) {
            return term::emit(&format!("{name}: skipped ({message})"));
        }
        self.failed = true;
        // With several services, say which one failed unless the message already does.
        if batch.names.len() > 1 && !message.contains(name) {
            term::warn(&format!("{name}: {message}"));
        } else {
            term::warn(&message);
        }
        Ok(())
    }

    /// An error when any service failed, its messages already printed.
    fn into_result(self) -> Result<(), Error> {
        if self.failed {
            Err(Error::Reported)
        } else {
            Ok(())
        }
    }
}

/// Errors that `all` passes over: services that do not exist yet, or cannot run in
/// this daemon's setup.
fn skippable(code: Code) -> bool {
    matches!(code, Code::Unimplemented | Code::FailedPrecondition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unimplemented_and_failed_precondition_are_skipped() {
        assert!(skippable(Code::Unimplemented));
        assert!(skippable(Code::FailedPrecondition));
        assert!(!skippable(Code::NotFound));
        assert!(!skippable(Code::InvalidArgument));
        assert!(!skippable(Code::Internal));
    }
}

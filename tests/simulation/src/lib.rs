//! What kubelets and kube-controller-manager would do, simulated from the outside.
//!
//! Every simulator is a background task that talks to an API server only through a
//! `kube::Client`, so the same simulation drives the in-process test API server and a
//! real kube-apiserver (issue 8: "keep it outside the apiserver"). Each returns a
//! [`SimHandle`]; dropping the handle stops the simulator.
//!
//! - [`nodes`]: host Nodes with capacity, labels, taints and a Ready condition, kept alive
//!   by heartbeats; NotReady and cordon helpers.
//! - [`workloads`]: Deployment and StatefulSet status (and optionally their Pods) after a
//!   delay, never, or failing, per object via the `sim.kosmos.io/readiness` annotation.
//! - [`services`]: LoadBalancer ingress addresses, Endpoints and EndpointSlices.
//! - [`tenant_apiserver`]: a tenant API server per ready tenant kube-apiserver Deployment.
//! - [`local_pod`]: one container of a host pod template as a local process plan (volumes
//!   laid out, flags and kubeconfigs pointed at local addresses).
//! - [`local_control_plane`]: each tenant's etcd, kube-apiserver, controller-manager and
//!   scheduler as local processes, from the objects the controller wrote.
//! - [`local_clustertree`]: each tenant's real `vc-clustertree` binary as a local
//!   process, from the clustertree Deployment the controller wrote.
//! - [`etcd_gateway`]: a tenant's etcd reached with its kube-apiserver's client
//!   certificate, to show that a real etcd accepts what the controller issued.
//!
//! Each simulator works level-triggered: a watch keeps a local cache, and every change
//! (or a deadline, or a periodic resync) runs one pass that compares what exists with
//! what the simulated component would have written, and writes only the difference.

pub mod etcd_gateway;
pub mod local_clustertree;
pub mod local_control_plane;
pub mod local_pod;
pub mod nodes;
pub mod services;
pub mod tenant_apiserver;
pub mod workloads;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which simulators [`Simulation::start`] runs; every one is optional.
#[derive(Clone, Debug)]
pub struct SimulationOptions {
    /// Host nodes to register (none: no kubelets).
    pub nodes: Vec<nodes::NodeSpec>,
    pub fleet: nodes::FleetOptions,
    pub workloads: Option<workloads::WorkloadOptions>,
    pub services: Option<services::ServiceOptions>,
    pub tenants: Option<tenant_apiserver::TenantOptions>,
}

impl SimulationOptions {
    /// Everything on, with `count` default worker nodes `node1..nodeN`.
    pub fn with_nodes(count: usize) -> Self {
        SimulationOptions {
            nodes: nodes::default_nodes(count),
            fleet: nodes::FleetOptions::default(),
            workloads: Some(workloads::WorkloadOptions::default()),
            services: Some(services::ServiceOptions::default()),
            tenants: Some(tenant_apiserver::TenantOptions::default()),
        }
    }
}

/// The simulators of one cluster, started together; dropping it stops them all.
#[derive(Debug)]
pub struct Simulation {
    /// The simulated kubelets (`set_ready`, `cordon`), when nodes were asked for.
    pub fleet: Option<nodes::NodeFleet>,
    /// The tenant API servers, when that simulator runs.
    pub tenants: Option<tenant_apiserver::TenantApiServers>,
    handle: SimHandle,
}

impl Simulation {
    /// Registers the nodes, then starts every simulator `options` turns on.
    pub async fn start(client: kube::Client, options: SimulationOptions) -> Result<Self, SimError> {
        let fleet = if options.nodes.is_empty() {
            None
        } else {
            Some(nodes::NodeFleet::start(client.clone(), options.nodes, options.fleet).await?)
        };
        let mut handle = SimHandle::default();
        if let Some(workload_options) = options.workloads {
            handle = handle.merge(workloads::spawn(client.clone(), workload_options));
        }
        if let Some(service_options) = options.services {
            handle = handle.merge(services::spawn(client.clone(), service_options));
        }
        let tenants = options
            .tenants
            .map(|tenant_options| tenant_apiserver::spawn(client, tenant_options));
        Ok(Simulation {
            fleet,
            tenants,
            handle,
        })
    }

    /// Stops every simulator (and the tenant API servers).
    pub fn stop(self) {
        let Simulation {
            fleet,
            tenants,
            handle,
        } = self;
        handle.stop();
        drop(tenants);
        drop(fleet);
    }
}

/// A running simulator. Dropping it (or calling [`SimHandle::stop`]) aborts its tasks.
#[derive(Debug, Default)]
pub struct SimHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        SimHandle { tasks }
    }

    /// Stops the simulator now.
    pub fn stop(self) {
        drop(self);
    }

    /// Whether every task has ended (they only end when aborted, or on a bug).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// One handle for several simulators.
    pub fn merge(mut self, mut other: SimHandle) -> SimHandle {
        self.tasks.append(&mut other.tasks);
        self
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why a simulator step failed. Passes log these and retry on the next resync.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("creating node {name}: {source}")]
    CreateNode {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing the status of node {name}: {source}")]
    WriteNodeStatus {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("renewing the lease of node {name}: {source}")]
    RenewLease {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("cordoning node {name}: {source}")]
    CordonNode {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("node {name} is not simulated by this fleet (known: {known})")]
    UnknownNode { name: String, known: String },
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    WriteWorkloadStatus {
        kind: &'static str,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("creating pod {namespace}/{name}: {source}")]
    CreatePod {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing the status of pod {namespace}/{name}: {source}")]
    WritePodStatus {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("deleting pod {namespace}/{name}: {source}")]
    DeletePod {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing the load-balancer status of service {namespace}/{name}: {source}")]
    WriteServiceStatus {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing endpoints of service {namespace}/{name}: {source}")]
    WriteEndpoints {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing the endpoint slice of service {namespace}/{name}: {source}")]
    WriteEndpointSlice {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("reading {what} of tenant {namespace}/{name}: {reason}")]
    ReadTenant {
        what: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("starting the tenant API server of {namespace}/{name} on {bind}: {reason}")]
    StartTenantApiServer {
        namespace: String,
        name: String,
        bind: String,
        reason: String,
    },
    #[error("connecting to tenant {namespace}/{name}: {reason}")]
    ConnectTenant {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("reading Kosmos Cluster objects in tenant {namespace}/{name}: {source}")]
    ListTenantClusters {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing virtual node {node} in tenant {namespace}/{name}: {source}")]
    WriteVirtualNode {
        namespace: String,
        name: String,
        node: String,
        source: Box<kube::Error>,
    },
}

/// Prints a simulation error on stderr, where the test's output shows it, once per
/// distinct message of a `site`: a loop retrying the same failure every pass would
/// otherwise bury everything else. A simulator that swallowed its errors once hid that a
/// real apiserver refused every pod it wrote.
pub fn report_error(site: &'static str, error: &dyn std::fmt::Display) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashMap<&'static str, String>>> =
        std::sync::Mutex::new(None);
    let message = error.to_string();
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let last = seen
        .get_or_insert_with(Default::default)
        .entry(site)
        .or_default();
    if *last != message {
        eprintln!("[simulation] {site}: {message}");
        *last = message;
    }
}

/// A watch-fed cache whose every event wakes `notify`.
fn watch_store<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(error) = &event {
                    report_error("watch failed, retrying", error);
                }
                notify.notify_one();
                futures::future::ready(())
            })
            .await;
    });
    (reader, task)
}

/// Waits for the next pass: a change, the deadline the last pass asked for, or `resync`.
async fn wait_for_next_pass(notify: &Notify, next: Option<Instant>, resync: Duration) {
    let deadline = next
        .unwrap_or_else(|| Instant::now() + resync)
        .min(Instant::now() + resync);
    tokio::select! {
        () = notify.notified() => {
            // Let a burst of events settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        () = tokio::time::sleep_until(deadline) => {}
    }
}

/// `2026-11-26T05:26:49Z`: the second-precision time format of Kubernetes objects.
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses `500ms`, `2s`, `1m`, `1m30s`, `0` — the Go duration forms tests write.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(seconds).ok()?;
        rest = tail;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("2d"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn timestamps_have_second_precision() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }
}

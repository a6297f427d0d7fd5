//! The pod loop: keeps watch-fed caches of the tenant's pods and mirrored Nodes (tenant
//! admin) and of our host pods, copies and token Secrets in the workload namespace, and
//! does what [`crate::pods::plan`] says. On the host it touches nothing outside
//! `vc-NS-NAME`, and deletes only objects carrying our managed-by label and a recorded
//! tenant UID, each by UID precondition.
//!
//! Level-triggered: every pass plans from the whole of the caches, so a missed write, a
//! restart or a host pod removed behind its back is repaired without any state kept
//! across runs. A change to a tenant pod, a mirrored Node or a host pod wakes a pass at
//! once; a pass also runs every period, which re-reads the tenant sources of the copies.
//! The caches hold what the rules read, no more: host pods without their spec, host
//! copies and token Secrets as metadata only (their content is compared by digest).

mod actions;
mod cache;
mod copies;
mod events;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::Notify;
use tokio::time::Instant;
use vc_api::constants::{CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, MIRRORED_NODE_LABEL};

use crate::cluster_dns::DnsState;
use crate::nodes;
use crate::pods::{self, Action, CopyKind, Observed, Tenancy};
use actions::act;
use cache::Reflector;
use copies::{ProjectedConfigMaps, delete_copy, ensure_copy, read_projected, write_token};
use events::EventCopier;

/// Host and tenant writes in flight at once: enough for hundreds of pods per pass, few
/// enough not to crowd either apiserver.
const CONCURRENCY: usize = 16;
/// How long a pass woken by a change waits for the rest of a burst (a Deployment scaled,
/// a batch of host pods reporting) before it starts.
const SETTLE: Duration = Duration::from_millis(250);

/// Why one step of a pass failed; the others go on, and it is retried next pass.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("reading tenant {kind} {object}: {source}")]
    ReadTenantObject {
        kind: &'static str,
        object: String,
        source: kube::Error,
    },
    #[error("writing host copy {name} of tenant {kind} {object}: {source}")]
    WriteCopy {
        kind: &'static str,
        object: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "requesting a token of ServiceAccount {service_account} for tenant pod {pod}: {source}"
    )]
    RequestToken {
        pod: String,
        service_account: String,
        source: kube::Error,
    },
    #[error("the tenant returned no usable token for pod {pod}")]
    EmptyToken { pod: String },
    #[error("tenant namespace {namespace} has no CA ConfigMap kube-root-ca.crt yet")]
    MissingTenantCa { namespace: String },
    #[error(
        "the token of tenant pod {pod} waits for tenant ConfigMap {config_map}, unread this pass"
    )]
    UnreadTenantConfigMap { pod: String, config_map: String },
    #[error("writing the token Secret of tenant pod {pod}: {source}")]
    WriteToken { pod: String, source: kube::Error },
    #[error("creating the host pod of tenant pod {pod}: {source}")]
    CreateHostPod { pod: String, source: kube::Error },
    #[error("deleting host pod {name} ({why}): {source}")]
    DeleteHostPod {
        name: String,
        why: &'static str,
        source: kube::Error,
    },
    #[error("writing the status of tenant pod {pod}: {source}")]
    WriteTenantStatus { pod: String, source: kube::Error },
    #[error("finishing the deletion of tenant pod {pod}: {source}")]
    FinishTenantDeletion { pod: String, source: kube::Error },
    #[error("recording event {reason} on tenant pod {pod}: {source}")]
    RecordEvent {
        pod: String,
        reason: String,
        source: kube::Error,
    },
    #[error("copying host event {reason} to tenant pod {pod}: {source}")]
    CopyEvent {
        pod: String,
        reason: String,
        source: kube::Error,
    },
    #[error("deleting unused host {kind} {name}: {source}")]
    DeleteCopy {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

/// What a pass did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub actions: usize,
    pub failed: usize,
}

fn ours() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{MANAGED_BY_LABEL}={CLUSTERTREE_MANAGED_BY_VALUE}"
    ))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn by_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// What the loop reads, kept by watches.
struct Caches {
    tenant_nodes: Reflector<Node>,
    tenant_pods: Reflector<Pod>,
    host_pods: Reflector<Pod>,
    host_config_maps: Reflector<PartialObjectMeta<ConfigMap>>,
    host_secrets: Reflector<PartialObjectMeta<Secret>>,
}

impl Caches {
    fn start(host: &Client, tenant: &Client, namespace: &str, wake: &Arc<Notify>) -> Caches {
        let tenant_nodes = watcher(
            Api::<Node>::all(tenant.clone()),
            watcher::Config::default().labels(MIRRORED_NODE_LABEL),
        );
        // Only bound pods can be on a mirrored Node; the others never reach this kubelet.
        let tenant_pods = watcher(
            Api::<Pod>::all(tenant.clone()),
            watcher::Config::default().fields("spec.nodeName!="),
        );
        // The rules read a host pod's identity and status only.
        let host_pods =
            watcher(Api::<Pod>::namespaced(host.clone(), namespace), ours()).map(|event| {
                event.map(|event| {
                    event.modify(|pod| {
                        pod.spec = None;
                    })
                })
            });
        let config_maps = watcher(
            Api::<PartialObjectMeta<ConfigMap>>::namespaced(host.clone(), namespace),
            ours(),
        );
        let secrets = watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(host.clone(), namespace),
            ours(),
        );
        Caches {
            tenant_nodes: cache::spawn("tenant Nodes", tenant_nodes, Some(wake.clone())),
            tenant_pods: cache::spawn("tenant pods", tenant_pods, Some(wake.clone())),
            host_pods: cache::spawn("host pods", host_pods, Some(wake.clone())),
            host_config_maps: cache::spawn("host ConfigMaps", config_maps, None),
            host_secrets: cache::spawn("host Secrets", secrets, None),
        }
    }

    /// Resolves once every cache holds a complete list: a pass on a half-filled cache
    /// would take the missing tenant pods for deleted ones.
    async fn ready(&self) {
        let _ready_or_stopped = tokio::join!(
            self.tenant_nodes.store.wait_until_ready(),
            self.tenant_pods.store.wait_until_ready(),
            self.host_pods.store.wait_until_ready(),
            self.host_config_maps.store.wait_until_ready(),
            self.host_secrets.store.wait_until_ready(),
        );
    }
}

/// Writes done recently, by what they wrote: the caches show a write a moment after it
/// returns, and a pass woken in that moment must not do it again. Forgotten after a
/// period, so a write undone behind our back is still redone by the periodic pass.
struct Recent {
    ttl: Duration,
    done: HashMap<String, Instant>,
}

impl Recent {
    fn new(ttl: Duration) -> Recent {
        Recent {
            ttl,
            done: HashMap::new(),
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.done.get(key).is_some_and(|at| at.elapsed() < self.ttl)
    }

    fn forget_old(&mut self) {
        let ttl = self.ttl;
        self.done.retain(|_, at| at.elapsed() < ttl);
    }
}

/// The key under which an action is remembered in [`Recent`]: the object and what is
/// written to it.
fn action_key(action: &Action) -> String {
    match action {
        Action::CreateHostPod { tenant, host } => {
            format!("create {} {}", host.pod.name_any(), tenant.uid)
        }
        Action::DeleteHostPod { uid, .. } => format!("delete {uid}"),
        Action::UpdateTenantStatus { tenant, status } => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(status)
                .unwrap_or_default()
                .hash(&mut hasher);
            format!("status {} {:x}", tenant.uid, hasher.finish())
        }
        Action::FinishTenantDeletion { tenant } => format!("finish {}", tenant.uid),
        Action::FailTenantPod { tenant, .. } => format!("fail {}", tenant.uid),
    }
}

fn token_key(token: &pods::Token) -> String {
    format!("token {} {}", token.host_secret, token.pod.uid)
}

type Step<'a> = BoxFuture<'a, (Vec<String>, Result<(), StepError>)>;

/// One pass over every cached tenant pod bound to a mirrored Node. `refresh`: re-read
/// the tenant sources of existing copies too (once a period).
async fn pass(
    host: &Client,
    tenant: &Client,
    tenancy: &Tenancy,
    caches: &Caches,
    recent: &mut Recent,
    refresh: bool,
) -> PassReport {
    let namespace = &tenancy.workload_namespace;
    let mirrored: BTreeSet<String> = caches
        .tenant_nodes
        .store
        .state()
        .iter()
        .filter(|node| nodes::is_mirrored(node))
        .map(|node| node.name_any())
        .collect();
    let tenant_pods = caches.tenant_pods.store.state();
    let host_pods = caches.host_pods.store.state();
    let plan = pods::plan(
        Observed {
            tenant_pods: &tenant_pods,
            host_pods: &host_pods,
            mirrored_nodes: &mirrored,
        },
        tenancy,
    );
    drop(tenant_pods);
    drop(host_pods);
    recent.forget_old();

    let config_maps: BTreeMap<String, Arc<PartialObjectMeta<ConfigMap>>> = caches
        .host_config_maps
        .store
        .state()
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let secrets: BTreeMap<String, Arc<PartialObjectMeta<Secret>>> = caches
        .host_secrets
        .store
        .state()
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let mut results: Vec<Result<(), StepError>> = Vec::new();
    // Copies first, so a host pod created below finds its volumes; an existing copy is
    // compared with its tenant source once a period.
    let copy_steps: Vec<_> = plan
        .copies
        .iter()
        .filter_map(|copy| {
            let current: Option<ObjectMeta> = match copy.kind {
                CopyKind::ConfigMap => config_maps.get(&copy.host_name).map(|c| c.metadata.clone()),
                CopyKind::Secret => secrets.get(&copy.host_name).map(|s| s.metadata.clone()),
            };
            (refresh || current.is_none()).then_some(async move {
                ensure_copy(host, tenant, namespace, copy, current.as_ref()).await
            })
        })
        .collect();
    results.extend(
        stream::iter(copy_steps)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await,
    );

    let now = jiff::Timestamp::now();
    let due: BTreeMap<String, &pods::Token> = plan
        .tokens
        .iter()
        .filter(|token| {
            !recent.contains(&token_key(token))
                && !secrets
                    .get(&token.host_secret)
                    .is_some_and(|s| pods::token_fresh(&s.metadata, &token.pod.uid, now))
        })
        .map(|token| (token.pod.uid.clone(), token))
        .collect();
    let wanted_config_maps: BTreeSet<(String, String)> = due
        .values()
        .flat_map(|token| {
            token
                .config_maps
                .iter()
                .map(|(name, _)| (token.pod.namespace.clone(), name.clone()))
        })
        .collect();
    let mut projected = ProjectedConfigMaps::new();
    let reads = wanted_config_maps
        .into_iter()
        .map(|(tenant_namespace, name)| read_projected(tenant, tenant_namespace, name));
    for read in stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
    {
        match read {
            Ok((key, found)) => {
                projected.insert(key, found);
            }
            Err(error) => results.push(Err(error)),
        }
    }

    // Each host pod is created as soon as its own token is written; tokens of running
    // pods are refreshed alongside.
    let host_pods_api = Api::<Pod>::namespaced(host.clone(), namespace);
    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut creating = BTreeSet::new();
    let mut actions = 0;
    for action in plan.actions {
        let key = action_key(&action);
        if recent.contains(&key) {
            continue;
        }
        actions += 1;
        let token = match &action {
            Action::CreateHostPod { tenant: pod, .. } => {
                creating.insert(pod.uid.clone());
                due.get(&pod.uid).copied()
            }
            _ => None,
        };
        let (projected, host_pods_api) = (&projected, &host_pods_api);
        steps.push(
            async move {
                let mut done = Vec::new();
                if let Some(token) = token {
                    if let Err(error) = write_token(host, tenant, namespace, token, projected).await
                    {
                        return (done, Err(error));
                    }
                    done.push(token_key(token));
                }
                let result = act(tenant, host_pods_api, action).await;
                if result.is_ok() {
                    done.push(key);
                }
                (done, result)
            }
            .boxed(),
        );
    }
    for token in due
        .iter()
        .filter(|(uid, _)| !creating.contains(*uid))
        .map(|(_, token)| *token)
    {
        let projected = &projected;
        steps.push(
            async move {
                let result = write_token(host, tenant, namespace, token, projected).await;
                let done = if result.is_ok() {
                    vec![token_key(token)]
                } else {
                    Vec::new()
                };
                (done, result)
            }
            .boxed(),
        );
    }
    let outcomes: Vec<(Vec<String>, Result<(), StepError>)> = stream::iter(steps)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let at = Instant::now();
    for (done, result) in outcomes {
        for key in done {
            recent.done.insert(key, at);
        }
        results.push(result);
    }

    let wanted: BTreeSet<(CopyKind, &str)> = plan
        .copies
        .iter()
        .map(|c| (c.kind, c.host_name.as_str()))
        .chain(
            plan.tokens
                .iter()
                .map(|t| (CopyKind::Secret, t.host_secret.as_str())),
        )
        .collect();
    let unused_config_maps = config_maps
        .values()
        .filter(|c| !wanted.contains(&(CopyKind::ConfigMap, c.name_any().as_str())))
        .filter(|c| pods::recorded_uid(&c.metadata).is_some())
        .filter_map(|c| Some((CopyKind::ConfigMap, c.name_any(), c.uid()?)));
    let unused_secrets = secrets
        .values()
        .filter(|s| !wanted.contains(&(CopyKind::Secret, s.name_any().as_str())))
        .filter(|s| pods::recorded_uid(&s.metadata).is_some())
        .filter_map(|s| Some((CopyKind::Secret, s.name_any(), s.uid()?)));
    let unused: Vec<(CopyKind, String, String)> = unused_config_maps
        .chain(unused_secrets)
        .filter(|(_, _, uid)| !recent.contains(&format!("delete {uid}")))
        .collect();
    let delete_steps = unused.iter().map(|(kind, name, uid)| async move {
        (
            format!("delete {uid}"),
            delete_copy(host, namespace, *kind, name, uid).await,
        )
    });
    for (key, result) in stream::iter(delete_steps)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
    {
        if result.is_ok() {
            recent.done.insert(key, Instant::now());
        }
        results.push(result);
    }

    let failed = results.iter().filter(|r| r.is_err()).count();
    for error in results.into_iter().filter_map(Result::err) {
        tracing::warn!(%error, "pod sync step failed; retrying next pass");
    }
    PassReport { actions, failed }
}

/// Runs passes until `shutdown` resolves: at once when a watched object changes, and
/// every `period` regardless. Host Events are copied beside, once a period, so a burst of
/// them never holds up the pods.
pub async fn run(
    host: Client,
    tenant: Client,
    tenancy: Tenancy,
    dns: tokio::sync::watch::Receiver<DnsState>,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let wake = Arc::new(Notify::new());
    let caches = Caches::start(&host, &tenant, &tenancy.workload_namespace, &wake);
    let mut events = EventCopier::start(&host, &tenancy.workload_namespace);
    let mut recent = Recent::new(period);
    tokio::select! {
        () = &mut shutdown => return,
        () = caches.ready() => {}
    }
    let pods = async {
        let mut failing = false;
        let mut refreshed: Option<Instant> = None;
        loop {
            let refresh = refreshed.is_none_or(|at| at.elapsed() >= period);
            if refresh {
                refreshed = Some(Instant::now());
            }
            let mut current = tenancy.clone();
            (current.dns, current.dns_pending) = match &*dns.borrow() {
                DnsState::Host => (None, false),
                DnsState::Pending => (None, true),
                DnsState::Tenant(resolver) => (Some(resolver.clone()), false),
            };
            let report = pass(&host, &tenant, &current, &caches, &mut recent, refresh).await;
            if failing || report.failed > 0 {
                tracing::info!(
                    actions = report.actions,
                    failed = report.failed,
                    "pod sync pass"
                );
            }
            failing = report.failed > 0;
            let next_refresh =
                refreshed.map_or(Duration::ZERO, |at| period.saturating_sub(at.elapsed()));
            tokio::select! {
                () = tokio::time::sleep(next_refresh) => {}
                () = wake.notified() => tokio::time::sleep(SETTLE).await,
            }
        }
    };
    let copied_events = async {
        loop {
            let host_pods = caches.host_pods.store.state();
            let by_name: BTreeMap<String, &Pod> = host_pods
                .iter()
                .map(|pod| (pod.name_any(), pod.as_ref()))
                .collect();
            for error in events
                .copy(&tenant, &tenancy.workload_namespace, &by_name)
                .await
                .into_iter()
                .filter_map(Result::err)
            {
                tracing::warn!(%error, "copying a host event failed; retrying next period");
            }
            drop(by_name);
            drop(host_pods);
            tokio::time::sleep(period).await;
        }
    };
    // Both loops stop where they are: every pass starts over from what it observes.
    tokio::select! {
        () = &mut shutdown => {}
        _ = pods => {}
        _ = copied_events => {}
    }
}

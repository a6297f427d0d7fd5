//! The pod loop: reads the tenant's pods and mirrored Nodes (tenant admin) and the host
//! pods of the workload namespace, then does what [`crate::pods::plan`] says. On the host
//! it touches nothing outside `vc-NS-NAME`, and deletes only objects carrying our
//! managed-by label and a recorded tenant UID, each by UID precondition.
//!
//! Level-triggered on the period: a full pass each time, so a missed write, a restart or
//! a host pod removed behind its back is repaired on the next pass without any state.

mod actions;
mod cache;
mod copies;
mod events;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt as _};
use vc_api::constants::{CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, MIRRORED_NODE_LABEL};

use crate::nodes;
use crate::pods::{self, CopyKind, Observed, Tenancy};
use actions::act;
use copies::{ProjectedConfigMaps, delete_copy, ensure_copy, read_projected, write_token};
use events::EventCopier;

/// Host and tenant writes in flight at once: enough for hundreds of pods per pass, few
/// enough not to crowd either apiserver.
const CONCURRENCY: usize = 16;

/// Why a pass could not even start; it is retried on the next period.
#[derive(Debug, thiserror::Error)]
pub enum PodSyncError {
    #[error("listing the tenant's mirrored Nodes: {0}")]
    ListTenantNodes(kube::Error),
    #[error("listing the tenant's pods: {0}")]
    ListTenantPods(kube::Error),
    #[error("listing host pods in {namespace}: {source}")]
    ListHostPods {
        namespace: String,
        source: kube::Error,
    },
    #[error("listing host ConfigMaps and Secrets in {namespace}: {source}")]
    ListHostCopies {
        namespace: String,
        source: kube::Error,
    },
}

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

fn ours() -> ListParams {
    ListParams::default().labels(&format!(
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

/// One pass over every tenant pod bound to a mirrored Node.
async fn pass(
    host: &Client,
    tenant: &Client,
    tenancy: &Tenancy,
    events: &mut EventCopier,
) -> Result<PassReport, PodSyncError> {
    let namespace = &tenancy.workload_namespace;
    let mirrored: BTreeSet<String> = Api::<Node>::all(tenant.clone())
        .list(&ListParams::default().labels(MIRRORED_NODE_LABEL))
        .await
        .map_err(PodSyncError::ListTenantNodes)?
        .items
        .iter()
        .filter(|node| nodes::is_mirrored(node))
        .map(|node| node.name_any())
        .collect();
    // Only bound pods can be on a mirrored Node; the others never reach this kubelet.
    let tenant_pods = Api::<Pod>::all(tenant.clone())
        .list(&ListParams::default().fields("spec.nodeName!="))
        .await
        .map_err(PodSyncError::ListTenantPods)?
        .items;
    let host_pods_api = Api::<Pod>::namespaced(host.clone(), namespace);
    let host_pods = host_pods_api
        .list(&ours())
        .await
        .map_err(|source| PodSyncError::ListHostPods {
            namespace: namespace.clone(),
            source,
        })?
        .items;
    let list_copies_error = |source| PodSyncError::ListHostCopies {
        namespace: namespace.clone(),
        source,
    };
    let host_config_maps = Api::<ConfigMap>::namespaced(host.clone(), namespace)
        .list(&ours())
        .await
        .map_err(list_copies_error)?
        .items;
    let host_secrets = Api::<Secret>::namespaced(host.clone(), namespace)
        .list(&ours())
        .await
        .map_err(list_copies_error)?
        .items;
    let plan = pods::plan(
        Observed {
            tenant_pods: &tenant_pods,
            host_pods: &host_pods,
            mirrored_nodes: &mirrored,
        },
        tenancy,
    );

    let config_maps: BTreeMap<String, &ConfigMap> =
        host_config_maps.iter().map(|c| (c.name_any(), c)).collect();
    let secrets: BTreeMap<String, &Secret> =
        host_secrets.iter().map(|s| (s.name_any(), s)).collect();
    let mut results: Vec<Result<(), StepError>> = Vec::new();
    // Copies and tokens first, so a host pod created below finds its volumes.
    let copy_steps = plan
        .copies
        .iter()
        .map(|copy| ensure_copy(host, tenant, namespace, copy, &config_maps, &secrets));
    results.extend(
        stream::iter(copy_steps)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await,
    );
    let now = jiff::Timestamp::now();
    let due: Vec<&pods::Token> = plan
        .tokens
        .iter()
        .filter(|token| {
            !secrets
                .get(&token.host_secret)
                .is_some_and(|s| pods::token_fresh(&s.metadata, &token.pod.uid, now))
        })
        .collect();
    let wanted_config_maps: BTreeSet<(String, String)> = due
        .iter()
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
    let token_steps = due
        .into_iter()
        .map(|token| write_token(host, tenant, namespace, token, &projected));
    results.extend(
        stream::iter(token_steps)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await,
    );
    let actions = plan.actions.len();
    let action_steps = plan
        .actions
        .into_iter()
        .map(|action| act(tenant, &host_pods_api, action));
    results.extend(
        stream::iter(action_steps)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await,
    );

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
    let unused_config_maps = host_config_maps
        .iter()
        .filter(|c| !wanted.contains(&(CopyKind::ConfigMap, c.name_any().as_str())))
        .filter_map(|c| Some((CopyKind::ConfigMap, c.name_any(), c.uid()?)));
    let unused_secrets = host_secrets
        .iter()
        .filter(|s| !wanted.contains(&(CopyKind::Secret, s.name_any().as_str())))
        .filter_map(|s| Some((CopyKind::Secret, s.name_any(), s.uid()?)));
    let unused: Vec<(CopyKind, String, String)> = unused_config_maps
        .chain(unused_secrets)
        .filter(|(kind, name, _)| {
            let meta = match kind {
                CopyKind::ConfigMap => config_maps.get(name).map(|c| &c.metadata),
                CopyKind::Secret => secrets.get(name).map(|s| &s.metadata),
            };
            meta.is_some_and(|meta| pods::recorded_uid(meta).is_some())
        })
        .collect();
    let delete_steps = unused
        .iter()
        .map(|(kind, name, uid)| delete_copy(host, namespace, *kind, name, uid));
    results.extend(
        stream::iter(delete_steps)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await,
    );

    let by_name: BTreeMap<String, &Pod> = host_pods.iter().map(|p| (p.name_any(), p)).collect();
    results.extend(events.copy(tenant, namespace, &by_name).await);

    let mut failed = 0;
    for error in results.into_iter().filter_map(Result::err) {
        failed += 1;
        tracing::warn!(%error, "pod sync step failed; retrying next pass");
    }
    Ok(PassReport { actions, failed })
}

/// Runs passes every `period` until `shutdown` resolves.
pub async fn run(
    host: Client,
    tenant: Client,
    tenancy: Tenancy,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut failing = false;
    let mut events = EventCopier::start(&host, &tenancy.workload_namespace);
    loop {
        match pass(&host, &tenant, &tenancy, &mut events).await {
            Ok(report) => {
                if failing || report.failed > 0 {
                    tracing::info!(
                        actions = report.actions,
                        failed = report.failed,
                        "pod sync pass"
                    );
                }
                failing = report.failed > 0;
            }
            Err(error) => {
                failing = true;
                tracing::warn!(%error, "pod sync failed; retrying");
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

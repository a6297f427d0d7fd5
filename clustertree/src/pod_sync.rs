//! The pod loop: reads the tenant's pods and mirrored Nodes (tenant admin) and the host
//! pods of the workload namespace, then does what [`crate::pods::plan`] says. On the host
//! it touches nothing outside `vc-NS-NAME`, and deletes only objects carrying our
//! managed-by label and a recorded tenant UID, each by UID precondition.
//!
//! Level-triggered on the period: a full pass each time, so a missed write, a restart or
//! a host pod removed behind its back is repaired on the next pass without any state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt as _, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::constants::{
    CLUSTERTREE_FIELD_MANAGER, CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, MIRRORED_NODE_LABEL,
};

use crate::nodes;
use crate::pods::{
    self, Action, Copy, CopyKind, Observed, PodRef, TENANT_ROOT_CA_CONFIG_MAP,
    TOKEN_REFRESH_ANNOTATION, Tenancy, Token,
};

/// Host and tenant writes in flight at once: enough for hundreds of pods per pass, few
/// enough not to crowd either apiserver.
const CONCURRENCY: usize = 16;
/// Reporting component of the Events written on tenant pods.
const COMPONENT: &str = "vc-clustertree";

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
pub async fn pass(
    host: &Client,
    tenant: &Client,
    tenancy: &Tenancy,
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
    let tenant_pods = Api::<Pod>::all(tenant.clone())
        .list(&ListParams::default())
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
    let token_steps = plan
        .tokens
        .iter()
        .filter(|token| {
            !secrets
                .get(&token.host_secret)
                .is_some_and(|s| pods::token_fresh(&s.metadata, &token.pod.uid, now))
        })
        .map(|token| write_token(host, tenant, namespace, token));
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

    let mut failed = 0;
    for error in results.into_iter().filter_map(Result::err) {
        failed += 1;
        tracing::warn!(%error, "pod sync step failed; retrying next pass");
    }
    Ok(PassReport { actions, failed })
}

fn kind_name(kind: CopyKind) -> &'static str {
    match kind {
        CopyKind::ConfigMap => "ConfigMap",
        CopyKind::Secret => "Secret",
    }
}

/// Writes the host copy of a tenant ConfigMap or Secret when missing or out of date. A
/// tenant object that does not exist is not copied: the host kubelet waits for the
/// volume, as the tenant's would.
async fn ensure_copy(
    host: &Client,
    tenant: &Client,
    namespace: &str,
    copy: &Copy,
    config_maps: &BTreeMap<String, &ConfigMap>,
    secrets: &BTreeMap<String, &Secret>,
) -> Result<(), StepError> {
    let kind = kind_name(copy.kind);
    let object = format!("{}/{}", copy.tenant_namespace, copy.tenant_name);
    let read_error = |source| StepError::ReadTenantObject {
        kind,
        object: object.clone(),
        source,
    };
    let meta = |uid: Option<String>| {
        let (labels, annotations) = pods::ownership(
            &copy.tenant_namespace,
            &copy.tenant_name,
            &uid.unwrap_or_default(),
        );
        ObjectMeta {
            name: Some(copy.host_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    };
    let body = match copy.kind {
        CopyKind::ConfigMap => {
            let Some(source) = Api::<ConfigMap>::namespaced(tenant.clone(), &copy.tenant_namespace)
                .get_opt(&copy.tenant_name)
                .await
                .map_err(read_error)?
            else {
                return Ok(());
            };
            let current = config_maps.get(&copy.host_name);
            if current.is_some_and(|c| {
                c.data == source.data
                    && c.binary_data == source.binary_data
                    && pods::recorded_uid(&c.metadata) == source.uid().as_deref()
            }) {
                return Ok(());
            }
            serde_json::to_value(ConfigMap {
                metadata: meta(source.uid()),
                data: source.data,
                binary_data: source.binary_data,
                immutable: None,
            })
        }
        CopyKind::Secret => {
            let Some(source) = Api::<Secret>::namespaced(tenant.clone(), &copy.tenant_namespace)
                .get_opt(&copy.tenant_name)
                .await
                .map_err(read_error)?
            else {
                return Ok(());
            };
            let current = secrets.get(&copy.host_name);
            if current.is_some_and(|s| {
                s.data == source.data
                    && s.type_ == source.type_
                    && pods::recorded_uid(&s.metadata) == source.uid().as_deref()
            }) {
                return Ok(());
            }
            serde_json::to_value(Secret {
                metadata: meta(source.uid()),
                data: source.data,
                type_: source.type_,
                ..Secret::default()
            })
        }
    };
    let write_error = |source| StepError::WriteCopy {
        kind,
        object: object.clone(),
        name: copy.host_name.clone(),
        source,
    };
    let mut body = body.map_err(|error| write_error(kube::Error::SerdeError(error)))?;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!(kind);
    let params = PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    match copy.kind {
        CopyKind::ConfigMap => Api::<ConfigMap>::namespaced(host.clone(), namespace)
            .patch(&copy.host_name, &params, &patch)
            .await
            .map(drop),
        CopyKind::Secret => Api::<Secret>::namespaced(host.clone(), namespace)
            .patch(&copy.host_name, &params, &patch)
            .await
            .map(drop),
    }
    .map_err(write_error)
}

/// Asks the tenant for a token of the pod's ServiceAccount, bound to the tenant pod, and
/// writes it with the tenant's CA and the pod's namespace into the host Secret the host
/// pod mounts where the tenant's kubelet would have mounted its projected volume.
async fn write_token(
    host: &Client,
    tenant: &Client,
    namespace: &str,
    token: &Token,
) -> Result<(), StepError> {
    let pod = token.pod.to_string();
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: token.audience.iter().cloned().collect(),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(token.pod.name.clone()),
                uid: Some(token.pod.uid.clone()),
            }),
            expiration_seconds: Some(token.expiration_seconds),
        },
        status: None,
    };
    let issued = Api::<ServiceAccount>::namespaced(tenant.clone(), &token.pod.namespace)
        .create_token_request(&token.service_account, &PostParams::default(), &request)
        .await
        .map_err(|source| StepError::RequestToken {
            pod: pod.clone(),
            service_account: token.service_account.clone(),
            source,
        })?;
    let status = issued
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| StepError::EmptyToken { pod: pod.clone() })?;
    let mut files = token.files.clone();
    for (name, items) in &token.config_maps {
        let found = Api::<ConfigMap>::namespaced(tenant.clone(), &token.pod.namespace)
            .get_opt(name)
            .await
            .map_err(|source| StepError::ReadTenantObject {
                kind: "ConfigMap",
                object: format!("{}/{name}", token.pod.namespace),
                source,
            })?;
        // The CA is what every client needs; another projected ConfigMap the tenant does
        // not publish is left out, as the projection is usable without it.
        let Some(data) = found.and_then(|c| c.data) else {
            if name == TENANT_ROOT_CA_CONFIG_MAP {
                return Err(StepError::MissingTenantCa {
                    namespace: token.pod.namespace.clone(),
                });
            }
            continue;
        };
        match items {
            Some(items) => {
                for (key, path) in items {
                    if let Some(value) = data.get(key) {
                        files.insert(path.clone(), value.clone());
                    }
                }
            }
            None => files.extend(data),
        }
    }
    files.insert(token.token_path.clone(), status.token);
    let now = jiff::Timestamp::now();
    let Time(expires) = status.expiration_timestamp;
    let (labels, mut annotations) =
        pods::ownership(&token.pod.namespace, &token.pod.name, &token.pod.uid);
    annotations.insert(
        TOKEN_REFRESH_ANNOTATION.to_owned(),
        pods::token_refresh_after(now, expires).to_string(),
    );
    let data: BTreeMap<String, ByteString> = files
        .into_iter()
        .map(|(path, value)| (path, ByteString(value.into_bytes())))
        .collect();
    let body = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": token.host_secret, "namespace": namespace, "labels": labels, "annotations": annotations},
        "type": "Opaque",
        "data": data,
    });
    Api::<Secret>::namespaced(host.clone(), namespace)
        .patch(
            &token.host_secret,
            &PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(drop)
        .map_err(|source| StepError::WriteToken { pod, source })
}

async fn delete_copy(
    host: &Client,
    namespace: &str,
    kind: CopyKind,
    name: &str,
    uid: &str,
) -> Result<(), StepError> {
    let result = match kind {
        CopyKind::ConfigMap => Api::<ConfigMap>::namespaced(host.clone(), namespace)
            .delete(name, &by_uid(uid))
            .await
            .map(drop),
        CopyKind::Secret => Api::<Secret>::namespaced(host.clone(), namespace)
            .delete(name, &by_uid(uid))
            .await
            .map(drop),
    };
    match result {
        Err(error) if !is_status(&error, 404) => Err(StepError::DeleteCopy {
            kind: kind_name(kind),
            name: name.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

async fn act(tenant: &Client, host_pods: &Api<Pod>, action: Action) -> Result<(), StepError> {
    match action {
        Action::CreateHostPod {
            tenant: pod,
            host: wanted,
        } => {
            match host_pods.create(&PostParams::default(), &wanted.pod).await {
                Ok(_) => {
                    tracing::info!(pod = %pod, host_pod = %wanted.pod.name_any(), "host pod created");
                    Ok(())
                }
                Err(error) if is_status(&error, 409) => Ok(()),
                Err(error) => {
                    // The host refused it (quota, admission): the tenant must see why.
                    if let kube::Error::Api(status) = &error
                        && matches!(status.code, 403 | 422)
                    {
                        record_event(tenant, &pod, "HostRefused", &status.message).await?;
                    }
                    Err(StepError::CreateHostPod {
                        pod: pod.to_string(),
                        source: error,
                    })
                }
            }
        }
        Action::DeleteHostPod {
            name,
            uid,
            grace_period_seconds,
            why,
        } => {
            let mut params = by_uid(&uid);
            params.grace_period_seconds = grace_period_seconds.and_then(|s| u32::try_from(s).ok());
            match host_pods.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(host_pod = %name, why, "host pod deleted");
                    Ok(())
                }
                Err(error) if is_status(&error, 404) || is_status(&error, 409) => Ok(()),
                Err(source) => Err(StepError::DeleteHostPod { name, why, source }),
            }
        }
        Action::UpdateTenantStatus {
            tenant: pod,
            status,
        } => {
            let body = json!({"apiVersion": "v1", "kind": "Pod", "status": status});
            Api::<Pod>::namespaced(tenant.clone(), &pod.namespace)
                .patch_status(
                    &pod.name,
                    &PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .map(drop)
                .or_else(|error| {
                    if is_status(&error, 404) {
                        Ok(())
                    } else {
                        Err(error)
                    }
                })
                .map_err(|source| StepError::WriteTenantStatus {
                    pod: pod.to_string(),
                    source,
                })
        }
        Action::FinishTenantDeletion { tenant: pod } => {
            let mut params = by_uid(&pod.uid);
            params.grace_period_seconds = Some(0);
            match Api::<Pod>::namespaced(tenant.clone(), &pod.namespace)
                .delete(&pod.name, &params)
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %pod, "tenant pod deleted after its host pod");
                    Ok(())
                }
                Err(error) if is_status(&error, 404) || is_status(&error, 409) => Ok(()),
                Err(source) => Err(StepError::FinishTenantDeletion {
                    pod: pod.to_string(),
                    source,
                }),
            }
        }
        Action::FailTenantPod {
            tenant: pod,
            reason,
            message,
        } => {
            record_event(tenant, &pod, &reason, &message).await?;
            let body = json!({"status": {"phase": "Failed", "reason": reason, "message": message}});
            Api::<Pod>::namespaced(tenant.clone(), &pod.namespace)
                .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map(drop)
                .map_err(|source| StepError::WriteTenantStatus {
                    pod: pod.to_string(),
                    source,
                })?;
            tracing::info!(pod = %pod, %reason, %message, "tenant pod failed");
            Ok(())
        }
    }
}

/// A Warning Event on the tenant pod, once per pod and reason.
async fn record_event(
    tenant: &Client,
    pod: &PodRef,
    reason: &str,
    message: &str,
) -> Result<(), StepError> {
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(pods::event_name(pod, reason)),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some("Warning".to_owned()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(COMPONENT.to_owned()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(COMPONENT.to_owned()),
            host: None,
        }),
        ..Event::default()
    };
    match Api::<Event>::namespaced(tenant.clone(), &pod.namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        Err(error) if !is_status(&error, 409) => Err(StepError::RecordEvent {
            pod: pod.to_string(),
            reason: reason.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
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
    loop {
        match pass(&host, &tenant, &tenancy).await {
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

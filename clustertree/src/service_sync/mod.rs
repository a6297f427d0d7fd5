//! The Service loop: reads the tenant's Services and EndpointSlices (tenant admin) and
//! the host Services and EndpointSlices of the workload namespace, then does what
//! [`crate::services::plan`] says. On the host it touches nothing outside `vc-NS-NAME`;
//! it updates or deletes only objects carrying our managed-by label, deletes each by UID
//! precondition, and never writes over a host object recording another tenant UID.
//!
//! Each pass also re-applies the tenant's MutatingWebhookConfiguration when it differs, so
//! a tenant admin deleting or editing it gets it back within a period. The webhook itself
//! is [`admission`], served on the kubelet API listener.

pub mod admission;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use vc_api::constants::CLUSTERTREE_FIELD_MANAGER;

use crate::services::{self, Action, Observed, SERVICE_NAME_LABEL};

/// Where the tenant apiserver reaches the Service webhook, and what it trusts there.
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    /// The kubelet API's advertised address.
    pub address: String,
    /// The kubelet API's port.
    pub port: i32,
    /// The serving certificate chain (PEM): the webhook's `caBundle`.
    pub ca_bundle: Vec<u8>,
}

/// Why a pass could not read what it plans from; retried next period.
#[derive(Debug, thiserror::Error)]
pub enum ServiceSyncError {
    #[error("listing the tenant's Services: {0}")]
    ListTenantServices(kube::Error),
    #[error("listing the tenant's EndpointSlices: {0}")]
    ListTenantSlices(kube::Error),
    #[error("listing host Services in {namespace}: {source}")]
    ListHostServices {
        namespace: String,
        source: kube::Error,
    },
    #[error("listing host EndpointSlices in {namespace}: {source}")]
    ListHostSlices {
        namespace: String,
        source: kube::Error,
    },
}

/// Why one step failed; the others go on, and it is retried next pass.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("writing host Service {name} (tenant Service {tenant}): {source}")]
    WriteHostService {
        name: String,
        tenant: String,
        source: kube::Error,
    },
    #[error("deleting host Service {name}: {source}")]
    DeleteHostService { name: String, source: kube::Error },
    #[error("writing host EndpointSlice {name} (tenant EndpointSlice {tenant}): {source}")]
    WriteHostSlice {
        name: String,
        tenant: String,
        source: kube::Error,
    },
    #[error("deleting host EndpointSlice {name}: {source}")]
    DeleteHostSlice { name: String, source: kube::Error },
    #[error("writing status.loadBalancer of tenant Service {service}: {source}")]
    ReflectLoadBalancer {
        service: String,
        source: kube::Error,
    },
    #[error("reading the tenant's MutatingWebhookConfiguration {name}: {source}")]
    ReadWebhookConfiguration { name: String, source: kube::Error },
    #[error("writing the tenant's MutatingWebhookConfiguration {name}: {source}")]
    WriteWebhookConfiguration { name: String, source: kube::Error },
}

fn serde_error(error: serde_json::Error) -> kube::Error {
    kube::Error::SerdeError(error)
}

fn tenant_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(vc_api::constants::TENANT_OBJECT_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

/// Reads both sides.
async fn observe(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
) -> Result<Observed, ServiceSyncError> {
    let params = ListParams::default();
    let slices = ListParams::default().labels(SERVICE_NAME_LABEL);
    let tenant_services_api = Api::<Service>::all(tenant.clone());
    let tenant_slices_api = Api::<EndpointSlice>::all(tenant.clone());
    let host_services_api = Api::<Service>::namespaced(host.clone(), workload_namespace);
    let host_slices_api = Api::<EndpointSlice>::namespaced(host.clone(), workload_namespace);
    let (tenant_services, tenant_slices, host_services, host_slices) = tokio::join!(
        tenant_services_api.list(&params),
        tenant_slices_api.list(&slices),
        host_services_api.list(&params),
        host_slices_api.list(&params),
    );
    Ok(Observed {
        tenant_services: tenant_services
            .map_err(ServiceSyncError::ListTenantServices)?
            .items,
        tenant_slices: tenant_slices
            .map_err(ServiceSyncError::ListTenantSlices)?
            .items,
        host_services: host_services
            .map_err(|source| ServiceSyncError::ListHostServices {
                namespace: workload_namespace.to_owned(),
                source,
            })?
            .items,
        host_slices: host_slices
            .map_err(|source| ServiceSyncError::ListHostSlices {
                namespace: workload_namespace.to_owned(),
                source,
            })?
            .items,
        now: jiff::Timestamp::now(),
    })
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

/// A delete that found the object gone, or replaced under the same name, did nothing
/// wrong: either way ours is no longer there.
fn gone(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 || status.code == 409)
}

/// Writes `desired` as `name` by server-side apply, which needs its apiVersion and kind
/// in the body (the typed objects leave them out).
async fn server_side_apply<K>(
    api: &Api<K>,
    params: &PatchParams,
    name: &str,
    desired: &K,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()>
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let mut body = serde_json::to_value(desired).map_err(serde_error)?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    api.patch(name, params, &Patch::Apply(&body)).await?;
    Ok(())
}

async fn act(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
    action: Action,
) -> Result<(), StepError> {
    let apply = PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force();
    let services = Api::<Service>::namespaced(host.clone(), workload_namespace);
    let slices = Api::<EndpointSlice>::namespaced(host.clone(), workload_namespace);
    match action {
        Action::ApplyService(desired) => {
            let name = desired.metadata.name.clone().unwrap_or_default();
            let tenant = tenant_of(&desired.metadata);
            let written = server_side_apply(&services, &apply, &name, &*desired).await;
            written.map_err(|source| StepError::WriteHostService {
                name: name.clone(),
                tenant: tenant.clone(),
                source,
            })?;
            tracing::info!(service = %tenant, host = %name, "host Service written");
        }
        Action::DeleteService { name, uid } => match services.delete(&name, &by_uid(&uid)).await {
            Ok(_) => tracing::info!(host = %name, "host Service without a tenant Service deleted"),
            Err(error) if gone(&error) => {}
            Err(source) => return Err(StepError::DeleteHostService { name, source }),
        },
        Action::ApplySlice(desired) => {
            let name = desired.metadata.name.clone().unwrap_or_default();
            let written = server_side_apply(&slices, &apply, &name, &*desired).await;
            written.map_err(|source| StepError::WriteHostSlice {
                tenant: tenant_of(&desired.metadata),
                name,
                source,
            })?;
        }
        Action::DeleteSlice { name, uid } => match slices.delete(&name, &by_uid(&uid)).await {
            Ok(_) => {}
            Err(error) if gone(&error) => {}
            Err(source) => return Err(StepError::DeleteHostSlice { name, source }),
        },
        Action::ReflectLoadBalancer {
            namespace,
            name,
            status,
        } => {
            let ingress = status
                .ingress
                .map_or(serde_json::Value::Null, |ingress| json!(ingress));
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            Api::<Service>::namespaced(tenant.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| StepError::ReflectLoadBalancer {
                    service: format!("{namespace}/{name}"),
                    source,
                })?;
            tracing::info!(service = %format!("{namespace}/{name}"), "load-balancer ingress reflected");
        }
        Action::Foreign { service, host } => {
            tracing::warn!(%service, %host, "a host Service of this name is not vc-clustertree's; left alone");
        }
    }
    Ok(())
}

/// Applies the tenant's MutatingWebhookConfiguration when it is missing or differs.
async fn keep_webhook_configuration(
    tenant: &Client,
    target: &WebhookTarget,
) -> Result<(), StepError> {
    let name = services::WEBHOOK_CONFIGURATION;
    let desired = services::webhook_configuration(&target.address, target.port, &target.ca_bundle);
    let api = Api::<MutatingWebhookConfiguration>::all(tenant.clone());
    let existing =
        api.get_opt(name)
            .await
            .map_err(|source| StepError::ReadWebhookConfiguration {
                name: name.to_owned(),
                source,
            })?;
    let fail = |source| StepError::WriteWebhookConfiguration {
        name: name.to_owned(),
        source,
    };
    let mut body = serde_json::to_value(&desired).map_err(|e| fail(serde_error(e)))?;
    if let Some(existing) = existing {
        let existing = serde_json::to_value(&existing).map_err(|e| fail(serde_error(e)))?;
        if services::contains(&existing, &body) {
            return Ok(());
        }
    }
    body["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    body["kind"] = json!("MutatingWebhookConfiguration");
    api.patch(
        name,
        &PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(fail)?;
    tracing::info!(%name, "tenant Service webhook configured");
    Ok(())
}

/// One pass; returns how many steps failed.
pub async fn pass(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
    webhook: Option<&WebhookTarget>,
) -> Result<usize, ServiceSyncError> {
    let mut failed = 0;
    if let Some(target) = webhook
        && let Err(error) = keep_webhook_configuration(tenant, target).await
    {
        tracing::warn!(%error, "Service webhook configuration not kept");
        failed += 1;
    }
    let observed = observe(host, tenant, workload_namespace).await?;
    for action in services::plan(&observed, workload_namespace) {
        if let Err(error) = act(host, tenant, workload_namespace, action).await {
            tracing::warn!(%error, "Service sync step failed; retrying next pass");
            failed += 1;
        }
    }
    Ok(failed)
}

/// Runs passes every `period` until `shutdown` resolves.
pub async fn run(
    host: Client,
    tenant: Client,
    workload_namespace: String,
    webhook: Option<WebhookTarget>,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if let Err(error) = pass(&host, &tenant, &workload_namespace, webhook.as_ref()).await {
            tracing::warn!(%error, "Service sync failed; retrying");
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

//! The tenant's Service webhook: the host Service is created (or updated) first, and the
//! tenant Service then takes the cluster IPs and node ports the host allocated, so the
//! same address works on both sides. A refusal of the host is the tenant's refusal,
//! worded for the tenant's fields. A dry run asks the host for a dry run as well, so it
//! shows the addresses without creating anything.

use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::constants::CLUSTERTREE_FIELD_MANAGER;

use crate::pods::recorded_uid;
use crate::services::{
    admission_patch, generated_name, host_service, is_ours, name_operation, refusal_message,
};

/// Why a review was not answered with a decision; the HTTP layer answers 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview of a Service: {0}")]
    Parse(serde_json::Error),
    #[error("the AdmissionReview carries no request")]
    NoRequest,
    #[error("encoding the AdmissionReview answer: {0}")]
    Encode(serde_json::Error),
}

/// Why the host Service could not be made ready; each becomes a denial.
#[derive(Debug, thiserror::Error)]
enum HostError {
    #[error(
        "host Service {host} in {namespace} exists and is not managed by vc-clustertree; \
         rename the Service"
    )]
    Foreign { host: String, namespace: String },
    #[error("reading host Service {host}: {source}")]
    Read { host: String, source: kube::Error },
    #[error("reading tenant Service {service}: {source}")]
    ReadTenant {
        service: String,
        source: kube::Error,
    },
    #[error("deleting stale host Service {host}: {source}")]
    DeleteStale { host: String, source: kube::Error },
    #[error("{0}")]
    Refused(String),
    #[error("writing host Service {host}: {source}")]
    Write { host: String, source: kube::Error },
}

/// Answers one AdmissionReview body.
pub async fn review(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
    body: &[u8],
) -> Result<Vec<u8>, ReviewError> {
    let review: AdmissionReview<Service> =
        serde_json::from_slice(body).map_err(ReviewError::Parse)?;
    let request: AdmissionRequest<Service> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = decide(host, tenant, workload_namespace, &request).await;
    let review: AdmissionReview<DynamicObject> = response.into_review();
    serde_json::to_vec(&review).map_err(ReviewError::Encode)
}

async fn decide(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
    request: &AdmissionRequest<Service>,
) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return allowed;
    }
    let Some(mut object) = request.object.clone() else {
        return allowed;
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    object.metadata.namespace = Some(namespace.clone());
    let mut named = None;
    if object.metadata.name.as_deref().is_none_or(str::is_empty) {
        match object.metadata.generate_name.as_deref() {
            // generateName: the apiserver would name the Service after admission, too
            // late for the host twin, so the webhook names it here as the apiserver
            // would, and the host allocates its addresses like any other's.
            Some(prefix) if request.name.is_empty() && !prefix.is_empty() => {
                let name = generated_name(prefix, || rand::random_range(0..usize::MAX));
                object.metadata.name = Some(name.clone());
                named = Some(name);
            }
            _ if request.name.is_empty() => return allowed,
            _ => object.metadata.name = Some(request.name.clone()),
        }
    }
    if object.metadata.uid.is_none() {
        object.metadata.uid = request.old_object.as_ref().and_then(|old| old.uid());
    }
    let Some(desired) = host_service(&object, workload_namespace) else {
        return allowed;
    };
    let service = format!("{namespace}/{}", object.name_any());
    match ensure(
        host,
        tenant,
        workload_namespace,
        &object,
        &desired,
        request.dry_run,
    )
    .await
    {
        Ok(Some(applied)) => {
            let mut patch = admission_patch(&object, &applied);
            if let Some(name) = &named {
                patch.0.insert(0, name_operation(name));
            }
            match allowed.with_patch(patch) {
                Ok(patched) => {
                    tracing::info!(%service, dry_run = request.dry_run, "tenant Service given the host's addresses");
                    patched
                }
                Err(error) => AdmissionResponse::from(request)
                    .deny(format!("encoding the patch of Service {service}: {error}")),
            }
        }
        Ok(None) => match &named {
            Some(name) => allowed
                .with_patch(json_patch::Patch(vec![name_operation(name)]))
                .unwrap_or_else(|error| {
                    AdmissionResponse::from(request)
                        .deny(format!("encoding the patch of Service {service}: {error}"))
                }),
            None => allowed,
        },
        Err(error) => {
            tracing::info!(%service, %error, "tenant Service refused");
            AdmissionResponse::from(request).deny(error.to_string())
        }
    }
}

/// Brings the host Service in line with `desired` and returns it as the host stored it,
/// or `None` when the tenant already has a Service of this name with a host twin (the
/// create will fail as a duplicate, so nothing is touched).
async fn ensure(
    host: &Client,
    tenant: &Client,
    workload_namespace: &str,
    object: &Service,
    desired: &Service,
    dry_run: bool,
) -> Result<Option<Service>, HostError> {
    let name = desired.name_any();
    let api = Api::<Service>::namespaced(host.clone(), workload_namespace);
    let existing = api.get_opt(&name).await.map_err(|source| HostError::Read {
        host: name.clone(),
        source,
    })?;
    if let Some(existing) = &existing {
        if !is_ours(&existing.metadata) {
            return Err(HostError::Foreign {
                host: name,
                namespace: workload_namespace.to_owned(),
            });
        }
        let recorded = recorded_uid(&existing.metadata);
        let own = object.uid();
        if let Some(recorded) = recorded
            && own.as_deref() != Some(recorded)
        {
            let namespace = object.namespace().unwrap_or_default();
            let current = Api::<Service>::namespaced(tenant.clone(), &namespace)
                .get_opt(&object.name_any())
                .await
                .map_err(|source| HostError::ReadTenant {
                    service: format!("{namespace}/{}", object.name_any()),
                    source,
                })?;
            if current.and_then(|current| current.uid()).as_deref() == Some(recorded) {
                return Ok(None);
            }
            if !dry_run {
                delete_stale(&api, &name, existing).await?;
            }
        }
    }
    let mut body = serde_json::to_value(desired).map_err(|error| HostError::Write {
        host: name.clone(),
        source: kube::Error::SerdeError(error),
    })?;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Service");
    let mut params = PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force();
    params.dry_run = dry_run;
    match api.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(applied) => Ok(Some(applied)),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
            Err(HostError::Refused(refusal_message(
                object,
                &status.message,
                &name,
                workload_namespace,
            )))
        }
        Err(source) => Err(HostError::Write { host: name, source }),
    }
}

async fn delete_stale(api: &Api<Service>, name: &str, existing: &Service) -> Result<(), HostError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(source) => {
            return Err(HostError::DeleteStale {
                host: name.to_owned(),
                source,
            });
        }
    }
    // The host releases a deleted Service's addresses with the object; wait for it to
    // go so the new one may ask for them.
    for _ in 0..50 {
        match api.get_opt(name).await {
            Ok(Some(found)) if found.uid() == existing.uid() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    Ok(())
}

//! The plan's actions on host pods and tenant pods, each one API call guarded by UID
//! so a stale plan never touches a newer object of the same name.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::constants::CLUSTERTREE_FIELD_MANAGER;

use super::{StepError, by_uid, is_status};
use crate::pods::{self, Action, PodRef};

/// Reporting component of the Events written on tenant pods.
const COMPONENT: &str = pods::EVENT_COMPONENT;

pub(super) async fn act(
    tenant: &Client,
    host_pods: &Api<Pod>,
    action: Action,
) -> Result<(), StepError> {
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

//! Connects the request pipeline to the RBAC authorizer (`crate::rbac`) and the webhook
//! dispatcher (`crate::admission`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde_json::Value;

use super::hooks::{
    AdmissionAttributes, AdmissionHook, AdmissionOperation, AdmissionPhase, AdmissionResult,
    Authorizer, AuthzAttributes, AuthzDecision, RbacSnapshot, ServiceResolver, WebhookConfigs,
};
use super::status::ApiError;
use crate::{admission, rbac};

/// Decides with the RBAC objects stored in the server.
#[derive(Debug, Default)]
pub struct RbacAuthorizer;

fn typed<T: serde::de::DeserializeOwned>(values: &[Value]) -> Vec<T> {
    values
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// The stored RBAC objects, typed (objects that do not parse grant nothing).
pub fn rbac_objects(snapshot: &RbacSnapshot) -> rbac::RbacObjects {
    rbac::RbacObjects {
        roles: typed(&snapshot.roles),
        cluster_roles: typed(&snapshot.cluster_roles),
        role_bindings: typed(&snapshot.role_bindings),
        cluster_role_bindings: typed(&snapshot.cluster_role_bindings),
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, snapshot: &RbacSnapshot, attrs: &AuthzAttributes) -> AuthzDecision {
        let objects = rbac_objects(snapshot);
        let request = to_rbac_attrs(attrs);
        match rbac::authorize(&objects, &request) {
            rbac::Decision::Allow => AuthzDecision::Allow,
            rbac::Decision::Deny { reason } => AuthzDecision::Deny(reason),
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn to_rbac_attrs(attrs: &AuthzAttributes) -> rbac::RequestAttributes<'_> {
    rbac::RequestAttributes {
        user: &attrs.user,
        groups: &attrs.groups,
        verb: &attrs.verb,
        api_group: &attrs.api_group,
        resource: &attrs.resource,
        subresource: non_empty(&attrs.subresource),
        namespace: non_empty(&attrs.namespace),
        name: non_empty(&attrs.name),
        non_resource_path: attrs.non_resource_path.as_deref(),
    }
}

/// The text kube-apiserver puts in a 403 for these attributes and reason.
pub fn forbidden_message(attrs: &AuthzAttributes, reason: &str) -> String {
    rbac::forbidden_message(&to_rbac_attrs(attrs), reason)
}

/// Calls the webhooks registered in the server.
#[derive(Debug, Default)]
pub struct WebhookAdmission;

fn to_admission_attrs(
    attrs: &AdmissionAttributes,
    namespace_labels: BTreeMap<String, String>,
) -> admission::AdmissionAttributes {
    admission::AdmissionAttributes {
        operation: match attrs.operation {
            AdmissionOperation::Create => admission::Operation::Create,
            AdmissionOperation::Update => admission::Operation::Update,
            AdmissionOperation::Delete => admission::Operation::Delete,
        },
        kind: GroupVersionKind::gvk(&attrs.group, &attrs.version, &attrs.kind),
        resource: GroupVersionResource::gvr(&attrs.group, &attrs.version, &attrs.resource),
        sub_resource: (!attrs.subresource.is_empty()).then(|| attrs.subresource.clone()),
        name: attrs.name.clone(),
        namespace: (!attrs.namespace.is_empty()).then(|| attrs.namespace.clone()),
        user_info: admission::UserInfo {
            username: attrs.user.username.clone(),
            uid: attrs.user.uid.clone(),
            groups: attrs.user.groups.clone(),
            extra: attrs.user.extra.clone(),
        },
        object: attrs.object.clone(),
        old_object: attrs.old_object.clone(),
        options: Some(attrs.options.clone()),
        dry_run: attrs.dry_run,
        namespace_labels,
    }
}

fn denied(d: admission::Denied) -> ApiError {
    ApiError::raw(d.code, &d.reason, &d.message, d.to_status_json())
}

impl AdmissionHook for WebhookAdmission {
    fn admit<'a>(
        &'a self,
        phase: AdmissionPhase,
        attrs: &'a AdmissionAttributes,
        configs: &'a WebhookConfigs,
        resolver: ServiceResolver,
    ) -> BoxFuture<'a, Result<AdmissionResult, ApiError>> {
        Box::pin(async move {
            let request = to_admission_attrs(attrs, attrs.namespace_labels.clone());
            let resolve =
                move |svc: &k8s_openapi::api::admissionregistration::v1::ServiceReference| {
                    resolver(
                        &svc.namespace,
                        &svc.name,
                        svc.port.unwrap_or(443),
                        svc.path.as_deref().unwrap_or_default(),
                    )
                };
            let resolve: Arc<admission::ServiceResolver> = Arc::new(resolve);
            match phase {
                AdmissionPhase::Mutating => {
                    let hooks: Vec<MutatingWebhookConfiguration> = typed(&configs.mutating);
                    let mutated = admission::run_mutating(&hooks, &request, resolve.as_ref())
                        .await
                        .map_err(denied)?;
                    let changed = mutated.object != attrs.object;
                    Ok(AdmissionResult {
                        object: if changed { mutated.object } else { None },
                        warnings: mutated.warnings,
                    })
                }
                AdmissionPhase::Validating => {
                    let hooks: Vec<ValidatingWebhookConfiguration> = typed(&configs.validating);
                    let warnings = admission::run_validating(&hooks, &request, resolve.as_ref())
                        .await
                        .map_err(denied)?;
                    Ok(AdmissionResult {
                        object: None,
                        warnings,
                    })
                }
            }
        })
    }
}

//! The host objects a host pod mounts: copies of the tenant ConfigMaps and Secrets it
//! references, and the Secret carrying its tenant ServiceAccount token, CA and namespace.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::constants::CLUSTERTREE_FIELD_MANAGER;

use super::{StepError, by_uid, is_status};
use crate::pods::{
    self, COPY_DIGEST_ANNOTATION, Copy, CopyKind, TENANT_ROOT_CA_CONFIG_MAP,
    TOKEN_REFRESH_ANNOTATION, Token,
};

fn kind_name(kind: CopyKind) -> &'static str {
    match kind {
        CopyKind::ConfigMap => "ConfigMap",
        CopyKind::Secret => "Secret",
    }
}

/// Writes the host copy of a tenant ConfigMap or Secret when missing or out of date
/// (`current`: the copy's metadata, compared by recorded UID and content digest). A
/// tenant object that does not exist is not copied: the host kubelet waits for the
/// volume, as the tenant's would.
pub(super) async fn ensure_copy(
    host: &Client,
    tenant: &Client,
    namespace: &str,
    copy: &Copy,
    current: Option<&ObjectMeta>,
) -> Result<(), StepError> {
    let kind = kind_name(copy.kind);
    let object = format!("{}/{}", copy.tenant_namespace, copy.tenant_name);
    let read_error = |source| StepError::ReadTenantObject {
        kind,
        object: object.clone(),
        source,
    };
    let meta = |uid: Option<String>, digest: String| {
        let (labels, mut annotations) = pods::ownership(
            &copy.tenant_namespace,
            &copy.tenant_name,
            &uid.unwrap_or_default(),
        );
        annotations.insert(COPY_DIGEST_ANNOTATION.to_owned(), digest);
        ObjectMeta {
            name: Some(copy.host_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    };
    let up_to_date = |uid: Option<&str>, digest: &str| {
        current.is_some_and(|c| {
            pods::recorded_uid(c) == uid
                && c.annotations
                    .as_ref()
                    .and_then(|a| a.get(COPY_DIGEST_ANNOTATION))
                    .is_some_and(|d| d == digest)
        })
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
            let digest =
                pods::copy_digest(&json!({"data": source.data, "binaryData": source.binary_data}));
            if up_to_date(source.metadata.uid.as_deref(), &digest) {
                return Ok(());
            }
            serde_json::to_value(ConfigMap {
                metadata: meta(source.uid(), digest),
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
            let digest = pods::copy_digest(&json!({"type": source.type_, "data": source.data}));
            if up_to_date(source.metadata.uid.as_deref(), &digest) {
                return Ok(());
            }
            serde_json::to_value(Secret {
                metadata: meta(source.uid(), digest),
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
/// The tenant ConfigMaps the tokens due this pass project, by `(namespace, name)`: each
/// read once per pass rather than once per token (the CA of one namespace is the same for
/// every pod in it: 1,000 pods made 2,000 reads of it). `None`: the tenant has no such
/// ConfigMap.
pub(super) type ProjectedConfigMaps = BTreeMap<(String, String), Option<ConfigMap>>;

/// Reads one projected tenant ConfigMap for [`ProjectedConfigMaps`].
pub(super) async fn read_projected(
    tenant: &Client,
    namespace: String,
    name: String,
) -> Result<((String, String), Option<ConfigMap>), StepError> {
    let found = Api::<ConfigMap>::namespaced(tenant.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(|source| StepError::ReadTenantObject {
            kind: "ConfigMap",
            object: format!("{namespace}/{name}"),
            source,
        })?;
    Ok(((namespace, name), found))
}

pub(super) async fn write_token(
    host: &Client,
    tenant: &Client,
    namespace: &str,
    token: &Token,
    projected: &ProjectedConfigMaps,
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
        let key = (token.pod.namespace.clone(), name.clone());
        // Not read this pass (its read failed and was reported): the token waits a pass.
        let Some(found) = projected.get(&key) else {
            return Err(StepError::UnreadTenantConfigMap {
                pod: pod.clone(),
                config_map: format!("{}/{name}", token.pod.namespace),
            });
        };
        // The CA is what every client needs; another projected ConfigMap the tenant does
        // not publish is left out, as the projection is usable without it.
        let Some(data) = found.as_ref().and_then(|c| c.data.clone()) else {
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

pub(super) async fn delete_copy(
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

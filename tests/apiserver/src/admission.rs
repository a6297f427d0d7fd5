//! Admission webhook dispatch, as kube-apiserver does it.
//!
//! The test API server calls, for every write that admission sees (create, update, patch,
//! delete, and their subresources):
//!
//! ```text
//! let mutated = run_mutating(&mutating_configs, &attrs, &resolve).await?;   // Err = Denied
//! // ... build the validating attributes with `object: mutated.object` ...
//! let warnings = run_validating(&validating_configs, &attrs, &resolve).await?;
//! ```
//!
//! - [`AdmissionAttributes`] describes the request exactly as the AdmissionReview carries
//!   it (`object` without uid/creationTimestamp for mutating CREATE, as kube-apiserver
//!   sends it; `options` the `CreateOptions`/`UpdateOptions`/`DeleteOptions` object).
//! - `resolve` maps a webhook's `service` reference to the address to dial: it returns a
//!   URL (`https://10.1.2.3:8443/...`) or `host:port`; only host and port are used. TLS is
//!   then verified against `NAME.NAMESPACE.svc` and the path comes from the reference, as
//!   kube-apiserver does it.
//! - [`Mutated`] is the object after every JSONPatch, plus the webhooks' warnings (send
//!   them as `Warning: 299 - "..."` headers). [`Denied`] is the Status to answer with:
//!   `code`, `reason` (empty = no reason field), `message`, and `details` (the Status
//!   `details` JSON when there is one).
//!
//! What kube-apiserver does and this does too: configurations run in name order, webhooks
//! in list order; rules (operations, apiGroups, apiVersions, resources with `*`,
//! `res/sub`, `*/sub`, `res/*`, scope); namespaceSelector (namespaced requests only, the
//! Namespace's own labels for namespaces) and objectSelector (object or old object);
//! `url` and `service` clientConfig; caBundle verification with rustls (certificate chain
//! and host name, never skipped; an empty caBundle trusts nothing here, since no test
//! webhook has a publicly trusted certificate); `timeoutSeconds` (default 10) also sent
//! as `?timeout=Ns`; failurePolicy Fail (default) or Ignore; `sideEffects` with dry run;
//! AdmissionReview `admission.k8s.io/v1` only; JSONPatch responses; warnings; requests for
//! webhook configurations themselves are never sent to webhooks.
//! What it does not: `matchPolicy: Equivalent` across different versions of a resource
//! (only exact matches exist here), `matchConditions` (CEL; treated as matching),
//! `reinvocationPolicy: IfNeeded`, gzip responses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{GroupVersionKind, GroupVersionResource};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rbac::label_selector_matches;

/// Default `timeoutSeconds` of a webhook in admissionregistration.k8s.io/v1.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10;
/// The User-Agent kube-apiserver's admission client sends.
pub const USER_AGENT: &str = "kube-apiserver-admission";
/// Responses larger than this are refused, so a broken webhook cannot exhaust memory.
const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// The admission operation, as it appears in the AdmissionReview.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The requester, as authentication established it (`authentication.k8s.io/v1` UserInfo).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One admission request.
#[derive(Clone, Debug)]
pub struct AdmissionAttributes {
    pub operation: Operation,
    /// Kind of the object (`kind` and `requestKind` of the review).
    pub kind: GroupVersionKind,
    /// Resource addressed (`resource` and `requestResource`).
    pub resource: GroupVersionResource,
    /// `status`, `scale`... for subresource requests.
    pub sub_resource: Option<String>,
    /// Object name; empty for a create with `generateName`.
    pub name: String,
    /// `None` for cluster-scoped resources. For a Namespace object, its own name.
    pub namespace: Option<String>,
    pub user_info: UserInfo,
    /// The object being written; `None` for DELETE and CONNECT.
    pub object: Option<Value>,
    /// The stored object for UPDATE and DELETE.
    pub old_object: Option<Value>,
    /// `CreateOptions`, `UpdateOptions` or `DeleteOptions` as the apiserver sends them.
    pub options: Option<Value>,
    pub dry_run: bool,
    /// Labels of the request's Namespace, for `namespaceSelector`. For CREATE/UPDATE of a
    /// Namespace itself the object's labels are used instead, as kube-apiserver does.
    pub namespace_labels: BTreeMap<String, String>,
}

/// What the mutating webhooks made of the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutated {
    /// The object after every patch (the input object when nothing was patched).
    pub object: Option<Value>,
    pub warnings: Vec<String>,
}

/// The Status kube-apiserver answers with when admission stops a request.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    pub code: u16,
    /// Status `reason`; empty when the Status has none (a webhook denial without code).
    pub reason: String,
    pub message: String,
    /// Status `details`, when the Status has them (webhook-provided, or the `causes` of an
    /// InternalError).
    pub details: Option<Value>,
}

impl Denied {
    /// The `Status` body kube-apiserver writes, fields in its order and with its trailing
    /// newline (byte-identical to the recorded fixtures).
    pub fn to_status_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Status<'a> {
            kind: &'static str,
            api_version: &'static str,
            metadata: serde_json::Map<String, Value>,
            status: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            reason: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a Value>,
            code: u16,
        }
        let status = Status {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: &self.message,
            reason: &self.reason,
            details: self.details.as_ref(),
            code: self.code,
        };
        // Plain data always serialises. Go's encoder ends the body with a newline.
        let mut body = serde_json::to_string(&status).unwrap_or_default();
        body.push('\n');
        body
    }

    /// `Internal error occurred: ...` with the cause listed, as `NewInternalError` builds it.
    fn internal(cause: String) -> Self {
        Denied {
            code: 500,
            reason: "InternalError".to_owned(),
            message: format!("Internal error occurred: {cause}"),
            details: Some(serde_json::json!({ "causes": [{ "message": cause }] })),
        }
    }

    fn bad_request(message: String) -> Self {
        Denied {
            code: 400,
            reason: "BadRequest".to_owned(),
            message,
            details: None,
        }
    }

    /// A webhook's `allowed: false`, as `webhookerrors.ToStatusErr` turns it into an error.
    fn rejected(webhook: &str, status: Option<ReviewStatus>) -> Self {
        let status = status.unwrap_or_default();
        let denied_by = format!("admission webhook {webhook:?} denied the request");
        let message = match (status.message.as_deref(), status.reason.as_deref()) {
            (Some(message), _) if !message.is_empty() => format!("{denied_by}: {message}"),
            (_, Some(reason)) if !reason.is_empty() => format!("{denied_by}: {reason}"),
            _ => format!("{denied_by} without explanation"),
        };
        Denied {
            code: status.code.filter(|code| *code >= 400).unwrap_or(400),
            reason: status.reason.unwrap_or_default(),
            message,
            details: status.details,
        }
    }
}

/// Maps a webhook `service` reference to the address to dial (a URL or `host:port`).
pub type ServiceResolver = dyn Fn(&ServiceReference) -> Option<String> + Send + Sync;

/// Runs the mutating webhooks in order, each seeing the previous one's patches.
pub async fn run_mutating(
    configs: &[MutatingWebhookConfiguration],
    attrs: &AdmissionAttributes,
    resolve_service: &ServiceResolver,
) -> Result<Mutated, Denied> {
    let mut ordered: Vec<&MutatingWebhookConfiguration> = configs.iter().collect();
    ordered.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut current = attrs.clone();
    let mut warnings = Vec::new();
    for webhook in ordered.iter().flat_map(|c| c.webhooks.iter().flatten()) {
        let hook = Hook {
            name: &webhook.name,
            client_config: &webhook.client_config,
            rules: webhook.rules.as_deref().unwrap_or_default(),
            failure_policy: webhook.failure_policy.as_deref(),
            namespace_selector: webhook.namespace_selector.as_ref(),
            object_selector: webhook.object_selector.as_ref(),
            side_effects: &webhook.side_effects,
            timeout_seconds: webhook.timeout_seconds,
            review_versions: &webhook.admission_review_versions,
            mutating: true,
        };
        let Some(response) = dispatch(&hook, &current, resolve_service).await? else {
            continue;
        };
        warnings.extend(response.warnings.into_iter().flatten());
        if let Some(patch) = response.patch {
            current.object = Some(apply_patch(current.object.take(), &patch)?);
        }
    }
    Ok(Mutated {
        object: current.object,
        warnings,
    })
}

/// Runs the validating webhooks concurrently; the first denial in webhook order wins.
pub async fn run_validating(
    configs: &[ValidatingWebhookConfiguration],
    attrs: &AdmissionAttributes,
    resolve_service: &ServiceResolver,
) -> Result<Vec<String>, Denied> {
    let mut ordered: Vec<&ValidatingWebhookConfiguration> = configs.iter().collect();
    ordered.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let hooks: Vec<Hook<'_>> = ordered
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .map(|webhook| Hook {
            name: &webhook.name,
            client_config: &webhook.client_config,
            rules: webhook.rules.as_deref().unwrap_or_default(),
            failure_policy: webhook.failure_policy.as_deref(),
            namespace_selector: webhook.namespace_selector.as_ref(),
            object_selector: webhook.object_selector.as_ref(),
            side_effects: &webhook.side_effects,
            timeout_seconds: webhook.timeout_seconds,
            review_versions: &webhook.admission_review_versions,
            mutating: false,
        })
        .collect();
    let results = futures::future::join_all(
        hooks
            .iter()
            .map(|hook| dispatch(hook, attrs, resolve_service)),
    )
    .await;
    let mut warnings = Vec::new();
    for result in results {
        if let Some(response) = result? {
            warnings.extend(response.warnings.into_iter().flatten());
        }
    }
    Ok(warnings)
}

/// The fields of a mutating or validating webhook that dispatch needs.
struct Hook<'a> {
    name: &'a str,
    client_config: &'a WebhookClientConfig,
    rules: &'a [RuleWithOperations],
    failure_policy: Option<&'a str>,
    namespace_selector: Option<&'a LabelSelector>,
    object_selector: Option<&'a LabelSelector>,
    side_effects: &'a str,
    timeout_seconds: Option<i32>,
    review_versions: &'a [String],
    mutating: bool,
}

/// Calls one webhook if it matches. `Ok(None)`: not called, or failed open.
async fn dispatch(
    hook: &Hook<'_>,
    attrs: &AdmissionAttributes,
    resolve_service: &ServiceResolver,
) -> Result<Option<ReviewResponse>, Denied> {
    if !should_call(hook, attrs)? {
        return Ok(None);
    }
    if attrs.dry_run && !matches!(hook.side_effects, "None" | "NoneOnDryRun") {
        return Err(Denied::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            hook.name
        )));
    }
    match call(hook, attrs, resolve_service).await {
        Ok(response) if response.allowed => Ok(Some(response)),
        Ok(response) => Err(Denied::rejected(hook.name, response.status)),
        Err(_) if hook.failure_policy == Some("Ignore") => Ok(None),
        Err(reason) => Err(Denied::internal(format!(
            "failed calling webhook {:?}: {reason}",
            hook.name
        ))),
    }
}

/// Resources whose requests never reach webhooks, so a broken webhook can be removed.
fn is_exempt(resource: &GroupVersionResource) -> bool {
    resource.group == "admissionregistration.k8s.io"
        && matches!(
            resource.resource.as_str(),
            "mutatingwebhookconfigurations"
                | "validatingwebhookconfigurations"
                | "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

fn should_call(hook: &Hook<'_>, attrs: &AdmissionAttributes) -> Result<bool, Denied> {
    if is_exempt(&attrs.resource) || !hook.rules.iter().any(|rule| rule_matches(rule, attrs)) {
        return Ok(false);
    }
    let selector_error = |error: crate::rbac::SelectorError| Denied::internal(error.to_string());
    if let Some(selector) = hook.namespace_selector
        && let Some(labels) = namespace_labels_for(attrs)
        && !label_selector_matches(selector, &labels).map_err(selector_error)?
    {
        return Ok(false);
    }
    if let Some(selector) = hook.object_selector.filter(|s| !is_empty_selector(s)) {
        let matches = |object: Option<&Value>| -> Result<bool, Denied> {
            match object {
                Some(object) => {
                    label_selector_matches(selector, &object_labels(object)).map_err(selector_error)
                }
                None => Ok(false),
            }
        };
        if !(matches(attrs.object.as_ref())? || matches(attrs.old_object.as_ref())?) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// The labels a namespaceSelector is evaluated against; `None` when it does not apply
/// (cluster-scoped resources other than namespaces are never exempted by it).
fn namespace_labels_for(attrs: &AdmissionAttributes) -> Option<BTreeMap<String, String>> {
    let is_namespace = attrs.resource.group.is_empty() && attrs.resource.resource == "namespaces";
    if is_namespace
        && attrs.sub_resource.is_none()
        && matches!(attrs.operation, Operation::Create | Operation::Update)
    {
        return Some(attrs.object.as_ref().map(object_labels).unwrap_or_default());
    }
    if attrs.namespace.as_deref().is_none_or(str::is_empty) && !is_namespace {
        return None;
    }
    Some(attrs.namespace_labels.clone())
}

fn object_labels(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// kube-apiserver's `rules.Matcher`: scope, operation, group, version and resource.
pub fn rule_matches(rule: &RuleWithOperations, attrs: &AdmissionAttributes) -> bool {
    let exact_or_star = |items: Option<&Vec<String>>, wanted: &str| {
        items
            .into_iter()
            .flatten()
            .any(|item| item == "*" || item == wanted)
    };
    let operation = exact_or_star(rule.operations.as_ref(), attrs.operation.as_str());
    let group = exact_or_star(rule.api_groups.as_ref(), &attrs.resource.group);
    let version = exact_or_star(rule.api_versions.as_ref(), &attrs.resource.version);
    let wanted_sub = attrs.sub_resource.as_deref().unwrap_or_default();
    let resource = rule.resources.iter().flatten().any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
        (res == "*" || res == attrs.resource.resource) && (sub == "*" || sub == wanted_sub)
    });
    operation && group && version && resource && scope_matches(rule.scope.as_deref(), attrs)
}

fn scope_matches(scope: Option<&str>, attrs: &AdmissionAttributes) -> bool {
    let is_namespace = attrs.resource.group.is_empty() && attrs.resource.resource == "namespaces";
    let cluster_scoped = attrs.namespace.as_deref().is_none_or(str::is_empty);
    match scope {
        None | Some("*") => true,
        Some("Namespaced") => !is_namespace && !cluster_scoped,
        Some("Cluster") => is_namespace || cluster_scoped,
        Some(_) => false,
    }
}

/// The AdmissionReview kube-apiserver POSTs, byte for byte as in the fixtures.
pub fn review_request_body(attrs: &AdmissionAttributes, uid: &str) -> Vec<u8> {
    let review = ReviewEnvelope {
        kind: "AdmissionReview",
        api_version: "admission.k8s.io/v1",
        request: ReviewRequest {
            uid,
            kind: Gvk(&attrs.kind),
            resource: Gvr(&attrs.resource),
            sub_resource: attrs.sub_resource.as_deref(),
            request_kind: Gvk(&attrs.kind),
            request_resource: Gvr(&attrs.resource),
            request_sub_resource: attrs.sub_resource.as_deref(),
            name: &attrs.name,
            namespace: attrs.namespace.as_deref().unwrap_or_default(),
            operation: attrs.operation,
            user_info: &attrs.user_info,
            object: attrs.object.as_ref(),
            old_object: attrs.old_object.as_ref(),
            dry_run: attrs.dry_run,
            options: attrs.options.as_ref().map(GoOrderedOptions),
        },
    };
    // Serialising plain data into a Vec cannot fail; an empty body would be refused by the
    // webhook and reported, never silently accepted. Go's encoder ends it with a newline.
    let mut body = serde_json::to_vec(&review).unwrap_or_default();
    body.push(b'\n');
    body
}

#[derive(Serialize)]
struct ReviewEnvelope<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    request: ReviewRequest<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequest<'a> {
    uid: &'a str,
    kind: Gvk<'a>,
    resource: Gvr<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_resource: Option<&'a str>,
    request_kind: Gvk<'a>,
    request_resource: Gvr<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    operation: Operation,
    user_info: &'a UserInfo,
    object: Option<&'a Value>,
    old_object: Option<&'a Value>,
    dry_run: bool,
    options: Option<GoOrderedOptions<'a>>,
}

struct Gvk<'a>(&'a GroupVersionKind);

impl Serialize for Gvk<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("group", &self.0.group)?;
        map.serialize_entry("version", &self.0.version)?;
        map.serialize_entry("kind", &self.0.kind)?;
        map.end()
    }
}

struct Gvr<'a>(&'a GroupVersionResource);

impl Serialize for Gvr<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("group", &self.0.group)?;
        map.serialize_entry("version", &self.0.version)?;
        map.serialize_entry("resource", &self.0.resource)?;
        map.end()
    }
}

/// Options objects in Go struct order (`kind`, `apiVersion`, then the fields), since
/// `serde_json::Map` would sort them.
struct GoOrderedOptions<'a>(&'a Value);

const OPTIONS_FIELD_ORDER: [&str; 10] = [
    "kind",
    "apiVersion",
    "gracePeriodSeconds",
    "preconditions",
    "orphanDependents",
    "propagationPolicy",
    "dryRun",
    "force",
    "fieldManager",
    "fieldValidation",
];

impl Serialize for GoOrderedOptions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(fields) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for key in OPTIONS_FIELD_ORDER {
            if let Some(value) = fields.get(key) {
                map.serialize_entry(key, value)?;
            }
        }
        for (key, value) in fields {
            if !OPTIONS_FIELD_ORDER.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewEnvelopeIn {
    api_version: Option<String>,
    kind: Option<String>,
    response: Option<ReviewResponse>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ReviewResponse {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    allowed: bool,
    status: Option<ReviewStatus>,
    patch: Option<String>,
    patch_type: Option<String>,
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct ReviewStatus {
    code: Option<u16>,
    reason: Option<String>,
    message: Option<String>,
    details: Option<Value>,
}

/// Sends the review and checks the answer like `VerifyAdmissionResponse`. The error is
/// the text after `failed calling webhook "NAME": `.
async fn call(
    hook: &Hook<'_>,
    attrs: &AdmissionAttributes,
    resolve_service: &ServiceResolver,
) -> Result<ReviewResponse, String> {
    if !hook.review_versions.iter().any(|v| v == "v1") {
        return Err(format!(
            "webhook does not accept known AdmissionReview versions: accepted {:?}, supported [\"v1\"]",
            hook.review_versions
        ));
    }
    let timeout_seconds = hook
        .timeout_seconds
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        .max(1);
    let endpoint = Endpoint::new(hook.client_config, timeout_seconds, resolve_service)?;
    let uid = new_uid();
    let body = review_request_body(attrs, &uid);
    let timeout = Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or(10));
    let answer = match tokio::time::timeout(timeout, endpoint.post(body)).await {
        Ok(answer) => answer?,
        Err(_) => {
            return Err(format!(
                "failed to call webhook: Post {:?}: context deadline exceeded",
                endpoint.url
            ));
        }
    };
    verify_response(hook, &uid, &answer)
}

fn verify_response(hook: &Hook<'_>, uid: &str, body: &[u8]) -> Result<ReviewResponse, String> {
    let invalid = |why: String| format!("received invalid webhook response: {why}");
    let envelope: ReviewEnvelopeIn = serde_json::from_slice(body)
        .map_err(|e| format!("failed to call webhook: couldn't decode the AdmissionReview: {e}"))?;
    let api_version = envelope.api_version.unwrap_or_default();
    let kind = envelope.kind.unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(invalid(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        )));
    }
    let response = envelope
        .response
        .ok_or_else(|| invalid("webhook response was absent".to_owned()))?;
    if response.uid != uid {
        return Err(invalid(format!(
            "expected response.uid={uid:?}, got {:?}",
            response.uid
        )));
    }
    match (&response.patch, &response.patch_type) {
        (Some(_), _) if !hook.mutating => {
            return Err(invalid(
                "validating webhooks may not return patches".to_owned(),
            ));
        }
        (Some(_), None) => {
            return Err(invalid(
                "webhook returned response.patch but not response.patchType".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "webhook returned response.patchType but not response.patch".to_owned(),
            ));
        }
        (Some(_), Some(kind)) if kind != "JSONPatch" => {
            return Err(format!("unsupported patch type {kind:?}"));
        }
        _ => {}
    }
    Ok(response)
}

fn apply_patch(object: Option<Value>, encoded: &str) -> Result<Value, Denied> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| Denied::internal(format!("illegal base64 data in the webhook patch: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&raw)
        .map_err(|e| Denied::internal(format!("the webhook's JSONPatch cannot be decoded: {e}")))?;
    let mut object = object.ok_or_else(|| {
        Denied::internal("a webhook returned a patch for a request without an object".to_owned())
    })?;
    json_patch::patch(&mut object, &patch).map_err(|e| Denied::internal(e.to_string()))?;
    Ok(object)
}

/// A random UUID (version 4) for the review, as kube-apiserver sends one per call.
fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Where and how to reach one webhook.
struct Endpoint {
    /// The URL kube-apiserver would print in errors, `?timeout=` included.
    url: String,
    /// `host:port` to dial.
    dial: String,
    /// Name the serving certificate must be valid for.
    server_name: ServerName<'static>,
    host_header: String,
    path_and_query: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    fn new(
        config: &WebhookClientConfig,
        timeout_seconds: i32,
        resolve_service: &ServiceResolver,
    ) -> Result<Self, String> {
        let tls = Arc::new(tls_config(
            config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
        )?);
        let timeout_query = format!("timeout={timeout_seconds}s");
        if let Some(service) = &config.service {
            let port = service.port.unwrap_or(443);
            let host = format!("{}.{}.svc", service.name, service.namespace);
            let path = service.path.clone().unwrap_or_default();
            let path_and_query = format!("{}?{timeout_query}", with_leading_slash(&path));
            let url = format!("https://{host}:{port}{path_and_query}");
            let dial = resolve_service(service)
                .map(|address| authority_of(&address))
                .ok_or_else(|| {
                    format!(
                        "failed to call webhook: Post {url:?}: service \"{}/{}\" has no address",
                        service.namespace, service.name
                    )
                })?;
            let server_name = ServerName::try_from(host.clone()).map_err(|e| {
                format!("failed to call webhook: invalid service host {host:?}: {e}")
            })?;
            return Ok(Endpoint {
                url,
                dial,
                server_name,
                host_header: format!("{host}:{port}"),
                path_and_query,
                tls,
            });
        }
        let raw = config.url.as_deref().ok_or_else(|| {
            "failed to call webhook: clientConfig has neither url nor service".to_owned()
        })?;
        let uri: http::Uri = raw
            .parse()
            .map_err(|e| format!("failed to call webhook: invalid url {raw:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "failed to call webhook: url {raw:?} must use https"
            ));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let path_and_query = match uri.query() {
            Some(query) => format!("{}?{query}&{timeout_query}", with_leading_slash(uri.path())),
            None => format!("{}?{timeout_query}", with_leading_slash(uri.path())),
        };
        let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| format!("failed to call webhook: invalid host {host:?}: {e}"))?;
        Ok(Endpoint {
            url: format!("https://{authority}{path_and_query}"),
            dial: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            server_name,
            host_header: authority,
            path_and_query,
            tls,
        })
    }

    /// POSTs the review over HTTPS/1.1 and returns the body of a 2xx answer.
    async fn post(&self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let fail = |cause: String| format!("failed to call webhook: Post {:?}: {cause}", self.url);
        let tcp = tokio::net::TcpStream::connect(&self.dial)
            .await
            .map_err(|e| fail(dial_error(&self.dial, &e)))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| fail(tls_error(&e)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let connection = AbortOnDrop(tokio::spawn(connection));
        let request = http::Request::post(&self.path_and_query)
            .header(http::header::HOST, &self.host_header)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "application/json, */*")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        drop(connection);
        if !status.is_success() {
            return Err(format!(
                "failed to call webhook: {}",
                http_error(status, &bytes)
            ));
        }
        Ok(bytes.to_vec())
    }
}

/// Aborts the HTTP connection task when the call ends or is cancelled by its timeout.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn with_leading_slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// `host:port` of a URL (`https://10.0.0.1:8443/x`) or of a bare `host:port`.
fn authority_of(address: &str) -> String {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or(without_scheme);
    if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    }
}

/// Roots from the PEM caBundle; an empty bundle trusts nothing (see the module doc).
fn tls_config(ca_bundle: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_bundle.filter(|b| !b.is_empty()) {
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!("failed to call webhook: unable to load root certificates: {e}")
            })?;
        if certificates.is_empty() {
            return Err(
                "failed to call webhook: unable to load root certificates: no PEM certificate in caBundle"
                    .to_owned(),
            );
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|e| {
                format!("failed to call webhook: unable to load root certificates: {e}")
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("failed to call webhook: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's `dial tcp ADDR: connect: connection refused` and friends.
fn dial_error(dial: &str, error: &std::io::Error) -> String {
    let address = dial
        .parse::<SocketAddr>()
        .map_or_else(|_| dial.to_owned(), |a| a.to_string());
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {address}: connect: connection refused")
        }
        _ => format!("dial tcp {address}: {error}"),
    }
}

/// Go's wording for certificate failures, so messages read as a real apiserver's.
fn tls_error(error: &std::io::Error) -> String {
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("remote error: tls: {error}");
    };
    match rustls_error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority \
              (possibly because of a signature verification error while trying to verify \
              candidate authority certificate)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let names: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
            format!(
                "tls: failed to verify certificate: x509: certificate is valid for {}, not {}",
                names.join(", "),
                expected.to_str()
            )
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("tls: failed to verify certificate: x509: {other:?}")
        }
        other => format!("tls: {other}"),
    }
}

/// `DnsName("a.b")` -> `a.b`, the way rustls reports presented names.
fn presented_name(debug: &str) -> String {
    debug
        .split_once('(')
        .map_or(debug, |(_, rest)| rest.trim_end_matches(')'))
        .trim_matches('"')
        .to_owned()
}

/// client-go's error for a non-2xx answer: the Status message if the body is one.
fn http_error(status: http::StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned));
    match message {
        Some(message) if !message.is_empty() => message,
        _ => format!(
            "the server responded with the status code {} but did not return more information",
            status.as_u16()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const FIXTURE_CREATE: &str =
        include_str!("../fixtures/001-mutate-CREATE-virtualclusters-vc-adm.request.json");
    const FIXTURE_STATUS_UPDATE: &str =
        include_str!("../fixtures/007-mutate-UPDATE-virtualclusters-status-vc-adm.request.json");
    const FIXTURE_DRY_RUN: &str =
        include_str!("../fixtures/009-mutate-CREATE-virtualclusters-vc-dry-dryrun.request.json");
    const FIXTURE_DELETE: &str =
        include_str!("../fixtures/011-mutate-DELETE-virtualclusters-vc-adm.request.json");
    const FIXTURE_DENIED_403: &str =
        include_str!("../fixtures/denied-with-code-403-status-response.json");
    const FIXTURE_DENIED_NO_CODE: &str =
        include_str!("../fixtures/denied-without-code-status-response.json");

    fn text(value: &Value, pointer: &str) -> String {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn operation(name: &str) -> Operation {
        match name {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            _ => Operation::Connect,
        }
    }

    /// Attributes carrying what the recorded request carried.
    fn attrs_from_fixture(raw: &str) -> (AdmissionAttributes, String) {
        let review: Value = serde_json::from_str(raw).unwrap();
        let req = &review["request"];
        let non_null = |key: &str| Some(req[key].clone()).filter(|v| !v.is_null());
        let attrs = AdmissionAttributes {
            operation: operation(&text(req, "/operation")),
            kind: GroupVersionKind::gvk(
                &text(req, "/kind/group"),
                &text(req, "/kind/version"),
                &text(req, "/kind/kind"),
            ),
            resource: GroupVersionResource::gvr(
                &text(req, "/resource/group"),
                &text(req, "/resource/version"),
                &text(req, "/resource/resource"),
            ),
            sub_resource: req
                .get("subResource")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: text(req, "/name"),
            namespace: req
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            user_info: serde_json::from_value::<UserInfoIn>(req["userInfo"].clone())
                .unwrap()
                .into(),
            object: non_null("object"),
            old_object: non_null("oldObject"),
            options: non_null("options"),
            dry_run: req["dryRun"].as_bool().unwrap(),
            namespace_labels: BTreeMap::new(),
        };
        (attrs, text(req, "/uid"))
    }

    #[derive(Deserialize)]
    struct UserInfoIn {
        username: String,
        groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    }

    impl From<UserInfoIn> for UserInfo {
        fn from(u: UserInfoIn) -> Self {
            UserInfo {
                username: u.username,
                uid: String::new(),
                groups: u.groups,
                extra: u.extra,
            }
        }
    }

    #[test]
    fn review_bodies_are_byte_identical_to_kube_apiserver() {
        for fixture in [
            FIXTURE_CREATE,
            FIXTURE_STATUS_UPDATE,
            FIXTURE_DRY_RUN,
            FIXTURE_DELETE,
        ] {
            let (attrs, uid) = attrs_from_fixture(fixture);
            let body = String::from_utf8(review_request_body(&attrs, &uid)).unwrap();
            assert_eq!(body, fixture);
        }
    }

    #[test]
    fn denials_render_the_recorded_status() {
        let with_code = Denied::rejected(
            "validate.kosmos.io",
            Some(ReviewStatus {
                code: Some(403),
                reason: Some("Forbidden".to_owned()),
                message: Some(
                    "VirtualCluster vc-denied is refused by the fixture policy".to_owned(),
                ),
                details: None,
            }),
        );
        assert_eq!(with_code.to_status_json(), FIXTURE_DENIED_403);
        let without_code = Denied::rejected(
            "validate.kosmos.io",
            Some(ReviewStatus {
                message: Some(
                    "VirtualCluster vc-denied-nocode is refused by the fixture policy".to_owned(),
                ),
                ..ReviewStatus::default()
            }),
        );
        assert_eq!(without_code.to_status_json(), FIXTURE_DENIED_NO_CODE);
        assert_eq!(without_code.code, 400);
        assert_eq!(without_code.reason, "");
    }

    #[test]
    fn denial_without_message_falls_back_to_reason_then_to_no_explanation() {
        let by_reason = Denied::rejected(
            "w",
            Some(ReviewStatus {
                code: Some(200),
                reason: Some("NotAllowed".to_owned()),
                ..ReviewStatus::default()
            }),
        );
        assert_eq!(
            by_reason.message,
            "admission webhook \"w\" denied the request: NotAllowed"
        );
        assert_eq!(by_reason.code, 400, "codes below 400 become 400");
        let bare = Denied::rejected("w", None);
        assert_eq!(
            bare.message,
            "admission webhook \"w\" denied the request without explanation"
        );
    }

    fn vc_attrs(operation: Operation, sub: Option<&str>) -> AdmissionAttributes {
        AdmissionAttributes {
            operation,
            kind: GroupVersionKind::gvk("kosmos.io", "v1alpha1", "VirtualCluster"),
            resource: GroupVersionResource::gvr("kosmos.io", "v1alpha1", "virtualclusters"),
            sub_resource: sub.map(str::to_owned),
            name: "vc".to_owned(),
            namespace: Some("default".to_owned()),
            user_info: UserInfo::default(),
            object: Some(serde_json::json!({"metadata": {"labels": {"tier": "gold"}}})),
            old_object: None,
            options: None,
            dry_run: false,
            namespace_labels: BTreeMap::from([("team".to_owned(), "a".to_owned())]),
        }
    }

    fn vc_rule(resources: &[&str], scope: Option<&str>) -> RuleWithOperations {
        RuleWithOperations {
            api_groups: Some(vec!["kosmos.io".to_owned()]),
            api_versions: Some(vec!["v1alpha1".to_owned()]),
            operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn rules_match_resources_and_subresources_like_kube_apiserver() {
        let main = vc_attrs(Operation::Create, None);
        let status = vc_attrs(Operation::Update, Some("status"));
        assert!(rule_matches(&vc_rule(&["virtualclusters"], None), &main));
        assert!(!rule_matches(&vc_rule(&["virtualclusters"], None), &status));
        assert!(rule_matches(
            &vc_rule(&["virtualclusters/status"], None),
            &status
        ));
        assert!(rule_matches(&vc_rule(&["*/status"], None), &status));
        assert!(rule_matches(
            &vc_rule(&["virtualclusters/*"], None),
            &status
        ));
        assert!(
            !rule_matches(&vc_rule(&["*"], None), &status),
            "`*` covers no subresource"
        );
        assert!(rule_matches(&vc_rule(&["*"], None), &main));
        assert!(rule_matches(&vc_rule(&["*/*"], None), &main));
        assert!(!rule_matches(&vc_rule(&["pods"], None), &main));
        assert!(!rule_matches(
            &vc_rule(&["virtualclusters"], None),
            &vc_attrs(Operation::Delete, None)
        ));
        let mut other_version = vc_rule(&["virtualclusters"], None);
        other_version.api_versions = Some(vec!["v1".to_owned()]);
        assert!(!rule_matches(&other_version, &main));
        let mut any = vc_rule(&["virtualclusters"], None);
        any.api_groups = Some(vec!["*".to_owned()]);
        any.api_versions = Some(vec!["*".to_owned()]);
        any.operations = Some(vec!["*".to_owned()]);
        assert!(rule_matches(&any, &vc_attrs(Operation::Delete, None)));
    }

    #[test]
    fn scope_tells_namespaced_from_cluster_requests() {
        let namespaced = vc_attrs(Operation::Create, None);
        let mut cluster = vc_attrs(Operation::Create, None);
        cluster.namespace = None;
        let mut namespace_object = vc_attrs(Operation::Create, None);
        namespace_object.resource = GroupVersionResource::gvr("", "v1", "namespaces");
        namespace_object.namespace = Some("team-a".to_owned());
        let rule = |scope| {
            let mut r = vc_rule(&["*"], Some(scope));
            r.api_groups = Some(vec!["*".to_owned()]);
            r.api_versions = Some(vec!["*".to_owned()]);
            r
        };
        assert!(rule_matches(&rule("Namespaced"), &namespaced));
        assert!(!rule_matches(&rule("Namespaced"), &cluster));
        assert!(!rule_matches(&rule("Namespaced"), &namespace_object));
        assert!(rule_matches(&rule("Cluster"), &cluster));
        assert!(rule_matches(&rule("Cluster"), &namespace_object));
        assert!(!rule_matches(&rule("Cluster"), &namespaced));
        assert!(rule_matches(&rule("*"), &namespaced));
    }

    fn hook<'a>(
        rules: &'a [RuleWithOperations],
        config: &'a WebhookClientConfig,
        namespace_selector: Option<&'a LabelSelector>,
        object_selector: Option<&'a LabelSelector>,
    ) -> Hook<'a> {
        Hook {
            name: "h",
            client_config: config,
            rules,
            failure_policy: None,
            namespace_selector,
            object_selector,
            side_effects: "None",
            timeout_seconds: None,
            review_versions: &[],
            mutating: true,
        }
    }

    fn selector(key: &str, value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn namespace_and_object_selectors_filter_calls() {
        let rules = [vc_rule(&["virtualclusters"], None)];
        let config = WebhookClientConfig::default();
        let attrs = vc_attrs(Operation::Create, None);
        let team_a = selector("team", "a");
        let team_b = selector("team", "b");
        let gold = selector("tier", "gold");
        let silver = selector("tier", "silver");
        assert!(should_call(&hook(&rules, &config, Some(&team_a), None), &attrs).unwrap());
        assert!(!should_call(&hook(&rules, &config, Some(&team_b), None), &attrs).unwrap());
        assert!(should_call(&hook(&rules, &config, None, Some(&gold)), &attrs).unwrap());
        assert!(!should_call(&hook(&rules, &config, None, Some(&silver)), &attrs).unwrap());
        // DELETE: no object, the old object's labels decide.
        let mut delete = vc_attrs(Operation::Update, None);
        delete.object = None;
        delete.old_object = Some(serde_json::json!({"metadata": {"labels": {"tier": "silver"}}}));
        assert!(should_call(&hook(&rules, &config, None, Some(&silver)), &delete).unwrap());
        // A cluster-scoped object is never exempted by a namespaceSelector.
        let mut cluster = vc_attrs(Operation::Create, None);
        cluster.namespace = None;
        assert!(should_call(&hook(&rules, &config, Some(&team_b), None), &cluster).unwrap());
    }

    #[test]
    fn namespace_create_is_selected_by_its_own_labels() {
        let rule = RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_owned()]),
            operations: Some(vec!["CREATE".to_owned()]),
            resources: Some(vec!["namespaces".to_owned()]),
            scope: None,
        };
        let rules = [rule];
        let config = WebhookClientConfig::default();
        let mut attrs = vc_attrs(Operation::Create, None);
        attrs.resource = GroupVersionResource::gvr("", "v1", "namespaces");
        attrs.kind = GroupVersionKind::gvk("", "v1", "Namespace");
        attrs.namespace = Some("new-ns".to_owned());
        attrs.namespace_labels = BTreeMap::new();
        assert!(
            should_call(
                &hook(&rules, &config, Some(&selector("tier", "gold")), None),
                &attrs
            )
            .unwrap()
        );
        assert!(
            !should_call(
                &hook(&rules, &config, Some(&selector("tier", "x")), None),
                &attrs
            )
            .unwrap()
        );
    }

    #[test]
    fn webhook_configurations_never_reach_webhooks() {
        let mut rule = vc_rule(&["*"], None);
        rule.api_groups = Some(vec!["*".to_owned()]);
        rule.api_versions = Some(vec!["*".to_owned()]);
        let rules = [rule];
        let config = WebhookClientConfig::default();
        let mut attrs = vc_attrs(Operation::Create, None);
        attrs.resource = GroupVersionResource::gvr(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
        );
        attrs.namespace = None;
        assert!(!should_call(&hook(&rules, &config, None, None), &attrs).unwrap());
    }

    #[test]
    fn invalid_selector_is_an_internal_error() {
        let rules = [vc_rule(&["virtualclusters"], None)];
        let config = WebhookClientConfig::default();
        let bad = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "tier".to_owned(),
                    operator: "Near".to_owned(),
                    values: None,
                },
            ]),
            ..LabelSelector::default()
        };
        let error = should_call(
            &hook(&rules, &config, None, Some(&bad)),
            &vc_attrs(Operation::Create, None),
        )
        .unwrap_err();
        assert_eq!(error.code, 500);
        assert!(error.message.contains("\"Near\""), "{}", error.message);
    }

    #[test]
    fn patches_apply_in_order_and_errors_are_internal() {
        let encode = |patch: &str| base64::engine::general_purpose::STANDARD.encode(patch);
        let object = serde_json::json!({"metadata": {"name": "vc"}});
        let patched = apply_patch(
            Some(object.clone()),
            &encode(r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["labels"]["a"], "b");
        let error = apply_patch(
            Some(object),
            &encode(r#"[{"op":"remove","path":"/spec/missing"}]"#),
        )
        .unwrap_err();
        assert_eq!((error.code, error.reason.as_str()), (500, "InternalError"));
        assert!(apply_patch(None, &encode("[]")).is_err());
        assert!(apply_patch(Some(Value::Null), "%%%").is_err());
    }

    #[test]
    fn service_addresses_are_reduced_to_host_and_port() {
        assert_eq!(
            authority_of("https://127.100.0.5:8443/validate"),
            "127.100.0.5:8443"
        );
        assert_eq!(authority_of("127.0.0.1:9443"), "127.0.0.1:9443");
        assert_eq!(authority_of("https://10.0.0.1"), "10.0.0.1:443");
        assert_eq!(authority_of("https://[::1]:8443/x"), "[::1]:8443");
    }

    #[test]
    fn uids_are_version_4_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn options_keep_go_field_order() {
        let options = serde_json::json!({
            "propagationPolicy": "Background", "apiVersion": "meta.k8s.io/v1",
            "kind": "DeleteOptions", "dryRun": ["All"], "zzz": 1
        });
        assert_eq!(
            serde_json::to_string(&GoOrderedOptions(&options)).unwrap(),
            r#"{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/v1","propagationPolicy":"Background","dryRun":["All"],"zzz":1}"#
        );
    }
}

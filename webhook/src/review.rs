//! From AdmissionReview bytes to the AdmissionReview answer: pure, no I/O.
//!
//! The HTTP layer only moves bytes; everything the apiserver sees (allowed, status code
//! and message, patch, warnings) is decided here, so it is unit-testable without a socket.
//! The rules themselves live in [`vc_api::admission`].

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use vc_api::admission::{self as rules, Defaults, Inventory, Policy};
use vc_api::{VirtualCluster, VirtualClusterSpec, VirtualClusterStatus};

use crate::metrics::{Endpoint, OperationLabel, Outcome};

/// The API versions of AdmissionReview this webhook answers.
const REVIEW_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// What the webhook does with a well-formed review.
#[derive(Debug)]
pub enum Admission {
    /// Apply the defaults (`/mutate`) and the rules (`/validate`).
    Enforce(Box<Enforcement>),
    /// Parse the review and admit it: the baseline the benchmark compares against. At
    /// `/validate` a review of a VirtualCluster is parsed exactly as the rules parse it.
    ParseOnly,
}

/// Everything the rules need besides the request itself.
#[derive(Debug)]
pub struct Enforcement {
    /// Host nodes and VirtualClusters as the watch caches see them.
    pub inventory: crate::SharedInventory,
    /// Limits and identities set by flags.
    pub policy: Policy,
    /// Defaults set by flags.
    pub defaults: Defaults,
}

/// Why a body is not an AdmissionReview; answered with HTTP 400 and this text.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// The body is not JSON of the AdmissionReview shape.
    #[error("the body is not an AdmissionReview: {0}")]
    ParseBody(String),
    /// The body is some other object.
    #[error(
        "the body is a {kind:?} of apiVersion {api_version:?}; expected kind \"AdmissionReview\" of apiVersion \"admission.k8s.io/v1\""
    )]
    CheckType {
        /// The `kind` found.
        kind: String,
        /// The `apiVersion` found.
        api_version: String,
    },
    /// The AdmissionReview carries no request (it may be a response).
    #[error("the AdmissionReview has no \"request\"; the webhook answers requests only")]
    FindRequest,
}

/// A VirtualCluster in the review that does not deserialize.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DecodeError {
    /// JSON path of the offending field, starting at `object` or `oldObject`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// What goes back over HTTP.
#[derive(Debug)]
pub enum Reply {
    /// HTTP 200 with this AdmissionReview.
    Review(Box<AdmissionReview<DynamicObject>>),
    /// HTTP 400 with this reason.
    BadRequest(String),
}

/// The reply plus the labels it is counted under.
#[derive(Debug)]
pub struct Answer {
    /// What the apiserver gets.
    pub reply: Reply,
    /// The admission operation, `other` when unknown.
    pub operation: OperationLabel,
    /// How the request ended.
    pub outcome: Outcome,
}

/// Answers one request body at `endpoint`.
pub fn answer(endpoint: Endpoint, body: &[u8], admission: &Admission) -> Answer {
    if endpoint == Endpoint::Validate {
        let enforcement = match admission {
            Admission::Enforce(enforcement) => Some(&**enforcement),
            Admission::ParseOnly => None,
        };
        if let Some(answer) = validate_in_one_parse(body, enforcement) {
            return answer;
        }
    }
    answer_generally(endpoint, body, admission)
}

/// Any body at any endpoint, through a [`DynamicObject`] so that what does not decode can
/// be named.
fn answer_generally(endpoint: Endpoint, body: &[u8], admission: &Admission) -> Answer {
    let request = match parse_review(body) {
        Ok(request) => request,
        Err(bad) => {
            return Answer {
                reply: Reply::BadRequest(bad.to_string()),
                operation: OperationLabel::Other,
                outcome: Outcome::Invalid,
            };
        }
    };
    let operation = OperationLabel::from(&request.operation);
    let (response, outcome) = match admission {
        Admission::ParseOnly => (AdmissionResponse::from(&request), Outcome::Allowed),
        Admission::Enforce(enforcement) => decide(endpoint, &request, enforcement),
    };
    log_decision(endpoint, &request, &response, outcome);
    Answer {
        reply: Reply::Review(Box::new(response.into_review())),
        operation,
        outcome,
    }
}

/// `/validate` of a well-formed review of a VirtualCluster, parsed once, straight into
/// typed objects. The general path parses into a [`DynamicObject`] first, so it can name a
/// field that does not decode, and then converts and copies every object a second time:
/// that double work was most of what the rules cost per request. Whatever this path does
/// not take (a body that does not parse, another kind, a review without a request) gets
/// `None` and goes the general way, which words the refusal; a body both paths accept gets
/// the same verdict from both. Without `enforcement` ([`Admission::ParseOnly`]) the review
/// is parsed the same way and admitted, so that the benchmark's baseline differs from the
/// rules by the rules alone.
fn validate_in_one_parse(body: &[u8], enforcement: Option<&Enforcement>) -> Option<Answer> {
    let review: AdmissionReview<ReviewedCluster> = serde_json::from_slice(body).ok()?;
    if review.types.kind != "AdmissionReview"
        || !REVIEW_API_VERSIONS.contains(&review.types.api_version.as_str())
    {
        return None;
    }
    let request: AdmissionRequest<ReviewedCluster> = review.try_into().ok()?;
    if !is_virtual_cluster(&request) {
        return None;
    }
    let operation = OperationLabel::from(&request.operation);
    let (response, outcome) = match enforcement {
        Some(enforcement) if rules_apply(&request) => judge(
            &request,
            request.object.as_ref().map(|cluster| &cluster.0),
            request.old_object.as_ref().map(|cluster| &cluster.0),
            enforcement,
        ),
        _ => (AdmissionResponse::from(&request), Outcome::Allowed),
    };
    log_decision(Endpoint::Validate, &request, &response, outcome);
    Some(Answer {
        reply: Reply::Review(Box::new(response.into_review())),
        operation,
        outcome,
    })
}

/// A VirtualCluster as `/validate` reads it from a review: all of it but
/// `metadata.managedFields`, which no rule reads. The apiserver sends the managed fields
/// of every object, a JSON map per field manager; the parser skips them without
/// allocating, where building them was a third of the cost of parsing a review.
#[derive(Clone, Debug)]
struct ReviewedCluster(VirtualCluster);

resource_of_part!(ReviewedCluster, VirtualCluster);

/// The wire shape [`ReviewedCluster`] reads: a VirtualCluster's fields, with metadata
/// missing only `managedFields`.
#[derive(Deserialize)]
struct WireCluster {
    metadata: WireMeta,
    spec: VirtualClusterSpec,
    status: Option<VirtualClusterStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    annotations: Option<std::collections::BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl<'de> Deserialize<'de> for ReviewedCluster {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let WireCluster {
            metadata,
            spec,
            status,
        } = WireCluster::deserialize(deserializer)?;
        // Every field named, so that a field ObjectMeta gains cannot be dropped unseen.
        let metadata = ObjectMeta {
            annotations: metadata.annotations,
            creation_timestamp: metadata.creation_timestamp,
            deletion_grace_period_seconds: metadata.deletion_grace_period_seconds,
            deletion_timestamp: metadata.deletion_timestamp,
            finalizers: metadata.finalizers,
            generate_name: metadata.generate_name,
            generation: metadata.generation,
            labels: metadata.labels,
            managed_fields: None,
            name: metadata.name,
            namespace: metadata.namespace,
            owner_references: metadata.owner_references,
            resource_version: metadata.resource_version,
            self_link: metadata.self_link,
            uid: metadata.uid,
        };
        Ok(Self(VirtualCluster {
            metadata,
            spec,
            status,
        }))
    }
}

/// One line per refusal at info (operators look for these), everything else at debug.
fn log_decision<T: kube::Resource>(
    endpoint: Endpoint,
    request: &AdmissionRequest<T>,
    response: &AdmissionResponse,
    outcome: Outcome,
) {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    if response.allowed {
        tracing::debug!(
            endpoint = endpoint.as_str(),
            uid = %request.uid,
            namespace,
            name = %request.name,
            patched = response.patch.is_some(),
            "admitted"
        );
    } else {
        tracing::info!(
            endpoint = endpoint.as_str(),
            uid = %request.uid,
            namespace,
            name = %request.name,
            user = request.user_info.username.as_deref().unwrap_or_default(),
            result = outcome.as_str(),
            code = response.result.code,
            message = %response.result.message,
            "refused"
        );
    }
}

/// Reads an AdmissionReview. The fast path parses once; only a failing body is parsed a
/// second time to name the offending field.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => return Err(BadReview::ParseBody(describe_parse_error(body, error))),
    };
    if review.types.kind != "AdmissionReview"
        || !REVIEW_API_VERSIONS.contains(&review.types.api_version.as_str())
    {
        return Err(BadReview::CheckType {
            kind: review.types.kind,
            api_version: review.types.api_version,
        });
    }
    review.try_into().map_err(|_| BadReview::FindRequest)
}

fn describe_parse_error(body: &[u8], error: serde_json::Error) -> String {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, AdmissionReview<DynamicObject>>(&mut deserializer) {
        Err(located) if located.path().iter().next().is_some() => {
            format!("{}: {}", located.path(), located.inner())
        }
        _ => error.to_string(),
    }
}

/// The JSON the apiserver expects. kube-core serializes `patch` as an array of numbers;
/// the apiserver writes and documents it as a base64 string (Go `[]byte`), so we send
/// that form, as recorded from kube-apiserver v1.36.
pub fn encode_review(
    review: &AdmissionReview<DynamicObject>,
) -> Result<Vec<u8>, serde_json::Error> {
    let patch = review
        .response
        .as_ref()
        .and_then(|response| response.patch.as_ref());
    let Some(patch) = patch else {
        return serde_json::to_vec(review);
    };
    let mut value = serde_json::to_value(review)?;
    if let Some(response) = value.get_mut("response").and_then(Value::as_object_mut) {
        response.insert(
            "patch".to_owned(),
            Value::String(BASE64_STANDARD.encode(patch)),
        );
    }
    serde_json::to_vec(&value)
}

fn decide(
    endpoint: Endpoint,
    request: &AdmissionRequest<DynamicObject>,
    enforcement: &Enforcement,
) -> (AdmissionResponse, Outcome) {
    if !is_virtual_cluster(request) {
        return (wrong_kind(request), Outcome::Invalid);
    }
    if !rules_apply(request) {
        // DELETE, CONNECT and status writes: the controller owns status, and deletion is
        // always allowed (the finalizer releases nodes).
        return (AdmissionResponse::from(request), Outcome::Allowed);
    }
    match endpoint {
        Endpoint::Mutate => mutate(request, &enforcement.defaults),
        Endpoint::Validate => validate(request, enforcement),
    }
}

/// Only CREATE and UPDATE of the VirtualCluster itself are judged.
fn rules_apply<T: kube::Resource>(request: &AdmissionRequest<T>) -> bool {
    matches!(request.operation, Operation::Create | Operation::Update)
        && request.sub_resource.is_none()
}

fn is_virtual_cluster<T: kube::Resource>(request: &AdmissionRequest<T>) -> bool {
    request.kind.group == vc_api::constants::GROUP
        && request.kind.version == vc_api::constants::VERSION
        && request.kind.kind == vc_api::constants::KIND
}

fn wrong_kind(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let kind = &request.kind;
    let mut response = AdmissionResponse::invalid(format!(
        "this webhook admits only {}/{} {}, but was sent {}/{} {}; narrow the rules of the webhook configuration to resources [\"{}\"] of apiGroups [\"{}\"]",
        vc_api::constants::GROUP,
        vc_api::constants::VERSION,
        vc_api::constants::KIND,
        kind.group,
        kind.version,
        kind.kind,
        vc_api::constants::PLURAL,
        vc_api::constants::GROUP,
    ));
    response.uid.clone_from(&request.uid);
    response.types = request.types.clone();
    response.result.code = 400;
    response.result.reason = "BadRequest".to_owned();
    response
}

fn mutate(
    request: &AdmissionRequest<DynamicObject>,
    defaults: &Defaults,
) -> (AdmissionResponse, Outcome) {
    let Some(object) = request.object.as_ref() else {
        return refuse(
            request,
            400,
            "the request carries no object to default".into(),
        );
    };
    let cluster = match decode_cluster(object, "object") {
        Ok(cluster) => cluster,
        Err(error) => return refuse(request, 422, error.to_string()),
    };
    let defaulted = match rules::apply_defaults(&cluster.spec, defaults) {
        Ok(spec) => spec,
        Err(error) => return refuse(request, 422, error.to_string()),
    };
    let patch = match spec_patch(object, &defaulted) {
        Ok(patch) => patch,
        Err(error) => return failure(request, error),
    };
    if patch.0.is_empty() {
        return (AdmissionResponse::from(request), Outcome::Allowed);
    }
    match AdmissionResponse::from(request).with_patch(patch) {
        Ok(response) => (response, Outcome::Allowed),
        Err(error) => failure(request, error.to_string()),
    }
}

/// The JSONPatch turning the object's spec, exactly as sent, into `defaulted`.
fn spec_patch(
    object: &DynamicObject,
    defaulted: &vc_api::VirtualClusterSpec,
) -> Result<json_patch::Patch, String> {
    let original = object.data.get("spec").cloned().unwrap_or(Value::Null);
    let defaulted = serde_json::to_value(defaulted).map_err(|error| error.to_string())?;
    let before = serde_json::json!({ "spec": original });
    let after = serde_json::json!({ "spec": defaulted });
    Ok(json_patch::diff(&before, &after))
}

fn validate(
    request: &AdmissionRequest<DynamicObject>,
    enforcement: &Enforcement,
) -> (AdmissionResponse, Outcome) {
    let object = match request.object.as_ref().map(|o| decode_cluster(o, "object")) {
        Some(Ok(cluster)) => Some(cluster),
        Some(Err(error)) => return refuse(request, 422, error.to_string()),
        None => None,
    };
    let old_object = match request
        .old_object
        .as_ref()
        .map(|o| decode_cluster(o, "oldObject"))
    {
        Some(Ok(cluster)) => Some(cluster),
        Some(Err(error)) => return refuse(request, 422, error.to_string()),
        None => None,
    };
    judge(request, object.as_ref(), old_object.as_ref(), enforcement)
}

/// The rules' verdict on a request's decoded objects, as an AdmissionResponse.
fn judge<T: kube::Resource>(
    request: &AdmissionRequest<T>,
    object: Option<&VirtualCluster>,
    old_object: Option<&VirtualCluster>,
    enforcement: &Enforcement,
) -> (AdmissionResponse, Outcome) {
    let operation = match request.operation {
        Operation::Create => rules::Operation::Create,
        Operation::Update => rules::Operation::Update,
        Operation::Delete | Operation::Connect => {
            return (AdmissionResponse::from(request), Outcome::Allowed);
        }
    };
    let rule_request = rules::Request {
        operation,
        username: request.user_info.username.as_deref().unwrap_or_default(),
        object,
        old_object,
    };
    let verdict = {
        let inventory: parking_lot::RwLockReadGuard<'_, Inventory> = enforcement.inventory.read();
        rules::validate(&rule_request, &inventory, &enforcement.policy)
    };
    let mut response = AdmissionResponse::from(request);
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    match verdict.denial {
        None => (response, Outcome::Allowed),
        Some(denial) => (
            with_denial(response, denial.code, denial.message),
            Outcome::Denied,
        ),
    }
}

/// Deserializes a review's object into a VirtualCluster, naming the field that fails.
///
/// Metadata is already typed in the [`DynamicObject`]; only `spec` and `status` are
/// converted, straight from the parsed JSON (no re-serialization of managed fields).
pub fn decode_cluster(object: &DynamicObject, which: &str) -> Result<VirtualCluster, DecodeError> {
    let Some(spec) = object.data.get("spec") else {
        return Err(DecodeError {
            field: format!("{which}.spec"),
            message: "missing; a VirtualCluster needs a spec, even an empty one (spec: {})"
                .to_owned(),
        });
    };
    let mut cluster = VirtualCluster::new("", decode_part(spec, which, "spec")?);
    cluster.metadata = object.metadata.clone();
    if let Some(status) = object.data.get("status").filter(|status| !status.is_null()) {
        cluster.status = Some(decode_part(status, which, "status")?);
    }
    Ok(cluster)
}

/// Decodes one part of an object; only a failing part is decoded again to find the path.
fn decode_part<T: serde::de::DeserializeOwned>(
    value: &Value,
    which: &str,
    part: &str,
) -> Result<T, DecodeError> {
    T::deserialize(value).map_err(|fast_error| {
        let (path, message) = match serde_path_to_error::deserialize::<_, T>(value) {
            Err(error) => (error.path().to_string(), error.into_inner().to_string()),
            Ok(_) => (".".to_owned(), fast_error.to_string()),
        };
        DecodeError {
            field: if path == "." {
                format!("{which}.{part}")
            } else {
                format!("{which}.{part}.{path}")
            },
            message,
        }
    })
}

fn refuse(
    request: &AdmissionRequest<DynamicObject>,
    code: u16,
    message: String,
) -> (AdmissionResponse, Outcome) {
    (
        with_denial(AdmissionResponse::from(request), code, message),
        Outcome::Denied,
    )
}

/// The webhook itself failed; refuse rather than admit something unchecked.
fn failure(
    request: &AdmissionRequest<DynamicObject>,
    detail: String,
) -> (AdmissionResponse, Outcome) {
    tracing::error!(uid = %request.uid, %detail, "cannot build the admission answer");
    let response = with_denial(
        AdmissionResponse::from(request),
        500,
        format!("the webhook failed to build its answer: {detail}"),
    );
    (response, Outcome::Error)
}

fn with_denial(response: AdmissionResponse, code: u16, message: String) -> AdmissionResponse {
    let mut response = response.deny(&message);
    response.result = Status::failure(&message, reason_for(code)).with_code(code);
    response
}

/// The Kubernetes `StatusReason` matching an HTTP code, so kubectl prints
/// `Error from server (Forbidden)` and the like.
fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;
    use vc_api::admission::{ClusterFacts, ClusterKey, NodeFacts, ResourceAmounts};

    fn review(operation: &str, spec: Value) -> Value {
        json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "kosmos.io", "version": "v1alpha1", "kind": "VirtualCluster"},
                "resource": {"group": "kosmos.io", "version": "v1alpha1", "resource": "virtualclusters"},
                "name": "prod",
                "namespace": "team-b",
                "operation": operation,
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": {
                    "apiVersion": "kosmos.io/v1alpha1",
                    "kind": "VirtualCluster",
                    "metadata": {"name": "prod", "namespace": "team-b"},
                    "spec": spec
                },
                "oldObject": null,
                "dryRun": false
            }
        })
    }

    fn enforcement(inventory: Inventory) -> Admission {
        Admission::Enforce(Box::new(Enforcement {
            inventory: std::sync::Arc::new(parking_lot::RwLock::new(inventory)),
            policy: Policy::default(),
            defaults: Defaults::default(),
        }))
    }

    fn host() -> Inventory {
        let mut inventory = Inventory::new();
        for name in ["node7", "node8"] {
            inventory.upsert_node(NodeFacts {
                name: name.to_owned(),
                ready: true,
                unschedulable: false,
                control_plane: false,
                allocatable: ResourceAmounts::from_iter([("cpu", 8_000)]),
                claimed_by: None,
            });
        }
        inventory.upsert_cluster(ClusterFacts {
            key: ClusterKey::new("team-a", "prod"),
            nodes: vec!["node7".to_owned()],
            pooled: ResourceAmounts::new(),
        });
        inventory
    }

    fn response(answer: Answer) -> AdmissionResponse {
        match answer.reply {
            Reply::Review(review) => review.response.unwrap(),
            Reply::BadRequest(reason) => panic!("unexpected 400: {reason}"),
        }
    }

    fn send(endpoint: Endpoint, body: &Value, admission: &Admission) -> Answer {
        answer(endpoint, &serde_json::to_vec(body).unwrap(), admission)
    }

    #[test]
    fn a_node_of_another_tenant_is_refused_with_its_owner_named() {
        let body = review("CREATE", json!({"promoteResources": {"nodes": ["node7"]}}));
        let answer = send(Endpoint::Validate, &body, &enforcement(host()));
        assert_eq!(answer.operation, OperationLabel::Create);
        assert_eq!(answer.outcome, Outcome::Denied);
        let response = response(answer);
        assert!(!response.allowed);
        assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response.result.code, 403);
        assert_eq!(response.result.reason, "Forbidden");
        assert_eq!(
            response.result.message,
            r#"node "node7" already belongs to VirtualCluster team-a/prod"#
        );
    }

    #[test]
    fn a_free_node_is_admitted() {
        let body = review("CREATE", json!({"promoteResources": {"nodes": ["node8"]}}));
        let answer = send(Endpoint::Validate, &body, &enforcement(host()));
        assert_eq!(answer.outcome, Outcome::Allowed);
        assert!(response(answer).allowed);
    }

    #[test]
    fn deletes_and_status_writes_skip_the_rules() {
        let mut delete = review("DELETE", json!({"promoteResources": {"nodes": ["node7"]}}));
        delete["request"]["oldObject"] = delete["request"]["object"].take();
        let mut status = review("UPDATE", json!({"promoteResources": {"nodes": ["node7"]}}));
        status["request"]["subResource"] = json!("status");
        status["request"]["oldObject"] = status["request"]["object"].clone();
        for body in [delete, status] {
            for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
                let answer = send(endpoint, &body, &enforcement(host()));
                assert_eq!(answer.outcome, Outcome::Allowed);
                let response = response(answer);
                assert!(response.allowed && response.patch.is_none(), "{response:?}");
            }
        }
    }

    #[test]
    fn mutate_patches_only_the_spec_and_canonicalizes_quantities() {
        let body = review(
            "CREATE",
            json!({"promoteResources": {"nodes": ["node8"], "resources": {"cpu": 10, "memory": "102400Mi"}}}),
        );
        let answer = send(Endpoint::Mutate, &body, &enforcement(host()));
        assert_eq!(answer.outcome, Outcome::Allowed);
        let patch: json_patch::Patch =
            serde_json::from_slice(&response(answer).patch.unwrap()).unwrap();
        for operation in &patch.0 {
            let path = serde_json::to_value(operation).unwrap()["path"].clone();
            assert!(path.as_str().unwrap().starts_with("/spec/"), "{path}");
        }
        let mut object = body["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(
            object["spec"]["promoteResources"]["resources"],
            json!({"cpu": "10", "memory": "100Gi"})
        );
        assert_eq!(object["spec"]["kubernetesVersion"], json!("v1.33.4"));
        assert_eq!(object["metadata"], body["request"]["object"]["metadata"]);
    }

    #[test]
    fn mutate_refuses_a_quantity_it_cannot_canonicalize_naming_the_field() {
        let body = review(
            "CREATE",
            json!({"promoteResources": {"resources": {"cpu": "ten"}}}),
        );
        let answer = send(Endpoint::Mutate, &body, &enforcement(host()));
        assert_eq!(answer.outcome, Outcome::Denied);
        let response = response(answer);
        assert_eq!(response.result.code, 422);
        assert!(
            response
                .result
                .message
                .starts_with("spec.promoteResources.resources.cpu: "),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn an_object_that_does_not_deserialize_is_denied_naming_the_field() {
        let body = review(
            "CREATE",
            json!({"controlPlane": {"etcd": {"replicas": "three"}}}),
        );
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let answer = send(endpoint, &body, &enforcement(host()));
            assert_eq!(answer.outcome, Outcome::Denied);
            let message = response(answer).result.message;
            assert!(
                message.starts_with("object.spec.controlPlane.etcd.replicas: invalid type"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_object_without_spec_is_denied_saying_what_to_write() {
        let mut body = review("CREATE", json!({}));
        body["request"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("spec");
        let answer = send(Endpoint::Validate, &body, &enforcement(host()));
        assert_eq!(answer.outcome, Outcome::Denied);
        let response = response(answer);
        assert_eq!(response.result.code, 422);
        assert_eq!(
            response.result.message,
            "object.spec: missing; a VirtualCluster needs a spec, even an empty one (spec: {})"
        );
    }

    #[test]
    fn another_kind_gets_an_invalid_answer_with_the_request_uid() {
        let mut body = review("CREATE", json!({}));
        body["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let answer = send(Endpoint::Validate, &body, &enforcement(host()));
        assert_eq!(answer.outcome, Outcome::Invalid);
        let response = response(answer);
        assert!(!response.allowed);
        assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response.result.code, 400);
        assert!(
            response.result.message.contains("apps/v1 Deployment"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let mut body = review("CREATE", json!({}));
        body["request"]["uid"] = json!(42);
        let error = parse_review(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the body is not an AdmissionReview: request.uid: invalid type"),
            "{error}"
        );
        let error = parse_review(b"{").unwrap_err();
        assert!(matches!(error, BadReview::ParseBody(_)), "{error}");
        let error =
            parse_review(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#)
                .unwrap_err();
        assert!(matches!(error, BadReview::FindRequest), "{error}");
        let error = parse_review(br#"{"kind":"Status","apiVersion":"v1"}"#).unwrap_err();
        assert!(matches!(error, BadReview::CheckType { .. }), "{error}");
    }

    #[test]
    fn the_patch_goes_out_as_base64_like_go_bytes() {
        let body = review("CREATE", json!({}));
        let request = parse_review(&serde_json::to_vec(&body).unwrap()).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/spec/kubernetesVersion", "value": "v1.33.4"}]),
        )
        .unwrap();
        let review = AdmissionResponse::from(&request)
            .with_patch(patch)
            .unwrap()
            .into_review();
        let wire: Value = serde_json::from_slice(&encode_review(&review).unwrap()).unwrap();
        let encoded = wire["response"]["patch"].as_str().unwrap();
        let decoded: Value =
            serde_json::from_slice(&BASE64_STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded[0]["path"], "/spec/kubernetesVersion");
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        assert_eq!(wire["apiVersion"], "admission.k8s.io/v1");
    }

    /// What the apiserver would read: status and review JSON.
    fn wire(answer: Answer) -> (Outcome, OperationLabel, String) {
        let text = match answer.reply {
            Reply::Review(review) => String::from_utf8(encode_review(&review).unwrap()).unwrap(),
            Reply::BadRequest(reason) => format!("400 {reason}"),
        };
        (answer.outcome, answer.operation, text)
    }

    #[test]
    fn validate_answers_the_same_in_one_parse_as_through_a_dynamic_object() {
        let mut bodies = vec![
            review("CREATE", json!({"promoteResources": {"nodes": ["node7"]}})),
            review("CREATE", json!({"promoteResources": {"nodes": ["node8"]}})),
            review("CREATE", json!({"promoteResources": {"nodes": ["node9"]}})),
            review(
                "CREATE",
                json!({"promoteResources": {"resources": {"cpu": "ten"}}}),
            ),
            review(
                "CREATE",
                json!({"controlPlane": {"etcd": {"replicas": "three"}}}),
            ),
            review("CREATE", json!({})),
        ];
        let mut update = review("UPDATE", json!({"promoteResources": {"nodes": ["node7"]}}));
        update["request"]["oldObject"] = review("CREATE", json!({}))["request"]["object"].clone();
        bodies.push(update);
        let mut delete = review("DELETE", json!({}));
        delete["request"]["oldObject"] = delete["request"]["object"].take();
        bodies.push(delete);
        let mut status = review("UPDATE", json!({}));
        status["request"]["subResource"] = json!("status");
        bodies.push(status);
        let mut other_kind = review("CREATE", json!({}));
        other_kind["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        bodies.push(other_kind);
        let mut without_spec = review("CREATE", json!({}));
        without_spec["request"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("spec");
        bodies.push(without_spec);

        let admission = enforcement(host());
        let Admission::Enforce(enforce) = &admission else {
            unreachable!()
        };
        let mut taken = 0;
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            if validate_in_one_parse(&bytes, Some(enforce)).is_some() {
                taken += 1;
            }
            assert_eq!(
                wire(answer(Endpoint::Validate, &bytes, &admission)),
                wire(answer_generally(Endpoint::Validate, &bytes, &admission)),
                "{body}"
            );
        }
        assert!(taken >= 6, "the one-parse path took only {taken} bodies");
    }

    #[test]
    fn a_reviewed_cluster_is_the_whole_cluster_without_its_managed_fields() {
        let object = json!({
            "apiVersion": "kosmos.io/v1alpha1",
            "kind": "VirtualCluster",
            "metadata": {
                "name": "prod",
                "namespace": "team-b",
                "uid": "08bf22a2-d408-4e62-b894-7d531bd25637",
                "resourceVersion": "42",
                "generation": 3,
                "generateName": "pro",
                "selfLink": "/apis/kosmos.io/v1alpha1/namespaces/team-b/virtualclusters/prod",
                "creationTimestamp": "2026-11-26T05:26:49Z",
                "deletionTimestamp": "2026-11-27T05:26:49Z",
                "deletionGracePeriodSeconds": 0,
                "labels": {"team": "b"},
                "annotations": {"note": "kept"},
                "finalizers": ["kosmos.io/finalizer"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "1"}],
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {".": {}}}}]
            },
            "spec": {"promoteResources": {"nodes": ["node7"], "resources": {"cpu": "1"}}},
            "status": {"phase": "Pending"}
        });
        let mut whole: VirtualCluster = serde_json::from_value(object.clone()).unwrap();
        assert!(whole.metadata.managed_fields.is_some());
        whole.metadata.managed_fields = None;
        let reviewed: ReviewedCluster = serde_json::from_value(object).unwrap();
        assert_eq!(
            serde_json::to_value(&reviewed.0).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    #[test]
    fn parse_only_admits_without_looking_at_the_object() {
        let body = review("CREATE", json!({"promoteResources": {"nodes": ["node7"]}}));
        let answer = send(Endpoint::Validate, &body, &Admission::ParseOnly);
        assert_eq!(answer.outcome, Outcome::Allowed);
        assert!(response(answer).allowed);
    }

    #[test]
    fn parse_only_reads_a_validate_review_as_the_rules_do() {
        // Managed fields that are not even a list: the rules' parse skips them unread, so the
        // baseline the benchmark compares the rules with must skip them too.
        let mut body = review("CREATE", json!({"promoteResources": {"nodes": ["node8"]}}));
        body["request"]["object"]["metadata"]["managedFields"] = json!("unread");
        let rules = send(Endpoint::Validate, &body, &enforcement(host()));
        let parse_only = send(Endpoint::Validate, &body, &Admission::ParseOnly);
        assert_eq!(rules.outcome, Outcome::Allowed);
        assert_eq!(parse_only.outcome, Outcome::Allowed);
        assert!(response(rules).allowed);
        assert!(response(parse_only).allowed);
    }
}

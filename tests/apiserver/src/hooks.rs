//! The request pipeline's extension points: authorization, admission, fault injection
//! and write accounting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::status::ApiError;

/// Who is calling, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// `extra` as admission reviews carry it (e.g. the credential id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            username: "system:anonymous".to_string(),
            groups: vec!["system:unauthenticated".to_string()],
            ..Self::default()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.username == "system:anonymous"
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What an authorizer decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthzAttributes {
    pub user: String,
    pub groups: Vec<String>,
    /// get, list, watch, create, update, patch, delete, deletecollection (resources) or
    /// the lowercase HTTP method (non-resource paths).
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests such as `/apis` or `/healthz`.
    pub non_resource_path: Option<String>,
}

/// Authorization decision; the String is a reason shown in logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzDecision {
    Allow,
    Deny(String),
}

/// RBAC objects as stored, handed to the authorizer as a consistent snapshot.
#[derive(Debug, Clone, Default)]
pub struct RbacSnapshot {
    pub roles: Vec<Value>,
    pub cluster_roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
}

/// Decides requests when RBAC enforcement is on.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, rbac: &RbacSnapshot, attrs: &AuthzAttributes) -> AuthzDecision;
}

/// `CREATE`, `UPDATE`, `DELETE` (and `CONNECT`, unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionOperation {
    Create,
    Update,
    Delete,
}

impl AdmissionOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// Everything an admission chain needs to build AdmissionReviews.
#[derive(Debug, Clone)]
pub struct AdmissionAttributes {
    pub operation: AdmissionOperation,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    pub user: UserInfo,
    /// The object being written (None for DELETE).
    pub object: Option<Value>,
    /// The stored object (UPDATE, DELETE).
    pub old_object: Option<Value>,
    pub dry_run: bool,
    /// CreateOptions / UpdateOptions / DeleteOptions as the apiserver sends them.
    pub options: Value,
    /// Labels of the request's namespace (of the object itself for a Namespace), for
    /// webhooks' `namespaceSelector`.
    pub namespace_labels: BTreeMap<String, String>,
}

/// Webhook configurations in force for one request.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfigs {
    pub mutating: Vec<Value>,
    pub validating: Vec<Value>,
}

/// Maps a webhook `service` reference (namespace, name, port, path) to an https URL, by
/// looking up the Service's EndpointSlices/Endpoints in the store.
pub type ServiceResolver = Arc<dyn Fn(&str, &str, i32, &str) -> Option<String> + Send + Sync>;

/// Which phase is running: mutating webhooks may change the object, validating may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionPhase {
    Mutating,
    Validating,
}

/// What admission returned.
#[derive(Debug, Clone, Default)]
pub struct AdmissionResult {
    /// The (possibly mutated) object; None keeps the object as it was.
    pub object: Option<Value>,
    /// Webhook warnings, sent back as `Warning: 299 - "..."` headers.
    pub warnings: Vec<String>,
}

/// Runs webhooks. A denial is returned as the ApiError the apiserver would answer with.
pub trait AdmissionHook: Send + Sync + std::fmt::Debug {
    fn admit<'a>(
        &'a self,
        phase: AdmissionPhase,
        attrs: &'a AdmissionAttributes,
        configs: &'a WebhookConfigs,
        resolver: ServiceResolver,
    ) -> BoxFuture<'a, Result<AdmissionResult, ApiError>>;
}

/// A rule for injected failures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultMatch {
    /// Only requests with this verb (get, list, watch, create, update, patch, delete, ...).
    pub verb: Option<String>,
    /// Only requests on this resource (plural, e.g. `virtualclusters`).
    pub resource: Option<String>,
    /// Only requests by this user.
    pub user: Option<String>,
}

impl FaultMatch {
    fn matches(&self, verb: &str, resource: &str, user: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.user.as_deref().is_none_or(|u| u == user)
    }
}

#[derive(Debug, Clone)]
enum FaultKind {
    Error { code: u16, retry_after: u64 },
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct FaultRule {
    matcher: FaultMatch,
    remaining: usize,
    kind: FaultKind,
}

/// Fault injection handle: `server.faults()`.
#[derive(Debug, Clone)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What the pipeline should do with a request, according to the fault rules.
#[derive(Debug, Clone, Default)]
pub struct FaultVerdict {
    pub delay: Option<Duration>,
    pub error: Option<ApiError>,
}

impl Default for Faults {
    fn default() -> Self {
        let (cut, _) = tokio::sync::watch::channel(0);
        Self {
            rules: Arc::new(Mutex::new(Vec::new())),
            cut: Arc::new(cut),
        }
    }
}

impl Faults {
    fn push(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(rule);
    }

    /// The next `count` matching requests fail with 500 InternalError.
    pub fn fail_next(&self, count: usize, matcher: FaultMatch) {
        self.push(FaultRule {
            matcher,
            remaining: count,
            kind: FaultKind::Error {
                code: 500,
                retry_after: 0,
            },
        });
    }

    /// The next `count` matching requests get 429 TooManyRequests with `Retry-After`.
    pub fn throttle_next(&self, count: usize, retry_after_seconds: u64, matcher: FaultMatch) {
        self.push(FaultRule {
            matcher,
            remaining: count,
            kind: FaultKind::Error {
                code: 429,
                retry_after: retry_after_seconds,
            },
        });
    }

    /// The next `count` matching requests are answered only after `delay`.
    pub fn delay_next(&self, count: usize, delay: Duration, matcher: FaultMatch) {
        self.push(FaultRule {
            matcher,
            remaining: count,
            kind: FaultKind::Delay(delay),
        });
    }

    /// Ends every open watch now (clients see the stream end and must re-watch).
    pub fn cut_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// How many injected faults are still to come, over every rule: a test waits for it to
    /// drop to know a client has met a fault, instead of guessing when it will have.
    pub fn remaining(&self) -> usize {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|rule| rule.remaining)
            .sum()
    }

    /// Removes every pending rule.
    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn watch_cuts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cut.subscribe()
    }

    pub(crate) fn check(&self, verb: &str, resource: &str, user: &str) -> FaultVerdict {
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut verdict = FaultVerdict::default();
        for rule in rules.iter_mut() {
            if rule.remaining == 0 || !rule.matcher.matches(verb, resource, user) {
                continue;
            }
            match &rule.kind {
                FaultKind::Delay(d) if verdict.delay.is_none() => {
                    verdict.delay = Some(*d);
                    rule.remaining -= 1;
                }
                FaultKind::Error { code, retry_after } if verdict.error.is_none() => {
                    verdict.error = Some(if *code == 429 {
                        ApiError::too_many_requests(*retry_after)
                    } else {
                        ApiError::internal("injected fault")
                    });
                    rule.remaining -= 1;
                }
                _ => {}
            }
        }
        rules.retain(|r| r.remaining > 0);
        verdict
    }
}

/// Mutating requests seen, per user and per resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Mutating requests (create, update, patch, delete, deletecollection) per user.
    pub requests_by_user: BTreeMap<String, u64>,
    /// Mutating requests per `resource` (plural, `/status` appended for the subresource).
    pub requests_by_resource: BTreeMap<String, u64>,
    /// Requests that changed stored state (bumped a resourceVersion), per user.
    pub writes_by_user: BTreeMap<String, u64>,
    /// Requests that changed stored state, per (user, resource).
    pub writes_by_user_resource: BTreeMap<(String, String), u64>,
    /// Every resource request, reads and watches too, per (user, verb): what a client
    /// costs the server.
    pub requests_by_user_verb: BTreeMap<(String, String), u64>,
    /// Every resource request per (user, verb, resource): which reads and writes a
    /// client's count is made of.
    pub requests_by_user_verb_resource: BTreeMap<(String, String, String), u64>,
}

impl WriteCounts {
    /// Requests by `user` that changed stored state.
    pub fn writes_by(&self, user: &str) -> u64 {
        self.writes_by_user.get(user).copied().unwrap_or(0)
    }

    /// Mutating requests by `user`, whether or not they changed anything.
    pub fn requests_by(&self, user: &str) -> u64 {
        self.requests_by_user.get(user).copied().unwrap_or(0)
    }
}

/// Shared accounting.
#[derive(Debug, Clone, Default)]
pub struct WriteAccounting(Arc<Mutex<WriteCounts>>);

impl WriteAccounting {
    pub fn request(&self, user: &str, resource: &str) {
        let mut c = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c.requests_by_user.entry(user.to_string()).or_default() += 1;
        *c.requests_by_resource
            .entry(resource.to_string())
            .or_default() += 1;
    }

    /// Any resource request, counted before it is authorised.
    pub fn any_request(&self, user: &str, verb: &str, resource: &str) {
        let mut c = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c.requests_by_user_verb
            .entry((user.to_string(), verb.to_string()))
            .or_default() += 1;
        *c.requests_by_user_verb_resource
            .entry((user.to_string(), verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    pub fn write(&self, user: &str, resource: &str) {
        let mut c = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c.writes_by_user.entry(user.to_string()).or_default() += 1;
        *c.writes_by_user_resource
            .entry((user.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> WriteCounts {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn reset(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = WriteCounts::default();
    }
}

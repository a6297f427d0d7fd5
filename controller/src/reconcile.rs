//! The reconcile chain of one VirtualCluster: read → validate → build → apply → status.
//!
//! Every step reads what exists (watch caches first), applies only what differs, and
//! returns instead of waiting: a component that is not ready yet makes the reconcile
//! requeue, it never holds a worker.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::eviction::EvictionReport;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use vc_api::condition_types::{
    CLAIMED_NODES_DRAINED, CLUSTER_TREE_READY, CONTROL_PLANE_READY, DNS_READY, NODES_PROMOTED,
    READY,
};
use vc_api::constants::{
    CONTROLLER_FIELD_MANAGER, FINALIZER, KUBECONFIG_SECRET_KEY, NODE_OWNER_NAME_LABEL,
    NODE_OWNER_NAMESPACE_LABEL,
};
use vc_api::eviction::ClaimedNodePods;
use vc_api::pod_security::{self, PodSecurityLevel, WORKLOAD_POD_SECURITY_LABEL};
use vc_api::{Phase, VirtualCluster, VirtualClusterStatus};

use crate::apply::{Applied, ApplyError, Existing, apply_if_changed, up_to_date};
use crate::claims::{ClaimDecision, ClaimReport, Claimant, claim_patch, decide_claim};
use crate::claims::{release_patch, should_release};
use crate::context::Context;
use crate::error::{Error, Result, Step, is_conflict, is_not_found};
use crate::ownership::{Holder, Owner, holder};
use crate::pki::{CaKind, ExistingPki, LeafKind, PkiMaterial, ensure_pki};
use crate::resources::{
    self, BuildError, DesiredState, Observed, Tenant, apiserver, etcd, names, tenant_identity,
};
use crate::rollout::{
    Component, ComponentState, components_to_apply, deployment_rolled_out, is_rolling,
    statefulset_rolled_out,
};
use crate::status::{DesiredCondition, Progress, compute_phase, needs_write, set_condition};
use crate::tenant;

/// How soon a reconcile that arrived before the caches synced runs again.
const CACHE_SYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Entry point of the Controller: runs the finalizer-guarded chain and records metrics.
pub async fn reconcile(vc: Arc<VirtualCluster>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches_synced() {
        // Never wait inside a reconcile: the caches are fed by the same Controller whose
        // workers would be blocked, so waiting here could starve them for good.
        return Ok(Action::requeue(CACHE_SYNC_RETRY));
    }
    let started = Instant::now();
    let key = object_key(&vc);
    let namespace = vc.namespace().unwrap_or_default();
    let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = run_chain(&api, vc.clone(), &ctx).await;
    match &result {
        Ok(_) => ctx.reset_backoff(&key),
        Err(error) if !error.is_transient() => report_invalid(&vc, error, &ctx).await,
        // The clustertree step's errors come after the status was written with them
        // (the kubeconfig is out by then); writing again from `vc` would be stale.
        Err(error) if error.step() == Step::Clustertree => {}
        Err(error) => {
            if let Some(message) = error.foreign_object() {
                report_foreign(&vc, message, &ctx).await;
            }
        }
    }
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err().map(Error::step));
    result
}

/// The chain under kube-runtime's finalizer helper: it puts the finalizer in place before
/// any side effect (a JSON patch guarded by a `test` of the current finalizers), runs
/// Apply while the object lives, and Cleanup then finalizer removal once it is deleted.
async fn run_chain(
    api: &Api<VirtualCluster>,
    vc: Arc<VirtualCluster>,
    ctx: &Context,
) -> Result<Action> {
    let outcome = finalizer(api, FINALIZER, vc, |event| async {
        match event {
            Finalizer::Apply(vc) => apply(&vc, ctx).await,
            Finalizer::Cleanup(vc) => cleanup(&vc, ctx).await,
        }
    })
    .await;
    match outcome {
        // The object is already gone: someone else (or a previous attempt whose answer
        // was lost) removed the last finalizer. Nothing is left to do.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(error)) if is_not_found(&error) => {
            Ok(Action::await_change())
        }
        // The chain's own errors keep their step; only finalizer writes are "finalizer".
        Err(kube::runtime::finalizer::Error::ApplyFailed(error))
        | Err(kube::runtime::finalizer::Error::CleanupFailed(error)) => Err(error),
        result => result.map_err(|error| Error::Finalizer(Box::new(error))),
    }
}

/// What the Controller does after a failed reconcile: back off exponentially per object
/// on transient errors, wait for an edit on invalid objects.
pub fn error_policy(vc: Arc<VirtualCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&vc);
    if error.is_transient() {
        let delay = ctx.next_backoff(&key);
        // The error may quote a tenant apiserver: one escaped line in text logs too.
        let note = error.to_string();
        let logged = vc_api::text::sanitize(&note, vc_api::text::ERROR_CHARS);
        tracing::warn!(virtualcluster = %key, step = %error.step(), error = %logged, ?delay, "reconcile failed; retrying");
        let step = error.step();
        tokio::spawn(async move {
            ctx.publish(
                &vc,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: "ReconcileFailed".to_owned(),
                    note: Some(truncate_note(&format!("step {step}: {note}"))),
                    action: step_action(step).to_owned(),
                    secondary: None,
                },
            )
            .await;
        });
        Action::requeue(delay)
    } else {
        tracing::warn!(virtualcluster = %key, step = %error.step(), %error, "invalid VirtualCluster; waiting for a change");
        Action::await_change()
    }
}

fn object_key(vc: &VirtualCluster) -> String {
    format!("{}/{}", vc.namespace().unwrap_or_default(), vc.name_any())
}

fn step_action(step: Step) -> &'static str {
    match step {
        Step::Finalizer => "Finalize",
        Step::ClaimNodes => "ClaimNodes",
        Step::Pki => "IssueCertificates",
        Step::Etcd => "ApplyEtcd",
        Step::Apiserver => "ApplyApiserver",
        Step::ControlPlane => "ApplyControlPlane",
        Step::Kubeconfig => "PublishKubeconfig",
        Step::Clustertree => "ApplyClustertree",
        Step::Promotion => "Promote",
        Step::Status => "UpdateStatus",
        Step::Cleanup => "Cleanup",
    }
}

/// Events carry at most 1 kB of note.
/// An Event note: its text may carry a tenant apiserver's answer or a VirtualCluster
/// author's words, so it goes out escaped and bounded (`vc_api::text`).
fn truncate_note(note: &str) -> String {
    vc_api::text::sanitize(note, vc_api::text::EVENT_NOTE_CHARS)
}

/// A status message, escaped and bounded like every condition message.
fn status_message(message: &str) -> Option<String> {
    Some(vc_api::text::sanitize(
        message,
        vc_api::text::STATUS_MESSAGE_CHARS,
    ))
}

fn build_error(error: BuildError) -> Error {
    match error {
        BuildError::InvalidField { field, value, fix } => Error::InvalidSpec {
            field: field.to_owned(),
            reason: format!("{value} is not accepted; {fix}"),
        },
        other => Error::BuildObject {
            what: "tenant objects",
            reason: other.to_string(),
        },
    }
}

/// Marks an object that cannot be provisioned as `Failed`, saying why, once.
async fn report_invalid(vc: &VirtualCluster, error: &Error, ctx: &Context) {
    let Some(reason) = error.invalid_reason() else {
        return;
    };
    let generation = vc.metadata.generation;
    let mut status = vc.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    set_condition(
        &mut status.conditions,
        &DesiredCondition::new(READY, false, "InvalidSpec", reason.clone()),
        generation,
        now,
    );
    status.phase = Some(Phase::Failed);
    status.message = status_message(&reason);
    status.observed_generation = generation;
    if !needs_write(vc.status.as_ref(), &status) {
        return;
    }
    match write_status(vc, &status, ctx).await {
        Ok(()) => {
            ctx.publish(
                vc,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: "InvalidSpec".to_owned(),
                    note: Some(truncate_note(&reason)),
                    action: step_action(error.step()).to_owned(),
                    secondary: None,
                },
            )
            .await;
        }
        Err(write_error) => {
            tracing::warn!(%write_error, "failed to record the Failed status");
        }
    }
}

/// Says in the status why the tenant is stuck on an object that is not ours. The phase
/// stays: nothing about the VirtualCluster is wrong, and it moves on once that object is
/// removed.
async fn report_foreign(vc: &VirtualCluster, message: String, ctx: &Context) {
    let mut status = vc.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        &DesiredCondition::new(READY, false, FOREIGN_OBJECT_REASON, message.clone()),
        vc.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    status.phase = status.phase.or(Some(Phase::Pending));
    status.message = status_message(&message);
    if !needs_write(vc.status.as_ref(), &status) {
        return;
    }
    if let Err(write_error) = write_status(vc, &status, ctx).await {
        tracing::warn!(%write_error, "failed to record the object that blocks the tenant");
    }
}

/// Reason of the Ready condition while an object the tenant needs is someone else's.
const FOREIGN_OBJECT_REASON: &str = "ObjectNotOurs";

/// Writes the whole status with a merge patch; absent fields are written as null so a
/// stale message or endpoint never lingers.
async fn write_status(
    vc: &VirtualCluster,
    status: &VirtualClusterStatus,
    ctx: &Context,
) -> Result<()> {
    let api: Api<VirtualCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().unwrap_or_default());
    let patch = json!({
        "status": {
            "phase": status.phase,
            "message": status.message,
            "conditions": status.conditions,
            "observedGeneration": status.observed_generation,
            "apiServerEndpoint": status.api_server_endpoint,
            "promotedNodes": if status.promoted_nodes.is_empty() { Value::Null } else { json!(status.promoted_nodes) },
            "adminKubeconfigRotation": status.admin_kubeconfig_rotation,
        }
    });
    api.patch_status(
        &vc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Things this reconcile changed, published as Normal Events at the end.
#[derive(Debug, Default)]
struct Changes(Vec<(&'static str, Step, String)>);

impl Changes {
    fn record(&mut self, reason: &'static str, step: Step, note: impl Into<String>) {
        self.0.push((reason, step, note.into()));
    }

    async fn publish(self, vc: &VirtualCluster, ctx: &Context) {
        for (reason, step, note) in self.0 {
            ctx.publish(
                vc,
                KubeEvent {
                    type_: EventType::Normal,
                    reason: reason.to_owned(),
                    note: Some(truncate_note(&note)),
                    action: step_action(step).to_owned(),
                    secondary: None,
                },
            )
            .await;
        }
    }
}

fn claimant(vc: &VirtualCluster) -> Claimant {
    Claimant {
        namespace: vc.namespace().unwrap_or_default(),
        name: vc.name_any(),
        uid: vc.uid().unwrap_or_default(),
    }
}

fn cached<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut reference = ObjectRef::<K>::new(name);
    if let Some(namespace) = namespace {
        reference = reference.within(namespace);
    }
    store.get(&reference)
}

/// (a) Claims the listed nodes and releases the ones we hold but no longer list.
async fn claim_nodes(
    vc: &VirtualCluster,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<ClaimReport> {
    let claimant = claimant(vc);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let listed: BTreeSet<&str> = vc
        .spec
        .promote_resources
        .nodes
        .iter()
        .map(String::as_str)
        .collect();
    let mut report = ClaimReport::default();
    for name in &listed {
        let Some(node) = cached(&ctx.stores.nodes, None, name) else {
            report.missing.push((*name).to_owned());
            continue;
        };
        match decide_claim(&node, &claimant) {
            ClaimDecision::Keep => report.held.push((*name).to_owned()),
            ClaimDecision::Conflict {
                namespace,
                name: owner,
            } => {
                report
                    .conflicts
                    .insert((*name).to_owned(), format!("{namespace}/{owner}"));
            }
            ClaimDecision::ControlPlane => report.control_plane.push((*name).to_owned()),
            ClaimDecision::Claim => {
                let patch = claim_patch(&node, &claimant);
                match nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        report.held.push((*name).to_owned());
                        changes.record(
                            "NodeClaimed",
                            Step::ClaimNodes,
                            format!("claimed node {name:?}"),
                        );
                    }
                    Err(error) if is_conflict(&error) => report.raced.push((*name).to_owned()),
                    Err(source) => {
                        return Err(Error::ClaimNode {
                            node: (*name).to_owned(),
                            source,
                        });
                    }
                }
            }
        }
    }
    for node in ctx.stores.nodes.state() {
        let name = node.name_any();
        if listed.contains(name.as_str()) || !should_release(&node, &claimant) {
            continue;
        }
        release_node(&nodes, &node, changes).await?;
    }
    Ok(report)
}

async fn release_node(nodes: &Api<Node>, node: &Node, changes: &mut Changes) -> Result<()> {
    let name = node.name_any();
    match nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&release_patch(node)),
        )
        .await
    {
        Ok(_) => {
            changes.record(
                "NodeReleased",
                Step::ClaimNodes,
                format!("released node {name:?}"),
            );
            Ok(())
        }
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::ReleaseNode { node: name, source }),
    }
}

/// Applies a namespaced host object owned by the tenant, comparing with the cache first.
async fn apply_namespaced<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    step: Step,
    kind: &'static str,
) -> Result<Applied<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let namespace = desired.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    apply_if_changed(&api, Existing::Cached(store), desired, owner)
        .await
        .map_err(|error| {
            apply_error(
                error,
                step,
                kind,
                format!("{namespace}/{}", desired.name_any()),
            )
        })
}

/// Applies a cluster-scoped host object, comparing with the cache first.
async fn apply_cluster_scoped<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    step: Step,
    kind: &'static str,
) -> Result<Applied<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    apply_if_changed(&api, Existing::Cached(store), desired, owner)
        .await
        .map_err(|error| apply_error(error, step, kind, desired.name_any()))
}

fn apply_error(error: ApplyError, step: Step, kind: &'static str, name: String) -> Error {
    match error {
        ApplyError::NotOurs { holder } => Error::ForeignObject {
            step,
            kind,
            name,
            holder,
        },
        ApplyError::Api(source) => Error::ApplyObject {
            step,
            kind,
            name,
            source,
        },
    }
}

fn note_written<K>(
    applied: &Applied<K>,
    changes: &mut Changes,
    reason: &'static str,
    step: Step,
    what: String,
) {
    if applied.written {
        changes.record(reason, step, format!("applied {what}"));
    }
}

/// Facts about the apiserver Service the certificates and kubeconfigs depend on.
fn observe_service(service: Option<&Service>, held_nodes: &[String]) -> Observed {
    let cluster_ip = service
        .and_then(|service| service.spec.as_ref())
        .and_then(|spec| spec.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let load_balancer_hosts = service
        .and_then(|service| service.status.as_ref())
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    Observed {
        apiserver_cluster_ip: cluster_ip,
        load_balancer_hosts,
        claimed_nodes: held_nodes.to_vec(),
        workload_pod_security: PodSecurityLevel::Baseline,
    }
}

/// The Pod Security level the cluster admin gave the VirtualCluster's namespace
/// ([`WORKLOAD_POD_SECURITY_LABEL`]); an unknown value keeps `baseline` and says so in a
/// Warning Event naming the label and the values it takes.
async fn workload_pod_security(vc: &VirtualCluster, ctx: &Context) -> Result<PodSecurityLevel> {
    let namespace = vc.namespace().unwrap_or_default();
    let found = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await
        .map_err(|source| Error::ReadNamespace {
            namespace: namespace.clone(),
            source,
        })?;
    let label = found
        .as_ref()
        .and_then(|found| found.labels().get(WORKLOAD_POD_SECURITY_LABEL).cloned());
    match pod_security::workload_level(label.as_deref()) {
        Ok(level) => Ok(level),
        Err(unknown) => {
            ctx.publish(
                vc,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: "InvalidPodSecurityLevel".to_owned(),
                    note: Some(truncate_note(&format!(
                        "label {WORKLOAD_POD_SECURITY_LABEL} on namespace {namespace}: {unknown}; the workload namespace stays at baseline"
                    ))),
                    action: step_action(Step::Clustertree).to_owned(),
                    secondary: None,
                },
            )
            .await;
            Ok(PodSecurityLevel::Baseline)
        }
    }
}

/// Every Secret name the PKI is read from.
fn pki_secret_names(tenant_name: &str) -> Vec<String> {
    let mut names_list: Vec<String> = CaKind::ALL
        .iter()
        .map(|kind| kind.secret_name(tenant_name))
        .collect();
    names_list.extend(
        LeafKind::ALL
            .iter()
            .map(|kind| kind.secret_name(tenant_name)),
    );
    names_list.push(names::service_account_key_secret(tenant_name));
    // Written with the PKI Secrets, so read back with them: a desired Secret missing
    // from this list looks absent, is created again, conflicts, and stalls the chain.
    names_list.push(names::apiserver_admission_secret(tenant_name));
    names_list.push(names::apiserver_encryption_secret(tenant_name));
    names_list
}

/// (b) Reads the stored PKI (cache first; a CA missing from the cache is read from the
/// apiserver, so a lagging cache can never make us mint a second CA) and issues only
/// what is missing or due.
async fn plan_pki(
    tenant: &Tenant,
    observed: &Observed,
    ctx: &Context,
) -> Result<(PkiMaterial, Vec<String>, Vec<Arc<Secret>>)> {
    let namespace = tenant.namespace.as_str();
    let mut stored: Vec<Arc<Secret>> = pki_secret_names(&tenant.name)
        .iter()
        .filter_map(|name| cached(&ctx.stores.secrets, Some(namespace), name))
        .collect();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    // Like a CA, a key minted twice would leave what the first one sealed unreadable.
    let read_through = CaKind::ALL
        .iter()
        .map(|kind| kind.secret_name(&tenant.name))
        .chain([names::apiserver_encryption_secret(&tenant.name)]);
    for name in read_through {
        if stored.iter().any(|secret| secret.name_any() == name) {
            continue;
        }
        match secrets.get_opt(&name).await {
            Ok(Some(secret)) => stored.push(Arc::new(secret)),
            Ok(None) => {}
            Err(source) => return Err(Error::ApplySecret { name, source }),
        }
    }
    // A CA or key read from a Secret that is not ours would sign this tenant's
    // certificates with another tenant's CA.
    for secret in &stored {
        if let Holder::Other(holder) = holder(secret.meta(), &tenant.owner()) {
            return Err(foreign_secret(secret, holder));
        }
    }
    let identity = tenant_identity(tenant, &ctx.build, observed).map_err(build_error)?;
    let fingerprint = pki_fingerprint(&identity, &stored);
    if let Some(material) = ctx.cached_pki(&tenant.uid, &fingerprint) {
        return Ok((material, Vec::new(), stored));
    }
    let existing = ExistingPki::from_secrets(&tenant.name, stored.iter().map(Arc::as_ref));
    let (plan, material) = ensure_pki(&identity, &existing, k8s_openapi::jiff::Timestamp::now())
        .map_err(|error| Error::BuildPki(error.to_string()))?;
    if !plan.issues_anything() {
        ctx.remember_pki(&tenant.uid, fingerprint, material.clone());
    }
    let mut issued: Vec<String> = plan
        .cas
        .iter()
        .filter(|(_, decision)| decision.is_issue())
        .map(|(kind, decision)| format!("{} ({decision:?})", kind.as_str()))
        .collect();
    issued.extend(
        plan.leaves
            .iter()
            .filter(|(kind, decision)| decision.is_issue() && **kind != LeafKind::Admin)
            .map(|(kind, decision)| format!("{} ({decision:?})", kind.as_str())),
    );
    if plan.service_account.is_issue() {
        issued.push("service-account key".to_owned());
    }
    if plan.encryption.is_issue() {
        issued.push("encryption-at-rest key".to_owned());
    }
    Ok((material, issued, stored))
}

fn foreign_secret(secret: &Secret, holder: String) -> Error {
    Error::ForeignObject {
        step: Step::Pki,
        kind: "Secret",
        name: format!(
            "{}/{}",
            secret.namespace().unwrap_or_default(),
            secret.name_any()
        ),
        holder,
    }
}

/// What a PKI was computed from: the tenant's identity and the exact versions of its
/// stored Secrets. Any change to either makes the PKI be inspected again.
fn pki_fingerprint(identity: &crate::pki::TenantIdentity, stored: &[Arc<Secret>]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(format!("{identity:?}").as_bytes());
    let mut versions: Vec<(String, String)> = stored
        .iter()
        .map(|secret| {
            (
                secret.name_any(),
                secret.resource_version().unwrap_or_default(),
            )
        })
        .collect();
    versions.sort();
    for (name, version) in versions {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(version.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Writes the PKI Secrets: a Secret that does not exist is created (never applied), so
/// two racing reconciles cannot both mint a CA; an existing one is applied only when
/// its content changed (renewal, new SANs).
async fn write_pki_secrets(
    desired: &[Secret],
    stored: &[Arc<Secret>],
    owner: &Owner<'_>,
    ctx: &Context,
) -> Result<SecretWrites> {
    let mut written = SecretWrites::default();
    for secret in desired {
        let name = secret.name_any();
        let namespace = secret.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let existing = stored.iter().find(|stored| stored.name_any() == name);
        match existing {
            None => {
                let params = PostParams {
                    field_manager: Some(CONTROLLER_FIELD_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                match api.create(&params, secret).await {
                    Ok(_) => written.created = true,
                    // Exists already: our cache lags behind our own earlier write, or
                    // someone else's Secret (never in our cache) holds the name. Keep
                    // what is stored and look again once the cache has caught up.
                    Err(error) if is_conflict(&error) => {
                        if let Some(found) =
                            api.get_opt(&name)
                                .await
                                .map_err(|source| Error::ApplySecret {
                                    name: name.clone(),
                                    source,
                                })?
                            && let Holder::Other(holder) = holder(found.meta(), owner)
                        {
                            return Err(foreign_secret(&found, holder));
                        }
                        written.cache_lagging = true;
                    }
                    Err(source) => return Err(Error::ApplySecret { name, source }),
                }
            }
            Some(existing) if !up_to_date(secret, Some(existing.as_ref())) => {
                api.patch(&name, &crate::apply::apply_params(), &Patch::Apply(secret))
                    .await
                    .map_err(|source| Error::ApplySecret { name, source })?;
                written.created = true;
            }
            Some(_) => {}
        }
    }
    Ok(written)
}

/// What writing the PKI Secrets did.
#[derive(Debug, Default)]
struct SecretWrites {
    /// Something was created or updated.
    created: bool,
    /// A Secret missing from the cache already existed.
    cache_lagging: bool,
}

/// What the control-plane step found.
#[derive(Debug)]
struct ControlPlaneReport {
    states: Vec<ComponentState>,
    apiserver_rolled_out: bool,
}

impl ControlPlaneReport {
    fn waiting_for(&self) -> Option<&'static str> {
        self.states
            .iter()
            .find(|state| !(state.up_to_date && state.rolled_out))
            .map(|state| match state.component {
                Component::Etcd => "etcd",
                Component::Apiserver => "kube-apiserver",
                Component::ControllerManager => "kube-controller-manager",
                Component::Scheduler => "kube-scheduler",
            })
    }
}

/// (c) etcd, apiserver, controller-manager and scheduler, in rollout order.
async fn apply_control_plane(
    desired: &DesiredState,
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<ControlPlaneReport> {
    // Before any control-plane pod exists, so none is ever reachable unfenced.
    let mut policies_written = false;
    for policy in &desired.network_policies.control_plane {
        policies_written |= apply_namespaced(
            ctx,
            owner,
            &ctx.stores.network_policies,
            policy,
            Step::ControlPlane,
            "NetworkPolicy",
        )
        .await?
        .written;
    }
    if policies_written {
        changes.record(
            "NetworkPoliciesApplied",
            Step::ControlPlane,
            "applied the control plane's NetworkPolicies",
        );
    }
    let namespace = desired.etcd.stateful_set.namespace().unwrap_or_default();
    let ns = Some(namespace.as_str());
    let etcd_existing = cached(
        &ctx.stores.stateful_sets,
        ns,
        &desired.etcd.stateful_set.name_any(),
    );
    let deployment =
        |desired: &Deployment| cached(&ctx.stores.deployments, ns, &desired.name_any());
    let apiserver_existing = deployment(&desired.apiserver_deployment);
    let controller_manager_existing = deployment(&desired.controller_manager);
    let scheduler_existing = deployment(&desired.scheduler);
    let deployment_state =
        |component, desired: &Deployment, existing: &Option<Arc<Deployment>>| ComponentState {
            component,
            up_to_date: up_to_date(desired, existing.as_deref()),
            rolled_out: existing.as_deref().is_some_and(deployment_rolled_out),
        };
    let states = vec![
        ComponentState {
            component: Component::Etcd,
            up_to_date: up_to_date(&desired.etcd.stateful_set, etcd_existing.as_deref()),
            rolled_out: etcd_existing.as_deref().is_some_and(statefulset_rolled_out),
        },
        deployment_state(
            Component::Apiserver,
            &desired.apiserver_deployment,
            &apiserver_existing,
        ),
        deployment_state(
            Component::ControllerManager,
            &desired.controller_manager,
            &controller_manager_existing,
        ),
        deployment_state(
            Component::Scheduler,
            &desired.scheduler,
            &scheduler_existing,
        ),
    ];
    for component in components_to_apply(&states) {
        match component {
            Component::Etcd => {
                let applied = apply_namespaced::<StatefulSet>(
                    ctx,
                    owner,
                    &ctx.stores.stateful_sets,
                    &desired.etcd.stateful_set,
                    Step::Etcd,
                    "StatefulSet",
                )
                .await?;
                note_written(
                    &applied,
                    changes,
                    "EtcdApplied",
                    Step::Etcd,
                    "the etcd StatefulSet".into(),
                );
            }
            Component::Apiserver => {
                let applied = apply_namespaced(
                    ctx,
                    owner,
                    &ctx.stores.deployments,
                    &desired.apiserver_deployment,
                    Step::Apiserver,
                    "Deployment",
                )
                .await?;
                note_written(
                    &applied,
                    changes,
                    "ApiserverApplied",
                    Step::Apiserver,
                    "the kube-apiserver Deployment".into(),
                );
            }
            Component::ControllerManager | Component::Scheduler => {
                let object = if component == Component::ControllerManager {
                    &desired.controller_manager
                } else {
                    &desired.scheduler
                };
                let applied = apply_namespaced(
                    ctx,
                    owner,
                    &ctx.stores.deployments,
                    object,
                    Step::ControlPlane,
                    "Deployment",
                )
                .await?;
                note_written(
                    &applied,
                    changes,
                    "ControlPlaneApplied",
                    Step::ControlPlane,
                    format!("Deployment {}", object.name_any()),
                );
            }
        }
    }
    Ok(ControlPlaneReport {
        apiserver_rolled_out: apiserver_existing
            .as_deref()
            .is_some_and(deployment_rolled_out),
        states,
    })
}

/// The admin kubeconfig the controller itself uses: the cluster IP endpoint.
fn probe_kubeconfig(
    tenant: &Tenant,
    cluster_ip: IpAddr,
    material: &PkiMaterial,
) -> Result<(String, String)> {
    let endpoint = resources::secrets::https_url(&cluster_ip.to_string());
    let admin = material.leaf(LeafKind::Admin);
    let yaml = resources::kubeconfig::render_client_certificate_kubeconfig(
        &tenant.name,
        &endpoint,
        &material.ca(CaKind::Cluster).cert_pem,
        "kubernetes-admin",
        &admin.cert_pem,
        &admin.key_pem,
    )
    .map_err(|error| Error::BuildObject {
        what: "admin kubeconfig",
        reason: error.to_string(),
    })?;
    Ok((endpoint, yaml))
}

/// The tenant resolved and every object built from it.
struct Built {
    tenant: Tenant,
    observed: Observed,
    material: PkiMaterial,
    desired: DesiredState,
}

/// What the kubeconfig step found.
#[derive(Default)]
struct KubeconfigReport {
    published: bool,
    tenant_client: Option<kube::Client>,
    waiting: Option<String>,
}

/// (d) Once the apiserver is rolled out and answers `/readyz` with the admin credential,
/// stores the admin kubeconfig Secret and `spec.kubeconfig`.
async fn publish_kubeconfig(
    vc: &VirtualCluster,
    built: &Built,
    control_plane: &ControlPlaneReport,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<KubeconfigReport> {
    let Built {
        tenant,
        observed,
        material,
        desired,
    } = built;
    let owner = &tenant.owner();
    let external_kubeconfig = desired
        .admin_kubeconfig
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_SECRET_KEY))
        .map(|bytes| STANDARD.encode(&bytes.0));
    let secret_current = up_to_date(
        &desired.admin_kubeconfig,
        cached(
            &ctx.stores.secrets,
            Some(&tenant.namespace),
            &desired.admin_kubeconfig.name_any(),
        )
        .as_deref(),
    );
    let spec_current = external_kubeconfig.is_some() && vc.spec.kubeconfig == external_kubeconfig;
    let mut report = KubeconfigReport {
        published: secret_current && spec_current,
        ..KubeconfigReport::default()
    };
    let Some(cluster_ip) = observed.apiserver_cluster_ip else {
        report.waiting = Some("waiting for the apiserver Service's cluster IP".to_owned());
        return Ok(report);
    };
    if !control_plane.apiserver_rolled_out {
        if !report.published {
            report.waiting = Some("waiting for kube-apiserver to become ready".to_owned());
        }
        return Ok(report);
    }
    let (endpoint, yaml) = probe_kubeconfig(tenant, cluster_ip, material)?;
    let client = ctx
        .tenants
        .get(&tenant.uid, &yaml, ctx.timing.tenant_timeout)
        .await?;
    if let Err(error) = tenant::probe_ready(&client, &endpoint).await {
        report.waiting = Some(format!("waiting for the tenant apiserver: {error}"));
        return Ok(report);
    }
    report.tenant_client = Some(client);
    if report.published {
        return Ok(report);
    }
    let applied = apply_namespaced(
        ctx,
        owner,
        &ctx.stores.secrets,
        &desired.admin_kubeconfig,
        Step::Kubeconfig,
        "Secret",
    )
    .await?;
    if !spec_current {
        let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &tenant.namespace);
        let patch = json!({ "spec": { "kubeconfig": external_kubeconfig } });
        api.patch(&tenant.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::WriteKubeconfig)?;
    }
    if applied.written || !spec_current {
        changes.record(
            "KubeconfigPublished",
            Step::Kubeconfig,
            format!(
                "tenant apiserver answers at {endpoint}; admin kubeconfig stored in Secret {}",
                desired.admin_kubeconfig.name_any()
            ),
        );
    }
    report.published = true;
    Ok(report)
}

/// (e) The clustertree, its host credential and the tenant's workload namespace.
async fn apply_clustertree(
    desired: &DesiredState,
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<bool> {
    let objects = &desired.clustertree;
    let stores = &ctx.stores;
    let step = Step::Clustertree;
    let mut written = Vec::new();
    written.push(
        apply_cluster_scoped(
            ctx,
            owner,
            &stores.namespaces,
            &objects.namespace,
            step,
            "Namespace",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.network_policies,
            &desired.network_policies.workloads,
            step,
            "NetworkPolicy",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.resource_quotas,
            &objects.resource_quota,
            step,
            "ResourceQuota",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.service_accounts,
            &objects.service_account,
            step,
            "ServiceAccount",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.roles,
            &objects.virtual_cluster_reader,
            step,
            "Role",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.role_bindings,
            &objects.virtual_cluster_reader_binding,
            step,
            "RoleBinding",
        )
        .await?
        .written,
    );
    written.push(
        apply_namespaced(
            ctx,
            owner,
            &stores.role_bindings,
            &objects.role_binding,
            step,
            "RoleBinding",
        )
        .await?
        .written,
    );
    written.push(
        apply_cluster_scoped(
            ctx,
            owner,
            &stores.cluster_roles,
            &objects.cluster_role,
            step,
            "ClusterRole",
        )
        .await?
        .written,
    );
    written.push(
        apply_cluster_scoped(
            ctx,
            owner,
            &stores.cluster_role_bindings,
            &objects.cluster_role_binding,
            step,
            "ClusterRoleBinding",
        )
        .await?
        .written,
    );
    let deployment = apply_namespaced(
        ctx,
        owner,
        &stores.deployments,
        &objects.deployment,
        step,
        "Deployment",
    )
    .await?;
    written.push(deployment.written);
    if written.iter().any(|written| *written) {
        changes.record(
            "ClustertreeApplied",
            step,
            "applied the clustertree and its host credential",
        );
    }
    let current = cached(
        &stores.deployments,
        objects.deployment.namespace().as_deref(),
        &objects.deployment.name_any(),
    );
    Ok(!deployment.written
        && current.as_deref().is_some_and(|deployment| {
            up_to_date(&objects.deployment, Some(deployment)) && deployment_rolled_out(deployment)
        }))
}

/// (f) The promoted nodes the tenant lists: vc-clustertree mirrors each claimed node
/// into the tenant, and the status reports only those the tenant really shows.
async fn promote(client: &kube::Client, held: &[String]) -> Result<Vec<String>> {
    let listed: BTreeSet<String> = tenant::tenant_node_names(client)
        .await?
        .into_iter()
        .collect();
    Ok(held
        .iter()
        .filter(|node| listed.contains(*node))
        .cloned()
        .collect())
}

/// The Apply branch of the finalizer: the whole chain, then the status.
async fn apply(vc: &VirtualCluster, ctx: &Context) -> Result<Action> {
    let tenant = Tenant::resolve(vc, &ctx.build).map_err(build_error)?;
    if let Some(running) = cached(
        &ctx.stores.stateful_sets,
        Some(&tenant.namespace),
        &names::etcd(&tenant.name),
    )
    .and_then(|set| etcd::member_count_change(&tenant, &set))
    {
        return Err(Error::InvalidSpec {
            field: "spec.controlPlane.etcd.replicas".to_owned(),
            reason: format!(
                "etcd was created with a member count of {running} and kosmos-vc does not change etcd membership yet, so {} is not applied; set it back to {running}",
                tenant.etcd_replicas
            ),
        });
    }
    let mut changes = Changes::default();
    let (owner_namespace, owner_name, owner_uid) = (
        tenant.namespace.clone(),
        tenant.name.clone(),
        tenant.uid.clone(),
    );
    let owner = Owner {
        namespace: &owner_namespace,
        name: &owner_name,
        uid: &owner_uid,
    };
    let owner = &owner;

    let claims = claim_nodes(vc, ctx, &mut changes).await?;
    let mut held = claims.held.clone();
    held.sort();
    let eviction = evict_claimed_pods(&tenant, &held, ctx, &mut changes).await?;

    // Services first: the apiserver's cluster IP goes into its serving certificate.
    let stores = &ctx.stores;
    let peer = apply_namespaced(
        ctx,
        owner,
        &stores.services,
        &etcd::peer_service(&tenant),
        Step::Etcd,
        "Service",
    )
    .await?;
    let client_service = apply_namespaced(
        ctx,
        owner,
        &stores.services,
        &etcd::client_service(&tenant),
        Step::Etcd,
        "Service",
    )
    .await?;
    let apiserver_service = apply_namespaced(
        ctx,
        owner,
        &stores.services,
        &apiserver::service(&tenant),
        Step::Apiserver,
        "Service",
    )
    .await?;
    if peer.written || client_service.written || apiserver_service.written {
        changes.record(
            "ServicesApplied",
            Step::Apiserver,
            "applied the etcd and kube-apiserver Services",
        );
    }
    let observed = Observed {
        workload_pod_security: workload_pod_security(vc, ctx).await?,
        ..observe_service(apiserver_service.object.as_ref(), &held)
    };

    let (material, issued, stored) = plan_pki(&tenant, &observed, ctx).await?;
    let ca_notices = crate::pki::ca_notices(&material, k8s_openapi::jiff::Timestamp::now());
    let desired = DesiredState::build(vc, &ctx.build, &observed, &material).map_err(build_error)?;
    let secret_writes = write_pki_secrets(&desired.pki_secrets, &stored, owner, ctx).await?;
    if secret_writes.created && !issued.is_empty() {
        changes.record(
            "CertificatesIssued",
            Step::Pki,
            format!("issued {}", issued.join(", ")),
        );
    }
    if secret_writes.cache_lagging {
        // Building on certificates that were not stored would roll every component.
        changes.publish(vc, ctx).await;
        return Ok(Action::requeue(ctx.timing.backoff_base));
    }

    let control_plane = apply_control_plane(&desired, owner, ctx, &mut changes).await?;
    let built = Built {
        tenant,
        observed,
        material,
        desired,
    };
    let kubeconfig = publish_kubeconfig(vc, &built, &control_plane, ctx, &mut changes).await?;
    let previous_rotation = vc
        .status
        .as_ref()
        .and_then(|status| status.admin_kubeconfig_rotation.clone());
    let admin_rotation = if kubeconfig.published {
        built.material.admin_rotation().map(str::to_owned)
    } else {
        previous_rotation.clone()
    };
    // A tenant created with the annotation gets its first kubeconfig, not a rotation.
    if admin_rotation.is_some()
        && admin_rotation != previous_rotation
        && vc.spec.kubeconfig.is_some()
    {
        changes.record(
            "AdminKubeconfigRotated",
            Step::Kubeconfig,
            "the admin client CA was replaced: the new admin kubeconfig is served and every one issued before is refused",
        );
    }
    let Built {
        tenant,
        observed,
        desired,
        ..
    } = built;

    let mut clustertree_ready = false;
    let mut visible = Vec::new();
    let mut dns = None;
    let mut waiting = kubeconfig.waiting.clone();
    // Once the kubeconfig is out, the status must say so even when a later step fails:
    // such an error is reported after the status is written.
    let mut deferred: Option<Error> = None;
    if kubeconfig.published {
        match apply_clustertree(&desired, owner, ctx, &mut changes).await {
            Ok(ready) => clustertree_ready = ready,
            Err(error) => {
                waiting = Some(error.to_string());
                deferred = Some(error);
            }
        }
        match &kubeconfig.tenant_client {
            Some(_) if deferred.is_some() => {}
            Some(client) => match promote(client, &held).await {
                Ok(promoted) => {
                    visible = promoted;
                    match tenant::dns_readiness(client).await {
                        Ok(readiness) => dns = Some(readiness),
                        Err(error) => {
                            waiting = Some(error.to_string());
                            deferred = Some(error);
                        }
                    }
                }
                Err(error) => {
                    waiting = Some(error.to_string());
                    deferred = Some(error);
                }
            },
            None => {
                // The apiserver is rolling: keep reporting what the tenant listed before.
                visible = vc
                    .status
                    .as_ref()
                    .map(|status| status.promoted_nodes.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|node| held.contains(node))
                    .collect();
                // Likewise its DNS, as last seen.
                let answered = vc.status.as_ref().is_some_and(|status| {
                    status
                        .conditions
                        .iter()
                        .any(|condition| condition.type_ == DNS_READY && condition.status == "True")
                });
                dns = answered.then_some(Ok(()));
                waiting = waiting.or(Some("waiting for the tenant apiserver".to_owned()));
            }
        }
    }
    let outcome = Outcome {
        claims,
        eviction,
        held,
        visible,
        control_plane,
        kubeconfig_published: kubeconfig.published,
        clustertree_ready,
        dns,
        waiting,
        ca_notices,
        blocked: deferred.as_ref().and_then(Error::foreign_object),
        endpoint: observed
            .apiserver_cluster_ip
            .map(|_| resources::secrets::external_apiserver_url(&tenant, &observed)),
        admin_rotation,
    };
    let status = desired_status(vc, &outcome, k8s_openapi::jiff::Timestamp::now());
    let phase = status.phase;
    let status_written = needs_write(vc.status.as_ref(), &status);
    if status_written {
        write_status(vc, &status, ctx).await?;
        if let Some(event) = crate::status::ca_expiry_event(vc.status.as_ref(), &status) {
            ctx.publish(vc, event).await;
        }
        if let Some((reason, message)) = outcome.claims.problem()
            && reason == "NodeConflict"
            && condition_changed(vc, NODES_PROMOTED, &status)
        {
            ctx.publish(
                vc,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: reason.to_owned(),
                    note: Some(truncate_note(&message)),
                    action: step_action(Step::ClaimNodes).to_owned(),
                    secondary: None,
                },
            )
            .await;
        }
        if let Some(eviction) = outcome.eviction.as_ref().filter(|report| report.pending())
            && condition_changed(vc, CLAIMED_NODES_DRAINED, &status)
        {
            ctx.publish(
                vc,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: "EvictionBlocked".to_owned(),
                    note: Some(truncate_note(&blocked_message(eviction))),
                    action: step_action(Step::ClaimNodes).to_owned(),
                    secondary: None,
                },
            )
            .await;
        }
        if vc.status.as_ref().and_then(|status| status.phase) != phase {
            changes.record(
                "PhaseChanged",
                Step::Status,
                format!(
                    "phase is now {}",
                    phase.map(Phase::as_str).unwrap_or("unknown")
                ),
            );
        }
    }
    let key = object_key(vc);
    if status_written || !changes.0.is_empty() {
        ctx.reset_wait(&key);
    }
    changes.publish(vc, ctx).await;
    if let Some(error) = deferred {
        return Err(error);
    }
    let next = if phase == Some(Phase::Completed) {
        ctx.reset_wait(&key);
        ctx.timing.resync
    } else if !outcome.claims.raced.is_empty() {
        ctx.timing.backoff_base
    } else {
        ctx.next_wait(&key)
    };
    // A pod a disruption budget holds back is tried again with backoff, sooner than a
    // settled tenant's resync.
    let eviction_key = format!("{key}#eviction");
    let next = if outcome
        .eviction
        .as_ref()
        .is_some_and(EvictionReport::pending)
    {
        next.min(ctx.next_backoff(&eviction_key))
    } else {
        ctx.reset_backoff(&eviction_key);
        next
    };
    Ok(Action::requeue(next))
}

/// With `--claimed-node-pods=evict`, evicts what must leave the claimed nodes `held`;
/// `None` in `keep` mode.
async fn evict_claimed_pods(
    tenant: &resources::Tenant,
    held: &[String],
    ctx: &Context,
    changes: &mut Changes,
) -> Result<Option<EvictionReport>> {
    if ctx.claimed_node_pods != ClaimedNodePods::Evict {
        return Ok(None);
    }
    let workload_namespace = tenant.workload_namespace();
    let claim = vc_api::eviction::Claim {
        name: &tenant.name,
        workload_namespace: &workload_namespace,
    };
    let report = crate::eviction::evict_from_claimed(&ctx.eviction_client, &claim, held).await?;
    for (pod, node) in &report.evicted {
        changes.record(
            "PodEvicted",
            Step::ClaimNodes,
            format!("evicted pod {pod} from claimed node {node:?}"),
        );
    }
    Ok(Some(report))
}

/// The pods a disruption budget holds on claimed nodes, a few by name.
fn blocked_message(report: &EvictionReport) -> String {
    const NAMED: usize = 3;
    let mut parts: Vec<String> = report
        .blocked
        .iter()
        .take(NAMED)
        .map(|(pod, (node, reason))| format!("pod {pod} on node {node:?}: {reason}"))
        .collect();
    if report.blocked.len() > NAMED {
        parts.push(format!("and {} more", report.blocked.len() - NAMED));
    }
    format!(
        "eviction from claimed nodes refused, retrying with backoff: {}",
        parts.join("; ")
    )
}

fn condition_changed(vc: &VirtualCluster, type_: &str, status: &VirtualClusterStatus) -> bool {
    let find = |status: Option<&VirtualClusterStatus>| {
        status
            .and_then(|status| {
                status
                    .conditions
                    .iter()
                    .find(|condition| condition.type_ == type_)
            })
            .map(|condition| {
                (
                    condition.status.clone(),
                    condition.reason.clone(),
                    condition.message.clone(),
                )
            })
    };
    find(vc.status.as_ref()) != find(Some(status))
}

/// Everything the status is computed from.
#[derive(Debug)]
struct Outcome {
    claims: ClaimReport,
    /// With `--claimed-node-pods=evict`, this pass's evictions.
    eviction: Option<EvictionReport>,
    held: Vec<String>,
    visible: Vec<String>,
    control_plane: ControlPlaneReport,
    kubeconfig_published: bool,
    clustertree_ready: bool,
    /// Whether the tenant's DNS answers; `None` until the tenant could be asked.
    dns: Option<Result<(), vc_api::tenant_dns::DnsMissing>>,
    waiting: Option<String>,
    ca_notices: crate::pki::CaNotices,
    /// Why the tenant waits on an object that is not ours, when it does.
    blocked: Option<String>,
    endpoint: Option<String>,
    /// The rotation request whose admin kubeconfig is served.
    admin_rotation: Option<String>,
}

/// The status for `outcome`, keeping condition timestamps that did not change.
fn desired_status(
    vc: &VirtualCluster,
    outcome: &Outcome,
    now: k8s_openapi::jiff::Timestamp,
) -> VirtualClusterStatus {
    let generation = vc.metadata.generation;
    let previous = vc.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let nodes_visible = outcome.visible.len() == outcome.held.len();
    let dns_answers = matches!(outcome.dns, Some(Ok(())));
    let promotion_complete =
        outcome.claims.all_held() && outcome.clustertree_ready && nodes_visible && dns_answers;
    let progress = Progress {
        failed: false,
        provisioning_started: true,
        kubeconfig_published: outcome.kubeconfig_published,
        promotion_complete,
        rolling: is_rolling(&outcome.control_plane.states),
    };
    let phase = compute_phase(progress, previous.phase);

    let control_plane = match outcome.control_plane.waiting_for() {
        None => DesiredCondition::new(
            CONTROL_PLANE_READY,
            true,
            "ControlPlaneReady",
            "etcd, kube-apiserver, kube-controller-manager and kube-scheduler are rolled out",
        ),
        Some(component) => DesiredCondition::new(
            CONTROL_PLANE_READY,
            false,
            "RollingOut",
            format!("waiting for {component} to roll out"),
        ),
    };
    let nodes = match outcome.claims.problem() {
        Some((reason, message)) => DesiredCondition::new(NODES_PROMOTED, false, reason, message),
        None if outcome.held.is_empty() => DesiredCondition::new(
            NODES_PROMOTED,
            true,
            "NoNodesRequested",
            "spec.promoteResources.nodes is empty",
        ),
        None if nodes_visible && outcome.kubeconfig_published => DesiredCondition::new(
            NODES_PROMOTED,
            true,
            "NodesPromoted",
            format!(
                "nodes {:?} are claimed and registered in the tenant",
                outcome.held
            ),
        ),
        None => {
            let missing: Vec<&String> = outcome
                .held
                .iter()
                .filter(|node| !outcome.visible.contains(node))
                .collect();
            DesiredCondition::new(
                NODES_PROMOTED,
                false,
                "Registering",
                format!("nodes {missing:?} are claimed; waiting for them to appear in the tenant"),
            )
        }
    };
    let clustertree = if outcome.clustertree_ready {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            true,
            "ClusterTreeReady",
            "the clustertree Deployment is rolled out",
        )
    } else if outcome.kubeconfig_published {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            false,
            "RollingOut",
            "waiting for the clustertree Deployment to roll out",
        )
    } else {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            false,
            "WaitingForControlPlane",
            "the clustertree starts once the tenant apiserver answers",
        )
    };
    let dns = match &outcome.dns {
        Some(Ok(())) => DesiredCondition::new(
            DNS_READY,
            true,
            "DNSAnswering",
            "kube-system/kube-dns in the tenant has a ready endpoint",
        ),
        Some(Err(missing)) => {
            DesiredCondition::new(DNS_READY, false, "DNSNotReady", missing.to_string())
        }
        None => DesiredCondition::new(
            DNS_READY,
            false,
            "WaitingForControlPlane",
            "the tenant's DNS is checked once the tenant apiserver answers",
        ),
    };
    let message = if let Some(blocked) = &outcome.blocked {
        blocked.clone()
    } else if phase == Phase::Completed {
        "the tenant is ready".to_owned()
    } else if let Some((_, message)) = outcome.claims.problem() {
        message
    } else if let Some(component) = outcome.control_plane.waiting_for() {
        format!("waiting for {component} to roll out")
    } else if let Some(waiting) = &outcome.waiting {
        waiting.clone()
    } else if !outcome.clustertree_ready {
        "waiting for the clustertree to roll out".to_owned()
    } else if let Some(Err(missing)) = &outcome.dns {
        format!("waiting for the tenant's DNS: {missing}")
    } else {
        nodes.message.clone()
    };
    let ready = if outcome.blocked.is_some() {
        DesiredCondition::new(READY, false, FOREIGN_OBJECT_REASON, message.clone())
    } else if phase == Phase::Completed {
        DesiredCondition::new(READY, true, "Ready", "the tenant is ready")
    } else {
        DesiredCondition::new(READY, false, phase.as_str(), message.clone())
    };
    let cas = crate::status::ca_condition(&outcome.ca_notices);
    for condition in [control_plane, nodes, clustertree, dns, ready, cas] {
        set_condition(&mut status.conditions, &condition, generation, now);
    }
    if let Some(eviction) = &outcome.eviction {
        let drained = if eviction.pending() {
            DesiredCondition::new(
                CLAIMED_NODES_DRAINED,
                false,
                "EvictionBlocked",
                blocked_message(eviction),
            )
        } else {
            DesiredCondition::new(
                CLAIMED_NODES_DRAINED,
                true,
                "Drained",
                "no pod that must leave runs on a claimed node",
            )
        };
        set_condition(&mut status.conditions, &drained, generation, now);
    }
    status.phase = Some(phase);
    status.message = status_message(&message);
    status.observed_generation = generation;
    status.api_server_endpoint = outcome.endpoint.clone();
    status.promoted_nodes = outcome.visible.clone();
    status.admin_kubeconfig_rotation = outcome.admin_rotation.clone();
    status
}

/// The Cleanup branch of the finalizer: release nodes, remove cluster-scoped objects and
/// the etcd volumes. Other namespaced objects go by ownerReference garbage collection.
async fn cleanup(vc: &VirtualCluster, ctx: &Context) -> Result<Action> {
    let claimant = claimant(vc);
    let mut changes = Changes::default();
    if vc.status.as_ref().and_then(|status| status.phase) != Some(Phase::Deleting) {
        let mut status = vc.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Deleting);
        status.message = Some("releasing nodes and removing the tenant".to_owned());
        if let Err(error) = write_status(vc, &status, ctx).await {
            tracing::debug!(%error, "could not mark the VirtualCluster as Deleting");
        }
    }
    // A fresh list, not the cache: a claim written a moment ago must not leak.
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let selector = format!(
        "{NODE_OWNER_NAMESPACE_LABEL}={},{NODE_OWNER_NAME_LABEL}={}",
        claimant.namespace, claimant.name
    );
    let claimed = nodes
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ReleaseNode {
            node: format!("(nodes labelled {selector})"),
            source,
        })?;
    for node in claimed
        .items
        .iter()
        .filter(|node| should_release(node, &claimant))
    {
        release_node(&nodes, node, &mut changes).await?;
    }
    let owner = &Owner {
        namespace: &claimant.namespace,
        name: &claimant.name,
        uid: &claimant.uid,
    };
    let tenant_namespace =
        vc_api::constants::tenant_workload_namespace(&claimant.namespace, &claimant.name);
    let role_name = names::clustertree_cluster_role(&claimant.namespace, &claimant.name);
    delete_cluster_scoped::<k8s_openapi::api::core::v1::Namespace>(
        ctx,
        owner,
        "Namespace",
        &tenant_namespace,
    )
    .await?;
    delete_cluster_scoped::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(
        ctx,
        owner,
        "ClusterRoleBinding",
        &role_name,
    )
    .await?;
    delete_cluster_scoped::<k8s_openapi::api::rbac::v1::ClusterRole>(
        ctx,
        owner,
        "ClusterRole",
        &role_name,
    )
    .await?;
    delete_etcd_claims(vc, &claimant, ctx).await?;
    ctx.forget_tenant(&object_key(vc), &claimant.uid);
    changes.record(
        "Cleaned",
        Step::Cleanup,
        "released every claimed node and removed the cluster-scoped objects and etcd volumes",
    );
    changes.publish(vc, ctx).await;
    Ok(Action::await_change())
}

/// Asks for the deletion of every etcd claim that is provably this tenant's. It does not
/// wait for them to vanish: the running etcd pods hold them (`pvc-protection`) until
/// garbage collection removes the StatefulSet after the finalizer is gone, and a claim
/// being deleted is never bound by a StatefulSet created later under the same name.
async fn delete_etcd_claims(vc: &VirtualCluster, claimant: &Claimant, ctx: &Context) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claimant.namespace);
    let selector = crate::volumes::etcd_claim_selector(&claimant.name);
    let listed = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListVolumeClaims {
            selector: selector.clone(),
            source,
        })?;
    let stateful_set_uid = cached(
        &ctx.stores.stateful_sets,
        Some(&claimant.namespace),
        &names::etcd(&claimant.name),
    )
    .and_then(|set| crate::volumes::owned_stateful_set_uid(&set, &claimant.uid));
    for claim in listed.items.iter().filter(|claim| {
        claim.metadata.deletion_timestamp.is_none()
            && crate::volumes::is_tenant_etcd_claim(
                claim,
                &claimant.name,
                stateful_set_uid.as_deref(),
            )
    }) {
        let name = claim.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: claim.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match claims.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(virtualcluster = %object_key(vc), claim = %name, "deleting etcd volume claim")
            }
            // Gone, or replaced by an object that is not the one judged ours.
            Err(error) if is_not_found(&error) || is_conflict(&error) => {}
            Err(source) => {
                return Err(Error::DeleteVolumeClaim {
                    claim: name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Deletes a cluster-scoped object of the tenant only when it is ours, and only that
/// very object (a UID precondition): an object of the same name someone else created, or
/// created again after our read, survives the tenant.
async fn delete_cluster_scoped<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    kind: &'static str,
    name: &str,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    let failed = |source| Error::DeleteClusterScoped {
        kind,
        name: name.to_owned(),
        source,
    };
    let Some(existing) = api.get_opt(name).await.map_err(failed)? else {
        return Ok(());
    };
    if let Holder::Other(holder) = holder(existing.meta(), owner) {
        tracing::warn!(kind, name, %holder, "left in place on cleanup: not this VirtualCluster's");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(()),
        Err(source) => Err(failed(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Step;

    /// Event notes and status messages may quote a tenant apiserver's answer: both go
    /// out escaped and bounded, and the eviction report names at most three pods.
    #[test]
    fn event_notes_and_status_messages_are_escaped_and_bounded() {
        let hostile = "denied: \u{1b}[2J\u{1b}]0;owned\u{7}\nWarning  Forged";
        let escaped = "denied: \\x1b[2J\\x1b]0;owned\\x07\\nWarning  Forged";
        assert_eq!(truncate_note(hostile), escaped);
        assert_eq!(status_message(hostile).as_deref(), Some(escaped));
        assert_eq!(
            truncate_note(&"y".repeat(5000)).chars().count(),
            vc_api::text::EVENT_NOTE_CHARS
        );
        let mut report = EvictionReport::default();
        for index in 0..5 {
            report.blocked.insert(
                format!("shop/web-{index}"),
                ("node1".to_owned(), "budget web".to_owned()),
            );
        }
        let message = blocked_message(&report);
        assert!(message.contains("pod shop/web-2 on node \"node1\": budget web"));
        assert!(
            !message.contains("web-3") && message.ends_with("and 2 more"),
            "{message}"
        );
    }

    /// Every Secret written with the PKI is read back with it; one left out looks
    /// absent on every pass, is created again, conflicts, and stalls the chain there.
    #[test]
    fn every_pki_secret_written_is_read_back() {
        use crate::resources::test_support::{default_vc, observed, pki};
        let desired = DesiredState::build(
            &default_vc(),
            &crate::resources::BuildContext::default(),
            &observed(),
            pki(),
        )
        .unwrap();
        let read = pki_secret_names(&default_vc().name_any());
        for secret in &desired.pki_secrets {
            assert!(
                read.contains(&secret.name_any()),
                "{} is written but never read back",
                secret.name_any()
            );
        }
    }

    #[test]
    fn invalid_fields_become_invalid_spec_errors_that_wait() {
        let error = build_error(BuildError::InvalidField {
            field: "spec.controlPlane.etcd.replicas",
            value: "2".into(),
            fix: "set 1, 3 or 5",
        });
        assert!(!error.is_transient());
        assert!(
            error
                .to_string()
                .contains("spec.controlPlane.etcd.replicas"),
            "{error}"
        );
    }

    #[test]
    fn error_classification_picks_the_action() {
        let transient = Error::ApplyObject {
            step: Step::Etcd,
            kind: "StatefulSet",
            name: "t-etcd".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("boom", "InternalError").with_code(500),
            )),
        };
        assert!(transient.is_transient());
        assert_eq!(transient.step(), Step::Etcd);
        let invalid = Error::InvalidSpec {
            field: "spec".into(),
            reason: "bad".into(),
        };
        assert!(!invalid.is_transient());
    }

    #[test]
    fn observed_service_yields_cluster_ip_and_balancer_hosts() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "t-apiserver"},
            "spec": {"clusterIP": "127.100.0.7"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let observed = observe_service(Some(&service), &["n1".to_owned()]);
        assert_eq!(
            observed.apiserver_cluster_ip,
            Some("127.100.0.7".parse().unwrap())
        );
        assert_eq!(observed.load_balancer_hosts, ["203.0.113.1", "lb.example"]);
        assert_eq!(observed.claimed_nodes, ["n1"]);
        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None"}})).unwrap();
        assert_eq!(
            observe_service(Some(&headless), &[]).apiserver_cluster_ip,
            None
        );
    }
}

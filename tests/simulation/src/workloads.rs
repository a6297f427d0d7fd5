//! Deployments and StatefulSets becoming ready, as the deployment/statefulset controllers
//! and the kubelets would report it, after a delay, never, or failing.
//!
//! Per object, the annotation `sim.kosmos.io/readiness` decides: `never`, `fail`, or
//! `delay=2s` (any Go-style duration); without it the simulator's default delay applies.
//! The delay starts when the simulator first sees the object's current generation, so a
//! changed spec goes through "progressing" again. A bad annotation value fails the rollout
//! with a condition message that names the annotation and the accepted values.
//!
//! With `create_pods`, each workload also gets its Pods (owned by the workload itself: the
//! ReplicaSet level is skipped), Pending until ready, then Running and Ready with a pod IP
//! from a loopback range, so Endpoints and EndpointSlices can be filled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{SimError, SimHandle, now_rfc3339, parse_duration, wait_for_next_pass, watch_store};

/// Annotation that decides how a workload becomes ready.
pub const READINESS_ANNOTATION: &str = "sim.kosmos.io/readiness";

/// How a workload's rollout ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready once this long has passed since its generation was first seen.
    After(Duration),
    /// Stays progressing forever.
    Never,
    /// Fails: progress deadline exceeded, pods crash-looping. The text says why.
    Fail(String),
}

/// The readiness an object asks for through [`READINESS_ANNOTATION`].
pub fn readiness(annotations: &BTreeMap<String, String>, default_delay: Duration) -> Readiness {
    let Some(value) = annotations.get(READINESS_ANNOTATION) else {
        return Readiness::After(default_delay);
    };
    match value.trim() {
        "never" => Readiness::Never,
        "fail" => Readiness::Fail(format!(
            "simulated failure requested by annotation {READINESS_ANNOTATION}=fail"
        )),
        other => match other.strip_prefix("delay=").and_then(parse_duration) {
            Some(delay) => Readiness::After(delay),
            None => Readiness::Fail(format!(
                "annotation {READINESS_ANNOTATION}={other:?} is not one of never, fail, delay=<duration> \
                 (for example delay=2s); fix the annotation"
            )),
        },
    }
}

/// Where a rollout stands at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Progressing,
    Ready,
    Failed(String),
}

/// The phase at `now`, and when it will next change.
pub fn phase_at(
    readiness: &Readiness,
    replicas: i32,
    first_seen: Instant,
    now: Instant,
) -> (Phase, Option<Instant>) {
    if replicas == 0 {
        return (Phase::Ready, None);
    }
    match readiness {
        Readiness::After(delay) if now >= first_seen + *delay => (Phase::Ready, None),
        Readiness::After(delay) => (Phase::Progressing, Some(first_seen + *delay)),
        Readiness::Never => (Phase::Progressing, None),
        Readiness::Fail(why) => (Phase::Failed(why.clone()), None),
    }
}

/// Whether a Deployment is rolled out and available, as `kubectl rollout status` judges.
pub fn deployment_is_ready(deployment: &Deployment) -> bool {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return false;
    };
    wanted > 0
        && status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
        && status.ready_replicas.unwrap_or(0) >= wanted
}

/// A short hash in Kubernetes' "safe" alphabet, like `pod-template-hash` values.
pub fn template_hash(template: &Value) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = sha2::Sha256::digest(template.to_string().as_bytes());
    digest
        .iter()
        .take(10)
        .map(|byte| char::from(SAFE[usize::from(*byte) % SAFE.len()]))
        .collect()
}

/// A Kubernetes condition, keeping its old timestamps when nothing about it changed.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    old: Option<&Value>,
    now: &str,
    with_update_time: bool,
) -> Value {
    let previous = old
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == type_));
    // The apiserver stores an empty reason or message as absent.
    let text = |p: &Value, field: &str| p[field].as_str().unwrap_or_default().to_owned();
    let unchanged = previous.is_some_and(|p| {
        p["status"] == status && text(p, "reason") == reason && text(p, "message") == message
    });
    let same_status = previous.is_some_and(|p| p["status"] == status);
    let keep = |field: &str, keep_it: bool| {
        previous
            .filter(|_| keep_it)
            .and_then(|p| p.get(field).cloned())
            .unwrap_or_else(|| json!(now))
    };
    let mut value = json!({
        "type": type_, "status": status,
        "lastTransitionTime": keep("lastTransitionTime", same_status),
    });
    for (field, text) in [("reason", reason), ("message", message)] {
        if !text.is_empty() {
            value[field] = json!(text);
        }
    }
    if with_update_time {
        value["lastUpdateTime"] = keep("lastUpdateTime", unchanged);
    }
    value
}

/// The status the deployment controller would write.
pub fn deployment_status(
    replicas: i32,
    generation: i64,
    name: &str,
    hash: &str,
    phase: &Phase,
    old: Option<&Value>,
    now: &str,
) -> Value {
    let old_conditions = old.and_then(|s| s.get("conditions"));
    let rs = format!("{name}-{hash}");
    let cond =
        |t: &str, s: &str, r: &str, m: &str| condition(t, s, r, m, old_conditions, now, true);
    let (ready, available, progressing) = match phase {
        Phase::Ready => (
            replicas,
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet {rs:?} has successfully progressed."),
            ),
        ),
        Phase::Progressing => (
            0,
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet {rs:?} is progressing."),
            ),
        ),
        Phase::Failed(why) => (
            0,
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
            cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet {rs:?} has timed out progressing: {why}"),
            ),
        ),
    };
    let count = |n: i32| if n == 0 { Value::Null } else { json!(n) };
    json!({
        "observedGeneration": generation,
        "replicas": count(replicas),
        "updatedReplicas": count(replicas),
        "readyReplicas": count(ready),
        "availableReplicas": count(ready),
        "unavailableReplicas": count(replicas - ready),
        "conditions": [available, progressing],
    })
}

/// The status the statefulset controller would write.
pub fn statefulset_status(
    replicas: i32,
    generation: i64,
    name: &str,
    hash: &str,
    phase: &Phase,
) -> Value {
    let ready = if *phase == Phase::Ready { replicas } else { 0 };
    let revision = format!("{name}-{hash}");
    json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": if ready == 0 { Value::Null } else { json!(ready) },
        "currentReplicas": if replicas == 0 { Value::Null } else { json!(replicas) },
        "updatedReplicas": if replicas == 0 { Value::Null } else { json!(replicas) },
        "availableReplicas": ready,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    })
}

/// A merge patch turning `current` into `desired`: keys that must disappear become null.
fn status_patch(current: Option<&Value>, desired: &Value) -> Option<Value> {
    status_patch_keeping(current, desired, &[])
}

/// Pod status keys the apiserver itself writes: a kubelet never clears them, and a patch
/// clearing them is either refused (`qosClass` is immutable) or undone at once, so
/// comparing them would make every pass write every pod again.
const SERVER_OWNED_POD_STATUS: [&str; 2] = ["qosClass", "observedGeneration"];

/// [`status_patch`], leaving the `keep` keys of `current` alone.
fn status_patch_keeping(current: Option<&Value>, desired: &Value, keep: &[&str]) -> Option<Value> {
    let mut patch = desired.as_object().cloned().unwrap_or_default();
    patch.retain(|_, v| !v.is_null());
    let desired_clean = patch.clone();
    if let Some(current) = current.and_then(Value::as_object) {
        let mut compared = current.clone();
        compared.retain(|key, _| !keep.contains(&key.as_str()));
        for key in compared.keys() {
            if !patch.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
        let same_keys = compared.keys().collect::<BTreeSet<_>>()
            == desired_clean.keys().collect::<BTreeSet<_>>();
        if same_keys
            && desired_clean
                .iter()
                .all(|(key, value)| compared.get(key).is_some_and(|have| covers(have, value)))
        {
            return None;
        }
    }
    Some(json!({ "status": patch }))
}

/// Whether `have` holds everything `want` says: the apiserver fills in defaults below the
/// top level (a container status's `lastState: {}`, for one), which a kubelet does not
/// write and must not take for a difference.
fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|inner| covers(inner, value))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| covers(h, w))
        }
        _ => have == want,
    }
}

/// How the workload simulator behaves.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Readiness delay of workloads without the annotation.
    pub default_delay: Duration,
    /// Also create the Pods (ready, with IPs) so Services get endpoints.
    pub create_pods: bool,
    /// First pod IP; pods get consecutive addresses from here (a loopback range, so
    /// nothing on the machine is reachable by accident).
    pub pod_ip_start: Ipv4Addr,
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Workloads (and, kubelet-only, Pods) carrying all these labels are left alone, e.g.
    /// `app.kubernetes.io/component=etcd` when a test runs a real etcd for them.
    pub exclude_labels: BTreeMap<String, String>,
    /// Kubelet-only: the nodes whose kubelets this plays (`None`: every node). Pods bound
    /// to any other node (a real kubelet's) are left to that node.
    pub nodes: Option<BTreeSet<String>>,
    pub mode: WorkloadMode,
    /// Periodic full pass, which also retries failed writes.
    pub resync: Duration,
}

/// Who else is running against the API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkloadMode {
    /// No kube-controller-manager: play the deployment and statefulset controllers
    /// (status, Pods) and the kubelets.
    #[default]
    Controllers,
    /// A real kube-controller-manager creates ReplicaSets and Pods and writes workload
    /// status, and a real kube-scheduler binds them: play only the kubelets, making every
    /// Pod bound to a node Running and Ready (after the delay its own, its ReplicaSet's,
    /// Deployment's or StatefulSet's readiness annotation asks for), and finishing the
    /// deletion of bound pods, which a real apiserver leaves to the kubelet. Unbound pods
    /// are left alone, as a kubelet never sees them.
    KubeletOnly,
}

/// Whether `labels` carry every pair of a non-empty `exclude` set.
pub fn is_excluded(labels: &BTreeMap<String, String>, exclude: &BTreeMap<String, String>) -> bool {
    !exclude.is_empty() && exclude.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            default_delay: Duration::from_millis(200),
            create_pods: true,
            pod_ip_start: Ipv4Addr::new(127, 200, 0, 1),
            namespace: None,
            exclude_labels: BTreeMap::new(),
            nodes: None,
            mode: WorkloadMode::Controllers,
            resync: Duration::from_secs(2),
        }
    }
}

/// The parts of a Deployment or StatefulSet the simulation needs.
#[derive(Clone, Debug)]
struct Workload {
    kind: &'static str,
    api_version: &'static str,
    name: String,
    namespace: String,
    uid: String,
    generation: i64,
    replicas: i32,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    template: Value,
    /// Names of a StatefulSet's `volumeClaimTemplates`: each pod gets a volume of that
    /// name bound to its claim `NAME-POD`, as the statefulset controller adds them.
    claim_templates: Vec<String>,
    status: Option<Value>,
}

impl Workload {
    fn from_deployment(d: &Deployment) -> Option<Self> {
        let spec = d.spec.as_ref()?;
        Some(Workload {
            kind: "Deployment",
            api_version: "apps/v1",
            name: d.name_any(),
            namespace: d.namespace()?,
            uid: d.uid()?,
            generation: d.metadata.generation.unwrap_or(1),
            replicas: spec.replicas.unwrap_or(1),
            labels: d.labels().clone(),
            annotations: d.annotations().clone(),
            template: serde_json::to_value(&spec.template).ok()?,
            claim_templates: Vec::new(),
            status: d.status.as_ref().and_then(|s| serde_json::to_value(s).ok()),
        })
    }

    fn from_statefulset(s: &StatefulSet) -> Option<Self> {
        let spec = s.spec.as_ref()?;
        Some(Workload {
            kind: "StatefulSet",
            api_version: "apps/v1",
            name: s.name_any(),
            namespace: s.namespace()?,
            uid: s.uid()?,
            generation: s.metadata.generation.unwrap_or(1),
            replicas: spec.replicas.unwrap_or(1),
            labels: s.labels().clone(),
            annotations: s.annotations().clone(),
            template: serde_json::to_value(&spec.template).ok()?,
            claim_templates: spec
                .volume_claim_templates
                .iter()
                .flatten()
                .filter_map(|claim| claim.metadata.name.clone())
                .collect(),
            status: s
                .status
                .as_ref()
                .and_then(|st| serde_json::to_value(st).ok()),
        })
    }

    fn hash(&self) -> String {
        template_hash(&self.template)
    }

    /// Names of the pods this workload should have.
    fn pod_names(&self, existing: &[Arc<Pod>], hash: &str) -> Vec<String> {
        let wanted = usize::try_from(self.replicas).unwrap_or(0);
        if self.kind == "StatefulSet" {
            return (0..wanted).map(|i| format!("{}-{i}", self.name)).collect();
        }
        let mut names: Vec<String> = existing
            .iter()
            .filter(|p| p.labels().get("pod-template-hash").map(String::as_str) == Some(hash))
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names.truncate(wanted);
        let mut n = 0u32;
        while names.len() < wanted {
            let candidate = format!(
                "{}-{hash}-{}",
                self.name,
                &template_hash(&json!([self.uid, n]))[..5]
            );
            if !names.contains(&candidate) {
                names.push(candidate);
            }
            n += 1;
        }
        names
    }

    /// A new Pod from the template.
    fn pod(&self, name: &str, hash: &str) -> Value {
        let mut labels = self
            .template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if self.kind == "StatefulSet" {
            labels["controller-revision-hash"] = json!(format!("{}-{hash}", self.name));
            labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        } else {
            labels["pod-template-hash"] = json!(hash);
        }
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": self.namespace, "labels": labels,
                "annotations": self.template.pointer("/metadata/annotations").cloned().unwrap_or(Value::Null),
                "ownerReferences": [{
                    "apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
                    "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": self.template.get("spec").cloned().unwrap_or_else(|| json!({"containers": []})),
        });
        if self.kind == "StatefulSet" {
            pod["spec"]["hostname"] = json!(name);
            for claim in &self.claim_templates {
                let volumes = &mut pod["spec"]["volumes"];
                if !volumes.is_array() {
                    *volumes = json!([]);
                }
                if let Some(volumes) = volumes.as_array_mut()
                    && !volumes.iter().any(|v| v["name"] == json!(claim))
                {
                    volumes.push(json!({
                        "name": claim,
                        "persistentVolumeClaim": {"claimName": format!("{claim}-{name}")},
                    }));
                }
            }
        }
        pod
    }
}

/// The status a kubelet reports for a pod in `phase`.
pub fn pod_status(pod: &Pod, phase: &Phase, ip: Option<Ipv4Addr>, now: &str) -> Value {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now));
    let old = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.conditions).ok());
    let cond = |t: &str, s: &str| condition(t, s, "", "", old.as_ref(), now, false);
    let containers: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect();
    let image = |name: &str| {
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    match phase {
        Phase::Progressing => json!({
            "phase": "Pending",
            "conditions": [cond("PodScheduled", "True")],
        }),
        Phase::Ready | Phase::Failed(_) => {
            let ready = *phase == Phase::Ready;
            let flag = if ready { "True" } else { "False" };
            let ip = ip.map(|ip| ip.to_string());
            let statuses: Vec<Value> = containers
                .iter()
                .map(|name| {
                    let state = if ready {
                        json!({"running": {"startedAt": started}})
                    } else {
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container (simulated)"}})
                    };
                    json!({
                        "name": name, "image": image(name), "imageID": "", "ready": ready, "started": ready,
                        "restartCount": if ready { 0 } else { 1 }, "state": state,
                    })
                })
                .collect();
            json!({
                "phase": "Running",
                "conditions": [
                    cond("Initialized", "True"), cond("Ready", flag),
                    cond("ContainersReady", flag), cond("PodScheduled", "True"),
                ],
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": ip,
                "podIPs": ip.as_ref().map(|ip| json!([{"ip": ip}])),
                "startTime": started,
                "containerStatuses": statuses,
            })
        }
    }
}

/// Starts the workload simulator.
pub fn spawn(client: Client, options: WorkloadOptions) -> SimHandle {
    let notify = Arc::new(Notify::new());
    let (deployments_api, statefulsets_api, pods_api) = match &options.namespace {
        Some(ns) => (
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (deployments, t1) =
        watch_store(deployments_api, watcher::Config::default(), notify.clone());
    let (statefulsets, t2) =
        watch_store(statefulsets_api, watcher::Config::default(), notify.clone());
    let mut tasks = vec![t1, t2];
    let replicasets = if options.mode == WorkloadMode::KubeletOnly {
        let api = match &options.namespace {
            Some(ns) => Api::<ReplicaSet>::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (store, task) = watch_store(api, watcher::Config::default(), notify.clone());
        tasks.push(task);
        Some(store)
    } else {
        None
    };
    let pods = if options.create_pods || options.mode == WorkloadMode::KubeletOnly {
        let (pods, t3) = watch_store(pods_api, watcher::Config::default(), notify.clone());
        tasks.push(t3);
        Some(pods)
    } else {
        None
    };
    let mut sim = WorkloadSim {
        client,
        options,
        deployments,
        statefulsets,
        replicasets,
        pods,
        first_seen: HashMap::new(),
        service_accounts_ready: std::sync::Mutex::default(),
    };
    let resync = sim.options.resync;
    tasks.push(tokio::spawn(async move {
        if sim.wait_ready().await {
            loop {
                let next = sim.pass().await;
                wait_for_next_pass(&notify, next, resync).await;
            }
        }
    }));
    SimHandle::new(tasks)
}

struct WorkloadSim {
    client: Client,
    options: WorkloadOptions,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    replicasets: Option<Store<ReplicaSet>>,
    pods: Option<Store<Pod>>,
    /// When each (uid, generation) was first seen: the delay counts from there.
    first_seen: HashMap<(String, i64), Instant>,
    /// Namespaces known to have ServiceAccount `default` (pods are refused without it).
    service_accounts_ready: std::sync::Mutex<BTreeSet<String>>,
}

impl WorkloadSim {
    async fn wait_ready(&self) -> bool {
        let pods_ready = match &self.pods {
            Some(p) => p.wait_until_ready().await.is_ok(),
            None => true,
        };
        self.deployments.wait_until_ready().await.is_ok()
            && self.statefulsets.wait_until_ready().await.is_ok()
            && pods_ready
    }

    async fn pass(&mut self) -> Option<Instant> {
        if self.options.mode == WorkloadMode::KubeletOnly {
            return self.kubelet_pass().await;
        }
        let workloads: Vec<Workload> = self
            .deployments
            .state()
            .iter()
            .filter_map(|d| Workload::from_deployment(d))
            .chain(
                self.statefulsets
                    .state()
                    .iter()
                    .filter_map(|s| Workload::from_statefulset(s)),
            )
            .filter(|w| !is_excluded(&w.labels, &self.options.exclude_labels))
            .collect();
        let live: BTreeSet<(String, i64)> = workloads
            .iter()
            .map(|w| (w.uid.clone(), w.generation))
            .collect();
        self.first_seen.retain(|key, _| live.contains(key));
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for workload in &workloads {
            let first_seen = *self
                .first_seen
                .entry((workload.uid.clone(), workload.generation))
                .or_insert(now);
            let plan = readiness(&workload.annotations, self.options.default_delay);
            let (phase, wake) = phase_at(&plan, workload.replicas, first_seen, now);
            next = match (next, wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(error) = self.reconcile(workload, &phase).await {
                super::report_error(
                    "workload simulation step failed; retrying on resync",
                    &error,
                );
            }
        }
        next
    }

    /// Kubelet-only: every Pod becomes Running and Ready after its delay.
    async fn kubelet_pass(&mut self) -> Option<Instant> {
        let pods = self.pods.as_ref()?.state();
        let live: BTreeSet<(String, i64)> =
            pods.iter().filter_map(|p| Some((p.uid()?, 0))).collect();
        self.first_seen.retain(|key, _| live.contains(key));
        let mut used_ips: BTreeSet<Ipv4Addr> = pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
            .collect();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for pod in &pods {
            let node = pod.spec.as_ref().and_then(|spec| spec.node_name.as_ref());
            let played = node.is_some_and(|node| {
                self.options
                    .nodes
                    .as_ref()
                    .is_none_or(|nodes| nodes.contains(node))
            });
            if !played || is_excluded(pod.labels(), &self.options.exclude_labels) {
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                self.finish_deletion(pod).await;
                continue;
            }
            let Some(uid) = pod.uid() else { continue };
            let first_seen = *self.first_seen.entry((uid, 0)).or_insert(now);
            let plan = readiness(&self.pod_annotations(pod), self.options.default_delay);
            let (phase, wake) = phase_at(&plan, 1, first_seen, now);
            next = match (next, wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let ip = match phase {
                Phase::Progressing => None,
                _ => pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref()?.parse().ok())
                    .or_else(|| next_free_ip(self.options.pod_ip_start, &mut used_ips)),
            };
            let desired = pod_status(pod, &phase, ip, &now_rfc3339());
            let current = pod
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok());
            let Some(patch) =
                status_patch_keeping(current.as_ref(), &desired, &SERVER_OWNED_POD_STATUS)
            else {
                continue;
            };
            let namespace = pod.namespace().unwrap_or_default();
            let result = Api::<Pod>::namespaced(self.client.clone(), &namespace)
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            if let Err(error) = result {
                super::report_error("kubelet simulation could not write pod status", &error);
            }
        }
        next
    }

    /// What a kubelet does once a bound pod's containers have stopped: deletes it for
    /// good (grace period 0, this very pod by uid).
    async fn finish_deletion(&self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        let mut params = DeleteParams::default().grace_period(0);
        params.preconditions = Some(kube::api::Preconditions {
            uid: pod.uid(),
            resource_version: None,
        });
        let result = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .delete(&pod.name_any(), &params)
            .await
            .map(drop)
            .or_else(ignore_not_found);
        if let Err(error) = result {
            super::report_error(
                "kubelet simulation could not finish a pod's deletion",
                &format!("{namespace}/{}: {error}", pod.name_any()),
            );
        }
    }

    /// The readiness annotations that apply to a pod: its own, else its owner's (through
    /// a ReplicaSet up to the Deployment).
    fn pod_annotations(&self, pod: &Pod) -> BTreeMap<String, String> {
        if pod.annotations().contains_key(READINESS_ANNOTATION) {
            return pod.annotations().clone();
        }
        let namespace = pod.namespace();
        let owner =
            |kind: &str,
             refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
                refs.iter().find(|o| o.kind == kind).map(|o| o.uid.clone())
            };
        if let Some(uid) = owner("StatefulSet", pod.owner_references())
            && let Some(set) = self
                .statefulsets
                .state()
                .into_iter()
                .find(|s| s.uid().as_deref() == Some(uid.as_str()))
        {
            return set.annotations().clone();
        }
        let replicaset =
            owner("ReplicaSet", pod.owner_references()).and_then(|uid| {
                self.replicasets.as_ref()?.state().into_iter().find(|r| {
                    r.uid().as_deref() == Some(uid.as_str()) && r.namespace() == namespace
                })
            });
        let Some(replicaset) = replicaset else {
            return BTreeMap::new();
        };
        if replicaset.annotations().contains_key(READINESS_ANNOTATION) {
            return replicaset.annotations().clone();
        }
        owner("Deployment", replicaset.owner_references())
            .and_then(|uid| {
                self.deployments
                    .state()
                    .into_iter()
                    .find(|d| d.uid().as_deref() == Some(uid.as_str()))
            })
            .map(|d| d.annotations().clone())
            .unwrap_or_default()
    }

    /// What kube-controller-manager's serviceaccount controller guarantees: ServiceAccount
    /// `default` in every namespace. A real kube-apiserver refuses pods without it.
    async fn ensure_default_service_account(&self, namespace: &str) {
        let known = self
            .service_accounts_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(namespace);
        if known {
            return;
        }
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let exists = match api.get_opt("default").await {
            Ok(found) => found.is_some(),
            Err(error) => {
                super::report_error(
                    "reading ServiceAccount default",
                    &format!("{namespace}: {error}"),
                );
                return;
            }
        };
        if !exists {
            let account: ServiceAccount = serde_json::from_value(json!({
                "metadata": {"name": "default", "namespace": namespace}
            }))
            .unwrap_or_default();
            match api.create(&PostParams::default(), &account).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    super::report_error(
                        "creating ServiceAccount default",
                        &format!("{namespace}: {error}"),
                    );
                    return;
                }
            }
        }
        self.service_accounts_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(namespace.to_owned());
    }

    async fn reconcile(&self, workload: &Workload, phase: &Phase) -> Result<(), SimError> {
        let hash = workload.hash();
        if self.options.create_pods {
            self.reconcile_pods(workload, &hash, phase).await?;
        }
        let now = now_rfc3339();
        let desired = if workload.kind == "Deployment" {
            deployment_status(
                workload.replicas,
                workload.generation,
                &workload.name,
                &hash,
                phase,
                workload.status.as_ref(),
                &now,
            )
        } else {
            statefulset_status(
                workload.replicas,
                workload.generation,
                &workload.name,
                &hash,
                phase,
            )
        };
        let Some(patch) = status_patch(workload.status.as_ref(), &desired) else {
            return Ok(());
        };
        let params = PatchParams::default();
        let result = if workload.kind == "Deployment" {
            Api::<Deployment>::namespaced(self.client.clone(), &workload.namespace)
                .patch_status(&workload.name, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
        } else {
            Api::<StatefulSet>::namespaced(self.client.clone(), &workload.namespace)
                .patch_status(&workload.name, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
        };
        result.map_err(|source| SimError::WriteWorkloadStatus {
            kind: workload.kind,
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
            source: Box::new(source),
        })
    }

    async fn reconcile_pods(
        &self,
        workload: &Workload,
        hash: &str,
        phase: &Phase,
    ) -> Result<(), SimError> {
        let Some(store) = &self.pods else {
            return Ok(());
        };
        let all_pods = store.state();
        let owned: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == workload.uid))
            .cloned()
            .collect();
        let wanted = workload.pod_names(&owned, hash);
        let api = Api::<Pod>::namespaced(self.client.clone(), &workload.namespace);
        for pod in &owned {
            let current = match workload.kind {
                "StatefulSet" => {
                    pod.labels().get("controller-revision-hash")
                        == Some(&format!("{}-{hash}", workload.name))
                }
                _ => pod.labels().get("pod-template-hash").map(String::as_str) == Some(hash),
            };
            if (!wanted.contains(&pod.name_any()) || !current)
                && pod.metadata.deletion_timestamp.is_none()
            {
                api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                    .await
                    .map(drop)
                    .or_else(ignore_not_found)
                    .map_err(|source| SimError::DeletePod {
                        namespace: workload.namespace.clone(),
                        name: pod.name_any(),
                        source: Box::new(source),
                    })?;
            }
        }
        let mut used_ips: BTreeSet<Ipv4Addr> = all_pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
            .collect();
        let now = now_rfc3339();
        for name in &wanted {
            let existing = owned
                .iter()
                .find(|p| &p.name_any() == name && p.metadata.deletion_timestamp.is_none());
            let pod: Pod = match existing {
                Some(pod) => (**pod).clone(),
                None => {
                    self.ensure_default_service_account(&workload.namespace)
                        .await;
                    let body: Pod =
                        serde_json::from_value(workload.pod(name, hash)).unwrap_or_default();
                    match api.create(&PostParams::default(), &body).await {
                        Ok(created) => created,
                        // Still terminating from a previous generation: next pass.
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(source) => {
                            return Err(SimError::CreatePod {
                                namespace: workload.namespace.clone(),
                                name: name.clone(),
                                source: Box::new(source),
                            });
                        }
                    }
                }
            };
            let ip = match phase {
                Phase::Progressing => None,
                _ => pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref()?.parse().ok())
                    .or_else(|| next_free_ip(self.options.pod_ip_start, &mut used_ips)),
            };
            let desired = pod_status(&pod, phase, ip, &now);
            let current = pod
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok());
            if let Some(patch) =
                status_patch_keeping(current.as_ref(), &desired, &SERVER_OWNED_POD_STATUS)
            {
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
                    .or_else(ignore_not_found)
                    .map_err(|source| SimError::WritePodStatus {
                        namespace: workload.namespace.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    })?;
            }
        }
        Ok(())
    }
}

fn ignore_not_found(error: kube::Error) -> Result<(), kube::Error> {
    match error {
        kube::Error::Api(status) if status.code == 404 => Ok(()),
        other => Err(other),
    }
}

/// The first address from `start` that no pod uses, reserved on return.
fn next_free_ip(start: Ipv4Addr, used: &mut BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(start);
    let ip = (first..first.saturating_add(65_000))
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))?;
    used.insert(ip);
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(READINESS_ANNOTATION.to_owned(), value.to_owned())])
    }

    #[test]
    fn exclusion_needs_every_label_and_an_empty_set_excludes_nothing() {
        let labels = BTreeMap::from([
            ("app.kubernetes.io/component".to_owned(), "etcd".to_owned()),
            ("tier".to_owned(), "db".to_owned()),
        ]);
        let etcd = BTreeMap::from([("app.kubernetes.io/component".to_owned(), "etcd".to_owned())]);
        assert!(is_excluded(&labels, &etcd));
        let mut both = etcd.clone();
        both.insert("tier".to_owned(), "web".to_owned());
        assert!(!is_excluded(&labels, &both));
        assert!(!is_excluded(&labels, &BTreeMap::new()));
    }

    #[test]
    fn annotation_selects_readiness() {
        let default = Duration::from_millis(300);
        assert_eq!(
            readiness(&BTreeMap::new(), default),
            Readiness::After(default)
        );
        assert_eq!(readiness(&annotated("never"), default), Readiness::Never);
        assert_eq!(
            readiness(&annotated("delay=2s"), default),
            Readiness::After(Duration::from_secs(2))
        );
        assert!(matches!(
            readiness(&annotated("fail"), default),
            Readiness::Fail(_)
        ));
        let Readiness::Fail(why) = readiness(&annotated("soon"), default) else {
            panic!("a bad value must fail the rollout");
        };
        assert!(
            why.contains(READINESS_ANNOTATION) && why.contains("delay=2s"),
            "{why}"
        );
    }

    #[test]
    fn phase_follows_the_delay() {
        let start = Instant::now();
        let plan = Readiness::After(Duration::from_secs(2));
        assert_eq!(
            phase_at(&plan, 1, start, start),
            (Phase::Progressing, Some(start + Duration::from_secs(2)))
        );
        assert_eq!(
            phase_at(&plan, 1, start, start + Duration::from_secs(2)),
            (Phase::Ready, None)
        );
        assert_eq!(
            phase_at(
                &Readiness::Never,
                1,
                start,
                start + Duration::from_secs(999)
            )
            .0,
            Phase::Progressing
        );
        assert_eq!(
            phase_at(&Readiness::Never, 0, start, start).0,
            Phase::Ready,
            "zero replicas are always ready"
        );
    }

    #[test]
    fn deployment_status_matches_the_deployment_controller() {
        let now = "2026-01-01T00:00:00Z";
        let ready = deployment_status(2, 3, "web", "abc", &Phase::Ready, None, now);
        assert_eq!(ready["observedGeneration"], 3);
        assert_eq!(ready["readyReplicas"], 2);
        assert_eq!(ready["availableReplicas"], 2);
        assert_eq!(ready["unavailableReplicas"], Value::Null);
        assert_eq!(ready["conditions"][0]["type"], "Available");
        assert_eq!(ready["conditions"][0]["status"], "True");
        assert_eq!(ready["conditions"][1]["reason"], "NewReplicaSetAvailable");
        let failed = deployment_status(
            2,
            3,
            "web",
            "abc",
            &Phase::Failed("x".into()),
            Some(&ready),
            "2026-01-01T00:00:09Z",
        );
        assert_eq!(failed["conditions"][1]["status"], "False");
        assert_eq!(
            failed["conditions"][1]["reason"],
            "ProgressDeadlineExceeded"
        );
        assert_eq!(failed["unavailableReplicas"], 2);
        assert_eq!(
            failed["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:09Z",
            "status changed"
        );
        let again = deployment_status(
            2,
            3,
            "web",
            "abc",
            &Phase::Ready,
            Some(&ready),
            "2026-01-01T00:00:09Z",
        );
        assert_eq!(again, ready, "nothing changed, timestamps kept");
    }

    #[test]
    fn statefulset_pods_get_a_volume_for_each_claim_template() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                    {"name": "db", "image": "db", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}]}
                ]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]
            }
        }))
        .unwrap();
        let workload = Workload::from_statefulset(&set).unwrap();
        let pod = workload.pod("db-1", "abc");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}}])
        );
    }

    #[test]
    fn statefulset_status_reports_revisions() {
        let status = statefulset_status(3, 1, "etcd", "h", &Phase::Ready);
        assert_eq!(
            (
                status["readyReplicas"].clone(),
                status["currentRevision"].clone()
            ),
            (json!(3), json!("etcd-h"))
        );
        let pending = statefulset_status(3, 1, "etcd", "h", &Phase::Progressing);
        assert_eq!(
            (
                pending["readyReplicas"].clone(),
                pending["availableReplicas"].clone()
            ),
            (Value::Null, json!(0))
        );
    }

    #[test]
    fn status_patch_writes_only_differences_and_clears_stale_keys() {
        let desired = json!({"replicas": 1, "readyReplicas": Value::Null});
        assert_eq!(status_patch(Some(&json!({"replicas": 1})), &desired), None);
        assert_eq!(
            status_patch(Some(&json!({"replicas": 1, "readyReplicas": 1})), &desired),
            Some(json!({"status": {"replicas": 1, "readyReplicas": null}}))
        );
        assert_eq!(
            status_patch(None, &desired),
            Some(json!({"status": {"replicas": 1}}))
        );
    }

    /// The apiserver sets `qosClass` on every pod and refuses to change it, and stores an
    /// empty condition reason as absent: a kubelet pass over a settled pod writes nothing.
    #[test]
    fn a_settled_pod_status_is_not_written_again() {
        let desired = json!({"phase": "Running", "hostIP": "127.0.0.1"});
        let current = json!({"phase": "Running", "hostIP": "127.0.0.1", "qosClass": "BestEffort"});
        assert_eq!(
            status_patch_keeping(Some(&current), &desired, &SERVER_OWNED_POD_STATUS),
            None
        );
        assert_eq!(
            status_patch_keeping(
                Some(&json!({"phase": "Pending", "qosClass": "BestEffort"})),
                &desired,
                &SERVER_OWNED_POD_STATUS
            ),
            Some(json!({"status": {"phase": "Running", "hostIP": "127.0.0.1"}}))
        );
    }

    #[test]
    fn defaults_the_apiserver_adds_below_the_top_level_are_no_difference() {
        let desired =
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true}]});
        let current = json!({"phase": "Running", "qosClass": "BestEffort",
            "containerStatuses": [{"name": "app", "ready": true, "lastState": {}}]});
        assert_eq!(
            status_patch_keeping(Some(&current), &desired, &SERVER_OWNED_POD_STATUS),
            None
        );
        let changed = json!({"phase": "Running",
            "containerStatuses": [{"name": "app", "ready": false, "lastState": {}}]});
        assert!(status_patch_keeping(Some(&changed), &desired, &SERVER_OWNED_POD_STATUS).is_some());
    }

    #[test]
    fn empty_condition_texts_are_left_out_as_the_apiserver_stores_them() {
        let first = condition("Ready", "True", "", "", None, "t0", false);
        assert_eq!(first.get("reason"), None);
        assert_eq!(first.get("message"), None);
        let stored = json!([first]);
        let again = condition("Ready", "True", "", "", Some(&stored), "t1", false);
        assert_eq!(again["lastTransitionTime"], "t0");
    }

    #[test]
    fn template_hashes_are_stable_and_safe() {
        let a = template_hash(&json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"name": "a"}]}}))
        );
        assert_ne!(
            a,
            template_hash(&json!({"spec": {"containers": [{"name": "b"}]}}))
        );
        assert_eq!(a.len(), 10);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn pod_ips_are_allocated_without_reuse() {
        let start = Ipv4Addr::new(127, 200, 0, 1);
        let mut used = BTreeSet::from([start]);
        assert_eq!(
            next_free_ip(start, &mut used),
            Some(Ipv4Addr::new(127, 200, 0, 2))
        );
        assert_eq!(
            next_free_ip(start, &mut used),
            Some(Ipv4Addr::new(127, 200, 0, 3))
        );
    }

    #[test]
    fn ready_pod_status_has_ip_and_ready_conditions() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let status = pod_status(
            &pod,
            &Phase::Ready,
            Some(Ipv4Addr::new(127, 200, 0, 9)),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "127.200.0.9");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        let failed = pod_status(
            &pod,
            &Phase::Failed("x".into()),
            None,
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            failed["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(
            pod_status(&pod, &Phase::Progressing, None, "t")["phase"],
            "Pending"
        );
    }
}

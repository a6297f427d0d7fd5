//! What every reconcile shares: the host client, watch-fed caches of everything the
//! controller writes, the builders' settings, events, metrics and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::runtime::events::{Event, Reporter};
use kube::runtime::reflector::Store;
use vc_api::VirtualCluster;

use crate::events::EventPublisher;
use crate::pki::PkiMaterial;
use crate::resources::BuildContext;
use crate::telemetry::Metrics;
use crate::tenant::TenantClients;

/// Watch-fed caches of the host objects the controller reads on every reconcile, so a
/// settled tenant's reconcile needs no requests at all.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Every host Node (claims are decided from here).
    pub nodes: Store<Node>,
    /// Secrets labelled as managed by kosmos-vc.
    pub secrets: Store<Secret>,
    /// Services labelled as managed by kosmos-vc.
    pub services: Store<Service>,
    /// StatefulSets labelled as managed by kosmos-vc.
    pub stateful_sets: Store<StatefulSet>,
    /// Deployments labelled as managed by kosmos-vc.
    pub deployments: Store<Deployment>,
    /// ServiceAccounts labelled as managed by kosmos-vc.
    pub service_accounts: Store<ServiceAccount>,
    /// ResourceQuotas labelled as managed by kosmos-vc.
    pub resource_quotas: Store<ResourceQuota>,
    /// Roles labelled as managed by kosmos-vc.
    pub roles: Store<Role>,
    /// RoleBindings labelled as managed by kosmos-vc.
    pub role_bindings: Store<RoleBinding>,
    /// Every Namespace: the workload namespaces kosmos-vc made, and the VirtualClusters'
    /// own, whose Pod Security label sets their tenants' level.
    pub namespaces: Store<Namespace>,
    /// ClusterRoles labelled as managed by kosmos-vc.
    pub cluster_roles: Store<ClusterRole>,
    /// ClusterRoleBindings labelled as managed by kosmos-vc.
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    /// NetworkPolicies labelled as managed by kosmos-vc.
    pub network_policies: Store<NetworkPolicy>,
}

/// Timing knobs; the binary uses the defaults, tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// First requeue of a tenant that waits for something only polling sees. Short,
    /// because the first look often comes a moment too early: right after the apiserver
    /// Deployment turns ready, its Service may not route yet (endpoints, kube-proxy).
    pub wait: Duration,
    /// Periodic re-check of a settled tenant.
    pub resync: Duration,
    /// First retry after a transient error; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry interval after repeated transient errors.
    pub backoff_cap: Duration,
    /// Connect and read timeout of requests to a tenant apiserver.
    pub tenant_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(1),
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            tenant_timeout: Duration::from_secs(5),
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// Client of the host cluster.
    pub client: Client,
    /// Builders' settings (images, cluster domain, defaults).
    pub build: BuildContext,
    /// Watch-fed caches.
    pub stores: Stores,
    /// Publishes Kubernetes Events.
    pub events: EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Timing knobs.
    pub timing: Timing,
    /// Cached clients of tenant apiservers.
    pub tenants: TenantClients,
    /// What was applied of the objects their caches hold only digests of the bulk of.
    pub applied_digests: crate::slim::AppliedDigests,
    /// What happens to the pods already running on a claimed node.
    pub claimed_node_pods: vc_api::eviction::ClaimedNodePods,
    /// Where evictions are sent (see [`crate::eviction::EvictionClient`]).
    pub eviction_client: crate::eviction::EvictionClient,
    attempts: Mutex<HashMap<String, u32>>,
    waits: Waits,
    pki: Mutex<HashMap<String, CachedPki>>,
    synced: tokio::sync::watch::Receiver<bool>,
}

/// A tenant's PKI as last verified, with what it was computed from.
struct CachedPki {
    source: PkiSource,
    checked: std::time::Instant,
    material: PkiMaterial,
}

/// What a PKI was computed from: the tenant's identity and the resource version of each
/// stored PKI Secret, by name. Any change to either makes the PKI be inspected again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiSource {
    /// What the certificates say of the tenant.
    pub identity: crate::pki::TenantIdentity,
    /// The stored Secrets' resource versions, by name.
    pub versions: std::collections::BTreeMap<String, String>,
}

/// How long a verified PKI is reused before its certificates are inspected again;
/// far below the renewal window (a third of a year), so renewals are never late.
pub const PKI_RECHECK: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Context {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Context")
            .field("build", &self.build)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Assembles the context.
    pub fn new(
        client: Client,
        build: BuildContext,
        stores: Stores,
        metrics: Arc<Metrics>,
        timing: Timing,
        synced: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let reporter = Reporter {
            controller: "kosmos-vc-controller".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: EventPublisher::new(client.clone(), reporter),
            eviction_client: crate::eviction::EvictionClient(client.clone()),
            client,
            build,
            stores,
            metrics,
            timing,
            tenants: TenantClients::default(),
            applied_digests: crate::slim::AppliedDigests::default(),
            claimed_node_pods: vc_api::eviction::ClaimedNodePods::default(),
            attempts: Mutex::default(),
            waits: Waits::default(),
            pki: Mutex::default(),
            synced,
        }
    }

    /// The same context, doing `mode` with the pods already running on claimed nodes,
    /// evicting through `client`.
    pub fn with_claimed_node_pods(
        mut self,
        mode: vc_api::eviction::ClaimedNodePods,
        client: crate::eviction::EvictionClient,
    ) -> Self {
        self.claimed_node_pods = mode;
        self.eviction_client = client;
        self
    }

    /// Whether every cache has listed its objects. Until then a reconcile could mistake
    /// a not-yet-listed Secret for a missing one, so it must not run.
    pub fn caches_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Publishes an Event about `vc`; failures are logged, never fatal.
    pub async fn publish(&self, vc: &VirtualCluster, event: Event) {
        use kube::Resource;
        if let Err(error) = self.events.publish(&event, &vc.object_ref(&())).await {
            tracing::warn!(%error, reason = %event.reason, "failed to publish event");
        }
    }

    /// Records a transient failure of `key` and returns how long to wait before retrying.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let attempt = {
            let Ok(mut attempts) = self.attempts.lock() else {
                return self.timing.backoff_cap;
            };
            let attempt = attempts.entry(key.to_owned()).or_default();
            *attempt = attempt.saturating_add(1);
            *attempt
        };
        backoff_delay(attempt, self.timing.backoff_base, self.timing.backoff_cap)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(key);
        }
    }
}

impl Context {
    /// The PKI verified for tenant `uid` from exactly `source`, if it was checked
    /// recently. Parsing and verifying a dozen certificates on every reconcile of every
    /// tenant would dominate the controller's CPU.
    pub fn cached_pki(&self, uid: &str, source: &PkiSource) -> Option<PkiMaterial> {
        let cache = self.pki.lock().ok()?;
        let entry = cache.get(uid)?;
        (entry.source == *source && entry.checked.elapsed() < PKI_RECHECK)
            .then(|| entry.material.clone())
    }

    /// Remembers a PKI as stored at `source`.
    pub fn remember_pki(&self, uid: &str, source: PkiSource, material: PkiMaterial) {
        if let Ok(mut cache) = self.pki.lock() {
            cache.insert(
                uid.to_owned(),
                CachedPki {
                    source,
                    checked: std::time::Instant::now(),
                    material,
                },
            );
        }
    }

    /// Records that the controller stored Secret `name` of tenant `uid`'s remembered PKI
    /// at `version`, written from that PKI (the admin kubeconfig, published after the
    /// rest), so the next pass need not read the Secrets to inspect it again.
    pub fn pki_secret_written(&self, uid: &str, name: &str, version: String) {
        if let Ok(mut cache) = self.pki.lock()
            && let Some(entry) = cache.get_mut(uid)
        {
            entry.source.versions.insert(name.to_owned(), version);
        }
    }

    /// How long to wait before looking again at a tenant that waits for something only
    /// polling can see (its apiserver answering, nodes appearing in it); see [`Waits`].
    pub fn next_wait(&self, key: &str) -> Duration {
        self.waits.next(
            key,
            std::time::Instant::now(),
            self.timing.wait,
            self.timing.resync,
        )
    }

    /// Forgets the waits of `key` once it made progress.
    pub fn reset_wait(&self, key: &str) {
        self.waits.reset(key);
    }

    /// Drops everything cached about a deleted tenant.
    pub fn forget_tenant(&self, key: &str, uid: &str) {
        self.reset_wait(key);
        self.reset_backoff(key);
        if let Ok(mut cache) = self.pki.lock() {
            cache.remove(uid);
        }
        self.tenants.forget(uid);
        self.applied_digests.forget_owner(uid);
    }
}

/// When each tenant began waiting for something only polling can see.
///
/// The next look comes `base` plus the time already waited after (capped): polls that
/// fire on schedule double the interval (1, 2, 4, 8 s, ...), while reconciles that watch
/// events trigger during the wait do not stretch it. Counting every reconcile as one
/// more wait let a burst of unrelated events (other Deployments rolling out, the
/// controller's own status write) push the next look 20-40 s away within milliseconds,
/// so a tenant whose nodes had just appeared stayed Initialized that long.
#[derive(Debug, Default)]
pub struct Waits(Mutex<HashMap<String, std::time::Instant>>);

impl Waits {
    /// How long after `now` to look again at `key`, which is waiting.
    pub fn next(
        &self,
        key: &str,
        now: std::time::Instant,
        base: Duration,
        cap: Duration,
    ) -> Duration {
        let waited = match self.0.lock() {
            Ok(mut waits) => {
                now.saturating_duration_since(*waits.entry(key.to_owned()).or_insert(now))
            }
            Err(_) => Duration::ZERO,
        };
        base.saturating_add(waited).min(cap)
    }

    /// `key` made progress: its next wait starts again at `base`.
    pub fn reset(&self, key: &str) {
        if let Ok(mut waits) = self.0.lock() {
            waits.remove(key);
        }
    }
}

/// `base * 2^(attempt-1)`, capped.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, base, cap), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, base, cap), Duration::from_secs(2));
        assert_eq!(backoff_delay(5, base, cap), Duration::from_secs(16));
        assert_eq!(backoff_delay(9, base, cap), Duration::from_secs(256));
        assert_eq!(backoff_delay(10, base, cap), cap);
        assert_eq!(backoff_delay(u32::MAX, base, cap), cap);
    }

    #[test]
    fn waits_grow_with_time_waited_not_with_reconciles() {
        let waits = Waits::default();
        let (base, cap) = (Duration::from_secs(5), Duration::from_secs(300));
        let start = std::time::Instant::now();
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        assert_eq!(waits.next("t", at(0.0), base, cap), base);
        // A burst of event-triggered reconciles while waiting.
        for seconds in [0.01, 0.02, 0.05] {
            assert_eq!(
                waits.next("t", at(seconds), base, cap),
                base + Duration::from_secs_f64(seconds)
            );
        }
        // Polls that fire on schedule double the interval.
        assert_eq!(waits.next("t", at(5.0), base, cap), Duration::from_secs(10));
        assert_eq!(
            waits.next("t", at(15.0), base, cap),
            Duration::from_secs(20)
        );
        assert_eq!(waits.next("t", at(1000.0), base, cap), cap);
        // Other tenants wait on their own clock; progress starts over.
        assert_eq!(waits.next("other", at(1000.0), base, cap), base);
        waits.reset("t");
        assert_eq!(waits.next("t", at(1001.0), base, cap), base);
    }
}

//! Lease-based leader election on `coordination.k8s.io/v1` Leases, as client-go does it:
//! the leader renews every retry period and gives up when it could not renew within the
//! renew deadline; a candidate takes the lease once the holder's renewTime plus the
//! lease duration has passed. Every write carries the Lease's resourceVersion, so two
//! candidates can never both believe they won.
//!
//! Losing the lease stops reconciling and the process exits non-zero (like
//! controller-runtime), so the pod restarts cleanly as a candidate.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{is_conflict, is_not_found};

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps trying to renew before it gives up leadership.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates retry and the leader renews.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What a candidate should do with a Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The lease is free or expired: take it.
    Acquire,
    /// We hold it: extend it.
    Renew,
    /// Someone else holds a valid lease: try again later.
    Wait {
        /// The current holder, for logs.
        holder: String,
    },
}

/// Decides from the Lease's spec alone, so the rule is testable without a cluster.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .map(|seconds| SignedDuration::from_secs(i64::from(seconds.max(0))))
        .unwrap_or(SignedDuration::from_secs(LEASE_DURATION.as_secs() as i64));
    let expired = match &spec.renew_time {
        Some(MicroTime(renewed)) => *renewed + duration <= now,
        None => true,
    };
    if expired {
        Decision::Acquire
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
        }
    }
}

/// The spec to write when we take or renew the lease.
pub fn next_spec(current: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseSpec {
    let previous_holder = current.and_then(|spec| spec.holder_identity.as_deref());
    let transitions = current
        .and_then(|spec| spec.lease_transitions)
        .unwrap_or_default();
    let keeps_holder = previous_holder == Some(identity);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if keeps_holder {
            current.and_then(|spec| spec.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(match previous_holder {
            Some(holder) if !holder.is_empty() && holder != identity => transitions + 1,
            _ => transitions,
        }),
        ..LeaseSpec::default()
    }
}

/// This process's candidate identity: the pod name when known, plus a per-process suffix
/// so a restarted pod does not mistake its predecessor's lease for its own.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "vc-controller".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!("{base}_{:x}{nanos:x}", std::process::id())
}

/// A candidate for one Lease.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl LeaderElector {
    /// A candidate for Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }

    /// The same candidate with other timings ([`RENEW_DEADLINE`], [`RETRY_PERIOD`]).
    pub fn with_timing(self, renew_deadline: Duration, retry_period: Duration) -> Self {
        Self {
            renew_deadline,
            retry_period,
            ..self
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: `Ok(true)` when we hold the lease afterwards. A conflicting writer
    /// makes this `Ok(false)`, never an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let existing = match self.api.get(&self.name).await {
            Ok(lease) => Some(lease),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(error),
        };
        let Some(existing) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_spec(None, &self.identity, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(error),
            };
        };
        match decide(existing.spec.as_ref(), &self.identity, now) {
            Decision::Wait { holder } => {
                tracing::debug!(%holder, "lease held by another candidate");
                Ok(false)
            }
            Decision::Acquire | Decision::Renew => {
                let mut updated = existing.clone();
                updated.spec = Some(next_spec(existing.spec.as_ref(), &self.identity, now));
                // `replace` sends metadata.resourceVersion: a concurrent writer gets 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(error) if is_conflict(&error) => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Waits until this candidate holds the lease. `connected` is called after the first
    /// successful round trip to the apiserver, leader or not.
    pub async fn acquire(&self, mut connected: impl FnMut()) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    connected();
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => connected(),
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Keeps renewing; resolves when leadership is lost (no successful renewal within
    /// the renew deadline, or another holder took the lease) or when `release` is
    /// cancelled, in which case the lease is released so a standby takes over at once. A
    /// renewal that hangs (an apiserver that accepts and never answers) counts against the
    /// deadline: past it, a standby may already lead, so this one must stop.
    pub async fn hold(&self, release: CancellationToken) -> Leadership {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(self.retry_period) => false,
                () = release.cancelled() => true,
            };
            if stopping {
                self.release().await;
                return Leadership::Released;
            }
            let left = self.renew_deadline.saturating_sub(last_renewal.elapsed());
            let attempt = async {
                match self.try_acquire_or_renew().await {
                    Ok(true) => Some(true),
                    Ok(false) => self.held_by_other().await.then_some(false),
                    Err(error) => {
                        tracing::warn!(%error, "failed to renew the leader lease");
                        None
                    }
                }
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Some(true)) => last_renewal = tokio::time::Instant::now(),
                Ok(Some(false)) => return Leadership::Lost,
                Ok(None) => {}
                Err(_) => {
                    tracing::warn!(
                        deadline = ?self.renew_deadline,
                        "renewing the leader lease did not finish within the renew deadline"
                    );
                    return Leadership::Lost;
                }
            }
            if last_renewal.elapsed() > self.renew_deadline {
                return Leadership::Lost;
            }
        }
    }

    async fn held_by_other(&self) -> bool {
        match self.api.get(&self.name).await {
            Ok(lease) => matches!(
                decide(lease.spec.as_ref(), &self.identity, Timestamp::now()),
                Decision::Wait { .. }
            ),
            Err(_) => false,
        }
    }

    /// Gives the lease up on a clean shutdown, keeping the resourceVersion precondition.
    async fn release(&self) {
        let Ok(mut lease) = self.api.get(&self.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "failed to release the leader lease");
        }
    }
}

/// The lease held in the background by [`LeaderElector::keep`].
#[derive(Debug)]
pub struct Held {
    release: CancellationToken,
    renewing: JoinHandle<Leadership>,
}

impl Held {
    /// Releases the lease (unless it was lost) and tells how holding it ended.
    pub async fn release(self) -> Leadership {
        self.release.cancel();
        match self.renewing.await {
            Ok(leadership) => leadership,
            // A renewal task that died may have left the lease to expire under a standby:
            // the process must exit as a loser.
            Err(_) => Leadership::Lost,
        }
    }
}

impl LeaderElector {
    /// Holds the lease in the background until [`Held::release`]; losing it cancels
    /// `shutdown`, so the whole process stops reconciling.
    pub fn keep(self, shutdown: CancellationToken) -> Held {
        let release = CancellationToken::new();
        let renewing = tokio::spawn({
            let release = release.clone();
            async move {
                let outcome = self.hold(release).await;
                if outcome == Leadership::Lost {
                    tracing::error!("lost the leader lease; stopping");
                    shutdown.cancel();
                }
                outcome
            }
        });
        Held { release, renewing }
    }
}

/// How holding the lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Another candidate holds the lease or renewal failed for too long.
    Lost,
    /// We gave it up on shutdown.
    Released,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    /// A candidate whose apiserver accepts connections and never answers, with a renew
    /// deadline of 600 ms; the task holds the connections.
    async fn candidate_of_a_silent_apiserver() -> (LeaderElector, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let elector = LeaderElector::new(client, "kosmos-system", "vc-controller", "me".into())
            .with_timing(Duration::from_millis(600), Duration::from_millis(100));
        (elector, silent)
    }

    /// A renewal in flight must not keep the leader leading past its renew deadline.
    #[tokio::test]
    async fn a_renewal_that_hangs_loses_leadership_at_the_deadline() {
        let (elector, silent) = candidate_of_a_silent_apiserver().await;
        let started = std::time::Instant::now();
        let held = tokio::time::timeout(
            Duration::from_secs(10),
            elector.hold(CancellationToken::new()),
        )
        .await;
        assert_eq!(held, Ok(Leadership::Lost), "hold() must give up, not hang");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "gave up after {:?}, deadline 600 ms",
            started.elapsed()
        );
        silent.abort();
    }

    #[tokio::test]
    async fn a_lease_lost_in_the_background_stops_the_process() {
        let (elector, silent) = candidate_of_a_silent_apiserver().await;
        let shutdown = CancellationToken::new();
        let held = elector.keep(shutdown.clone());
        tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
            .await
            .expect("losing the lease cancels the shutdown token");
        assert_eq!(held.release().await, Leadership::Lost);
        silent.abort();
    }

    #[test]
    fn missing_or_empty_lease_is_acquired() {
        assert_eq!(decide(None, "me", at(0)), Decision::Acquire);
        let empty = LeaseSpec::default();
        assert_eq!(decide(Some(&empty), "me", at(0)), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed_even_when_late() {
        assert_eq!(
            decide(Some(&held_by("me", 0)), "me", at(100)),
            Decision::Renew
        );
    }

    #[test]
    fn valid_foreign_lease_is_waited_for_until_it_expires() {
        let lease = held_by("other", 0);
        assert_eq!(
            decide(Some(&lease), "me", at(14)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(decide(Some(&lease), "me", at(15)), Decision::Acquire);
        assert_eq!(decide(Some(&lease), "me", at(60)), Decision::Acquire);
    }

    #[test]
    fn foreign_lease_without_renew_time_is_expired() {
        let mut lease = held_by("other", 0);
        lease.renew_time = None;
        assert_eq!(decide(Some(&lease), "me", at(0)), Decision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let taken = next_spec(Some(&held_by("other", 0)), "me", at(20));
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(taken.renew_time, Some(MicroTime(at(20))));
        assert_eq!(taken.lease_duration_seconds, Some(15));

        let renewed = next_spec(Some(&held_by("me", 0)), "me", at(10));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(10))));

        let fresh = next_spec(None, "me", at(5));
        assert_eq!(fresh.lease_transitions, Some(0));
    }

    #[test]
    fn identities_differ_between_processes_of_the_same_pod() {
        let identity = default_identity();
        assert!(identity.contains('_'), "{identity}");
    }
}

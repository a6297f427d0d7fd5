//! Lease-based leader election of vc-controller against the test API server: one
//! holder at a time, resourceVersion-guarded takeover, release on shutdown, and a leader
//! that notices it lost the lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use vc_controller::leader::{LeaderElector, Leadership};
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

const NAMESPACE: &str = "kube-system";
const LEASE: &str = "kosmos-vc-controller";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_release_hands_over() {
    let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    let first = LeaderElector::new(client.clone(), NAMESPACE, LEASE, "replica-a".into());
    let second = LeaderElector::new(client.clone(), NAMESPACE, LEASE, "replica-b".into());

    assert!(
        first.try_acquire_or_renew().await.unwrap(),
        "a free lease is taken"
    );
    assert!(
        !second.try_acquire_or_renew().await.unwrap(),
        "a held lease is not"
    );
    assert!(
        first.try_acquire_or_renew().await.unwrap(),
        "the holder renews"
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let lease = leases.get(LEASE).await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    // A clean shutdown releases the lease, so the standby takes over at once.
    let release = tokio_util::sync::CancellationToken::new();
    let holding = tokio::spawn({
        let first = first.clone();
        let release = release.clone();
        async move { first.hold(release).await }
    });
    release.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), holding)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Leadership::Released);
    assert!(
        second.try_acquire_or_renew().await.unwrap(),
        "the standby takes the released lease"
    );
    let spec = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(
        spec.lease_transitions,
        Some(0),
        "a released lease is free, not taken over"
    );
    assert!(!first.try_acquire_or_renew().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_taken_stops() {
    let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    let leader = LeaderElector::new(client.clone(), NAMESPACE, LEASE, "replica-a".into());
    assert!(leader.try_acquire_or_renew().await.unwrap());

    // Another replica took the lease (as after a long pause of this one).
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut lease = leases.get(LEASE).await.unwrap();
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("replica-b".into());
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    }
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();

    let never_released = tokio_util::sync::CancellationToken::new();
    let outcome = tokio::time::timeout(Duration::from_secs(15), leader.hold(never_released))
        .await
        .expect("the leader notices within one retry period");
    assert_eq!(outcome, Leadership::Lost);

    // A stale write (old resourceVersion) can never steal the lease back.
    let stale = lease.clone();
    let mut newer = leases.get(LEASE).await.unwrap();
    if let Some(spec) = newer.spec.as_mut() {
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    }
    leases
        .replace(LEASE, &PostParams::default(), &newer)
        .await
        .unwrap();
    let error = leases
        .replace(LEASE, &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(error, kube::Error::Api(status) if status.code == 409));
}

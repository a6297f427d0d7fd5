//! The tenant's cluster DNS, served by vc-clustertree itself: no CoreDNS image exists
//! where tenants are built, and this process already holds the tenant admin client.
//! Nothing a tenant edits configures it; the tenant's Services and EndpointSlices only
//! become records.
//!
//! [`snapshot`] reduces the tenant's objects to records' facts, [`watch`] keeps a
//! snapshot current from watch caches, [`resolve`] answers one query from a snapshot
//! (pure), [`upstream`] forwards names outside the cluster zone, and [`serve`] is the
//! UDP and TCP server.

pub mod resolve;
pub mod serve;
pub mod snapshot;
pub mod upstream;
pub mod watch;

pub use resolve::{Resolution, Zone, answer};
pub use snapshot::Snapshot;

use std::sync::Arc;
use std::time::Duration;

/// How long each upstream has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the cluster DNS of `client`'s Services and EndpointSlices on `listeners`,
/// forwarding other names to `upstreams`, until `stopped` is cancelled: the watch caches
/// and the server side by side; `answering` turns true once the zone is answered from
/// listed caches. With `kubernetes`, `kubernetes.default.svc` answers that
/// address ([`Snapshot::pin_kubernetes`]).
pub async fn run(
    client: kube::Client,
    listeners: serve::Listeners,
    zone: Zone,
    kubernetes: Option<std::net::IpAddr>,
    upstreams: Vec<std::net::SocketAddr>,
    answering: tokio::sync::watch::Sender<bool>,
    stopped: tokio_util::sync::CancellationToken,
) {
    let (publish, published) = tokio::sync::watch::channel(None);
    let mut first = published.clone();
    let answers = async move {
        // The zone answers (rather than SERVFAIL) from the first snapshot on.
        if first.wait_for(Option::is_some).await.is_ok() {
            answering.send_replace(true);
        }
    };
    let records = watch::run(
        client,
        kubernetes,
        publish,
        stopped.clone().cancelled_owned(),
    );
    let server = serve::serve(
        listeners,
        Arc::new(serve::Dns {
            zone,
            snapshot: published,
            upstream: upstream::Upstream {
                servers: upstreams,
                timeout: UPSTREAM_TIMEOUT,
            },
        }),
        stopped.cancelled_owned(),
    );
    tokio::join!(records, server, answers);
}

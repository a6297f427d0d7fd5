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

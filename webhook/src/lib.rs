//! The kosmos-vc admission webhook: defaults every VirtualCluster and refuses the ones
//! that would break node exclusivity, pool capacity or the admin's ceilings.
//!
//! The rules are pure functions in [`vc_api::admission`]; this crate is the I/O shell
//! around them: an HTTPS server ([`server`]), certificate reloading ([`tls`]), the
//! AdmissionReview plumbing ([`review`]), watch-fed caches ([`cache`]) and metrics.
//!
//! The caches make the checks early and cheap, not final: two VirtualClusters admitted in
//! the same instant can both pass a cache-based check. The controller's claim on each
//! Node (labels written with a resourceVersion precondition) is the final arbiter.

/// Implements [`kube::Resource`] for `$part`, a newtype over `$whole` that is deserialized
/// from only part of the object's JSON: same kind, group, version and plural as
/// `$whole`, and the inner object's metadata.
macro_rules! resource_of_part {
    ($part:ty, $whole:ty) => {
        impl kube::Resource for $part {
            type DynamicType = ();
            type Scope = <$whole as kube::Resource>::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.0.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.0.metadata
            }
        }
    };
}

pub mod cache;
pub mod cli;
mod connection;
pub mod limits;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;

/// The inventory shared by the caches (writers) and the admission handlers (readers).
pub type SharedInventory = Arc<parking_lot::RwLock<vc_api::admission::Inventory>>;

pub use limits::Limits;
pub use review::{Admission, Enforcement};
pub use server::{Readiness, RunningServer, Webhook, router, spawn};

//! VirtualCluster API types, the names kosmos-vc writes into clusters, and the pure rules
//! (defaults, validation, node and capacity inventory) shared by the webhook and the
//! controller. Nothing here performs I/O, so every rule is unit-testable without a cluster.

pub mod admission;
pub mod cidr;
pub mod constants;
pub mod crd;
pub mod eviction;
pub mod names;
pub mod pod_security;
pub mod quantity;
pub mod tenant_dns;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod virtual_cluster;

pub use quantity::ResourceQuantity;
pub use virtual_cluster::{
    ApiServerSpec, ClusterTreeSpec, ControlPlaneSpec, EtcdSpec, Phase, PromoteResources,
    ServiceType, VirtualCluster, VirtualClusterSpec, VirtualClusterStatus, condition_types,
};

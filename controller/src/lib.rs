//! vc-controller: turns each VirtualCluster into a running tenant control plane and
//! clustertree, claims and releases host nodes, and cleans up on delete.

pub mod apply;
pub mod claims;
pub mod context;
pub mod error;
pub mod flags;
pub mod leader;
pub mod pki;
pub mod reconcile;
pub mod resources;
pub mod rollout;
pub mod runner;
pub mod status;
pub mod telemetry;
pub mod tenant;

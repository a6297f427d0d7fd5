//! vc-controller: turns each VirtualCluster into a running tenant control plane and
//! clustertree, claims and releases host nodes, and cleans up on delete.

pub mod claims;
pub mod error;
pub mod flags;
pub mod leader;
pub mod pki;
pub mod resources;
pub mod rollout;
pub mod status;
pub mod telemetry;

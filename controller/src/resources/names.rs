//! Names of every object of a tenant: the table in `vc_api::names`, which the webhook
//! also reads to refuse a VirtualCluster whose names would land on a sibling's.

pub use vc_api::names::*;

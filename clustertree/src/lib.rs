//! vc-clustertree: makes a tenant's share of the host visible inside the tenant. This
//! part mirrors the promoted host nodes and the pooled resources as tenant Nodes (see
//! [`nodes`] for the rules, [`sync`] for the loop).

pub mod nodes;
pub mod sync;

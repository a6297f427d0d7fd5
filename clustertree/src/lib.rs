//! vc-clustertree: makes a tenant's share of the host visible inside the tenant, and runs
//! the tenant's pods on it. It mirrors the promoted host nodes and the pooled resources
//! as tenant Nodes ([`nodes`] for the rules, [`sync`] for the loop), and acts as the
//! kubelet of those Nodes: each tenant pod bound to one runs as a host pod in the
//! tenant's workload namespace, and its status comes back ([`pods`] for the rules,
//! [`pod_sync`] for the loop). It serves those Nodes' kubelet API for logs and exec
//! ([`kubelet_api`]), and the tenant's cluster DNS ([`dns`]) behind the tenant's
//! `kube-dns` Service ([`cluster_dns`]).

pub mod cluster_dns;
pub mod dns;
pub mod kubelet_api;
pub mod nodes;
pub mod pod_sync;
pub mod pods;
pub mod service_sync;
pub mod services;
pub mod sync;

//! Test infrastructure for kosmos-vc: an in-process Kubernetes API server
//! ([`apiserver::TestApiServer`]) that kubectl, kube-rs, the webhook and the controller
//! talk to, plus helpers to run the same tests against a real kube-apiserver (envtest).

pub mod admission;
pub mod apiserver;
pub mod etcd_gateway;
pub mod rbac;
pub mod simulation;

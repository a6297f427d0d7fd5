//! kubectl-vc: the operator's plugin for VirtualClusters.
//!
//! The library holds everything that decides (kubeconfig rules and merging, building
//! VirtualClusters from flags, tables and describe output); `main.rs` and [`commands`] are
//! the thin I/O shell around it.

pub mod build;
pub mod cli;
pub mod completion;
pub mod kubeconfig;
pub mod output;
pub mod warnings;

//! Placeholder until the crate lands.
pub mod admission;
pub mod rbac;
pub mod simulation;

//! Placeholder until the crate lands.
pub mod rbac;

//! vc-controller: turns each VirtualCluster into a running tenant control plane and
//! clustertree, claims and releases host nodes, and cleans up on delete.
//!
//! Layout: pure rules ([`claims`], [`status`], [`rollout`], [`pki`], [`resources`],
//! [`volumes`]) and
//! the I/O shell around them ([`reconcile`], [`apply`], [`tenant`], [`runner`]).
//! [`runner::run`] is what the binary and the in-process tests call.
//!
//! Operations:
//! - `/healthz` answers as long as the process serves; `/readyz` turns ready once every
//!   watch has listed its objects. With `--leader-elect`, a standby that reached the
//!   apiserver is ready too: readiness says "this replica works", not "it leads", so a
//!   rolling update of two replicas never waits on a lease.
//! - Only the lease holder runs the controller. A leader that cannot renew within 10 s
//!   (or finds the lease taken) stops reconciling and exits non-zero, so its pod restarts
//!   as a fresh candidate; on SIGTERM it releases the lease for an immediate hand-over.
//! - A settled tenant's reconcile sends no write: every object is compared with the watch
//!   cache before a server-side apply, and the status is patched only when it changed.

pub mod apply;
pub mod claims;
pub mod context;
pub mod error;
pub mod events;
pub mod eviction;
pub mod flags;
pub mod leader;
pub mod ownership;
pub mod pki;
pub mod reconcile;
pub mod resources;
pub mod rollout;
pub mod runner;
pub mod slim;
pub mod status;
pub mod telemetry;
pub mod tenant;
pub mod volumes;

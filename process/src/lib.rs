//! What `vc-controller`, `vc-webhook` and `vc-clustertree` share as processes, so the
//! three behave alike where an operator meets them: one log format ([`logging`]), one way
//! to reach the host ([`host`]), one shutdown on SIGTERM or SIGINT ([`shutdown`]) and the
//! same `/healthz`, `/readyz` and `/metrics` ([`probes`]). Each binary keeps its own flags,
//! readiness rule and metric families.

pub mod host;
pub mod logging;
pub mod probes;
pub mod shutdown;

/// `NAME/VERSION` of the calling crate, the user agent its host requests carry.
#[macro_export]
macro_rules! user_agent {
    () => {
        concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"))
    };
}

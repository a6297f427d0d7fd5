//! kosmos-vc's own test harness and scenarios' building blocks: the end-to-end [`harness`]
//! (a host with the chart installed and the real binaries running), the chart rendered by
//! Helm's engine ([`helm`]), the real node ([`node`]), clustertree set-ups, probes,
//! waits, and what the benchmarks that measure one of our binaries share ([`bench`]). The generic API server lives in `vc-test-apiserver`, the simulated kubelets and
//! tenants in `vc-simulation`; the e2e and integration tests and `vc-sandbox` use all three.

pub mod bench;
pub mod clustertree;
pub mod harness;
pub mod helm;
pub mod node;
pub mod probe;
pub mod wait;

use std::path::PathBuf;

/// The first file called `name` in a `PATH` directory: the tests that drive an external
/// tool (kubectl, actionlint, the Helm engine's python) skip without it instead of failing.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

//! Test infrastructure for kosmos-vc: an in-process Kubernetes API server
//! ([`apiserver::TestApiServer`]) that kubectl, kube-rs, the webhook and the controller
//! talk to, plus helpers to run the same tests against a real kube-apiserver (envtest).

pub mod clustertree;
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

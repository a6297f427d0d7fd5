//! vc-tests' integration tests, one module per subject, linked into one test binary.
//!
//! Every test binary links the test API server, kube-rs and the controller. As 22 binaries
//! they took about 2 GB of a clean build's disk and 22 links; as one they take one. The
//! end-to-end scenarios keep their own binary (`--test e2e`), so they can run alone.
//! Run one subject with a filter: `cargo nextest run -p vc-tests -E 'test(/^chart::/)'`,
//! or `cargo test -p vc-tests --test integration chart::`.
//!
//! Every module is `#[cfg(test)]`: clippy's `allow-unwrap-in-tests` (clippy.toml) covers
//! test code only, and a plain module of a test binary does not count as such.

#[cfg(test)]
mod controller_common;
#[cfg(test)]
mod support {
    pub mod eventually;
    pub mod rendered_tenant;
    pub mod server;
}

#[cfg(test)]
mod apiserver_admission;
#[cfg(test)]
mod apiserver_errors;
#[cfg(test)]
mod apiserver_kubectl;
#[cfg(test)]
mod apiserver_rbac_escalation;
#[cfg(test)]
mod apiserver_semantics;
#[cfg(test)]
mod chart;
#[cfg(test)]
mod clustertree_dns;
#[cfg(test)]
mod clustertree_nodes;
#[cfg(test)]
mod clustertree_pods;
#[cfg(test)]
mod clustertree_services;
#[cfg(test)]
mod component_flags;
#[cfg(test)]
mod controller_eviction;
#[cfg(test)]
mod controller_leader;
#[cfg(test)]
mod controller_network_policy;
#[cfg(test)]
mod controller_ownership;
#[cfg(test)]
mod controller_pod_security;
#[cfg(test)]
mod controller_provision;
#[cfg(test)]
mod controller_race;
#[cfg(test)]
mod controller_resilience;
#[cfg(test)]
mod controller_simulated;
#[cfg(test)]
mod controller_upgrade;
#[cfg(test)]
mod controller_volumes;
#[cfg(test)]
mod plugin_cli;
#[cfg(test)]
mod plugin_e2e;
#[cfg(test)]
mod real_node;
#[cfg(test)]
mod real_node_kubelet_api;
#[cfg(test)]
mod real_node_services;
#[cfg(test)]
mod real_node_tenant;
#[cfg(test)]
mod sim_admission;
#[cfg(test)]
mod sim_cluster;
#[cfg(test)]
mod sim_local_control_plane;
#[cfg(test)]
mod sim_races;
#[cfg(test)]
mod sim_tenant;
#[cfg(test)]
mod webhook_e2e;
#[cfg(test)]
mod workflow;

/// A file here that this one does not declare is never compiled, so its tests would vanish
/// without a word.
#[test]
fn every_file_of_this_directory_is_a_module() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    let declared = include_str!("main.rs");
    for subdirectory in ["", "support"] {
        for entry in std::fs::read_dir(directory.join(subdirectory)).unwrap() {
            let path = entry.unwrap().path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "rs") || stem == "main" {
                continue;
            }
            assert!(
                declared.contains(&format!("mod {stem};")),
                "{} is not declared in tests/tests/integration/main.rs; add `mod {stem};` there",
                path.display()
            );
        }
    }
}

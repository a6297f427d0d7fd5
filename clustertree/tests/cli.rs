//! The built binary's command line: what an operator (or the controller rendering its
//! Deployment) gets back for a bad flag.

use std::process::{Command, Output};

/// What the binary printed, refusing to start with `flags` on top of the VirtualCluster
/// it serves.
#[cfg(test)]
fn refused(flags: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_vc-clustertree"))
        .args(["--namespace", "team-a", "--name", "tenant1"])
        .args(flags)
        .output()
        .unwrap();
    assert!(!output.status.success());
    output
}

#[test]
fn a_bad_period_is_refused_naming_the_flag_and_the_form() {
    let output = refused(&["--tenant-kubeconfig", "/nonexistent", "--period", "soon"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--period")
            && stderr.contains("is not a duration in seconds such as \"2s\""),
        "{stderr}"
    );
}

#[test]
fn a_missing_tenant_kubeconfig_stops_with_the_path_in_the_error() {
    let output = refused(&[
        "--kubeconfig",
        "/nonexistent/host",
        "--tenant-kubeconfig",
        "/nonexistent/tenant",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("/nonexistent/host"), "{stdout}");
}

//! The built binary's command line: what an operator (or the controller rendering its
//! Deployment) gets back for a bad flag.

use std::process::Command;

fn clustertree() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vc-clustertree"))
}

#[test]
fn a_bad_period_is_refused_naming_the_flag_and_the_form() {
    let output = clustertree()
        .args([
            "--tenant-kubeconfig",
            "/nonexistent",
            "--namespace",
            "team-a",
            "--name",
            "tenant1",
            "--period",
            "soon",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--period")
            && stderr.contains("is not a duration in seconds such as \"2s\""),
        "{stderr}"
    );
}

#[test]
fn a_missing_tenant_kubeconfig_stops_with_the_path_in_the_error() {
    let output = clustertree()
        .args([
            "--kubeconfig",
            "/nonexistent/host",
            "--tenant-kubeconfig",
            "/nonexistent/tenant",
            "--namespace",
            "team-a",
            "--name",
            "tenant1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("/nonexistent/host"), "{stdout}");
}

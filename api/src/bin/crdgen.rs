//! Prints the VirtualCluster CRD; the chart's copy is this program's output.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match vc_api::crd::virtual_cluster_crd_yaml() {
        Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("crdgen: failed to write the CRD to stdout: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("crdgen: {error}");
            ExitCode::FAILURE
        }
    }
}

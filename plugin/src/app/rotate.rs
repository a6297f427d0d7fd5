//! `rotate-kubeconfig`: asks the controller for a new admin kubeconfig through the
//! annotation it acts on, and waits for `status.adminKubeconfigRotation` to name it.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kubectl_vc::cli::RotateKubeconfigArgs;
use kubectl_vc::output;
use vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION;
use vc_api::{Phase, VirtualCluster};

use super::errors;
use super::session::Session;

/// How often `--wait` reads the VirtualCluster.
const POLL: Duration = Duration::from_millis(500);

/// Sets the annotation to a value never used before (the time, to the nanosecond), so
/// the controller sees a new request even when the last one was made the same second.
pub async fn rotate(session: &Session, args: &RotateKubeconfigArgs) -> Result<()> {
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let name = args.name.as_str();
    let request = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {
        ROTATE_ADMIN_KUBECONFIG_ANNOTATION: request,
    }}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|error| errors::api(error, &session.namespace, Some(name)))?;
    println!(
        "{}/{name} admin kubeconfig rotation requested ({ROTATE_ADMIN_KUBECONFIG_ANNOTATION}={request})",
        output::resource_prefix()
    );
    if !args.wait {
        return Ok(());
    }
    tokio::time::timeout(args.timeout, served(&api, name, &request))
        .await
        .map_err(|_| {
            anyhow!(
                "timed out after {}s waiting for VirtualCluster \"{name}\" to serve the new admin kubeconfig; see \"kubectl vc describe {name}\"",
                args.timeout.as_secs()
            )
        })??;
    println!(
        "{}/{name} admin kubeconfig rotated: the old one is refused; take the new one with \"kubectl vc use-context {name}\"",
        output::resource_prefix()
    );
    Ok(())
}

async fn served(api: &Api<VirtualCluster>, name: &str, request: &str) -> Result<()> {
    loop {
        let Some(cluster) = api.get_opt(name).await? else {
            bail!("VirtualCluster \"{name}\" was deleted while waiting");
        };
        let status = cluster.status.unwrap_or_default();
        if status.admin_kubeconfig_rotation.as_deref() == Some(request) {
            return Ok(());
        }
        if status.phase == Some(Phase::Failed) {
            bail!(
                "VirtualCluster \"{name}\" failed: {}; see \"kubectl vc describe {name}\"",
                status.message.unwrap_or_default().escape_debug()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

//! Waiting for a phase, or for deletion, printing what changes on the way.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kubectl_vc::cli::WaitFor;
use vc_api::{Phase, VirtualCluster};

/// How often `--wait` re-reads the object besides watching it.
const RESYNC: Duration = Duration::from_secs(5);

/// Whether `phase` satisfies the wait.
pub fn reached(phase: Option<Phase>, target: WaitFor) -> bool {
    match target {
        WaitFor::Initialized => matches!(phase, Some(Phase::Initialized | Phase::Completed)),
        WaitFor::Completed => phase == Some(Phase::Completed),
    }
}

fn target_name(target: WaitFor) -> &'static str {
    match target {
        WaitFor::Initialized => Phase::Initialized.as_str(),
        WaitFor::Completed => Phase::Completed.as_str(),
    }
}

fn describe_phase(cluster: &VirtualCluster) -> String {
    let status = cluster.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("no phase yet", Phase::as_str);
    match status.message.filter(|message| !message.is_empty()) {
        Some(message) => format!("{phase} ({})", kubectl_vc::output::shown(&message)),
        None => phase.to_owned(),
    }
}

/// Watches the VirtualCluster until it reaches `target`, printing every phase change to
/// standard error. Fails when it reaches `Failed`, disappears, or `timeout` passes.
///
/// The watch asks the server for this one name and also filters here, so a server that
/// ignores field selectors still works.
pub async fn for_phase(
    api: &Api<VirtualCluster>,
    name: &str,
    target: WaitFor,
    timeout: Duration,
) -> Result<VirtualCluster> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config)
        .touched_objects()
        .try_filter(|cluster| {
            futures::future::ready(cluster.metadata.name.as_deref() == Some(name))
        })
        .boxed();
    let mut last_seen: Option<String> = None;
    // A fresh GET now and then covers a watch that silently stops delivering events.
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = async {
        loop {
            let cluster = tokio::select! {
                next = stream.try_next() => match next? {
                    Some(cluster) => cluster,
                    None => break,
                },
                _ = resync.tick() => match api.get_opt(name).await? {
                    Some(cluster) => cluster,
                    None => bail!("VirtualCluster \"{name}\" was deleted while waiting"),
                },
            };
            if cluster.metadata.deletion_timestamp.is_some() {
                bail!("VirtualCluster \"{name}\" is being deleted");
            }
            let shown = describe_phase(&cluster);
            if last_seen.as_deref() != Some(shown.as_str()) {
                eprintln!("{name}: {shown}");
                last_seen = Some(shown);
            }
            let phase = cluster.status.as_ref().and_then(|status| status.phase);
            if reached(phase, target) {
                return Ok(cluster);
            }
            if phase == Some(Phase::Failed) {
                bail!(
                    "VirtualCluster \"{name}\" failed: {}; see \"kubectl vc describe {name}\"",
                    describe_phase(&cluster)
                );
            }
        }
        Err(anyhow!("the watch of VirtualCluster \"{name}\" ended"))
    };
    match tokio::time::timeout(timeout, watch).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "timed out after {}s waiting for VirtualCluster \"{name}\" to become {} (last phase: {}); see \"kubectl vc describe {name}\"",
            timeout.as_secs(),
            target_name(target),
            last_seen.as_deref().unwrap_or("<none>")
        )),
    }
}

/// Polls until the VirtualCluster is gone (its finalizer has released everything).
pub async fn for_deletion(api: &Api<VirtualCluster>, name: &str, timeout: Duration) -> Result<()> {
    let poll = async {
        let mut last_seen: Option<String> = None;
        loop {
            match api.get_opt(name).await? {
                None => return Ok::<(), anyhow::Error>(()),
                Some(cluster) => {
                    let shown = describe_phase(&cluster);
                    if last_seen.as_deref() != Some(shown.as_str()) {
                        eprintln!("{name}: {shown}");
                        last_seen = Some(shown);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(timeout, poll).await.map_err(|_| {
        anyhow!(
            "timed out after {}s waiting for VirtualCluster \"{name}\" to be deleted; see \"kubectl vc describe {name}\"",
            timeout.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialized_is_also_reached_by_completed() {
        assert!(reached(Some(Phase::Initialized), WaitFor::Initialized));
        assert!(reached(Some(Phase::Completed), WaitFor::Initialized));
        assert!(!reached(Some(Phase::Preparing), WaitFor::Initialized));
        assert!(!reached(Some(Phase::Initialized), WaitFor::Completed));
        assert!(!reached(None, WaitFor::Completed));
    }

    /// The progress line quotes the status message, which whoever may update the status
    /// writes: one escaped line on the operator's terminal.
    #[test]
    fn the_progress_line_escapes_the_status_message() {
        let cluster: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "prod"},
            "spec": {},
            "status": {"phase": "Preparing", "message": "etcd\u{1b}]0;owned\u{7}\nprod: Completed"},
        }))
        .unwrap();
        assert_eq!(
            describe_phase(&cluster),
            "Preparing (etcd\\x1b]0;owned\\x07\\nprod: Completed)"
        );
    }
}

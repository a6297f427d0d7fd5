//! With `--claimed-node-pods=evict`, evicts what must leave the claimed nodes.

use vc_api::eviction::ClaimedNodePods;

use super::events::Changes;
use crate::context::Context;
use crate::error::{Error, Step};
use crate::eviction::EvictionReport;
use crate::resources::Tenant;

/// Evicts what must leave the claimed nodes `held`; `None` in `keep` mode.
pub(super) async fn evict_claimed_pods(
    tenant: &Tenant,
    held: &[String],
    ctx: &Context,
    changes: &mut Changes,
) -> Result<Option<EvictionReport>, Error> {
    if ctx.claimed_node_pods != ClaimedNodePods::Evict {
        return Ok(None);
    }
    let workload_namespace = tenant.workload_namespace();
    let claim = vc_api::eviction::Claim {
        name: &tenant.name,
        workload_namespace: &workload_namespace,
    };
    let report = crate::eviction::evict_from_claimed(&ctx.eviction_client, &claim, held)
        .await
        .map_err(|source| Error::Evict { source })?;
    for (pod, node) in &report.evicted {
        changes.record(
            "PodEvicted",
            Step::Eviction,
            format!("evicted pod {pod} from claimed node {node:?}"),
        );
    }
    Ok(Some(report))
}

/// The pods a disruption budget holds on claimed nodes, a few by name.
pub(super) fn blocked_message(report: &EvictionReport) -> String {
    const NAMED: usize = 3;
    let mut parts: Vec<String> = report
        .blocked
        .iter()
        .take(NAMED)
        .map(|(pod, (node, reason))| format!("pod {pod} on node {node:?}: {reason}"))
        .collect();
    if report.blocked.len() > NAMED {
        parts.push(format!("and {} more", report.blocked.len() - NAMED));
    }
    format!(
        "eviction from claimed nodes refused, retrying with backoff: {}",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_message_names_at_most_three_pods() {
        let mut report = EvictionReport::default();
        for index in 0..5 {
            report.blocked.insert(
                format!("shop/web-{index}"),
                ("node1".to_owned(), "budget web".to_owned()),
            );
        }
        let message = blocked_message(&report);
        assert!(message.contains("pod shop/web-2 on node \"node1\": budget web"));
        assert!(
            !message.contains("web-3") && message.ends_with("and 2 more"),
            "{message}"
        );
    }
}

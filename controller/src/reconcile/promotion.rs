//! What the tenant shows once its kubeconfig is out: the claimed nodes vc-clustertree
//! mirrored into it, and whether its DNS answers.

use std::collections::BTreeSet;

use vc_api::VirtualCluster;
use vc_api::condition_types::DNS_READY;
use vc_api::tenant_dns::DnsMissing;

use super::kubeconfig::{KubeconfigReport, Reach};
use crate::error::{Error, Result};
use crate::tenant;

/// Whether the tenant's DNS has a ready endpoint, or what it misses.
pub(super) type DnsReadiness = std::result::Result<(), DnsMissing>;

/// What the tenant shows; each part is read only when the one before it succeeded.
#[derive(Debug)]
pub(super) struct Promotion {
    /// The claimed nodes the tenant lists.
    pub(super) visible: Result<Vec<String>>,
    /// Whether the tenant's DNS answers; `None` until the tenant could be asked.
    pub(super) dns: Result<Option<DnsReadiness>>,
}

impl Promotion {
    fn nothing_yet() -> Self {
        Self {
            visible: Ok(Vec::new()),
            dns: Ok(None),
        }
    }

    /// The error that cut the reading short.
    pub(super) fn failure(&self) -> Option<&Error> {
        self.visible.as_ref().err().or(self.dns.as_ref().err())
    }

    /// The nodes and DNS readiness as the status shows them.
    pub(super) fn shown(&self) -> (&[String], Option<&DnsReadiness>) {
        let visible = self.visible.as_deref().unwrap_or_default();
        let dns = self.dns.as_ref().ok().and_then(Option::as_ref);
        (visible, dns)
    }

    /// The error that cut the reading short, as the reconcile's result.
    pub(super) fn into_result(self) -> Result<()> {
        self.visible?;
        self.dns?;
        Ok(())
    }
}

/// Reads what the tenant shows of the claimed nodes `held`; nothing while the
/// kubeconfig is not out or when applying the clustertree failed.
pub(super) async fn read_tenant(
    vc: &VirtualCluster,
    kubeconfig: &KubeconfigReport,
    reach: &Reach,
    held: &[String],
    clustertree_failed: bool,
) -> Promotion {
    if !kubeconfig.published {
        return Promotion::nothing_yet();
    }
    match reach.client() {
        Some(_) if clustertree_failed => Promotion::nothing_yet(),
        Some(client) => {
            let failed = |source| Error::Promote { source };
            let visible = promoted(client, held).await.map_err(failed);
            let dns = match visible {
                Ok(_) => tenant::dns_readiness(client).await.map(Some),
                Err(_) => Ok(None),
            };
            let dns = dns.map_err(failed);
            Promotion { visible, dns }
        }
        None => last_seen(vc, held),
    }
}

/// The promoted nodes the tenant lists: vc-clustertree mirrors each claimed node into
/// the tenant, and the status reports only those the tenant really shows.
async fn promoted(client: &kube::Client, held: &[String]) -> Result<Vec<String>, tenant::Error> {
    let listed: BTreeSet<String> = tenant::tenant_node_names(client)
        .await?
        .into_iter()
        .collect();
    Ok(held
        .iter()
        .filter(|node| listed.contains(*node))
        .cloned()
        .collect())
}

/// While the apiserver is rolling, what the tenant listed and how its DNS answered
/// before, as the status last said.
fn last_seen(vc: &VirtualCluster, held: &[String]) -> Promotion {
    let visible = vc
        .status
        .as_ref()
        .map(|status| status.promoted_nodes.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|node| held.contains(node))
        .collect();
    let answered = vc.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|condition| condition.type_ == DNS_READY && condition.status == "True")
    });
    Promotion {
        visible: Ok(visible),
        dns: Ok(answered.then_some(Ok(()))),
    }
}

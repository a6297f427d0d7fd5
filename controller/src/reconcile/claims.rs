//! Claims the host nodes the VirtualCluster lists and releases the ones it no longer
//! lists.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use vc_api::VirtualCluster;

use super::events::Changes;
use super::objects::cached;
use crate::claims::{
    ClaimDecision, ClaimReport, Claimant, claim_patch, decide_claim, release_patch, should_release,
};
use crate::context::Context;
use crate::error::{Step, is_conflict, is_not_found};

/// Why a node could not be claimed or released.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing our claim onto a Node failed (other than a 409, which is retried).
    #[error("failed to claim node {node:?}")]
    Claim {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Removing our claim from a Node failed.
    #[error("failed to release node {node:?}")]
    Release {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

/// The VirtualCluster as the claimant written on its nodes.
pub(super) fn claimant(vc: &VirtualCluster) -> Claimant {
    Claimant {
        namespace: vc.namespace().unwrap_or_default(),
        name: vc.name_any(),
        uid: vc.uid().unwrap_or_default(),
    }
}

/// Claims the listed nodes and releases the ones we hold but no longer list; the
/// report's `held` is sorted.
pub(super) async fn claim_nodes(
    vc: &VirtualCluster,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<ClaimReport, Error> {
    let claimant = claimant(vc);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let listed: BTreeSet<&str> = vc
        .spec
        .promote_resources
        .nodes
        .iter()
        .map(String::as_str)
        .collect();
    let mut report = ClaimReport::default();
    for name in &listed {
        let Some(node) = cached(&ctx.stores.nodes, None, name) else {
            report.missing.push((*name).to_owned());
            continue;
        };
        match decide_claim(&node, &claimant) {
            ClaimDecision::Keep => report.held.push((*name).to_owned()),
            ClaimDecision::Conflict {
                namespace,
                name: owner,
            } => {
                report
                    .conflicts
                    .insert((*name).to_owned(), format!("{namespace}/{owner}"));
            }
            ClaimDecision::ControlPlane => report.control_plane.push((*name).to_owned()),
            ClaimDecision::Claim => {
                let patch = claim_patch(&node, &claimant);
                match nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        report.held.push((*name).to_owned());
                        changes.record(
                            "NodeClaimed",
                            Step::ClaimNodes,
                            format!("claimed node {name:?}"),
                        );
                    }
                    Err(error) if is_conflict(&error) => report.raced.push((*name).to_owned()),
                    Err(source) => {
                        return Err(Error::Claim {
                            node: (*name).to_owned(),
                            source,
                        });
                    }
                }
            }
        }
    }
    for node in ctx.stores.nodes.state() {
        let name = node.name_any();
        if listed.contains(name.as_str()) || !should_release(&node, &claimant) {
            continue;
        }
        release_node(&nodes, &node, changes).await?;
    }
    Ok(report)
}

/// Removes our claim from `node`; a node already gone needs none.
pub(super) async fn release_node(
    nodes: &Api<Node>,
    node: &Node,
    changes: &mut Changes,
) -> Result<(), Error> {
    let name = node.name_any();
    match nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&release_patch(node)),
        )
        .await
    {
        Ok(_) => {
            changes.record(
                "NodeReleased",
                Step::ClaimNodes,
                format!("released node {name:?}"),
            );
            Ok(())
        }
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::Release { node: name, source }),
    }
}

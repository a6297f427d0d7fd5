//! `nodes add|remove`.

use anyhow::{Result, bail};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kubectl_vc::cli::{NodesAction, NodesChange, ServerDryRun};
use kubectl_vc::output;
use vc_api::VirtualCluster;
use vc_api::constants::PLUGIN_FIELD_MANAGER;

use super::errors;
use super::session::Session;

/// How often a change is retried when someone else changed the object in between.
const CONFLICT_RETRIES: usize = 5;

/// The node list after adding or removing `nodes`, and the requested nodes that were
/// already (add) or not (remove) in the list.
pub fn changed_nodes(
    current: &[String],
    nodes: &[String],
    add: bool,
) -> (Vec<String>, Vec<String>) {
    let mut result = current.to_vec();
    let mut unchanged = Vec::new();
    for node in nodes {
        let present = result.contains(node);
        match (add, present) {
            (true, false) => result.push(node.clone()),
            (false, true) => result.retain(|existing| existing != node),
            _ => unchanged.push(node.clone()),
        }
    }
    (result, unchanged)
}

/// Sends a JSON merge patch of `spec.promoteResources.nodes` with the object's
/// resourceVersion as precondition, so a concurrent change is never overwritten; the
/// webhook's answer (a denial such as a node owned by another tenant) is printed verbatim.
pub async fn change(session: &Session, action: &NodesAction) -> Result<()> {
    let (change, add) = match action {
        NodesAction::Add(change) => (change, true),
        NodesAction::Remove(change) => (change, false),
    };
    let NodesChange {
        name,
        nodes,
        dry_run,
    } = change;
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let params = PatchParams {
        dry_run: *dry_run == Some(ServerDryRun::Server),
        field_manager: Some(PLUGIN_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let cluster = api
            .get(name)
            .await
            .map_err(|error| errors::api(error, &session.namespace, Some(name)))?;
        let (wanted, unchanged) = changed_nodes(&cluster.spec.promote_resources.nodes, nodes, add);
        for node in &unchanged {
            let relation = if add { "already in" } else { "not in" };
            eprintln!("warning: node \"{node}\" is {relation} VirtualCluster \"{name}\"");
        }
        if wanted == cluster.spec.promote_resources.nodes {
            println!("{} unchanged", output::resource_name(&cluster));
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": cluster.metadata.resource_version},
            "spec": {"promoteResources": {"nodes": wanted}},
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(patched) => {
                let suffix = if params.dry_run {
                    " (server dry run)"
                } else {
                    ""
                };
                println!("{} patched{suffix}", output::resource_name(&patched));
                return Ok(());
            }
            Err(error) if errors::is_conflict(&error) => continue,
            Err(error) => return Err(errors::api(error, &session.namespace, Some(name))),
        }
    }
    bail!("VirtualCluster \"{name}\" kept changing while its nodes were updated; try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn add_appends_only_new_nodes() {
        let (result, unchanged) = changed_nodes(&names(&["a", "b"]), &names(&["b", "c"]), true);
        assert_eq!(result, names(&["a", "b", "c"]));
        assert_eq!(unchanged, names(&["b"]));
    }

    #[test]
    fn remove_keeps_the_order_of_the_rest() {
        let (result, unchanged) =
            changed_nodes(&names(&["a", "b", "c"]), &names(&["b", "x"]), false);
        assert_eq!(result, names(&["a", "c"]));
        assert_eq!(unchanged, names(&["x"]));
    }
}

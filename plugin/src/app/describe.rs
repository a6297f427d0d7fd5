//! `describe`.

use anyhow::Result;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::Api;
use kube::api::ListParams;
use kubectl_vc::cli::DescribeArgs;
use kubectl_vc::output::{self, EventLine, NodeReadiness};
use vc_api::VirtualCluster;

use super::errors;
use super::session::Session;

/// Prints the describe page: the object, the readiness of its promoted host nodes and the
/// Events about it.
pub async fn describe(session: &Session, args: &DescribeArgs) -> Result<()> {
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let cluster = api
        .get(&args.name)
        .await
        .map_err(|error| errors::api(error, &session.namespace, Some(&args.name)))?;
    let promoted = match cluster.status.as_ref().map(|status| &status.promoted_nodes) {
        Some(nodes) if !nodes.is_empty() => nodes.clone(),
        _ => cluster.spec.promote_resources.nodes.clone(),
    };
    let nodes = node_readiness(session, &promoted).await;
    let events = events_about(session, &cluster).await;
    print!(
        "{}",
        output::describe(&cluster, &nodes, events.as_deref(), jiff::Timestamp::now())
    );
    Ok(())
}

async fn node_readiness(session: &Session, names: &[String]) -> Vec<NodeReadiness> {
    let api: Api<Node> = Api::all(session.client.clone());
    let mut readiness = Vec::new();
    for name in names {
        let ready = match api.get_opt(name).await {
            Ok(Some(node)) => node
                .status
                .and_then(|status| status.conditions)
                .and_then(|conditions| {
                    conditions
                        .into_iter()
                        .find(|condition| condition.type_ == "Ready")
                })
                .map_or_else(|| "Unknown".to_owned(), |condition| condition.status),
            Ok(None) => "<not found on the host>".to_owned(),
            Err(kube::Error::Api(status)) => format!("<unknown: {}>", status.reason),
            Err(_) => "<unknown: unreachable>".to_owned(),
        };
        readiness.push(NodeReadiness {
            name: name.clone(),
            ready,
        });
    }
    readiness
}

/// Events whose involvedObject is this VirtualCluster, newest last. Asks the server to
/// filter by UID; also filters here, so a server that ignores the selector still gives the
/// right answer. `None` when events cannot be listed (for example without RBAC).
async fn events_about(session: &Session, cluster: &VirtualCluster) -> Option<Vec<EventLine>> {
    let api: Api<Event> = Api::namespaced(session.client.clone(), &session.namespace);
    let uid = cluster.metadata.uid.clone().unwrap_or_default();
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let selected = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let listed = match api.list(&selected).await {
        Ok(list) => list,
        Err(_) => api.list(&ListParams::default()).await.ok()?,
    };
    let mut lines: Vec<EventLine> = listed
        .items
        .into_iter()
        .filter(|event| {
            let object = &event.involved_object;
            object.kind.as_deref() == Some(vc_api::constants::KIND)
                && object.name.as_deref() == Some(name.as_str())
                && (uid.is_empty()
                    || object
                        .uid
                        .as_deref()
                        .is_none_or(|event_uid| event_uid == uid))
        })
        .map(|event| EventLine {
            type_: event.type_.unwrap_or_default(),
            reason: event.reason.unwrap_or_default(),
            last_seen: event
                .last_timestamp
                .map(|time| time.0)
                .or(event.event_time.map(|time| time.0))
                .or(event.first_timestamp.map(|time| time.0))
                .or(event.metadata.creation_timestamp.map(|time| time.0)),
            count: event.count.unwrap_or(1),
            from: event
                .reporting_component
                .filter(|component| !component.is_empty())
                .or(event.source.and_then(|source| source.component))
                .unwrap_or_default(),
            message: event.message.unwrap_or_default().trim().to_owned(),
        })
        .collect();
    lines.sort_by_key(|line| line.last_seen);
    Some(lines)
}

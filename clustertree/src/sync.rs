//! The node loop: reads the VirtualCluster and the host nodes it may read (by name, as
//! its host RBAC allows), writes the tenant Nodes [`crate::nodes::desired`] says, renews
//! their Leases like a kubelet, and deletes the mirrored Nodes no longer wanted, each
//! only after the tenant pods bound to it are gone (deleted gracefully here; the pod
//! loop then removes their host pods and finishes them).
//!
//! Level-triggered on a short period: a promoted or returned node, a host node turning
//! NotReady, or a changed pool shows in the tenant within one period, without a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{CLUSTERTREE_FIELD_MANAGER, MIRRORED_NODE_LABEL};

use crate::nodes;

/// How often Leases are renewed, as a kubelet does (a quarter of their duration); the
/// Nodes themselves follow the host every period.
const LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// Namespace of the kubelets' Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// A Lease not renewed for this long makes the tenant's node-lifecycle controller mark
/// the node NotReady.
const LEASE_DURATION_SECONDS: i32 = 40;

/// Which tenant this instance serves.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// Where the tenant's Nodes send the tenant apiserver for logs and exec; none when
    /// the kubelet API is not served.
    pub kubelet: Option<nodes::KubeletEndpoint>,
}

/// Why one pass failed; the loop retries on the next period.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading VirtualCluster {namespace}/{name} on the host: {source}")]
    ReadVirtualCluster {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("reading host node {node}: {source}")]
    ReadHostNode { node: String, source: kube::Error },
    #[error("listing the tenant's Nodes: {0}")]
    ListTenantNodes(kube::Error),
    #[error("writing tenant Node {node}: {source}")]
    WriteTenantNode { node: String, source: kube::Error },
    #[error("renewing the Lease of tenant Node {node}: {source}")]
    RenewLease { node: String, source: kube::Error },
    #[error("deleting tenant Node {node}: {source}")]
    DeleteTenantNode { node: String, source: kube::Error },
    #[error("listing the tenant pods bound to returned Node {node} (spec.nodeName): {source}")]
    ListBoundPods { node: String, source: kube::Error },
    #[error("deleting tenant pod {namespace}/{pod} bound to returned Node {node}: {source}")]
    DeleteBoundPod {
        node: String,
        namespace: String,
        pod: String,
        source: kube::Error,
    },
}

/// One pass, renewing the Leases when `renew_leases`; returns the names of the tenant
/// Nodes it wrote.
pub async fn pass(
    host: &Client,
    tenant: &Client,
    target: &Target,
    renew_leases: bool,
) -> Result<Vec<String>, SyncError> {
    let virtual_cluster = Api::<VirtualCluster>::namespaced(host.clone(), &target.namespace)
        .get_opt(&target.name)
        .await
        .map_err(|source| SyncError::ReadVirtualCluster {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            source,
        })?;
    let desired = match &virtual_cluster {
        Some(virtual_cluster) => {
            let host_nodes = read_host_nodes(host, virtual_cluster).await?;
            nodes::desired(virtual_cluster, &host_nodes, target.kubelet.as_ref())
        }
        // Gone: the tenant is being torn down; nothing of the host is mirrored any more.
        None => Default::default(),
    };
    let tenant_nodes = Api::<Node>::all(tenant.clone());
    let params = PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force();
    for (name, node) in &desired {
        let mut body = serde_json::to_value(node).map_err(|error| SyncError::WriteTenantNode {
            node: name.clone(),
            source: kube::Error::SerdeError(error),
        })?;
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Node");
        let status = body.get("status").cloned();
        if let Some(object) = body.as_object_mut() {
            object.remove("status");
        }
        let written = tenant_nodes
            .patch(name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| SyncError::WriteTenantNode {
                node: name.clone(),
                source,
            })?;
        if let Some(status) = status {
            tenant_nodes
                .patch_status(
                    name,
                    &params,
                    &Patch::Apply(&json!({"apiVersion": "v1", "kind": "Node", "status": status})),
                )
                .await
                .map_err(|source| SyncError::WriteTenantNode {
                    node: name.clone(),
                    source,
                })?;
        }
        if renew_leases {
            renew_lease(tenant, &written).await?;
        }
    }
    let existing = tenant_nodes
        .list(&ListParams::default().labels(MIRRORED_NODE_LABEL))
        .await
        .map_err(SyncError::ListTenantNodes)?;
    // One returned node failing must not hold back the others: each is tried, the first
    // failure reported once all were.
    let mut first_error = None;
    for stale in existing
        .items
        .iter()
        .filter(|node| nodes::is_mirrored(node) && !desired.contains_key(&node.name_any()))
    {
        if let Err(error) = retire(tenant, &tenant_nodes, stale).await {
            tracing::warn!(%error, "returned node not retired yet");
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(desired.into_keys().collect())
}

/// Deletes the tenant pods bound to a returned Node, and the Node once none remain; a
/// Node whose pods are still terminating waits for a later pass.
async fn retire(tenant: &Client, tenant_nodes: &Api<Node>, stale: &Node) -> Result<(), SyncError> {
    let name = stale.name_any();
    let bound = Api::<Pod>::all(tenant.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await
        .map_err(|source| SyncError::ListBoundPods {
            node: name.clone(),
            source,
        })?;
    if !bound.items.is_empty() {
        for pod in nodes::pods_to_delete(&bound.items) {
            let delete = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<Pod>::namespaced(tenant.clone(), &pod.namespace)
                .delete(&pod.name, &delete)
                .await
            {
                Ok(_) => tracing::info!(
                    node = %name, pod = %format!("{}/{}", pod.namespace, pod.name),
                    "tenant pod of a returned node deleted"
                ),
                // Gone, or replaced by another pod of the same name: not ours to delete.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(source) => {
                    return Err(SyncError::DeleteBoundPod {
                        node: name,
                        namespace: pod.namespace,
                        pod: pod.name,
                        source,
                    });
                }
            }
        }
        return Ok(());
    }
    let delete = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: stale.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match tenant_nodes.delete(&name, &delete).await {
        Ok(_) => {
            tracing::info!(node = %name, "tenant node no longer promoted and without pods; deleted")
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => return Err(SyncError::DeleteTenantNode { node: name, source }),
    }
    Ok(())
}

/// The host nodes the spec names, each read by name (the host RBAC grants `get` on
/// exactly the claimed nodes); one not found or forbidden is simply not mirrored.
async fn read_host_nodes(
    host: &Client,
    virtual_cluster: &VirtualCluster,
) -> Result<Vec<Node>, SyncError> {
    let api = Api::<Node>::all(host.clone());
    let names: BTreeSet<&String> = virtual_cluster
        .spec
        .promote_resources
        .nodes
        .iter()
        .collect();
    let mut found = Vec::new();
    for name in names {
        match api.get_opt(name).await {
            Ok(Some(node)) => found.push(node),
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            Err(source) => {
                return Err(SyncError::ReadHostNode {
                    node: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(found)
}

/// The Node's Lease, owned by the Node as a kubelet's is, renewed now.
async fn renew_lease(tenant: &Client, node: &Node) -> Result<(), SyncError> {
    let name = node.name_any();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": name, "namespace": NODE_LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.uid()}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now},
    });
    Api::<Lease>::namespaced(tenant.clone(), NODE_LEASE_NAMESPACE)
        .patch(
            &name,
            &PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map(drop)
        .map_err(|source| SyncError::RenewLease { node: name, source })
}

/// Runs passes every `period` until `shutdown` resolves, logging failed passes.
pub async fn run(
    host: Client,
    tenant: Client,
    target: Target,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last: Option<Vec<String>> = None;
    let mut renewed: Option<tokio::time::Instant> = None;
    loop {
        let due = renewed.is_none_or(|at| at.elapsed() >= LEASE_RENEWAL);
        match pass(&host, &tenant, &target, due).await {
            Ok(written) => {
                if due {
                    renewed = Some(tokio::time::Instant::now());
                }
                if last.as_ref() != Some(&written) {
                    tracing::info!(nodes = ?written, "tenant nodes in sync");
                    last = Some(written);
                }
            }
            Err(error) => tracing::warn!(%error, "node sync failed; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

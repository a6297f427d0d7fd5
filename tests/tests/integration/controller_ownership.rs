//! Nothing is adopted, applied over or deleted by name alone: the controller against the
//! test API server, with objects of a tenant's names created beforehand by someone else
//! (a sibling VirtualCluster, a user), and the webhook bypassed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vc_api::constants::{MANAGED_BY_LABEL, OWNER_UID_ANNOTATION, tenant_workload_namespace};

use crate::controller_common::Harness;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until `namespace/name`'s status message contains `needle`.
async fn message_containing(harness: &Harness, namespace: &str, name: &str, needle: &str) {
    let api = harness.vcs(namespace);
    harness
        .eventually(
            TIMEOUT,
            &format!("{namespace}/{name}'s status to say {needle:?}"),
            || {
                let api = api.clone();
                async move {
                    let vc = api.get_opt(name).await.ok().flatten()?;
                    vc.status
                        .as_ref()
                        .and_then(|status| status.message.as_deref())
                        .is_some_and(|message| message.contains(needle))
                        .then_some(())
                }
            },
        )
        .await;
}

async fn delete_and_wait(harness: &Harness, namespace: &str, name: &str) {
    harness
        .vcs(namespace)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    let api = harness.vcs(namespace);
    harness
        .eventually(TIMEOUT, &format!("{namespace}/{name} to disappear"), || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sibling_named_x_etcd_cannot_share_x_ca() {
    let harness = Harness::start(1, false).await;
    let x = harness.create_vc("team-a", "x", &[]).await;
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), "team-a");
    let before = harness
        .eventually(TIMEOUT, "x's etcd CA Secret x-etcd-ca", || {
            let secrets = secrets.clone();
            async move { secrets.get_opt("x-etcd-ca").await.ok().flatten() }
        })
        .await;

    // x-etcd's cluster CA would be Secret x-etcd-ca, which is x's etcd CA.
    harness.create_vc("team-a", "x-etcd", &[]).await;
    message_containing(
        &harness,
        "team-a",
        "x-etcd",
        &format!(
            "Secret \"team-a/x-etcd-ca\" already exists and belongs to VirtualCluster team-a/x (UID {})",
            x.uid().unwrap()
        ),
    )
    .await;
    let after = secrets.get("x-etcd-ca").await.unwrap();
    assert_eq!(after.data, before.data, "x's etcd CA was rewritten");
    let owners: Vec<String> = after
        .owner_references()
        .iter()
        .map(|reference| reference.uid.clone())
        .collect();
    assert_eq!(owners, [x.uid().unwrap()], "x-etcd took a share of x's CA");
    assert!(
        secrets
            .get_opt("x-etcd-apiserver-tls")
            .await
            .unwrap()
            .is_none(),
        "x-etcd issued certificates from a CA that is not its own"
    );

    delete_and_wait(&harness, "team-a", "x-etcd").await;
    assert_eq!(secrets.get("x-etcd-ca").await.unwrap().data, before.data);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_workload_namespace_is_not_adopted() {
    let harness = Harness::start(1, true).await;
    let workload = tenant_workload_namespace("team-c", "y");
    let namespaces: Api<Namespace> = Api::all(harness.admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": workload, "labels": {"owner": "mallory"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(harness.admin.clone(), &workload);
    let binding = bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "mallory-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    harness.create_vc("team-c", "y", &[]).await;
    message_containing(
        &harness,
        "team-c",
        "y",
        &format!(
            "Namespace \"{workload}\" already exists and belongs to someone outside kosmos-vc"
        ),
    )
    .await;
    let namespace = namespaces.get(&workload).await.unwrap();
    assert!(
        !namespace.labels().contains_key(MANAGED_BY_LABEL)
            && !namespace.annotations().contains_key(OWNER_UID_ANNOTATION),
        "the namespace was adopted: {:?}",
        namespace.metadata
    );
    let quotas: Api<ResourceQuota> = Api::namespaced(harness.admin.clone(), &workload);
    assert!(quotas.get_opt("y-pool").await.unwrap().is_none());
    let kept = bindings.get("mallory-admin").await.unwrap();
    assert_eq!(kept.resource_version(), binding.resource_version());
    assert_eq!(
        bindings
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["mallory-admin"],
        "the tenant's bindings landed in a namespace someone else holds"
    );

    delete_and_wait(&harness, "team-c", "y").await;
    assert!(
        namespaces
            .get_opt(&workload)
            .await
            .unwrap()
            .is_some_and(|namespace| namespace.metadata.deletion_timestamp.is_none()),
        "cleanup deleted a namespace that was never the tenant's"
    );
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_never_deletes_what_is_not_ours() {
    let harness = Harness::start(1, true).await;
    let name = "kosmos-vc:team-d:z:clustertree";
    let roles: Api<ClusterRole> = Api::all(harness.admin.clone());
    let foreign = roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    harness.create_vc("team-d", "z", &[]).await;
    message_containing(
        &harness,
        "team-d",
        "z",
        &format!("ClusterRole \"{name}\" already exists and belongs to someone outside kosmos-vc"),
    )
    .await;
    assert_eq!(
        roles.get(name).await.unwrap().resource_version(),
        foreign.resource_version(),
        "the ClusterRole was applied over"
    );

    delete_and_wait(&harness, "team-d", "z").await;
    let survivor = roles.get_opt(name).await.unwrap();
    assert_eq!(
        survivor.map(|role| role.uid()),
        Some(foreign.uid()),
        "the tenant's cleanup deleted a ClusterRole it never created"
    );
    let namespaces: Api<Namespace> = Api::all(harness.admin.clone());
    harness
        .eventually(TIMEOUT, "z's own workload namespace to go", || {
            let namespaces = namespaces.clone();
            async move {
                let found = namespaces
                    .get_opt(&tenant_workload_namespace("team-d", "z"))
                    .await
                    .ok()?;
                found
                    .is_none_or(|namespace| namespace.metadata.deletion_timestamp.is_some())
                    .then_some(())
            }
        })
        .await;
    harness.shutdown().await;
}

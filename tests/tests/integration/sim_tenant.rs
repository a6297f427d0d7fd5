//! The tenant API server and clustertree simulators against the test API server: a tenant
//! kube-apiserver Deployment that becomes ready gets a real API server on its Service's
//! cluster IP with the certificates it mounts; the clustertree registers virtual Nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use vc_tests::apiserver::{TestApiServer, TestApiServerOptions};
use vc_tests::simulation::clustertree::{self, ClusterTreeOptions};
use vc_tests::simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_tests::simulation::tenant_apiserver::{self, TenantOptions};
use vc_tests::simulation::workloads::{self, WorkloadOptions};

use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(20);

/// The tenant's PKI: a CA, the apiserver serving certificate, an admin client certificate.
struct TenantPki {
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
}

fn tenant_pki(ca_name: &str, sans: Vec<String>) -> TenantPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let serving_key = rcgen::KeyPair::generate().unwrap();
    let mut serving = rcgen::CertificateParams::new(sans).unwrap();
    serving
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer).unwrap();
    let admin_key = rcgen::KeyPair::generate().unwrap();
    let mut admin = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    admin
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes-admin");
    admin
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer).unwrap();
    TenantPki {
        ca_pem: ca.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
    }
}

fn kubeconfig(server: &str, ca: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: t\n  context:\n    cluster: t\n    user: admin\ncurrent-context: t\n",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

async fn client_for(kubeconfig_text: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn labels(component: &str) -> Value {
    json!({"app.kubernetes.io/managed-by": "kosmos-vc", "vc.kosmos.io/virtualcluster": "t1", "app.kubernetes.io/component": component})
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("team".to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

fn apiserver_deployment(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "t1-apiserver", "namespace": "team", "labels": labels("apiserver")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels("apiserver")},
            "template": {
                "metadata": {"labels": labels("apiserver")},
                "spec": {
                    "containers": [{
                        "name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.33.4",
                        "command": ["kube-apiserver"],
                        "args": [
                            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
                            "--secure-port=6443",
                            "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
                            "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key"
                        ],
                        "volumeMounts": [{"name": "k8s-certs", "mountPath": "/etc/kubernetes/pki", "readOnly": true}]
                    }],
                    "volumes": [{"name": "k8s-certs", "projected": {"sources": [
                        {"secret": {"name": "t1-ca", "items": [{"key": "tls.crt", "path": "ca.crt"}]}},
                        {"secret": {"name": "t1-apiserver-tls", "items": [
                            {"key": "tls.crt", "path": "apiserver.crt"}, {"key": "tls.key", "path": "apiserver.key"}
                        ]}}
                    ]}}]
                }
            }
        }
    }))
    .unwrap()
}

fn clustertree_deployment() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "t1-clustertree", "namespace": "team", "labels": labels("clustertree")},
        "spec": {
            "selector": {"matchLabels": labels("clustertree")},
            "template": {"metadata": {"labels": labels("clustertree")},
                         "spec": {"containers": [{"name": "clustertree", "image": "ghcr.io/kosmos-io/clustertree-cluster-manager:v0.5.0"}]}}
        }
    }))
    .unwrap()
}

fn kosmos_cluster(leaves: &[&str]) -> Value {
    let models: Vec<Value> = leaves
        .iter()
        .map(|n| json!({"leafNodeName": n, "nodeSelector": {"nodeName": n}}))
        .collect();
    json!({
        "apiVersion": "kosmos.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "host"},
        "spec": {"clusterTreeOptions": {"enable": true, "leafType": "k8s", "leafModels": models}}
    })
}

#[tokio::test]
async fn tenant_apiserver_serves_the_mounted_certificates_and_clustertree_registers_leaves() {
    let host_server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    let host = host_server.client().await.unwrap();
    let _nodes = NodeFleet::start(
        host.clone(),
        vec![
            NodeSpec::new("node1"),
            NodeSpec::new("node2").with_capacity("16", "64Gi"),
        ],
        FleetOptions { heartbeat: None },
    )
    .await
    .unwrap();
    let _workloads = workloads::spawn(
        host.clone(),
        WorkloadOptions {
            default_delay: Duration::from_millis(100),
            resync: Duration::from_millis(300),
            ..WorkloadOptions::default()
        },
    );
    let tenants = tenant_apiserver::spawn(
        host.clone(),
        TenantOptions {
            resync: Duration::from_millis(300),
            ..TenantOptions::default()
        },
    );
    let _tree = clustertree::spawn(
        host.clone(),
        ClusterTreeOptions {
            poll: Duration::from_millis(200),
            resync: Duration::from_millis(300),
            ..ClusterTreeOptions::default()
        },
    );

    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    Api::<Namespace>::all(host.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(host.clone(), "team");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "t1-apiserver", "namespace": "team", "labels": labels("apiserver")},
        "spec": {"selector": labels("apiserver"), "ports": [{"name": "https", "port": 6443, "targetPort": 6443}]}
    }))
    .unwrap();
    let cluster_ip = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let pki = tenant_pki(
        "t1-ca",
        vec![
            cluster_ip.clone(),
            "t1-apiserver.team.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ],
    );
    let secrets: Api<Secret> = Api::namespaced(host.clone(), "team");
    secrets
        .create(
            &PostParams::default(),
            &secret("t1-ca", &[("tls.crt", &pki.ca_pem)]),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "t1-apiserver-tls",
                &[
                    ("tls.crt", &pki.serving_cert),
                    ("tls.key", &pki.serving_key),
                ],
            ),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(host.clone(), "team");
    deployments
        .create(&PostParams::default(), &apiserver_deployment(1))
        .await
        .unwrap();

    // The kubeconfig the controller would write reaches the tenant on the cluster IP.
    let admin = kubeconfig(
        &format!("https://{cluster_ip}:6443"),
        &pki.ca_pem,
        &pki.admin_cert,
        &pki.admin_key,
    );
    let running = eventually(WAIT, "the tenant API server", || async {
        tenants.running().into_iter().find(|t| t.name == "t1")
    })
    .await;
    assert_eq!(running.addr.to_string(), format!("{cluster_ip}:6443"));
    let tenant = client_for(&admin).await;
    let namespaces = Api::<Namespace>::all(tenant.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(namespaces.items.iter().any(|n| n.name_any() == "default"));
    assert!(
        Api::<Deployment>::namespaced(tenant.clone(), "team")
            .get_opt("t1-apiserver")
            .await
            .unwrap()
            .is_none(),
        "the tenant does not see the host's objects"
    );

    // A client certificate from another CA is refused by the tenant.
    let stranger = tenant_pki("other-ca", vec!["127.0.0.1".to_owned()]);
    let foreign = kubeconfig(
        &format!("https://{cluster_ip}:6443"),
        &pki.ca_pem,
        &stranger.admin_cert,
        &stranger.admin_key,
    );
    let foreign_client = client_for(&foreign).await;
    assert!(
        Api::<Namespace>::all(foreign_client)
            .list(&ListParams::default())
            .await
            .is_err()
    );

    // The clustertree: Kosmos Cluster CRD and object in the tenant, admin kubeconfig Secret
    // (in-cluster address) and a ready clustertree Deployment on the host.
    Api::<CustomResourceDefinition>::all(tenant.clone())
        .create(
            &PostParams::default(),
            &vc_api::kosmos_cluster::kosmos_cluster_crd(),
        )
        .await
        .unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kosmos.io", "v1alpha1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> = Api::all_with(tenant.clone(), &resource);
    let cluster: DynamicObject =
        serde_json::from_value(kosmos_cluster(&["node1", "node2"])).unwrap();
    eventually(WAIT, "the Cluster to be created", || async {
        clusters.create(&PostParams::default(), &cluster).await.ok()
    })
    .await;
    let internal = kubeconfig(
        "https://t1-apiserver.team.svc:6443",
        &pki.ca_pem,
        &pki.admin_cert,
        &pki.admin_key,
    );
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "t1-admin-kubeconfig",
                &[("kubeconfig", &admin), ("kubeconfig-internal", &internal)],
            ),
        )
        .await
        .unwrap();
    deployments
        .create(&PostParams::default(), &clustertree_deployment())
        .await
        .unwrap();

    let tenant_nodes: Api<Node> = Api::all(tenant.clone());
    // A leaf is registered, then its status written: wait for both steps.
    let leaves = eventually(WAIT, "two leaf nodes with status in the tenant", || async {
        let list = tenant_nodes.list(&ListParams::default()).await.ok()?;
        let reported = list
            .items
            .iter()
            .all(|node| node.status.as_ref().is_some_and(|s| s.capacity.is_some()));
        (list.items.len() == 2 && reported).then_some(list.items)
    })
    .await;
    let node2 = leaves.iter().find(|n| n.name_any() == "node2").unwrap();
    let status = node2.status.clone().unwrap();
    assert_eq!(
        status.capacity.unwrap()["cpu"].0,
        "16",
        "the leaf has the host node's capacity"
    );
    assert_eq!(status.allocatable.unwrap()["memory"].0, "64Gi");
    assert_eq!(node2.labels()["kosmos.io/node"], "true");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // A leaf that disappears loses its node.
    let shrink = json!({"spec": {"clusterTreeOptions": {"leafModels": [{"leafNodeName": "node1", "nodeSelector": {"nodeName": "node1"}}]}}});
    clusters
        .patch("host", &PatchParams::default(), &Patch::Merge(&shrink))
        .await
        .unwrap();
    eventually(WAIT, "node2 to leave the tenant", || async {
        let names: Vec<String> = tenant_nodes
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        (names == ["node1"]).then_some(())
    })
    .await;

    // Scaled to zero, the tenant API server stops.
    deployments
        .patch(
            "t1-apiserver",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "the tenant API server to stop", || async {
        let refused = tokio::net::TcpStream::connect(format!("{cluster_ip}:6443"))
            .await
            .is_err();
        (tenants.running().is_empty() && refused).then_some(())
    })
    .await;
}

//! The tenant API server simulator against the test API server: a tenant kube-apiserver
//! Deployment that becomes ready gets an API server on its Service's cluster IP with the
//! certificates it mounts, and loses it when scaled to zero.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use vc_simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_simulation::tenant_apiserver::{self, TenantOptions};
use vc_simulation::workloads::{self, WorkloadOptions};
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

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

#[tokio::test]
async fn tenant_apiserver_serves_the_mounted_certificates_and_stops_when_scaled_to_zero() {
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

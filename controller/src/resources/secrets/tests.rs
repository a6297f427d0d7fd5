//! Tests of the PKI and admin kubeconfig Secrets.

use k8s_openapi::api::core::v1::Secret;
use pretty_assertions::assert_eq;

use crate::pki::kubeconfig;
use crate::resources::test_support::*;
use crate::resources::*;

#[test]
fn tls_secrets_use_the_contract_keys() {
    let state = build(&default_vc());
    for secret in &state.pki_secrets {
        let name = secret.metadata.name.as_deref().unwrap();
        let keys: Vec<&str> = secret
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: &[&str] = match name {
            "prod-ca" | "prod-etcd-ca" | "prod-front-proxy-ca" => &["tls.crt", "tls.key"],
            "prod-admin-signer" => &["client-ca.crt", "tls.crt", "tls.key"],
            "prod-sa" => &["sa.key", "sa.pub"],
            "prod-controller-manager-kubeconfig" | "prod-scheduler-kubeconfig" => &["kubeconfig"],
            "prod-apiserver-admission" => &["admission.yaml", "webhook-kubeconfig.yaml"],
            "prod-apiserver-encryption" => &["encryption-config.yaml"],
            _ => &["ca.crt", "tls.crt", "tls.key"],
        };
        assert_eq!(keys, expected, "{name}");
    }
    let admin = state.admin_kubeconfig.data.as_ref().unwrap();
    let keys: Vec<&str> = admin.keys().map(String::as_str).collect();
    assert_eq!(keys, ["kubeconfig", "kubeconfig-internal"]);
}

#[test]
fn admin_kubeconfig_prefers_external_hosts_then_load_balancer_then_cluster_ip() {
    let server_of = |secret: &Secret, key: &str| {
        let yaml = String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
        let config: kubeconfig::Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
        config.clusters[0].cluster.server.clone()
    };
    let with_hosts = virtual_cluster(
        "  controlPlane:\n    apiServer:\n      externalHosts: [prod.example.com, 203.0.113.9]\n",
    );
    let mut seen = observed();
    seen.load_balancer_hosts = vec!["198.51.100.4".to_owned()];
    let secret = |vc: &VirtualCluster, observed: &Observed| {
        secrets::admin_kubeconfig_secret(&tenant(vc), observed, pki()).unwrap()
    };
    let admin = secret(&with_hosts, &seen);
    assert_eq!(
        server_of(&admin, "kubeconfig"),
        "https://prod.example.com:6443"
    );
    assert_eq!(
        server_of(&admin, "kubeconfig-internal"),
        "https://prod-apiserver.team-a.svc:6443"
    );
    let plain = default_vc();
    assert_eq!(
        server_of(&secret(&plain, &seen), "kubeconfig"),
        "https://198.51.100.4:6443"
    );
    assert_eq!(
        server_of(&secret(&plain, &observed()), "kubeconfig"),
        "https://127.100.0.7:6443"
    );
    let mut v6 = observed();
    v6.apiserver_cluster_ip = Some("fd00::7".parse().unwrap());
    assert_eq!(
        server_of(&secret(&plain, &v6), "kubeconfig"),
        "https://[fd00::7]:6443"
    );
}

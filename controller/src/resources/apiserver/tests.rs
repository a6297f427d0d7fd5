//! Tests of the kube-apiserver builders.

use pretty_assertions::assert_eq;
use vc_api::constants;

use crate::pki::inspect_certificate;
use crate::resources::test_support::*;
use crate::resources::*;

#[test]
fn the_apiserver_authenticates_to_webhooks_with_its_kubelet_client_certificate() {
    let state = build(&default_vc());
    let secret = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-admission"))
        .unwrap();
    let data = secret.data.as_ref().unwrap();
    let file = |key: &str| -> serde_json::Value { serde_yaml::from_slice(&data[key].0).unwrap() };
    assert_eq!(
        file("admission.yaml")["plugins"][0]["configuration"]["kubeConfigFile"],
        "/etc/kubernetes/admission/webhook-kubeconfig.yaml"
    );
    assert_eq!(
        file("webhook-kubeconfig.yaml")["users"],
        serde_json::json!([{"name": "*", "user": {
            "client-certificate": "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "client-key": "/etc/kubernetes/pki/apiserver-kubelet-client.key"}}])
    );
    let pod = state
        .apiserver_deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    assert!(args.contains(
        &"--admission-control-config-file=/etc/kubernetes/admission/admission.yaml".to_owned()
    ));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/kubernetes/admission")
    );
}

#[test]
fn the_apiserver_seals_secrets_with_the_stored_key() {
    let state = build(&default_vc());
    let secret = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-encryption"))
        .unwrap();
    let file = &secret.data.as_ref().unwrap()["encryption-config.yaml"].0;
    let config = crate::pki::EncryptionConfig::parse(file).unwrap();
    assert_eq!(&config, test_support::pki().encryption());
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[constants::COMPONENT_LABEL],
        "apiserver"
    );
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        default_vc().metadata.uid.unwrap(),
        "stamped as this VirtualCluster's"
    );
    let pod = pod_spec(&state.apiserver_deployment);
    let args = pod.containers[0].args.clone().unwrap();
    assert!(
        args.contains(
            &"--encryption-provider-config=/etc/kubernetes/encryption/encryption-config.yaml"
                .to_owned()
        ),
        "{args:?}"
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.mount_path == "/etc/kubernetes/encryption")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let sources = volume.projected.clone().unwrap().sources.unwrap();
    assert_eq!(
        sources[0].secret.as_ref().unwrap().name,
        "prod-apiserver-encryption"
    );
}

#[test]
fn apiserver_runs_kubeadm_flags_against_the_tenant_etcd() {
    let state = build(&default_vc());
    let pod = pod_spec(&state.apiserver_deployment);
    let apiserver = container(pod);
    assert_eq!(
        apiserver.image.as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.33.4")
    );
    let expected = [
        ("etcd-servers", "https://prod-etcd.team-a.svc:2379"),
        ("etcd-cafile", "/etc/kubernetes/pki/etcd/ca.crt"),
        (
            "etcd-certfile",
            "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        ),
        (
            "etcd-keyfile",
            "/etc/kubernetes/pki/apiserver-etcd-client.key",
        ),
        ("client-ca-file", "/etc/kubernetes/pki/client-ca.crt"),
        ("tls-cert-file", "/etc/kubernetes/pki/apiserver.crt"),
        ("tls-private-key-file", "/etc/kubernetes/pki/apiserver.key"),
        ("service-account-key-file", "/etc/kubernetes/pki/sa.pub"),
        (
            "service-account-signing-key-file",
            "/etc/kubernetes/pki/sa.key",
        ),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
        ),
        ("service-cluster-ip-range", "10.96.0.0/12"),
        (
            "requestheader-client-ca-file",
            "/etc/kubernetes/pki/front-proxy-ca.crt",
        ),
        ("requestheader-allowed-names", "front-proxy-client"),
        (
            "proxy-client-cert-file",
            "/etc/kubernetes/pki/front-proxy-client.crt",
        ),
        (
            "kubelet-client-certificate",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        ),
        (
            "kubelet-client-key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
        ),
        ("authorization-mode", "Node,RBAC"),
        ("enable-admission-plugins", "NodeRestriction"),
        ("secure-port", "6443"),
    ];
    for (name, value) in expected {
        assert_eq!(flag(apiserver, name), Some(value), "--{name}");
    }
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        (get.path.clone().unwrap(), get.scheme.clone().unwrap())
    };
    assert_eq!(
        probe_path(&apiserver.liveness_probe),
        ("/livez".to_owned(), "HTTPS".to_owned())
    );
    assert_eq!(
        probe_path(&apiserver.readiness_probe),
        ("/readyz".to_owned(), "HTTPS".to_owned())
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_flag_files_are_mounted(&state, pod);
}

#[test]
fn apiserver_replicas_and_service_follow_the_spec() {
    let vc = virtual_cluster(
        "  kubernetesVersion: v1.34.1\n  controlPlane:\n    apiServer:\n      replicas: 3\n      serviceType: LoadBalancer\n",
    );
    let state = build(&vc);
    assert_eq!(
        state.apiserver_deployment.spec.as_ref().unwrap().replicas,
        Some(3)
    );
    assert_eq!(
        container(pod_spec(&state.apiserver_deployment))
            .image
            .as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.34.1")
    );
    let service = state.apiserver_service.spec.as_ref().unwrap();
    assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
    let port = &service.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 6443));
}

#[test]
fn tenant_apiserver_refuses_privileged_containers() {
    let args = apiserver::args(&tenant(&default_vc()), &BuildContext::default());
    assert!(
        args.contains(&"--allow-privileged=false".to_owned()),
        "{args:?}"
    );
}

/// `kubernetes.default.svc` in the tenant's DNS is the apiserver Service's cluster IP,
/// so that Service answers on 443 too and the serving certificate names it.
#[test]
fn kubernetes_default_svc_reaches_the_tenant_apiserver_on_443() {
    let state = build(&default_vc());
    let ports: Vec<(Option<&str>, i32, Option<String>)> = state
        .apiserver_service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|port| {
            (
                port.name.as_deref(),
                port.port,
                port.target_port
                    .as_ref()
                    .map(|target| format!("{target:?}")),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (Some("https"), 6443, Some("Int(6443)".to_owned())),
            (Some("kubernetes"), 443, Some("Int(6443)".to_owned())),
        ]
    );
    // The clustertree pins the name to the cluster IP the builders observed.
    let tree = container(pod_spec(&state.clustertree.deployment));
    assert_eq!(flag(tree, "apiserver-cluster-ip"), Some("127.100.0.7"));
    let serving = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-tls"))
        .unwrap();
    let facts =
        inspect_certificate(&serving.data.as_ref().unwrap()[crate::pki::TLS_CERT_KEY].0).unwrap();
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        assert!(
            facts.dns_names.contains(name),
            "{name}: {:?}",
            facts.dns_names
        );
    }
    assert!(
        facts
            .ip_addresses
            .contains(&"127.100.0.7".parse::<std::net::IpAddr>().unwrap()),
        "{:?}",
        facts.ip_addresses
    );
    // Before the cluster IP is known there is nothing to pin.
    let unknown = DesiredState::build(
        &default_vc(),
        &BuildContext::default(),
        &Observed {
            apiserver_cluster_ip: None,
            ..observed()
        },
        pki(),
    )
    .unwrap();
    assert_eq!(
        flag(
            container(pod_spec(&unknown.clustertree.deployment)),
            "apiserver-cluster-ip"
        ),
        None
    );
}

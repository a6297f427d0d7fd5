//! Tests of the kube-controller-manager and kube-scheduler builders.

use pretty_assertions::assert_eq;

use crate::pki::inspect_certificate;
use crate::pki::kubeconfig;
use crate::resources::test_support::*;

#[test]
fn leader_election_is_on_only_with_several_replicas() {
    for (replicas, elect) in [(1, "false"), (2, "true"), (3, "true")] {
        let vc = virtual_cluster(&format!(
            "  controlPlane:\n    apiServer:\n      replicas: {replicas}\n"
        ));
        let state = build(&vc);
        for deployment in [&state.controller_manager, &state.scheduler] {
            assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(replicas));
            assert_eq!(
                flag(container(pod_spec(deployment)), "leader-elect"),
                Some(elect)
            );
        }
    }
}

#[test]
fn controller_manager_and_scheduler_use_their_own_kubeconfig() {
    let state = build(&default_vc());
    for (deployment, secret, common_name) in [
        (
            &state.controller_manager,
            "prod-controller-manager-kubeconfig",
            "system:kube-controller-manager",
        ),
        (
            &state.scheduler,
            "prod-scheduler-kubeconfig",
            "system:kube-scheduler",
        ),
    ] {
        let pod = pod_spec(deployment);
        assert_flag_files_are_mounted(&state, pod);
        let files = mounted_files(pod, container(pod));
        let kubeconfig_path = flag(container(pod), "kubeconfig").unwrap();
        assert_eq!(files[kubeconfig_path].0, secret);
        let stored = state
            .pki_secrets
            .iter()
            .find(|candidate| candidate.metadata.name.as_deref() == Some(secret))
            .unwrap();
        let yaml =
            String::from_utf8(stored.data.as_ref().unwrap()["kubeconfig"].0.clone()).unwrap();
        let config: kubeconfig::Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            config.clusters[0].cluster.server,
            "https://prod-apiserver.team-a.svc:6443"
        );
        let credentials = kubeconfig::client_credentials(&yaml).unwrap();
        let facts = inspect_certificate(credentials.cert_pem.as_bytes()).unwrap();
        assert_eq!(facts.common_name, common_name);
    }
    let manager = container(pod_spec(&state.controller_manager));
    assert_eq!(
        flag(manager, "cluster-signing-key-file"),
        Some("/etc/kubernetes/pki/ca.key")
    );
    assert_eq!(
        flag(manager, "service-account-private-key-file"),
        Some("/etc/kubernetes/pki/sa.key")
    );
    assert_eq!(
        manager.image.as_deref(),
        Some("registry.k8s.io/kube-controller-manager:v1.33.4")
    );
}

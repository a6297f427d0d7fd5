//! Fixtures shared by the rule tests: a tenant pod as the tenant's admission leaves it,
//! JSON merge patches over it, and its host pod.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use vc_api::constants::{NODE_CLAIM_TAINT_KEY, POOL_NODE_NAME};

use super::{Action, Observed, Tenancy, host_pod, plan};

pub fn tenancy() -> Tenancy {
    Tenancy {
        workload_namespace: "vc-team-a-tenant1".to_owned(),
        virtual_cluster: "tenant1".to_owned(),
        apiserver: Some(("tenant1-apiserver.team-a.svc".to_owned(), 6443)),
        dns: None,
        dns_pending: false,
        pod_security: vc_api::pod_security::PodSecurityLevel::Baseline,
    }
}

fn pod_json(name: &str, uid: &str, node: &str, extra_spec: Value) -> Value {
    let mut spec = json!({
        "nodeName": node,
        "serviceAccountName": "default",
        "containers": [{
            "name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
            "ports": [{"containerPort": 80}],
            "env": [
                {"name": "PLAIN", "value": "1"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
            ],
            "resources": {"requests": {"cpu": "100m"}},
            "volumeMounts": [{"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
        }],
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": NODE_CLAIM_TAINT_KEY, "operator": "Exists"},
            {"operator": "Exists"}
        ],
        "volumes": [{
            "name": "kube-api-access-x1",
            "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}
        }]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    json!({
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
        "spec": spec,
        "status": {"phase": "Pending"}
    })
}

pub fn pod(name: &str, uid: &str, node: &str) -> Pod {
    serde_json::from_value(pod_json(name, uid, node, json!({}))).unwrap()
}

pub fn with(pod: &Pod, patch: Value) -> Pod {
    let mut value = serde_json::to_value(pod).unwrap();
    merge(&mut value, &patch);
    serde_json::from_value(value).unwrap()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

pub fn host_of(tenant: &Pod) -> Pod {
    let mut host = host_pod(tenant, &tenancy()).unwrap().pod;
    host.metadata.uid = Some(format!("host-{}", tenant.uid().unwrap()));
    host
}

pub fn nodes() -> BTreeSet<String> {
    ["node1".to_owned(), POOL_NODE_NAME.to_owned()].into()
}

pub fn plan_of(tenant: Vec<Pod>, host: Vec<Pod>) -> Vec<Action> {
    let nodes = nodes();
    plan(
        Observed {
            tenant_pods: &tenant,
            host_pods: &host,
            mirrored_nodes: &nodes,
        },
        &tenancy(),
    )
    .actions
}

//! RBAC escalation prevention through the test API server, with RBAC enforced: a user may
//! create or change a Role or ClusterRole only with rules it holds, and bind only a role
//! whose rules it holds, unless it may `escalate` or `bind` it; `system:masters` may do
//! anything. Refusals are compared with the whole Status kube-apiserver sends.
//!
//! The users are client certificates (CN = user, O = groups); their rights are installed
//! as the admin. `granter` holds, cluster-wide, pods get/list, pods/log get and nodes get
//! on node1 and node2, and in namespace `team` configmaps get (through its group).

use http_body_util::BodyExt as _;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use vc_test_apiserver::{TestApiServer, TestApiServerOptions, client_from_kubeconfig};

const CLUSTER_ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
const CLUSTER_ROLE_BINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
const GRANTER_GROUPS: &str = r#"["granters" "system:authenticated"]"#;

fn roles(namespace: &str) -> String {
    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles")
}

fn role_bindings(namespace: &str) -> String {
    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings")
}

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: granter}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, clusterroles, rolebindings, clusterrolebindings]
  verbs: [get, create, update, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [nodes]
  resourceNames: [node1, node2]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: granter}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: granter}
subjects:
- {kind: User, name: granter, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader, namespace: team}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: granters, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
- {kind: Group, name: granters, apiGroup: rbac.authorization.k8s.io}
"#;

/// A client that sends raw requests and reads the answer as JSON.
struct Http {
    client: kube::Client,
}

impl Http {
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .header("Accept", "application/json")
            .body(kube::client::Body::from(body.to_string().into_bytes()))
            .unwrap();
        let response = self.client.send(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, "application/json", body).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("PUT", path, "application/json", body).await
    }

    async fn merge_patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("PATCH", path, "application/merge-patch+json", body)
            .await
    }

    async fn apply(&self, path: &str, body: &Value) -> (u16, Value) {
        let path = format!("{path}?fieldManager=escalation-test&force=true");
        self.send("PATCH", &path, "application/apply-patch+yaml", body)
            .await
    }

    /// A RoleBinding `name` in namespace `team` to `role_kind`/`role`.
    async fn bind_in_team(&self, name: &str, role_kind: &str, role: &str) -> (u16, Value) {
        let body = binding("RoleBinding", Some("team"), name, role_kind, role);
        self.post(&role_bindings("team"), &body).await
    }

    /// A ClusterRoleBinding `name` to ClusterRole `role`.
    async fn bind_cluster_wide(&self, name: &str, role: &str) -> (u16, Value) {
        let body = binding("ClusterRoleBinding", None, name, "ClusterRole", role);
        self.post(CLUSTER_ROLE_BINDINGS, &body).await
    }

    async fn get(&self, path: &str) -> u16 {
        self.send("GET", path, "application/json", &Value::Null)
            .await
            .0
    }
}

struct Cluster {
    server: TestApiServer,
    admin: Http,
}

impl Cluster {
    async fn start() -> Self {
        let server = TestApiServer::start(TestApiServerOptions {
            enforce_rbac: true,
            ..TestApiServerOptions::default()
        })
        .unwrap();
        server.install_yaml(SETUP).await.unwrap();
        let admin = Http {
            client: server.client().await.unwrap(),
        };
        Self { server, admin }
    }

    async fn user(&self, user: &str, groups: &[&str]) -> Http {
        let kubeconfig = self.server.kubeconfig_for(user, groups).unwrap();
        Http {
            client: client_from_kubeconfig(&kubeconfig).await.unwrap(),
        }
    }

    async fn granter(&self) -> Http {
        self.user("granter", &["granters"]).await
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules})
}

fn role(namespace: &str, name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace}, "rules": rules})
}

fn binding(kind: &str, namespace: Option<&str>, name: &str, role_kind: &str, role: &str) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}]})
}

/// The Status kube-apiserver answers a write granting `missing` (compact rule strings).
fn refusal(resource: &str, name: &str, user: &str, groups: &str, missing: &[&str]) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!(
            "{resource}.rbac.authorization.k8s.io \"{name}\" is forbidden: user \"{user}\" \
             (groups={groups}) is attempting to grant RBAC permissions not currently held:\n{}",
            missing.join("\n")
        ),
        "reason": "Forbidden",
        "details": {"name": name, "group": "rbac.authorization.k8s.io", "kind": resource},
        "code": 403})
}

fn granter_refusal(resource: &str, name: &str, missing: &[&str]) -> Value {
    refusal(resource, name, "granter", GRANTER_GROUPS, missing)
}

const SECRETS_GET: &str = r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_more_than_held_is_refused_with_kube_apiservers_message() {
    let cluster = Cluster::start().await;
    let granter = cluster.granter().await;

    let wider = cluster_role(
        "wider",
        json!([
            rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
            rule(&[""], &["secrets"], &["get"]),
            rule(&["apps"], &["deployments"], &["get"]),
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
        ]),
    );
    let (status, body) = granter.post(CLUSTER_ROLES, &wider).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        granter_refusal(
            "clusterroles",
            "wider",
            &[
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["watch" "delete"]}"#,
                SECRETS_GET,
                r#"{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}"#,
                r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#,
            ]
        )
    );
    assert_eq!(
        cluster.admin.get(&format!("{CLUSTER_ROLES}/wider")).await,
        404
    );

    // configmaps get is held in `team` only (a RoleBinding), never cluster-wide.
    let configmaps = json!([rule(&[""], &["configmaps"], &["get"])]);
    let (status, body) = granter
        .post(&roles("team"), &role("team", "reader", configmaps.clone()))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = granter
        .post(
            &roles("other"),
            &role("other", "reader", configmaps.clone()),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        granter_refusal(
            "roles",
            "reader",
            &[r#"{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}"#]
        )
    );
    let (status, _) = granter
        .post(CLUSTER_ROLES, &cluster_role("reader", configmaps))
        .await;
    assert_eq!(status, 403);

    // An aggregated ClusterRole can gather anything: only cluster-admin may make one.
    let mut aggregated = cluster_role("aggregated", json!([]));
    aggregated["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]});
    let (status, body) = granter.post(CLUSTER_ROLES, &aggregated).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "clusterroles.rbac.authorization.k8s.io \"aggregated\" is forbidden: must have \
         cluster-admin privileges to use the aggregationRule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_exactly_what_is_held_is_allowed_names_and_subresources_included() {
    let cluster = Cluster::start().await;
    let granter = cluster.granter().await;

    let held = cluster_role(
        "held",
        json!([
            rule(&[""], &["pods"], &["get", "list"]),
            rule(&[""], &["pods/log"], &["get"]),
            {"apiGroups": [""], "resources": ["nodes"], "resourceNames": ["node2"], "verbs": ["get"]},
        ]),
    );
    let (status, body) = granter.post(CLUSTER_ROLES, &held).await;
    assert_eq!(status, 201, "{body}");

    // Not held: a node outside the names, every node, and another subresource.
    let node3 = cluster_role(
        "node3",
        json!([{"apiGroups": [""], "resources": ["nodes"], "resourceNames": ["node1", "node3"], "verbs": ["get"]}]),
    );
    let (status, body) = granter.post(CLUSTER_ROLES, &node3).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        granter_refusal(
            "clusterroles",
            "node3",
            &[r#"{APIGroups:[""], Resources:["nodes"], ResourceNames:["node3"], Verbs:["get"]}"#]
        )
    );
    let (status, body) = granter
        .post(
            CLUSTER_ROLES,
            &cluster_role("all-nodes", json!([rule(&[""], &["nodes"], &["get"])])),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        granter_refusal(
            "clusterroles",
            "all-nodes",
            &[r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#]
        )
    );
    let (status, _) = granter
        .post(
            CLUSTER_ROLES,
            &cluster_role("exec", json!([rule(&[""], &["pods/exec"], &["get"])])),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalate_lets_a_role_through() {
    let cluster = Cluster::start().await;
    cluster
        .server
        .install_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: role-writer, namespace: team}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [get, create, update, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  resourceNames: [named]
  verbs: [escalate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: role-writers, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: role-writer}
subjects:
- {kind: User, name: writer, apiGroup: rbac.authorization.k8s.io}
- {kind: User, name: escalator, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: escalate-any, namespace: team}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [escalate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: escalators, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: escalate-any}
subjects:
- {kind: User, name: escalator, apiGroup: rbac.authorization.k8s.io}
"#,
        )
        .await
        .unwrap();
    let secrets = json!([rule(&[""], &["secrets"], &["*"])]);

    let escalator = cluster.user("escalator", &[]).await;
    let (status, body) = escalator
        .post(&roles("team"), &role("team", "anything", secrets.clone()))
        .await;
    assert_eq!(status, 201, "{body}");

    // escalate limited to a name is asked with the request's name, which a POST lacks;
    // a server-side apply names the role in its URL.
    let writer = cluster.user("writer", &[]).await;
    let (status, body) = writer
        .post(&roles("team"), &role("team", "named", secrets.clone()))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        refusal(
            "roles",
            "named",
            "writer",
            r#"["system:authenticated"]"#,
            &[r#"{APIGroups:[""], Resources:["secrets"], Verbs:["*"]}"#]
        )
    );
    let named = format!("{}/named", roles("team"));
    let (status, body) = writer
        .apply(&named, &role("team", "named", secrets.clone()))
        .await;
    assert_eq!(status, 201, "{body}");
    let other = format!("{}/other", roles("team"));
    let (status, _) = writer.apply(&other, &role("team", "other", secrets)).await;
    assert_eq!(status, 403, "escalate on `named` does not cover `other`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_lets_a_binding_through_and_a_missing_role_is_not_found_without_it() {
    let cluster = Cluster::start().await;
    cluster
        .server
        .install_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-admin}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: binder}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings, clusterrolebindings]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [secret-admin, not-yet]
  verbs: [bind]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: binder, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: binder}
subjects:
- {kind: User, name: binder, apiGroup: rbac.authorization.k8s.io}
"#,
        )
        .await
        .unwrap();
    let binder = cluster.user("binder", &[]).await;
    let (status, body) = binder
        .bind_in_team("secrets", "ClusterRole", "secret-admin")
        .await;
    assert_eq!(status, 201, "{body}");
    // bind on a role that does not exist yet lets the binding dangle, as on a real cluster.
    let (status, body) = binder.bind_in_team("later", "ClusterRole", "not-yet").await;
    assert_eq!(status, 201, "{body}");

    // Without bind: the role's rules must be held; a missing role is its 404.
    let (status, body) = binder
        .bind_in_team("granter", "ClusterRole", "granter")
        .await;
    assert_eq!(status, 403);
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "rolebindings.rbac.authorization.k8s.io \"granter\" is forbidden: user \"binder\" \
             (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not \
             currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], ResourceNames:[\"node1\"], Verbs:[\"get\"]}\n"
        ),
        "{body}"
    );
    let (status, body) = binder.bind_in_team("ghost", "ClusterRole", "missing").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "clusterroles.rbac.authorization.k8s.io \"missing\" not found",
            "reason": "NotFound",
            "details": {"name": "missing", "group": "rbac.authorization.k8s.io", "kind": "clusterroles"},
            "code": 404})
    );
    let (status, body) = binder.bind_in_team("ghost", "Role", "missing").await;
    assert_eq!(status, 404);
    assert_eq!(
        body["message"],
        "roles.rbac.authorization.k8s.io \"missing\" not found"
    );
    // bind is asked in the binding's namespace: none for a ClusterRoleBinding here.
    let (status, _) = binder.bind_cluster_wide("secrets", "secret-admin").await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_to_a_role_the_user_fully_holds_is_allowed() {
    let cluster = Cluster::start().await;
    cluster
        .server
        .install_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: configmap-reader}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
"#,
        )
        .await
        .unwrap();
    let granter = cluster.granter().await;
    let (status, body) = granter.bind_cluster_wide("pods", "pod-reader").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = granter
        .bind_in_team("cm", "ClusterRole", "configmap-reader")
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = granter
        .bind_in_team("cm-role", "Role", "configmap-reader")
        .await;
    assert_eq!(status, 201, "{body}");

    // configmaps get is held only in `team`.
    let configmaps = r#"{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}"#;
    let (status, body) = granter
        .post(
            &role_bindings("other"),
            &binding(
                "RoleBinding",
                Some("other"),
                "cm",
                "ClusterRole",
                "configmap-reader",
            ),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body, granter_refusal("rolebindings", "cm", &[configmaps]));
    let (status, body) = granter.bind_cluster_wide("cm", "configmap-reader").await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        granter_refusal("clusterrolebindings", "cm", &[configmaps])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_patches_and_server_side_apply_are_checked_too() {
    let cluster = Cluster::start().await;
    let granter = cluster.granter().await;
    let pods = rule(&[""], &["pods"], &["get"]);
    let secrets = rule(&[""], &["secrets"], &["get"]);
    let path = format!("{CLUSTER_ROLES}/grows");
    let (status, created) = granter
        .post(CLUSTER_ROLES, &cluster_role("grows", json!([pods])))
        .await;
    assert_eq!(status, 201, "{created}");
    let refused = granter_refusal("clusterroles", "grows", &[SECRETS_GET]);

    let mut wider = created.clone();
    wider["rules"] = json!([pods, secrets]);
    let (status, body) = granter.put(&path, &wider).await;
    assert_eq!((status, body), (403, refused.clone()), "update");
    let (status, body) = granter
        .merge_patch(&path, &json!({"rules": [pods, secrets]}))
        .await;
    assert_eq!((status, body), (403, refused.clone()), "merge patch");
    let (status, body) = granter
        .apply(&path, &cluster_role("grows", json!([pods, secrets])))
        .await;
    assert_eq!((status, body), (403, refused), "server-side apply");
    let (status, body) = granter
        .apply(
            &format!("{CLUSTER_ROLES}/applied"),
            &cluster_role("applied", json!([secrets])),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            granter_refusal("clusterroles", "applied", &[SECRETS_GET])
        ),
        "server-side apply that creates"
    );
    let (status, body) = granter
        .apply(&path, &cluster_role("grows", json!([pods])))
        .await;
    assert_eq!(status, 200, "re-applying held rules: {body}");

    // A role someone else made wider: the garbage collector's fields may change,
    // anything else needs its rules.
    cluster
        .admin
        .post(CLUSTER_ROLES, &cluster_role("admins", json!([secrets])))
        .await;
    let admins = format!("{CLUSTER_ROLES}/admins");
    let (status, body) = granter
        .merge_patch(
            &admins,
            &json!({"metadata": {"finalizers": ["example.com/keep"]}}),
        )
        .await;
    assert_eq!(status, 200, "only finalizers change: {body}");
    let (status, body) = granter
        .merge_patch(&admins, &json!({"metadata": {"labels": {"team": "a"}}}))
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            granter_refusal("clusterroles", "admins", &[SECRETS_GET])
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_is_checked_too() {
    let cluster = Cluster::start().await;
    let granter = cluster.granter().await;
    let dry = format!("{CLUSTER_ROLES}?dryRun=All");
    let (status, body) = granter
        .post(
            &dry,
            &cluster_role("dry", json!([rule(&[""], &["secrets"], &["get"])])),
        )
        .await;
    assert_eq!(
        (status, body),
        (403, granter_refusal("clusterroles", "dry", &[SECRETS_GET]))
    );
    let (status, body) = granter
        .post(
            &dry,
            &cluster_role("dry", json!([rule(&[""], &["pods"], &["get"])])),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        cluster.admin.get(&format!("{CLUSTER_ROLES}/dry")).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_masters_may_grant_anything() {
    let cluster = Cluster::start().await;
    let everything =
        json!([rule(&["*"], &["*"], &["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}]);
    let root = cluster.user("root", &["system:masters"]).await;
    let (status, body) = root
        .post(
            CLUSTER_ROLES,
            &cluster_role("everything", everything.clone()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = root.bind_cluster_wide("everything", "everything").await;
    assert_eq!(status, 201, "{body}");

    // The same requests from someone allowed to write roles but outside system:masters.
    let granter = cluster.granter().await;
    let (status, _) = granter
        .post(CLUSTER_ROLES, &cluster_role("everything-too", everything))
        .await;
    assert_eq!(status, 403);
    let (status, _) = granter
        .bind_cluster_wide("everything-too", "everything")
        .await;
    assert_eq!(status, 403);
}

//! The test API server's error answers compared with bodies recorded from a real
//! kube-apiserver v1.36 (`tests/fixtures/kube-apiserver-v1.36/errors/`). Requests are
//! the recorded ones; only values that differ per run (resourceVersions) are masked.

mod errors {
    use std::path::{Path, PathBuf};

    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use vc_test_apiserver::{TestApiServer, TestApiServerOptions, client_from_kubeconfig};

    const VCS: &str = "/apis/kosmos.io/v1alpha1/namespaces/default/virtualclusters";

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kube-apiserver-v1.36")
    }

    fn fixture(name: &str) -> Value {
        let text = std::fs::read_to_string(fixture_dir().join("errors").join(name))
            .expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    struct Http {
        client: kube::Client,
    }

    impl Http {
        async fn call(
            &self,
            method: &str,
            path: &str,
            content_type: Option<&str>,
            body: &str,
            accept: Option<&str>,
        ) -> (u16, Vec<u8>) {
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("User-Agent", "fixture-recorder/1.0");
            if let Some(ct) = content_type {
                req = req.header("Content-Type", ct);
            }
            req = req.header("Accept", accept.unwrap_or("application/json"));
            let req = req
                .body(kube::client::Body::from(body.as_bytes().to_vec()))
                .expect("request builds");
            let resp = self.client.send(req).await.expect("request is answered");
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .to_vec();
            (status, bytes)
        }

        async fn json(
            &self,
            method: &str,
            path: &str,
            content_type: Option<&str>,
            body: &str,
        ) -> (u16, Value) {
            let (status, bytes) = self.call(method, path, content_type, body, None).await;
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, value)
        }
    }

    fn assert_matches(name: &str, status: u16, got: &Value) {
        let want = fixture(name);
        assert_eq!(
            Some(u64::from(status)),
            want["code"].as_u64(),
            "{name}: HTTP status"
        );
        if got != &want {
            eprintln!("GOT  {got}\nWANT {want}");
        }
        pretty_assertions::assert_eq!(got, &want, "{name}");
    }

    fn vc(name: &str) -> String {
        json!({"apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster", "metadata": {"name": name, "namespace": "default"},
            "spec": {"promoteResources": {"nodes": ["node-a", "node-b"], "resources": {"cpu": 10, "memory": "100Gi"}}}})
        .to_string()
    }

    async fn server() -> (TestApiServer, Http) {
        let server = TestApiServer::start(TestApiServerOptions {
            enforce_rbac: true,
            ..TestApiServerOptions::default()
        })
        .expect("server starts");
        let crd = fixture_dir().join("crd-virtualclusters.yaml");
        server
            .install_yaml(crd.to_str().expect("utf-8"))
            .await
            .expect("CRD installs");
        let client = server.client().await.expect("admin client");
        (server, Http { client })
    }

    async fn as_user(server: &TestApiServer, user: &str) -> Http {
        let path = server.kubeconfig_for(user, &[]).expect("kubeconfig");
        Http {
            client: client_from_kubeconfig(&path).await.expect("client"),
        }
    }

    fn kubeconfig_with_user(server: &TestApiServer, user: Value, file: &str) -> PathBuf {
        let b64 = base64_encode(server.ca_pem());
        let doc = json!({"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server.url(), "certificate-authority-data": b64}}],
            "users": [{"name": "c", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}]});
        let path = server.work_dir().join(file);
        std::fs::write(&path, serde_json::to_string(&doc).expect("json"))
            .expect("kubeconfig written");
        path
    }

    fn base64_encode(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn error_statuses_match_the_real_apiserver() {
        let (server, admin) = server().await;
        let (code, _) = admin
            .json("POST", VCS, Some("application/json"), &vc("vc2"))
            .await;
        assert_eq!(code, 201);

        let (s, v) = admin
            .json("DELETE", &format!("{VCS}/vc-ssa"), None, "")
            .await;
        assert_matches("404-delete-missing.json", s, &v);
        let (s, v) = admin
            .json("POST", VCS, Some("application/json"), &vc("vc2"))
            .await;
        assert_matches("409-already-exists.json", s, &v);
        let (s, v) = admin
            .json(
                "POST",
                &format!("{VCS}/some-other-name"),
                Some("application/json"),
                &vc("vc2"),
            )
            .await;
        assert_matches("409-post-to-named-path-name-in-url-ignored.json", s, &v);
        let (s, v) = admin
            .json(
                "POST",
                "/apis/kosmos.io/v1alpha1/namespaces/nope/virtualclusters",
                Some("application/json"),
                &vc("vc-x").replace("\"default\"", "\"nope\""),
            )
            .await;
        assert_matches("404-create-in-missing-namespace.json", s, &v);
        let (s, v) = admin
            .json("POST", VCS, Some("application/json"), &vc("Bad_Name"))
            .await;
        assert_matches("422-create-invalid-name.json", s, &v);
        let (s, v) = admin
            .json(
                "POST",
                VCS,
                Some("application/json"),
                &vc("vc-ns").replace("\"default\"", "\"other\""),
            )
            .await;
        assert_matches("400-namespace-mismatch-create.json", s, &v);
        let strict = r#"{"apiVersion":"kosmos.io/v1alpha1","kind":"VirtualCluster","metadata":{"name":"vc-strict","namespace":"default"},"spec":{"kubeconfig":"x","bogusField":true,"promoteResources":{"nodez":["a"]}}}"#;
        let (s, v) = admin
            .json(
                "POST",
                &format!("{VCS}?fieldValidation=Strict"),
                Some("application/json"),
                strict,
            )
            .await;
        assert_matches("400-unknown-field-fieldValidation-Strict.json", s, &v);
        let (s, v) = admin.json("POST", VCS, Some("application/json"), r#"{"apiVersion":"kosmos.io/v1alpha1","kind":"VirtualCluster","metadata":{"name":"broken""#).await;
        assert_matches("400-malformed-json-body.json", s, &v);
        let bad = r#"{"apiVersion":"kosmos.io/v1alpha1","kind":"VirtualCluster","metadata":{"name":"vc-bad","namespace":"default"},"spec":{"kubeconfig":42,"promoteResources":{"nodes":["n1","n1"],"resources":{"cpu":true,"memory":"100Gi"}}}}"#;
        let (s, v) = admin.json("POST", VCS, Some("application/json"), bad).await;
        assert_matches("422-create-type-errors-and-duplicate-set-item.json", s, &v);
        let (s, v) = admin.json("POST", VCS, Some("text/plain"), "hello").await;
        assert_matches("415-create-content-type-text-plain.json", s, &v);

        let (_, current) = admin.json("GET", &format!("{VCS}/vc2"), None, "").await;
        let rv = current["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string();
        let mut stale = current.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let (s, v) = admin
            .json(
                "PUT",
                &format!("{VCS}/vc2"),
                Some("application/json"),
                &stale.to_string(),
            )
            .await;
        assert_matches("409-conflict-stale-resourceversion-put.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/merge-patch+json"),
                r#"{"metadata":{"resourceVersion":"1"},"spec":{"kubeconfig":"eA=="}}"#,
            )
            .await;
        assert_matches("409-conflict-stale-resourceversion-merge-patch.json", s, &v);
        let mut no_rv = current.clone();
        no_rv["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("resourceVersion");
        let (s, v) = admin
            .json(
                "PUT",
                &format!("{VCS}/vc2"),
                Some("application/json"),
                &no_rv.to_string(),
            )
            .await;
        assert_matches("422-update-without-resourceversion-put.json", s, &v);
        let other = r#"{"apiVersion":"kosmos.io/v1alpha1","kind":"VirtualCluster","metadata":{"name":"other","namespace":"default"},"spec":{}}"#;
        let (s, v) = admin
            .json(
                "PUT",
                &format!("{VCS}/vc2"),
                Some("application/json"),
                other,
            )
            .await;
        assert_matches("400-name-mismatch-put.json", s, &v);
        let (s, v) = admin
            .json("PUT", VCS, Some("application/json"), other)
            .await;
        assert_matches("400-put-on-collection-name-must-be-provided.json", s, &v);
        let mut exploded = current.clone();
        exploded["status"] = json!({"phase": "Exploded"});
        let (s, v) = admin
            .json(
                "PUT",
                &format!("{VCS}/vc2/status"),
                Some("application/json"),
                &exploded.to_string(),
            )
            .await;
        assert_matches("422-status-phase-not-in-enum-put.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2/status"),
                Some("application/merge-patch+json"),
                r#"{"status":{"phase":"Exploded"}}"#,
            )
            .await;
        assert_matches("422-status-phase-not-in-enum-merge-patch.json", s, &v);
        let (s, v) = admin
            .json(
                "POST",
                &format!("{VCS}/vc2/status"),
                Some("application/json"),
                &vc("vc2"),
            )
            .await;
        assert_matches("405-post-on-status-subresource.json", s, &v);
        let (s, v) = admin
            .json("DELETE", &format!("{VCS}/vc2/status"), None, "")
            .await;
        assert_matches("405-delete-on-status-subresource.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/strategic-merge-patch+json"),
                "{}",
            )
            .await;
        assert_matches("415-strategic-merge-patch-on-custom-resource.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/json"),
                "{}",
            )
            .await;
        assert_matches("415-patch-wrong-content-type-application-json.json", s, &v);
        let (s, v) = admin.json("PATCH", &format!("{VCS}/vc2"), Some("application/json-patch+json"), r#"[{"op":"test","path":"/spec/kubeconfig","value":"not-the-value"},{"op":"replace","path":"/spec/kubeconfig","value":"eA=="}]"#).await;
        assert_matches("422-json-patch-test-op-failed.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/json-patch+json"),
                r#"[{"op":"remove","path":"/metadata/labels/missing"}]"#,
            )
            .await;
        assert_matches("422-json-patch-remove-missing-path.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/json-patch+json"),
                r#"{"op":"add"}"#,
            )
            .await;
        assert_matches("400-json-patch-body-not-array.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/merge-patch+json"),
                r#"{"spec":"#,
            )
            .await;
        assert_matches("400-malformed-json-merge-patch.json", s, &v);
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc-missing"),
                Some("application/merge-patch+json"),
                "{}",
            )
            .await;
        assert_eq!((s, v["reason"].as_str()), (404, Some("NotFound")));
        let (s, v) = admin
            .json(
                "GET",
                &format!("{VCS}?fieldSelector=spec.kubeconfig%3Dx"),
                None,
                "",
            )
            .await;
        assert_matches("400-list-fieldSelector-unsupported-field.json", s, &v);
        let (s, v) = admin
            .json(
                "GET",
                &format!("{VCS}?watch=1&sendInitialEvents=true"),
                None,
                "",
            )
            .await;
        assert_matches(
            "422-sendInitialEvents-without-resourceVersionMatch.json",
            s,
            &v,
        );

        let precondition = format!(
            r#"{{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{{"resourceVersion":"{}"}}}}"#,
            "1"
        );
        let (s, v) = admin
            .json(
                "DELETE",
                &format!("{VCS}/vc2"),
                Some("application/json"),
                &precondition,
            )
            .await;
        let mut want = fixture("409-conflict-delete-precondition-resourceversion.json");
        want["message"] = json!(
            want["message"]
                .as_str()
                .expect("message")
                .replace("(301)", "(1)")
                .replace("(302)", &format!("({rv})"))
        );
        assert_eq!(s, 409);
        let (_, now) = admin.json("GET", &format!("{VCS}/vc2"), None, "").await;
        let now_rv = now["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string();
        want["message"] = json!(
            want["message"]
                .as_str()
                .expect("message")
                .replace(&format!("({rv})"), &format!("({now_rv})"))
        );
        pretty_assertions::assert_eq!(v, want);

        // Terminating objects refuse new finalizers (the cause is listed twice, as recorded).
        admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/merge-patch+json"),
                r#"{"metadata":{"finalizers":["kosmos.io/finalizer"]}}"#,
            )
            .await;
        admin.json("DELETE", &format!("{VCS}/vc2"), None, "").await;
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc2"),
                Some("application/merge-patch+json"),
                r#"{"metadata":{"finalizers":["kosmos.io/finalizer","another.io/new"]}}"#,
            )
            .await;
        let mut want = fixture("422-add-finalizer-while-terminating.json");
        want["message"] = json!(
            want["message"]
                .as_str()
                .expect("message")
                .replace("vc1", "vc2")
        );
        want["details"]["name"] = json!("vc2");
        assert_eq!(s, 422);
        pretty_assertions::assert_eq!(v, want);

        // Server-side apply conflicts with the manager that set the field by update.
        let (code, _) = admin
            .json("POST", VCS, Some("application/json"), &vc("vc1"))
            .await;
        assert_eq!(code, 201);
        let apply = "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: vc1\n  namespace: default\nspec:\n  promoteResources:\n    resources:\n      cpu: 12\n";
        let (s, v) = admin
            .json(
                "PATCH",
                &format!("{VCS}/vc1?fieldManager=test"),
                Some("application/apply-patch+yaml"),
                apply,
            )
            .await;
        assert_matches("409-ssa-field-manager-conflict.json", s, &v);

        // Unknown paths answer text/plain 404.
        let (s, body) = admin
            .call(
                "GET",
                "/apis/kosmos.io/v1alpha1/namespaces/default/nothings",
                None,
                "",
                None,
            )
            .await;
        assert_eq!(
            (s, body),
            (
                404,
                std::fs::read(fixture_dir().join("errors/404-unknown-resource-type.txt"))
                    .expect("fixture")
            )
        );
        let (s, body) = admin
            .call(
                "GET",
                "/apis/nothing.io/v1/namespaces/default/things",
                None,
                "",
                None,
            )
            .await;
        assert_eq!(
            (s, body),
            (
                404,
                std::fs::read(fixture_dir().join("errors/404-unknown-group-version.txt"))
                    .expect("fixture")
            )
        );
        let (s, body) = admin
            .call(
                "GET",
                "/apis",
                None,
                "",
                Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_matches(
            "406-aggregated-discovery-v2beta1-no-longer-served.json",
            s,
            &v,
        );

        let (s, body) = admin
            .call(
                "GET",
                &format!("{VCS}/vc1"),
                None,
                "",
                Some("application/xml"),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_matches("406-not-acceptable-accept-xml.json", s, &v);

        // Compacted history: exact lists and old continue tokens are gone.
        server.compact();
        let (s, v) = admin
            .json(
                "GET",
                &format!("{VCS}?resourceVersion=1&resourceVersionMatch=Exact"),
                None,
                "",
            )
            .await;
        assert_matches(
            "410-list-resourceVersion-Exact-older-than-compaction.json",
            s,
            &v,
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authentication_and_authorization_errors_match_the_real_apiserver() {
        let (server, admin) = server().await;
        admin
            .json("POST", VCS, Some("application/json"), &vc("vc2"))
            .await;
        let nobody = as_user(&server, "nobody").await;
        let (s, v) = nobody.json("GET", &format!("{VCS}/vc2"), None, "").await;
        assert_matches("403-forbidden-get-as-nobody.json", s, &v);
        let (s, v) = nobody.json("GET", VCS, None, "").await;
        assert_matches("403-forbidden-list-as-nobody.json", s, &v);
        let (s, v) = nobody
            .json("GET", "/apis/kosmos.io/v1alpha1/virtualclusters", None, "")
            .await;
        assert_matches("403-forbidden-list-all-namespaces-as-nobody.json", s, &v);
        let (s, v) = nobody
            .json("POST", VCS, Some("application/json"), &vc("vc9"))
            .await;
        assert_matches("403-forbidden-create-as-nobody.json", s, &v);
        let (s, v) = nobody
            .json(
                "PATCH",
                &format!("{VCS}/vc2/status"),
                Some("application/merge-patch+json"),
                "{}",
            )
            .await;
        assert_matches("403-forbidden-patch-status-as-nobody.json", s, &v);

        let anonymous = kubeconfig_with_user(&server, json!({}), "anonymous.kubeconfig");
        let anon = Http {
            client: client_from_kubeconfig(&anonymous).await.expect("client"),
        };
        let (s, v) = anon.json("GET", VCS, None, "").await;
        assert_matches("403-forbidden-anonymous-no-credentials.json", s, &v);
        let (s, _) = anon.json("GET", "/version", None, "").await;
        assert_eq!(s, 200, "/version is public");

        let bogus = kubeconfig_with_user(&server, json!({"token": "REDACTED"}), "bogus.kubeconfig");
        let bad = Http {
            client: client_from_kubeconfig(&bogus).await.expect("client"),
        };
        let (s, v) = bad.json("GET", VCS, None, "").await;
        assert_matches("401-unauthorized-invalid-bearer-token.json", s, &v);

        // A role binding lets nobody read.
        let rbac = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: vc-reader, namespace: default}\nrules:\n- apiGroups: [kosmos.io]\n  resources: [virtualclusters]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: nobody-reads, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: vc-reader}\nsubjects:\n- {kind: User, name: nobody, apiGroup: rbac.authorization.k8s.io}\n";
        server.install_yaml(rbac).await.expect("rbac installs");
        let (s, _) = nobody.json("GET", &format!("{VCS}/vc2"), None, "").await;
        assert_eq!(s, 200);
        let (s, _) = nobody.json("DELETE", &format!("{VCS}/vc2"), None, "").await;
        assert_eq!(s, 403);
    }
}

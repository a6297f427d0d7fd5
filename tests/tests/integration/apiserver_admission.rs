//! Admission through the test API server's request pipeline: webhook configurations
//! stored in it are called (here through a `service` reference resolved via an
//! EndpointSlice), with the caller's identity; denials and warnings reach the client
//! exactly as kube-apiserver v1.36 sends them (fixtures in `fixtures/.../admission/`).

mod admission {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use base64::Engine as _;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use serde_json::{Value, json};
    use vc_test_apiserver::pki::TestCa;
    use vc_test_apiserver::{TestApiServer, TestApiServerOptions, client_from_kubeconfig};

    const VCS: &str = "/apis/kosmos.io/v1alpha1/namespaces/default/virtualclusters";

    /// What the webhook saw: (path, operation, name, username, dryRun).
    type Seen = Arc<Mutex<Vec<(String, String, String, String, bool)>>>;

    fn review_response(path: &str, review: &Value) -> Value {
        let request = &review["request"];
        let uid = request["uid"].clone();
        let name = request["name"].as_str().unwrap_or_default();
        let op = request["operation"].as_str().unwrap_or_default();
        let mut response = json!({"uid": uid, "allowed": true});
        if path == "/mutate" && op == "CREATE" && name == "vc-mutated" {
            let patch = json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "fixture-webhook"}}]);
            response["patchType"] = json!("JSONPatch");
            response["patch"] =
                json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
            response["warnings"] = json!(["fixture-webhook added label mutated-by"]);
        }
        if path == "/validate" && op == "CREATE" && name == "vc-denied" {
            response["allowed"] = json!(false);
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": "VirtualCluster vc-denied is refused by the fixture policy"});
        }
        if path == "/validate" && op == "CREATE" && name == "vc-denied-nocode" {
            response["allowed"] = json!(false);
            response["status"] = json!({"message": "VirtualCluster vc-denied-nocode is refused by the fixture policy"});
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }

    /// An HTTPS webhook on 127.0.0.1 with a certificate for the Service's DNS name.
    async fn start_webhook(ca: &TestCa, seen: Seen) -> u16 {
        let pair = ca
            .issue_server(&["fixture-webhook.default.svc".to_string()])
            .expect("webhook cert");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert");
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let review: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let r = &review["request"];
                                seen.lock().expect("lock").push((
                                    path.clone(),
                                    r["operation"].as_str().unwrap_or_default().to_string(),
                                    r["name"].as_str().unwrap_or_default().to_string(),
                                    r["userInfo"]["username"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_string(),
                                    r["dryRun"].as_bool().unwrap_or(false),
                                ));
                                let answer = review_response(&path, &review).to_string();
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("Content-Type", "application/json")
                                        .body(Full::new(Bytes::from(answer)))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    let _done = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        port
    }

    fn webhook_config(kind: &str, path: &str, ca_pem: &str) -> String {
        let name = if kind == "MutatingWebhookConfiguration" {
            "mutate.kosmos.io"
        } else {
            "validate.kosmos.io"
        };
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": format!("fixture-{}", path.trim_start_matches('/'))},
            "webhooks": [{
                "name": name,
                "clientConfig": {
                    "service": {"namespace": "default", "name": "fixture-webhook", "path": path, "port": 443},
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
                },
                "rules": [{"apiGroups": ["kosmos.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["virtualclusters", "virtualclusters/status"]}],
                "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 5, "admissionReviewVersions": ["v1"],
            }],
        });
        serde_json::to_string(&config).expect("json")
    }

    fn fixture(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/kube-apiserver-v1.36/admission")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    }

    async fn post(client: &kube::Client, name: &str, dry_run: bool) -> (u16, Vec<String>, Value) {
        let body = json!({"apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster", "metadata": {"name": name, "namespace": "default"}, "spec": {}});
        let uri = if dry_run {
            format!("{VCS}?dryRun=All")
        } else {
            VCS.to_string()
        };
        let req = http::Request::post(uri)
            .header("Content-Type", "application/json")
            .body(kube::client::Body::from(body.to_string().into_bytes()))
            .expect("request");
        let resp = client.send(req).await.expect("answered");
        let status = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            warnings,
            serde_json::from_slice(&bytes).expect("json body"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhooks_mutate_deny_and_warn_like_kube_apiserver() {
        let server = TestApiServer::start(TestApiServerOptions::default()).expect("server starts");
        let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/kube-apiserver-v1.36/crd-virtualclusters.yaml");
        server
            .install_yaml(crd.to_str().expect("utf-8"))
            .await
            .expect("CRD installs");
        let webhook_ca = TestCa::generate("webhook-ca").expect("ca");
        let seen: Seen = Arc::default();
        let port = start_webhook(&webhook_ca, seen.clone()).await;
        let plumbing = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: fixture-webhook, namespace: default}}\nspec:\n  ports: [{{port: 443, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: fixture-webhook-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: fixture-webhook}}\naddressType: IPv4\nendpoints:\n- addresses: [127.0.0.1]\nports:\n- port: {port}\n"
        );
        server
            .install_yaml(&plumbing)
            .await
            .expect("service installs");
        server
            .install_yaml(&webhook_config(
                "MutatingWebhookConfiguration",
                "/mutate",
                webhook_ca.cert_pem(),
            ))
            .await
            .expect("mutating config");
        server
            .install_yaml(&webhook_config(
                "ValidatingWebhookConfiguration",
                "/validate",
                webhook_ca.cert_pem(),
            ))
            .await
            .expect("validating config");

        let alice = server
            .kubeconfig_for("alice", &["system:masters"])
            .expect("kubeconfig");
        let client = client_from_kubeconfig(&alice).await.expect("client");

        let (status, _, body) = post(&client, "vc-denied", false).await;
        assert_eq!(status, 403);
        pretty_assertions::assert_eq!(body, fixture("denied-with-code-403-status-response.json"));
        let (status, _, body) = post(&client, "vc-denied-nocode", false).await;
        assert_eq!(status, 400);
        pretty_assertions::assert_eq!(body, fixture("denied-without-code-status-response.json"));

        let (status, warnings, body) = post(&client, "vc-mutated", false).await;
        assert_eq!(status, 201);
        assert_eq!(
            warnings,
            vec!["299 - \"fixture-webhook added label mutated-by\"".to_string()]
        );
        assert_eq!(
            body["metadata"]["labels"],
            json!({"mutated-by": "fixture-webhook"})
        );
        let recorded = fixture("mutated-create-response-with-warning-header.json");
        assert_eq!(body["metadata"]["labels"], recorded["metadata"]["labels"]);

        let (status, _, body) = post(&client, "vc-dry", true).await;
        assert_eq!(status, 201);
        assert!(
            body["metadata"].get("resourceVersion").is_none(),
            "dry-run creates carry no resourceVersion"
        );

        let seen = seen.lock().expect("lock").clone();
        assert!(
            seen.iter().all(|(_, _, _, user, _)| user == "alice"),
            "{seen:?}"
        );
        assert!(seen.contains(&(
            "/mutate".into(),
            "CREATE".into(),
            "vc-mutated".into(),
            "alice".into(),
            false
        )));
        assert!(seen.contains(&(
            "/validate".into(),
            "CREATE".into(),
            "vc-dry".into(),
            "alice".into(),
            true
        )));
        // A denied request never reaches storage.
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
            client,
            "default",
            &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "kosmos.io",
                "v1alpha1",
                "VirtualCluster",
            )),
        );
        assert!(api.get_opt("vc-denied").await.expect("get").is_none());
    }
}

//! The admission dispatcher against a real HTTPS webhook on 127.0.0.1: allow, deny, patch,
//! timeout, failurePolicy, CA and host-name verification, `service` references, dry run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ServiceReference, ValidatingWebhookConfiguration,
};
use kube::core::{GroupVersionKind, GroupVersionResource};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use vc_test_apiserver::admission::{
    AdmissionAttributes, Denied, Operation, UserInfo, run_mutating, run_validating,
};

const STORED_VALIDATING_FIXTURE: &str =
    include_str!("../sim_fixtures/stored-validatingwebhookconfiguration.json");
const STORED_MUTATING_FIXTURE: &str =
    include_str!("../sim_fixtures/stored-mutatingwebhookconfiguration.json");
const UNREACHABLE_FIXTURE: &str =
    include_str!("../sim_fixtures/webhook-unreachable-failurePolicy-Fail-status-response.json");

/// A request the webhook received.
#[derive(Clone, Debug)]
struct Received {
    path_and_query: String,
    headers: http::HeaderMap,
    review: Value,
}

/// A test CA and a serving certificate for `names`.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
}

fn pki(names: &[&str]) -> Pki {
    pki_from("webhook-test-ca", names)
}

fn pki_from(ca_name: &str, names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf.der().clone()],
        key_pem: key.serialize_pem(),
    }
}

/// The webhook's answer for one review.
fn answer(path: &str, review: &Value) -> (Option<Duration>, Value) {
    let uid = review["request"]["uid"].clone();
    let response = |body: Value| {
        let mut response = json!({"uid": uid, "allowed": true});
        if let (Some(out), Some(extra)) = (response.as_object_mut(), body.as_object()) {
            out.extend(extra.clone());
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    };
    let patch = |ops: Value| base64::engine::general_purpose::STANDARD.encode(ops.to_string());
    match path {
        "/allow" => (None, response(json!({}))),
        "/warn" => (None, response(json!({"warnings": ["validate says hello"]}))),
        "/deny" => (
            None,
            response(
                json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
                "message": "node \"node7\" already belongs to VirtualCluster team-a/prod"}}),
            ),
        ),
        "/deny-nocode" => (
            None,
            response(json!({"allowed": false, "status": {"message": "refused without code"}})),
        ),
        "/label" => (
            None,
            response(
                json!({"patchType": "JSONPatch", "warnings": ["added label first"],
                "patch": patch(json!([{"op": "add", "path": "/metadata/labels", "value": {"first": "yes"}}]))}),
            ),
        ),
        // Fails unless the first webhook's patch is already applied.
        "/label-after" => (
            None,
            response(json!({"patchType": "JSONPatch",
                "patch": patch(json!([{"op": "test", "path": "/metadata/labels/first", "value": "yes"},
                                       {"op": "add", "path": "/metadata/labels/second", "value": "yes"}]))})),
        ),
        "/slow" => (Some(Duration::from_secs(30)), response(json!({}))),
        "/wrong-uid" => (None, response(json!({"uid": "not-the-request-uid"}))),
        _ => (None, json!({"kind": "Status", "message": "no such path"})),
    }
}

/// An HTTPS webhook on 127.0.0.1 that records what it receives; stops when dropped.
struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    async fn start(names: &[&str]) -> Webhook {
        let pki = pki(names);
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let path_and_query = req
                                    .uri()
                                    .path_and_query()
                                    .map(ToString::to_string)
                                    .unwrap_or_default();
                                let path = req.uri().path().to_owned();
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await?.to_bytes();
                                let review: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                log.lock().unwrap().push(Received {
                                    path_and_query,
                                    headers,
                                    review: review.clone(),
                                });
                                let (delay, reply) = answer(&path, &review);
                                if let Some(delay) = delay {
                                    tokio::time::sleep(delay).await;
                                }
                                Ok::<_, hyper::Error>(
                                    http::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(reply.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            ca_pem: pki.ca_pem,
            received,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn ca_bundle(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

fn webhook_entry(name: &str, client_config: Value, extra: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": client_config,
        "rules": [{
            "apiGroups": ["kosmos.io"], "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["virtualclusters"], "scope": "Namespaced"
        }],
    });
    if let (Some(out), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    hook
}

fn validating(config_name: &str, hooks: Vec<Value>) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name}, "webhooks": hooks
    }))
    .unwrap()
}

fn mutating(config_name: &str, hooks: Vec<Value>) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config_name}, "webhooks": hooks
    }))
    .unwrap()
}

fn url_config(webhook: &Webhook, path: &str) -> Value {
    json!({"url": webhook.url(path), "caBundle": ca_bundle(&webhook.ca_pem)})
}

fn create_attrs() -> AdmissionAttributes {
    AdmissionAttributes {
        operation: Operation::Create,
        kind: GroupVersionKind::gvk("kosmos.io", "v1alpha1", "VirtualCluster"),
        resource: GroupVersionResource::gvr("kosmos.io", "v1alpha1", "virtualclusters"),
        sub_resource: None,
        name: "prod".to_owned(),
        namespace: Some("team-a".to_owned()),
        user_info: UserInfo {
            username: "alice".to_owned(),
            uid: String::new(),
            groups: vec!["system:authenticated".to_owned()],
            extra: BTreeMap::new(),
        },
        object: Some(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "prod", "namespace": "team-a"}, "spec": {}
        })),
        old_object: None,
        options: Some(json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"})),
        dry_run: false,
        namespace_labels: BTreeMap::new(),
    }
}

fn no_services(_: &ServiceReference) -> Option<String> {
    None
}

#[tokio::test]
async fn allowed_review_carries_the_request_as_kube_apiserver_sends_it() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "validate.test",
            url_config(&webhook, "/warn"),
            json!({"timeoutSeconds": 5}),
        )],
    )];
    let warnings = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap();
    assert_eq!(warnings, vec!["validate says hello".to_owned()]);
    let received = webhook.received();
    assert_eq!(received.len(), 1);
    let call = &received[0];
    assert_eq!(call.path_and_query, "/warn?timeout=5s");
    assert_eq!(call.headers["user-agent"], "kube-apiserver-admission");
    assert_eq!(call.headers["content-type"], "application/json");
    assert_eq!(call.headers["accept"], "application/json, */*");
    let request = &call.review["request"];
    assert_eq!(call.review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["name"], "prod");
    assert_eq!(request["namespace"], "team-a");
    assert_eq!(request["userInfo"]["username"], "alice");
    assert_eq!(request["requestResource"]["resource"], "virtualclusters");
    assert_eq!(request["oldObject"], Value::Null);
    assert_eq!(request["dryRun"], false);
    assert_eq!(request["uid"].as_str().map(str::len), Some(36));
}

#[tokio::test]
async fn mutating_patches_chain_in_configuration_name_order() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    // Listed out of order: configurations run sorted by name, so "a-first" goes first.
    let configs = [
        mutating(
            "b-second",
            vec![webhook_entry(
                "second.test",
                url_config(&webhook, "/label-after"),
                json!({}),
            )],
        ),
        mutating(
            "a-first",
            vec![webhook_entry(
                "first.test",
                url_config(&webhook, "/label"),
                json!({}),
            )],
        ),
    ];
    let mutated = run_mutating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap();
    let object = mutated.object.unwrap();
    assert_eq!(
        object["metadata"]["labels"],
        json!({"first": "yes", "second": "yes"})
    );
    assert_eq!(mutated.warnings, vec!["added label first".to_owned()]);
    let paths: Vec<String> = webhook
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        vec![
            "/label?timeout=10s".to_owned(),
            "/label-after?timeout=10s".to_owned()
        ]
    );
}

#[tokio::test]
async fn denial_with_code_is_forbidden_with_the_webhook_message() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "validate.kosmos.io",
            url_config(&webhook, "/deny"),
            json!({}),
        )],
    )];
    let denied = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert_eq!(
        denied,
        Denied {
            code: 403,
            reason: "Forbidden".to_owned(),
            message: "admission webhook \"validate.kosmos.io\" denied the request: \
                      node \"node7\" already belongs to VirtualCluster team-a/prod"
                .to_owned(),
            details: None,
        }
    );
}

#[tokio::test]
async fn denial_without_code_is_a_400_without_reason() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "v.test",
            url_config(&webhook, "/deny-nocode"),
            json!({}),
        )],
    )];
    let denied = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert_eq!((denied.code, denied.reason.as_str()), (400, ""));
    assert_eq!(
        denied.message,
        "admission webhook \"v.test\" denied the request: refused without code"
    );
}

#[tokio::test]
async fn unreachable_webhook_fails_closed_exactly_like_the_fixture() {
    // A port nobody listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pem = pki(&["127.0.0.1"]).ca_pem;
    let config =
        json!({"url": format!("https://127.0.0.1:{port}/validate"), "caBundle": ca_bundle(&pem)});
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "validate.kosmos.io",
            config.clone(),
            json!({"timeoutSeconds": 5, "failurePolicy": "Fail"}),
        )],
    )];
    let denied = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    let expected = UNREACHABLE_FIXTURE.replace("127.0.0.1:9", &format!("127.0.0.1:{port}"));
    assert_eq!(denied.to_status_json(), expected);

    let ignoring = [validating(
        "vc",
        vec![webhook_entry(
            "validate.kosmos.io",
            config,
            json!({"failurePolicy": "Ignore"}),
        )],
    )];
    assert_eq!(
        run_validating(&ignoring, &create_attrs(), &no_services).await,
        Ok(vec![])
    );
}

#[tokio::test]
async fn slow_webhook_times_out_and_failure_policy_decides() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let slow = |policy: &str| {
        [validating(
            "vc",
            vec![webhook_entry(
                "slow.test",
                url_config(&webhook, "/slow"),
                json!({"timeoutSeconds": 1, "failurePolicy": policy}),
            )],
        )]
    };
    let started = std::time::Instant::now();
    let denied = run_validating(&slow("Fail"), &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 1 s timeout was not applied"
    );
    assert_eq!(
        (denied.code, denied.reason.as_str()),
        (500, "InternalError")
    );
    assert_eq!(
        denied.message,
        format!(
            "Internal error occurred: failed calling webhook \"slow.test\": failed to call webhook: \
             Post \"{}\": context deadline exceeded",
            webhook.url("/slow?timeout=1s")
        )
    );
    assert_eq!(
        run_validating(&slow("Ignore"), &create_attrs(), &no_services).await,
        Ok(vec![])
    );
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let stranger = pki_from("another-ca", &["127.0.0.1"]).ca_pem;
    let config = json!({"url": webhook.url("/allow"), "caBundle": ca_bundle(&stranger)});
    let configs = [validating(
        "vc",
        vec![webhook_entry("v.test", config.clone(), json!({}))],
    )];
    let denied = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert_eq!(denied.code, 500);
    assert!(
        denied.message.ends_with(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        ),
        "{}",
        denied.message
    );
    assert!(
        webhook.received().is_empty(),
        "no review may be sent over an unverified connection"
    );
    // A CA with the same name but another key is no better.
    let impostor = pki(&["127.0.0.1"]).ca_pem;
    let impostor_config = json!({"url": webhook.url("/allow"), "caBundle": ca_bundle(&impostor)});
    let configs = [validating(
        "vc",
        vec![webhook_entry("v.test", impostor_config, json!({}))],
    )];
    let denied = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert!(
        denied
            .message
            .contains("x509: certificate signed by unknown authority"),
        "{}",
        denied.message
    );
    assert!(webhook.received().is_empty());
    // No caBundle: nothing is trusted (never falls back to skipping verification).
    let no_bundle = [validating(
        "vc",
        vec![webhook_entry(
            "v.test",
            json!({"url": webhook.url("/allow")}),
            json!({}),
        )],
    )];
    assert!(
        run_validating(&no_bundle, &create_attrs(), &no_services)
            .await
            .is_err()
    );
    let ignoring = [validating(
        "vc",
        vec![webhook_entry(
            "v.test",
            config,
            json!({"failurePolicy": "Ignore"}),
        )],
    )];
    assert_eq!(
        run_validating(&ignoring, &create_attrs(), &no_services).await,
        Ok(vec![])
    );
}

fn service_config(webhook: &Webhook, path: &str) -> Value {
    json!({
        "service": {"namespace": "kosmos-system", "name": "vc-webhook", "path": path, "port": 8443},
        "caBundle": ca_bundle(&webhook.ca_pem)
    })
}

#[tokio::test]
async fn service_reference_dials_the_resolved_address_and_verifies_the_service_name() {
    let webhook = Webhook::start(&["vc-webhook.kosmos-system.svc"]).await;
    let addr = webhook.addr;
    let resolve = move |svc: &ServiceReference| {
        (svc.namespace == "kosmos-system" && svc.name == "vc-webhook" && svc.port == Some(8443))
            .then(|| format!("https://{addr}/ignored-path"))
    };
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "svc.test",
            service_config(&webhook, "/allow"),
            json!({}),
        )],
    )];
    assert_eq!(
        run_validating(&configs, &create_attrs(), &resolve).await,
        Ok(vec![])
    );
    let received = webhook.received();
    assert_eq!(received[0].path_and_query, "/allow?timeout=10s");
    assert_eq!(
        received[0].headers["host"],
        "vc-webhook.kosmos-system.svc:8443"
    );

    let unresolved = run_validating(&configs, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert!(
        unresolved
            .message
            .contains("https://vc-webhook.kosmos-system.svc:8443/allow?timeout=10s"),
        "{}",
        unresolved.message
    );
}

#[tokio::test]
async fn service_reference_refuses_a_certificate_for_another_name() {
    let webhook = Webhook::start(&["127.0.0.1", "other.kosmos-system.svc"]).await;
    let addr = webhook.addr;
    let resolve = move |_: &ServiceReference| Some(addr.to_string());
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "svc.test",
            service_config(&webhook, "/allow"),
            json!({}),
        )],
    )];
    let denied = run_validating(&configs, &create_attrs(), &resolve)
        .await
        .unwrap_err();
    assert!(
        denied.message.ends_with(
            "x509: certificate is valid for 127.0.0.1, other.kosmos-system.svc, not vc-webhook.kosmos-system.svc"
        ),
        "{}",
        denied.message
    );
}

#[tokio::test]
async fn dry_run_skips_webhooks_with_side_effects() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let mut attrs = create_attrs();
    attrs.dry_run = true;
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "effects.test",
            url_config(&webhook, "/allow"),
            json!({"sideEffects": "Some"}),
        )],
    )];
    let denied = run_validating(&configs, &attrs, &no_services)
        .await
        .unwrap_err();
    assert_eq!(
        (denied.code, denied.reason.as_str(), denied.message.as_str()),
        (
            400,
            "BadRequest",
            "admission webhook \"effects.test\" does not support dry run"
        )
    );
    assert!(webhook.received().is_empty());
    let harmless = [validating(
        "vc",
        vec![webhook_entry(
            "none.test",
            url_config(&webhook, "/allow"),
            json!({}),
        )],
    )];
    assert_eq!(
        run_validating(&harmless, &attrs, &no_services).await,
        Ok(vec![])
    );
    assert_eq!(webhook.received()[0].review["request"]["dryRun"], true);
}

#[tokio::test]
async fn responses_that_break_the_protocol_are_call_failures() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let wrong_uid = [validating(
        "vc",
        vec![webhook_entry(
            "uid.test",
            url_config(&webhook, "/wrong-uid"),
            json!({}),
        )],
    )];
    let denied = run_validating(&wrong_uid, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert!(
        denied
            .message
            .contains("received invalid webhook response: expected response.uid="),
        "{}",
        denied.message
    );
    // A validating webhook may not patch.
    let patching = [validating(
        "vc",
        vec![webhook_entry(
            "p.test",
            url_config(&webhook, "/label"),
            json!({}),
        )],
    )];
    let denied = run_validating(&patching, &create_attrs(), &no_services)
        .await
        .unwrap_err();
    assert!(
        denied
            .message
            .ends_with("validating webhooks may not return patches"),
        "{}",
        denied.message
    );
}

#[tokio::test]
async fn requests_outside_the_rules_are_not_sent() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let configs = [validating(
        "vc",
        vec![webhook_entry(
            "v.test",
            url_config(&webhook, "/deny"),
            json!({}),
        )],
    )];
    let mut delete = create_attrs();
    delete.operation = Operation::Delete;
    delete.old_object = delete.object.take();
    assert_eq!(
        run_validating(&configs, &delete, &no_services).await,
        Ok(vec![])
    );
    let mut status = create_attrs();
    status.operation = Operation::Update;
    status.sub_resource = Some("status".to_owned());
    assert_eq!(
        run_validating(&configs, &status, &no_services).await,
        Ok(vec![])
    );
    assert!(webhook.received().is_empty());
}

/// The configurations kube-apiserver stored (caBundle and URL pointed at our webhook).
fn stored_fixture<T: serde::de::DeserializeOwned>(raw: &str, webhook: &Webhook, path: &str) -> T {
    let mut value: Value = serde_json::from_str(raw).unwrap();
    value["webhooks"][0]["clientConfig"] = url_config(webhook, path);
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn stored_fixture_configurations_dispatch_like_the_recording() {
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let mutating: MutatingWebhookConfiguration =
        stored_fixture(STORED_MUTATING_FIXTURE, &webhook, "/label");
    let validating: ValidatingWebhookConfiguration =
        stored_fixture(STORED_VALIDATING_FIXTURE, &webhook, "/allow");
    let mutated = run_mutating(
        std::slice::from_ref(&mutating),
        &create_attrs(),
        &no_services,
    )
    .await
    .unwrap();
    assert_eq!(
        mutated.object.unwrap()["metadata"]["labels"]["first"],
        "yes"
    );
    assert_eq!(
        run_validating(
            std::slice::from_ref(&validating),
            &create_attrs(),
            &no_services
        )
        .await,
        Ok(vec![])
    );
    // The recorded rules list virtualclusters/status, so status writes reach both.
    let mut status = create_attrs();
    status.operation = Operation::Update;
    status.sub_resource = Some("status".to_owned());
    status.old_object = status.object.clone();
    assert_eq!(
        run_validating(&[validating], &status, &no_services).await,
        Ok(vec![])
    );
    let paths: Vec<String> = webhook
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        [
            "/label?timeout=5s",
            "/allow?timeout=5s",
            "/allow?timeout=5s"
        ]
    );
    assert_eq!(
        webhook.received()[2].review["request"]["subResource"],
        "status"
    );
}

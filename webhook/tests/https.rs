//! The webhook over real HTTPS, fed the AdmissionReview bodies kube-apiserver v1.36.2
//! actually sent (recorded in `tests/fixtures/admission-requests/`), with answers checked
//! the way the apiserver reads them: uid echoed, base64 JSONPatch that applies, status
//! code and message on denials.

mod support;

#[cfg(test)]
use support::Harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use http::StatusCode;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use vc_api::admission::{ClusterFacts, ClusterKey, Defaults, Inventory, ResourceAmounts};
use vc_api::testing::node_facts;
use vc_api::{ServiceType, VirtualCluster};
use vc_webhook::Limits;
use vc_webhook::limits::DEFAULT_MAX_BODY_BYTES;
use vc_webhook::metrics::Metrics;
use vc_webhook::review::Admission;
use vc_webhook::server::{Readiness, Webhook};
use vc_webhook::tls::{CertificatePaths, ReloadingCertificate, crypto_provider, server_config};

#[cfg(test)]
const GIB_MILLI: i128 = 1024 * 1024 * 1024 * 1000;

#[cfg(test)]
fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission-requests")
}

#[cfg(test)]
fn fixture(prefix: &str) -> Bytes {
    let entry = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("no fixture {prefix}"));
    Bytes::from(std::fs::read(entry).unwrap())
}

#[cfg(test)]
/// `node-a` (the node every recorded request promotes) plus a pool big enough for the
/// recorded `cpu: 10, memory: 100Gi`.
fn host() -> Inventory {
    let mut inventory = Inventory::new();
    inventory.upsert_node(node_facts(
        "node-a",
        &[("cpu", 8_000), ("memory", 32 * GIB_MILLI)],
    ));
    inventory.upsert_node(node_facts(
        "pool-1",
        &[("cpu", 32_000), ("memory", 256 * GIB_MILLI)],
    ));
    inventory.upsert_node(node_facts(
        "pool-2",
        &[("cpu", 32_000), ("memory", 256 * GIB_MILLI)],
    ));
    inventory
}

#[cfg(test)]
/// The same host where `default/prod` already holds `node-a`.
fn host_with_owner() -> Inventory {
    let mut inventory = host();
    let mut owned = node_facts("node-a", &[("cpu", 8_000), ("memory", 32 * GIB_MILLI)]);
    owned.claimed_by = Some(ClusterKey::new("default", "prod"));
    inventory.upsert_node(owned);
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("default", "prod"),
        nodes: vec!["node-a".to_owned()],
        pooled: ResourceAmounts::new(),
    });
    inventory
}

#[cfg(test)]
async fn start_with(admission: Admission, readiness: Readiness) -> Harness {
    support::start_limited(admission, readiness, Limits::default()).await
}

#[cfg(test)]
async fn start(inventory: Inventory) -> Harness {
    start_with(support::enforce(inventory), Readiness::synced()).await
}

#[cfg(test)]
impl Harness {
    async fn post(&self, path: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let mut connection = support::connect(self.server.local_addr, Arc::clone(&self.client))
            .await
            .unwrap();
        connection.post(path, body).await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let mut connection = support::connect(self.server.local_addr, Arc::clone(&self.client))
            .await
            .unwrap();
        let (status, body) = connection
            .request(http::Method::GET, path, Bytes::new())
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Posts a recorded request to the endpoint named in its file name.
    async fn review(&self, prefix: &str) -> Answer {
        let body = fixture(prefix);
        let path = if file_name(prefix).contains("-mutate-") {
            "/mutate?timeout=5s"
        } else {
            "/validate?timeout=5s"
        };
        let (status, answer) = self.post(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        Answer::read(&body, &answer)
    }
}

#[cfg(test)]
fn file_name(prefix: &str) -> String {
    std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(prefix))
        .unwrap()
}

/// An AdmissionReview answer, read the way kube-apiserver reads it.
#[derive(Debug)]
struct Answer {
    allowed: bool,
    code: Option<u64>,
    message: Option<String>,
    warnings: Vec<String>,
    /// The request's object after applying the JSONPatch, when there is one.
    patched: Option<Value>,
}

#[cfg(test)]
impl Answer {
    fn read(request: &[u8], answer: &[u8]) -> Self {
        let request: Value = serde_json::from_slice(request).unwrap();
        let answer: Value = serde_json::from_slice(answer).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        let response = &answer["response"];
        assert_eq!(
            response["uid"], request["request"]["uid"],
            "uid must be echoed"
        );
        let allowed = response["allowed"].as_bool().expect("allowed is a bool");
        let patched = response.get("patch").map(|patch| {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = BASE64_STANDARD
                .decode(
                    patch
                        .as_str()
                        .expect("patch is a base64 string, as Go's []byte"),
                )
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut object = request["request"]["object"].clone();
            json_patch::patch(&mut object, &patch).unwrap();
            object
        });
        Self {
            allowed,
            code: response["status"]["code"].as_u64(),
            message: response["status"]["message"].as_str().map(str::to_owned),
            warnings: response["warnings"]
                .as_array()
                .map(|warnings| {
                    warnings
                        .iter()
                        .map(|warning| warning.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            patched,
        }
    }
}

#[tokio::test]
async fn every_recorded_apiserver_request_gets_a_well_formed_answer() {
    let harness = start(host()).await;
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 27, "{names:?}");
    for name in names {
        let prefix = &name[..4];
        let answer = harness.review(prefix).await;
        let bypasses_rules = name.contains("DELETE") || name.contains("-status-");
        if bypasses_rules {
            assert!(answer.allowed, "{name}: {answer:?}");
            assert!(answer.patched.is_none(), "{name}: {answer:?}");
        }
        if !answer.allowed {
            assert!(
                answer.code.is_some() && answer.message.is_some(),
                "{name}: {answer:?}"
            );
        }
    }
}

#[tokio::test]
async fn mutate_fills_every_default_of_a_recorded_create() {
    let harness = start(host()).await;
    let answer = harness.review("001").await;
    assert!(answer.allowed, "{answer:?}");
    let patched = answer.patched.expect("a JSONPatch with the defaults");
    let cluster: VirtualCluster = serde_json::from_value(patched.clone()).unwrap();
    let defaults = Defaults::default();
    assert_eq!(
        cluster.spec.kubernetes_version.as_deref(),
        Some(defaults.kubernetes_version.as_str())
    );
    let control_plane = cluster.spec.control_plane.as_ref().unwrap();
    let api_server = control_plane.api_server.as_ref().unwrap();
    assert_eq!(api_server.replicas, Some(1));
    assert_eq!(api_server.service_type, Some(ServiceType::ClusterIP));
    let etcd = control_plane.etcd.as_ref().unwrap();
    assert_eq!(etcd.replicas, Some(1));
    assert_eq!(etcd.storage_size.as_ref().unwrap().to_string(), "1Gi");
    // The clustertree image is the operator's, never filled into the VirtualCluster.
    assert_eq!(cluster.spec.cluster_tree, None);
    // The recorded request wrote `cpu: 10` as a number; canonical form is the string "10".
    assert_eq!(
        patched["spec"]["promoteResources"]["resources"]["cpu"],
        json!("10")
    );
    assert_eq!(
        patched["spec"]["promoteResources"]["resources"]["memory"],
        json!("100Gi")
    );
    assert_eq!(
        patched["spec"]["promoteResources"]["nodes"],
        json!(["node-a"])
    );
    // Metadata is untouched: the patch only writes under /spec.
    let original: Value = serde_json::from_slice(&fixture("001")).unwrap();
    assert_eq!(
        patched["metadata"],
        original["request"]["object"]["metadata"]
    );

    // Mutating the defaulted object again changes nothing.
    let mut again: Value = original;
    again["request"]["object"] = patched;
    let body = serde_json::to_vec(&again).unwrap();
    let (status, answer) = harness.post("/mutate", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let answer = Answer::read(&body, &answer);
    assert!(answer.allowed && answer.patched.is_none(), "{answer:?}");
}

#[tokio::test]
async fn validate_admits_a_recorded_create_on_a_free_node() {
    let harness = start(host()).await;
    let answer = harness.review("002").await;
    assert!(answer.allowed, "{answer:?}");
    assert!(answer.warnings.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn validate_names_the_owner_of_a_node_that_is_taken() {
    let harness = start(host_with_owner()).await;
    let answer = harness.review("014").await;
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(
        answer.message.as_deref(),
        Some(r#"node "node-a" already belongs to VirtualCluster default/prod"#)
    );
    let code = answer.code.unwrap();
    assert!((400..500).contains(&code), "{code}");
}

#[tokio::test]
async fn validate_refuses_a_name_whose_ca_a_sibling_already_holds() {
    let mut inventory = host();
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("default", "vc-adm-etcd"),
        nodes: vec![],
        pooled: ResourceAmounts::new(),
    });
    let harness = start(inventory).await;
    let answer = harness.review("002").await;
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(
        answer.message.as_deref(),
        Some(
            r#"VirtualCluster default/vc-adm would own Secret "vc-adm-etcd-ca" for its etcd CA, which VirtualCluster default/vc-adm-etcd already uses for its cluster CA; choose a name that "vc-adm-etcd" does not start with, followed by '-'"#
        )
    );
    assert_eq!(answer.code, Some(403));
}

#[tokio::test]
async fn validate_admits_a_cordoned_node_with_a_warning() {
    let mut inventory = host();
    let mut cordoned = node_facts("node-a", &[("cpu", 8_000), ("memory", 32 * GIB_MILLI)]);
    cordoned.unschedulable = true;
    inventory.upsert_node(cordoned);
    let harness = start(inventory).await;
    let answer = harness.review("002").await;
    assert!(answer.allowed, "{answer:?}");
    assert!(
        answer
            .warnings
            .iter()
            .any(|warning| warning.contains("node-a")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn status_writes_and_deletes_are_admitted_without_rules() {
    // node-a is owned by another tenant: any rule would refuse these objects.
    let harness = start(host_with_owner()).await;
    for prefix in ["007", "008", "011", "012", "023", "024", "027"] {
        let answer = harness.review(prefix).await;
        assert!(answer.allowed, "{prefix}: {answer:?}");
        assert!(answer.patched.is_none(), "{prefix}: {answer:?}");
    }
}

#[tokio::test]
async fn a_body_that_is_not_an_admission_review_gets_400_with_a_reason() {
    let harness = start(host()).await;
    let cases: [(&[u8], &str); 5] = [
        (b"not json at all", "not an AdmissionReview"),
        (b"", "not an AdmissionReview"),
        (&[0xff, 0x00, 0x13, 0x37], "not an AdmissionReview"),
        (
            br#"{"kind":"Pod","apiVersion":"v1"}"#,
            r#"expected kind "AdmissionReview""#,
        ),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
            r#"no "request""#,
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = harness.post("/validate", body.to_vec()).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer.contains(reason),
            "{answer:?} should contain {reason:?}"
        );
    }
}

#[tokio::test]
async fn a_broken_field_is_named_in_the_parse_error() {
    let harness = start(host()).await;
    let mut review: Value = serde_json::from_slice(&fixture("002")).unwrap();
    review["request"]["operation"] = json!("PATCH");
    let (status, answer) = harness
        .post("/validate", serde_json::to_vec(&review).unwrap())
        .await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("request.operation"), "{answer}");
}

#[tokio::test]
async fn a_review_of_another_kind_gets_an_invalid_answer() {
    let harness = start(host()).await;
    let mut review: Value = serde_json::from_slice(&fixture("002")).unwrap();
    review["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    review["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    let body = serde_json::to_vec(&review).unwrap();
    let (status, answer) = harness.post("/validate", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let answer = Answer::read(&body, &answer);
    assert!(!answer.allowed);
    assert_eq!(answer.code, Some(400));
    let message = answer.message.unwrap();
    assert!(
        message.contains("admits only kosmos.io/v1alpha1 VirtualCluster")
            && message.contains("/v1 Pod"),
        "{message}"
    );
}

#[tokio::test]
async fn an_object_that_is_no_virtual_cluster_is_denied_naming_the_field() {
    let harness = start(host()).await;
    let mut review: Value = serde_json::from_slice(&fixture("002")).unwrap();
    review["request"]["object"]["spec"]["promoteResources"]["nodes"] = json!("node-a");
    let body = serde_json::to_vec(&review).unwrap();
    for path in ["/validate", "/mutate"] {
        let (status, answer) = harness.post(path, body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let answer = Answer::read(&body, &answer);
        assert!(!answer.allowed, "{path}");
        assert_eq!(answer.code, Some(422), "{path}");
        let message = answer.message.unwrap();
        assert!(
            message.starts_with("object.spec.promoteResources.nodes: "),
            "{path}: {message}"
        );
    }
}

#[tokio::test]
async fn a_body_over_3_mib_gets_413() {
    let harness = start(host()).await;
    let mut review: Value = serde_json::from_slice(&fixture("002")).unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        json!({ "padding": "x".repeat(DEFAULT_MAX_BODY_BYTES) });
    let (status, answer) = harness
        .post("/validate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&answer).contains("3 MiB"));
    // Just under the limit is still read.
    let (status, _) = harness.post("/validate", fixture("002")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_waits_for_both_caches_and_metrics_count_requests() {
    let harness = start_with(support::enforce(host()), Readiness::default()).await;
    assert_eq!(harness.get("/healthz").await.0, StatusCode::OK);
    let (status, reason) = harness.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reason.contains("nodes, virtualclusters"), "{reason}");
    harness.webhook.readiness.mark_nodes_synced();
    let (status, reason) = harness.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason, "waiting for the first list of: virtualclusters");
    harness.webhook.readiness.mark_clusters_synced();
    assert_eq!(harness.get("/readyz").await.0, StatusCode::OK);

    harness.review("002").await;
    harness.post("/validate", "garbage").await;
    let (status, text) = harness.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(r#"vc_webhook_admission_requests_total{endpoint="validate",operation="CREATE",result="allowed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vc_webhook_admission_requests_total{endpoint="validate",operation="other",result="invalid"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("vc_webhook_admission_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn parse_only_mode_admits_anything_well_formed() {
    let harness = start_with(Admission::ParseOnly, Readiness::synced()).await;
    let answer = harness.review("002").await;
    assert!(answer.allowed && answer.patched.is_none());
    tokio::time::timeout(Duration::from_secs(10), harness.server.stop())
        .await
        .expect("the server stops promptly");
}

#[cfg(test)]
/// Lays out `pair` the way the kubelet mounts a Secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<version>`, and swaps `..data` atomically (rename of a new symlink).
fn publish_secret_version(directory: &std::path::Path, version: &str, pair: &support::ServingPair) {
    let version_dir = directory.join(version);
    std::fs::create_dir(&version_dir).unwrap();
    pair.write_to(&version_dir).unwrap();
    let staging = directory.join("..data_tmp");
    std::os::unix::fs::symlink(version, &staging).unwrap();
    std::fs::rename(&staging, directory.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = directory.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[cfg(test)]
/// Connects until the server presents `expected`, for at most ten seconds.
async fn wait_for_certificate(
    addr: std::net::SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    expected: &rustls::pki_types::CertificateDer<'static>,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if support::connect(addr, Arc::clone(client))
            .await
            .unwrap()
            .server_cert
            == *expected
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn certificate_rotation_reaches_new_connections_and_spares_open_ones() {
    let pki = support::TestPki::new().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let first = pki.issue("first").unwrap();
    let second = pki.issue("second").unwrap();
    let third = pki.issue("third").unwrap();
    publish_secret_version(directory.path(), "..2026_11_26_first", &first);

    let provider = crypto_provider();
    let certificate = Arc::new(
        ReloadingCertificate::load(
            CertificatePaths {
                cert: directory.path().join("tls.crt"),
                key: directory.path().join("tls.key"),
            },
            Arc::clone(&provider),
        )
        .unwrap(),
    );
    let stop_watching = tokio_util::sync::CancellationToken::new();
    tokio::spawn(Arc::clone(&certificate).watch(Duration::from_millis(100), stop_watching.clone()));
    let webhook = Arc::new(Webhook {
        admission: support::enforce(host()),
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::synced()),
        limits: Limits::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = vc_webhook::spawn(
        listener,
        server_config(Arc::clone(&certificate), provider).unwrap(),
        webhook,
    )
    .unwrap();
    let addr = server.local_addr;
    let client = support::client_config(pki.ca_der()).unwrap();

    let mut early = support::connect(addr, Arc::clone(&client)).await.unwrap();
    assert_eq!(early.server_cert, first.cert_der);
    assert_eq!(
        early.post("/validate", fixture("002")).await.unwrap().0,
        StatusCode::OK
    );

    // Secret volume update: the `..data` symlink swaps to a new directory.
    publish_secret_version(directory.path(), "..2026_11_26_second", &second);
    assert!(
        wait_for_certificate(addr, &client, &second.cert_der).await,
        "new connections see the second certificate after the ..data swap"
    );
    // The connection opened before the swap keeps working on its session.
    let (status, answer) = early.post("/validate", fixture("002")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(Answer::read(&fixture("002"), &answer).allowed);

    // A half-written replacement (certificate of one pair, key of another) is refused:
    // the previous certificate keeps serving.
    let cert_path = directory.path().join("plain.crt");
    let key_path = directory.path().join("plain.key");
    std::fs::write(&cert_path, &third.cert_pem).unwrap();
    std::fs::write(&key_path, &second.key_pem).unwrap();
    let in_place = ReloadingCertificate::load(
        CertificatePaths {
            cert: cert_path.clone(),
            key: key_path.clone(),
        },
        crypto_provider(),
    );
    assert!(
        in_place
            .unwrap_err()
            .to_string()
            .contains("does not match the private key"),
        "a mismatched pair is refused with a clear reason"
    );
    std::fs::remove_file(directory.path().join("tls.crt")).unwrap();
    std::fs::write(directory.path().join("tls.crt"), &third.cert_pem).unwrap();
    assert!(certificate.reload_if_changed().is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        support::connect(addr, Arc::clone(&client))
            .await
            .unwrap()
            .server_cert,
        second.cert_der,
        "a mismatched pair must not replace the serving certificate"
    );
    // Files rewritten in place, completing the pair: the third certificate is served.
    std::fs::remove_file(directory.path().join("tls.key")).unwrap();
    std::fs::write(directory.path().join("tls.key"), &third.key_pem).unwrap();
    assert!(
        wait_for_certificate(addr, &client, &third.cert_der).await,
        "new connections see the certificate rewritten in place"
    );
    stop_watching.cancel();
    server.stop().await;
}

/// kube-apiserver (Go) negotiates HTTP/2 with webhooks when the server offers it.
#[tokio::test]
async fn http2_is_negotiated_and_served() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let harness = start(host()).await;
    let mut config = (*harness.client).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(harness.server.local_addr)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let body = fixture("002");
    let request = http::Request::post("https://localhost/validate?timeout=5s")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert!(Answer::read(&body, &answer).allowed);
}

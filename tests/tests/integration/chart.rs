//! The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk through
//! `tests/chart/render.py`): what it installs, with which rights, and that it refuses bad
//! values. Every test prints `skipped: <why>` and returns when python3 or the engine is
//! missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use pretty_assertions::assert_eq;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use vc_tests::helm::{self, HelmEngine, Manifests, Render};

const NAMESPACE: &str = "kosmos-system";
const WEBHOOK: &str = "kosmos-vc-webhook";
const CONTROLLER: &str = "kosmos-vc-controller";
const TLS_SECRET: &str = "kosmos-vc-webhook-tls";

/// A directory under the system temp dir, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(purpose: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kosmos-vc-chart-{}-{purpose}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

macro_rules! engine_or_skip {
    () => {
        match HelmEngine::find() {
            Ok(engine) => engine,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// Values for the `secret` TLS mode: an existing Secret and the CA that signed it.
fn secret_mode_sets() -> Vec<String> {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUb3BlcmF0b3ItY2E=\n-----END CERTIFICATE-----\n";
    let bundle = base64::engine::general_purpose::STANDARD.encode(pem);
    vec![
        "webhook.tls.mode=secret".to_owned(),
        "webhook.tls.secret.name=operator-webhook-tls".to_owned(),
        format!("webhook.tls.secret.caBundle={bundle}"),
    ]
}

/// Sets that turn on every optional part and every optional flag.
const EVERYTHING_ON: &[&str] = &[
    "controller.replicas=2",
    "serviceMonitor.enabled=true",
    "networkPolicy.enabled=true",
    "tenantDefaults.etcd.storageClass=fast-ssd",
    "policy.overcommit.cpu=2",
    "policy.overcommit.memory=1.5",
    "policy.maxNodesPerCluster=8",
    "policy.maxCpuPerCluster=64",
    "policy.maxMemoryPerCluster=256Gi",
    "policy.maxClustersPerNamespace=3",
    "controller.controlPlaneNodeSelector.pool=infra",
    "controller.hostPodCIDRs={10.244.0.0/16,fd00:10:244::/56}",
];

fn render(engine: &HelmEngine, sets: &[&str]) -> Manifests {
    let request = sets
        .iter()
        .fold(Render::new(), |render, set| render.set(set));
    match request.run(engine) {
        Ok(manifests) => manifests,
        Err(failure) => panic!("render with {sets:?} failed: {failure}"),
    }
}

fn one<'a>(manifests: &'a Manifests, kind: &str, name: &str) -> &'a Value {
    manifests
        .get(kind, name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", manifests.summary()))
}

fn typed<T: DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|error| panic!("{} does not deserialize: {error}", object["kind"]))
}

// --- every object is what its kind says ---------------------------------------------

/// Deserializes into `T` and back, and compares: a misspelled or misplaced field would
/// be dropped by the typed round trip, so it shows up as a difference.
fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|error| error.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    match first_difference(object, &back, String::new()) {
        None => Ok(()),
        Some(path) => Err(format!(
            "field {path} does not survive a round trip through the typed object"
        )),
    }
}

fn first_difference(rendered: &Value, typed: &Value, path: String) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(left), Value::Object(right)) => left
            .keys()
            .chain(right.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .find_map(|key| match (left.get(key), right.get(key)) {
                (Some(l), Some(r)) => first_difference(l, r, format!("{path}.{key}")),
                _ => Some(format!("{path}.{key}")),
            }),
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(index, (l, r))| first_difference(l, r, format!("{path}[{index}]"))),
        // JSON has one number type: 10 and 10.0 are the same value.
        (Value::Number(left), Value::Number(right)) if left.as_f64() == right.as_f64() => None,
        _ if rendered == typed => None,
        _ => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path
        }),
    }
}

/// Kinds without a k8s-openapi type (Prometheus Operator, cert-manager): checked as
/// generic namespaced objects with a spec.
fn generic_object(object: &Value) -> Result<(), String> {
    let metadata = &object["metadata"];
    if !metadata["name"].is_string() || !metadata["namespace"].is_string() {
        return Err("needs metadata.name and metadata.namespace".to_owned());
    }
    if !object["spec"].is_object() {
        return Err("needs a spec object".to_owned());
    }
    Ok(())
}

fn check_typed(object: &Value) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(object)
        }
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("v1", "Secret") => round_trip::<Secret>(object),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(object),
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            round_trip::<k8s_openapi::api::scheduling::v1::PriorityClass>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(object),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip::<MutatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            round_trip::<ValidatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => round_trip::<
            k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
        >(object),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => round_trip::<
            k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        >(object),
        ("monitoring.coreos.com/v1", "ServiceMonitor")
        | ("cert-manager.io/v1", "Issuer" | "Certificate") => generic_object(object),
        _ => Err(format!("unexpected kind {api_version}/{kind}")),
    }
}

fn assert_every_object_typed(manifests: &Manifests) {
    let problems: Vec<String> = manifests
        .objects
        .iter()
        .filter_map(|object| {
            check_typed(object).err().map(|problem| {
                format!(
                    "{} {}: {problem}",
                    object["kind"], object["metadata"]["name"]
                )
            })
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_object_of_every_tls_mode_deserializes_into_its_kubernetes_type() {
    let engine = engine_or_skip!();
    let secret_mode = secret_mode_sets();
    let secret_mode: Vec<&str> = secret_mode.iter().map(String::as_str).collect();
    let mut cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["webhook.tls.mode=helm"],
        vec!["webhook.tls.mode=certManager"],
        secret_mode.clone(),
    ];
    for tls in [vec!["webhook.tls.mode=certManager"], secret_mode] {
        cases.push(EVERYTHING_ON.iter().copied().chain(tls).collect());
    }
    for sets in cases {
        let manifests = render(&engine, &sets);
        assert!(
            manifests.objects.len() >= 13,
            "{sets:?} rendered too little: {:?}",
            manifests.summary()
        );
        assert_every_object_typed(&manifests);
    }
}

#[test]
fn the_typed_check_catches_a_misspelled_field() {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"ports": [{"port": 443, "targetProt": "https"}]}
    });
    let problem = check_typed(&object).expect_err("a typo must not pass");
    assert!(problem.contains(".spec.ports[0].targetProt"), "{problem}");
}

#[test]
fn rendered_crd_is_the_generated_one() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);
    let crds: Vec<&Value> = manifests.of_kind("CustomResourceDefinition").collect();
    assert_eq!(crds.len(), 1, "{:?}", manifests.summary());
    assert_eq!(
        manifests.objects[0]["kind"], "CustomResourceDefinition",
        "Helm installs crds/ before anything else"
    );
    let rendered: CustomResourceDefinition = typed(crds[0]);
    assert_eq!(rendered, vc_api::crd::virtual_cluster_crd());
}

// --- lint and values ----------------------------------------------------------------

#[test]
fn lint_finds_no_warnings_or_errors_in_any_tls_mode() {
    let engine = engine_or_skip!();
    let secret_mode = secret_mode_sets();
    let secret_mode: Vec<&str> = secret_mode.iter().map(String::as_str).collect();
    for sets in [
        vec![],
        vec!["webhook.tls.mode=certManager"],
        secret_mode,
        EVERYTHING_ON.to_vec(),
    ] {
        let report = engine
            .lint(&sets)
            .unwrap_or_else(|failure| panic!("lint with {sets:?} did not run: {failure}"));
        assert_eq!(report.total_charts_linted, 1);
        assert!(
            report.problems().is_empty(),
            "lint with {sets:?}: {:#?}",
            report.problems()
        );
    }
}

#[test]
fn bad_values_are_refused_with_a_message_naming_them() {
    let engine = engine_or_skip!();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["controller.replicas=-1"],
            &["/controller/replicas", "minimum"],
        ),
        (&["webhook.replicas=-2"], &["/webhook/replicas", "minimum"]),
        (
            &["webhook.tls.mode=vault"],
            &["/webhook/tls/mode", "'certManager', 'helm', 'secret'"],
        ),
        // --set passes "0.5" as a string; a values file passes a number (below).
        (
            &["policy.overcommit.cpu=0.5"],
            &["/policy/overcommit/cpu", "does not match pattern"],
        ),
        (&["webhook.timeoutSeconds=31"], &["/webhook/timeoutSeconds"]),
        (
            &["tenantDefaults.etcd.replicas=2"],
            &["/tenantDefaults/etcd/replicas"],
        ),
        (
            &["policy.maxMemoryPerCluster=lots"],
            &["/policy/maxMemoryPerCluster"],
        ),
        (
            &["controler.replicas=2"],
            &["additional properties 'controler'"],
        ),
        (
            &["webhook.tls.mode=secret"],
            &["webhook.tls.secret.name is required"],
        ),
        (
            &["webhook.tls.mode=secret", "webhook.tls.secret.name=mine"],
            &["webhook.tls.secret.caBundle is required"],
        ),
        (
            &[
                "webhook.tls.mode=secret",
                "webhook.tls.secret.name=mine",
                "webhook.tls.secret.caBundle=bm90IGEgY2VydA==",
            ],
            &["webhook.tls.secret.caBundle must be the base64-encoded PEM"],
        ),
    ];
    for (sets, expected) in cases {
        let request = sets
            .iter()
            .fold(Render::new(), |render, set| render.set(set));
        assert_refused(&engine, &request, expected);
    }

    let dir = ScratchDir::new("values");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "policy:\n  overcommit:\n    memory: 0.5\n").expect("write values");
    assert_refused(
        &engine,
        &Render::new().values_file(&values),
        &["/policy/overcommit/memory", "minimum: got 0.5, want 1"],
    );
}

fn assert_refused(engine: &HelmEngine, request: &Render, expected: &[&str]) {
    let failure = match request.run(engine) {
        Ok(manifests) => panic!("{request:?} rendered: {:?}", manifests.summary()),
        Err(failure) => failure,
    };
    assert_eq!(failure.exit_code, Some(3), "{request:?}: {failure}");
    for fragment in expected {
        assert!(
            failure.message.contains(fragment),
            "{request:?}: expected {fragment:?} in {}",
            failure.message
        );
    }
}

// --- webhook TLS ------------------------------------------------------------------------

fn secret_data(manifests: &Manifests, name: &str) -> BTreeMap<String, String> {
    let data = &one(manifests, "Secret", name)["data"];
    ["ca.crt", "tls.crt", "tls.key"]
        .into_iter()
        .map(|key| {
            let value = data[key]
                .as_str()
                .unwrap_or_else(|| panic!("Secret {name} has no {key}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn ca_bundles(manifests: &Manifests) -> Vec<Value> {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .into_iter()
    .map(|kind| one(manifests, kind, WEBHOOK)["webhooks"][0]["clientConfig"]["caBundle"].clone())
    .collect()
}

fn pem_certificate(base64_pem: &str) -> CertificateDer<'static> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(base64_pem)
        .expect("base64 PEM");
    CertificateDer::from_pem_slice(&pem).expect("a PEM certificate")
}

/// Verifies `leaf` the way the apiserver does before calling the webhook: chain to the
/// caBundle, validity now, and `server_name` among its SANs.
fn verify_serving_certificate(
    ca_bundle: &str,
    leaf: &str,
    server_name: &str,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_certificate(ca_bundle))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|error| rustls::Error::General(error.to_string()))?;
    verifier
        .verify_server_cert(&pem_certificate(leaf), &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn helm_mode_serving_certificate_is_signed_by_the_bundled_ca_for_the_service() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &["webhook.tls.mode=helm"]);
    let data = secret_data(&manifests, TLS_SECRET);
    assert_eq!(
        ca_bundles(&manifests),
        vec![Value::String(data["ca.crt"].clone()); 2],
        "both webhook configurations trust the CA in the Secret"
    );
    for name in [
        format!("{WEBHOOK}.{NAMESPACE}.svc"),
        format!("{WEBHOOK}.{NAMESPACE}.svc.cluster.local"),
    ] {
        verify_serving_certificate(&data["ca.crt"], &data["tls.crt"], &name)
            .unwrap_or_else(|error| panic!("the apiserver would refuse {name}: {error}"));
    }
    // The verification is real: another name, or another render's CA, is refused.
    assert!(
        verify_serving_certificate(
            &data["ca.crt"],
            &data["tls.crt"],
            "kosmos-vc-webhook.other.svc"
        )
        .is_err()
    );
    let other = secret_data(&render(&engine, &[]), TLS_SECRET);
    assert!(
        verify_serving_certificate(
            &other["ca.crt"],
            &data["tls.crt"],
            &format!("{WEBHOOK}.{NAMESPACE}.svc")
        )
        .is_err()
    );
}

#[test]
fn helm_mode_upgrade_with_the_previous_secret_keeps_the_same_ca() {
    let engine = engine_or_skip!();
    // render.py serves the previous Secret to Helm's `lookup` over HTTPS with a
    // certificate made by openssl.
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success())
    {
        eprintln!("skipped: the openssl command is absent; render.py needs it to serve lookups");
        return;
    }
    let first = render(&engine, &[]);
    let previous = secret_data(&first, TLS_SECRET);

    let dir = ScratchDir::new("upgrade");
    // JSON is YAML: render.py reads it like a manifest file.
    let existing = dir.path().join("existing.yaml");
    let secret = serde_json::to_string_pretty(one(&first, "Secret", TLS_SECRET)).expect("json");
    std::fs::write(&existing, secret).expect("write existing objects");

    let upgrade = Render::new()
        .existing(&existing)
        .run(&engine)
        .unwrap_or_else(|failure| panic!("upgrade render failed: {failure}"));
    assert_eq!(secret_data(&upgrade, TLS_SECRET), previous);
    assert_eq!(
        ca_bundles(&upgrade),
        vec![Value::String(previous["ca.crt"].clone()); 2]
    );

    // Without the Secret, a render makes a new CA: the reuse above is the lookup's doing.
    let fresh = render(&engine, &[]);
    assert_ne!(
        secret_data(&fresh, TLS_SECRET)["ca.crt"],
        previous["ca.crt"]
    );
}

#[test]
fn cert_manager_mode_issues_the_serving_certificate_and_injects_its_ca() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &["webhook.tls.mode=certManager"]);
    assert!(
        manifests.get("Secret", TLS_SECRET).is_none(),
        "cert-manager writes the Secret, not Helm"
    );
    let certificate = one(&manifests, "Certificate", TLS_SECRET);
    assert_eq!(certificate["spec"]["secretName"], TLS_SECRET);
    let dns: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        dns.contains(&"kosmos-vc-webhook.kosmos-system.svc"),
        "{dns:?}"
    );

    // The CA chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    let issuer_name = certificate["spec"]["issuerRef"]["name"]
        .as_str()
        .expect("issuerRef");
    let ca_issuer = one(&manifests, "Issuer", issuer_name);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("CA issuer");
    let ca_certificate = manifests
        .of_kind("Certificate")
        .find(|object| object["spec"]["secretName"] == ca_secret)
        .expect("a Certificate writes the CA Secret");
    assert_eq!(ca_certificate["spec"]["isCA"], true);
    let root = ca_certificate["spec"]["issuerRef"]["name"]
        .as_str()
        .expect("issuerRef");
    assert!(one(&manifests, "Issuer", root)["spec"]["selfSigned"].is_object());

    let inject_from = format!("{NAMESPACE}/{TLS_SECRET}");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let configuration = one(&manifests, kind, WEBHOOK);
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            inject_from.as_str()
        );
        assert!(configuration["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    }
    assert_eq!(webhook_tls_volume(&manifests), TLS_SECRET);
}

#[test]
fn secret_mode_serves_the_given_secret_and_trusts_the_given_ca() {
    let engine = engine_or_skip!();
    let sets = secret_mode_sets();
    let bundle = sets[2].split_once('=').expect("caBundle set").1.to_owned();
    let manifests = render(
        &engine,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(
        manifests.of_kind("Secret").count(),
        0,
        "the Secret is the operator's"
    );
    assert_eq!(manifests.of_kind("Certificate").count(), 0);
    assert_eq!(ca_bundles(&manifests), vec![Value::String(bundle); 2]);
    assert_eq!(webhook_tls_volume(&manifests), "operator-webhook-tls");
}

fn webhook_tls_volume(manifests: &Manifests) -> String {
    let deployment: Deployment = typed(one(manifests, "Deployment", WEBHOOK));
    let pod = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    let volume = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|volume| volume.name == "webhook-tls")
        .expect("webhook-tls volume");
    volume
        .secret
        .and_then(|secret| secret.secret_name)
        .expect("secret volume")
}

// --- workloads ------------------------------------------------------------------------

fn container(manifests: &Manifests, name: &str) -> k8s_openapi::api::core::v1::Container {
    let deployment: Deployment = typed(one(manifests, "Deployment", name));
    let pod = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    assert_eq!(pod.containers.len(), 1, "{name} runs one container");
    pod.containers.into_iter().next().expect("a container")
}

fn args(container: &k8s_openapi::api::core::v1::Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// `--name=value` / `--name` pairs of a container's arguments.
fn flags(container: &k8s_openapi::api::core::v1::Container) -> Vec<(String, Option<String>)> {
    args(container)
        .iter()
        .map(|arg| {
            let flag = arg
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{arg} is not a flag"));
            match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (flag.to_owned(), None),
            }
        })
        .collect()
}

fn flag_value(container: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    flags(container)
        .into_iter()
        .find(|(flag, _)| flag == name)
        .and_then(|(_, value)| value)
}

#[test]
fn both_containers_run_locked_down() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);
    for name in [CONTROLLER, WEBHOOK] {
        let deployment: Deployment = typed(one(&manifests, "Deployment", name));
        let pod = deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .expect("pod spec");
        let pod_context = pod.security_context.clone().expect("pod securityContext");
        assert_eq!(pod_context.run_as_non_root, Some(true), "{name}");
        let container = pod.containers.first().expect("container");
        let context = container.security_context.clone().expect("securityContext");
        assert_eq!(context.run_as_non_root, Some(true), "{name}");
        assert_eq!(
            context.run_as_user,
            Some(65532),
            "{name}: the image's nonroot user"
        );
        assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(
            context.capabilities.and_then(|caps| caps.drop),
            Some(vec!["ALL".to_owned()]),
            "{name}"
        );
        assert_eq!(
            context.seccomp_profile.map(|profile| profile.type_),
            Some("RuntimeDefault".to_owned()),
            "{name}"
        );
        assert!(container.resources.is_some(), "{name} has resources");
        assert_eq!(pod.service_account_name.as_deref(), Some(name));
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/kosmos-io/kosmos-vc:0.1.0"),
            "the image the Dockerfile builds"
        );
        let binary = if name == CONTROLLER {
            "vc-controller"
        } else {
            "vc-webhook"
        };
        assert_eq!(
            container.command,
            Some(vec![format!("/usr/local/bin/{binary}")])
        );
    }
}

fn probe_target(probe: Option<k8s_openapi::api::core::v1::Probe>) -> (String, String, String) {
    let get = probe
        .and_then(|probe| probe.http_get)
        .expect("httpGet probe");
    let port = match get.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => name,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port) => port.to_string(),
    };
    (
        get.path.unwrap_or_default(),
        port,
        get.scheme.unwrap_or_default(),
    )
}

fn port_named(container: &k8s_openapi::api::core::v1::Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no port named {name}"))
        .container_port
}

#[test]
fn controller_leader_election_follows_the_replica_count() {
    let engine = engine_or_skip!();
    let single = render(&engine, &[]);
    let controller = container(&single, CONTROLLER);
    assert!(
        !flags(&controller)
            .iter()
            .any(|(flag, _)| flag == "leader-elect")
    );
    assert!(
        single.of_kind("Role").next().is_none(),
        "no Lease rights without leader election"
    );

    let many = render(&engine, &["controller.replicas=3"]);
    let deployment: Deployment = typed(one(&many, "Deployment", CONTROLLER));
    assert_eq!(
        deployment.spec.as_ref().and_then(|spec| spec.replicas),
        Some(3)
    );
    let controller = container(&many, CONTROLLER);
    assert!(flags(&controller).contains(&("leader-elect".to_owned(), None)));
    let lease = flag_value(&controller, "leader-election-lease-name").expect("lease name");
    let role: Role = typed(one(&many, "Role", CONTROLLER));
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let named: Vec<String> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.resource_names.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        named,
        vec![lease],
        "the Role covers exactly the Lease the flag names"
    );

    let env = controller.env.unwrap_or_default();
    for (variable, path) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let field = env
            .iter()
            .find(|var| var.name == variable)
            .and_then(|var| var.value_from.as_ref())
            .and_then(|source| source.field_ref.as_ref())
            .unwrap_or_else(|| panic!("{variable} from the downward API"));
        assert_eq!(field.field_path, path);
    }
}

#[test]
fn probes_hit_the_port_each_binary_listens_on() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);

    let controller = container(&manifests, CONTROLLER);
    let listen = flag_value(&controller, "probe-listen").expect("--probe-listen");
    assert_eq!(
        listen,
        format!("0.0.0.0:{}", port_named(&controller, "probes"))
    );
    assert_eq!(
        probe_target(controller.liveness_probe.clone()),
        (
            "/healthz".to_owned(),
            "probes".to_owned(),
            "HTTP".to_owned()
        )
    );
    assert_eq!(
        probe_target(controller.readiness_probe.clone()),
        ("/readyz".to_owned(), "probes".to_owned(), "HTTP".to_owned())
    );

    let webhook = container(&manifests, WEBHOOK);
    let listen = flag_value(&webhook, "listen").expect("--listen");
    assert_eq!(listen, format!("0.0.0.0:{}", port_named(&webhook, "https")));
    assert_eq!(
        probe_target(webhook.liveness_probe.clone()),
        (
            "/healthz".to_owned(),
            "https".to_owned(),
            "HTTPS".to_owned()
        )
    );
    assert_eq!(
        probe_target(webhook.readiness_probe.clone()),
        ("/readyz".to_owned(), "https".to_owned(), "HTTPS".to_owned())
    );
    let mount = webhook
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == "webhook-tls")
        .expect("TLS mount");
    assert_eq!(
        flag_value(&webhook, "tls-cert"),
        Some(format!("{}/tls.crt", mount.mount_path))
    );
    assert_eq!(
        flag_value(&webhook, "tls-key"),
        Some(format!("{}/tls.key", mount.mount_path))
    );
}

#[test]
fn webhook_is_highly_available_by_default() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);
    let deployment: Deployment = typed(one(&manifests, "Deployment", WEBHOOK));
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pdb: PodDisruptionBudget = typed(one(&manifests, "PodDisruptionBudget", WEBHOOK));
    let pdb_spec = pdb.spec.expect("PDB spec");
    assert_eq!(
        pdb_spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(pdb_spec.selector.as_ref(), Some(&spec.selector));

    let affinity = spec
        .template
        .spec
        .and_then(|pod| pod.affinity)
        .expect("affinity");
    let preferred = affinity
        .pod_anti_affinity
        .and_then(|anti| anti.preferred_during_scheduling_ignored_during_execution)
        .expect("preferred anti-affinity");
    let term = &preferred[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        term.label_selector
            .as_ref()
            .and_then(|selector| selector.match_labels.clone()),
        spec.selector.match_labels
    );

    // One replica: no PDB that would block every node drain.
    let single = render(&engine, &["webhook.replicas=1"]);
    assert!(single.of_kind("PodDisruptionBudget").next().is_none());
}

// --- webhook configurations -------------------------------------------------------------

#[test]
fn webhook_configurations_fail_closed_and_reach_the_webhook_service() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &["webhook.timeoutSeconds=7"]);
    let service: Service = typed(one(&manifests, "Service", WEBHOOK));
    let service_spec = service.spec.expect("Service spec");
    let port = &service_spec.ports.as_ref().expect("ports")[0];
    assert_eq!(port.port, 443);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".to_owned()))
    );
    let webhook = container(&manifests, WEBHOOK);
    assert_eq!(port_named(&webhook, "https"), 8443);
    let deployment: Deployment = typed(one(&manifests, "Deployment", WEBHOOK));
    assert_eq!(
        service_spec.selector,
        deployment.spec.and_then(|spec| spec.selector.match_labels)
    );

    let mutating: MutatingWebhookConfiguration =
        typed(one(&manifests, "MutatingWebhookConfiguration", WEBHOOK));
    let validating: ValidatingWebhookConfiguration =
        typed(one(&manifests, "ValidatingWebhookConfiguration", WEBHOOK));
    let mutating = mutating.webhooks.expect("webhooks");
    let validating = validating.webhooks.expect("webhooks");
    assert_eq!((mutating.len(), validating.len()), (1, 1));
    let common = [
        (
            mutating[0].client_config.clone(),
            mutating[0].rules.clone(),
            mutating[0].failure_policy.clone(),
            mutating[0].side_effects.clone(),
            mutating[0].timeout_seconds,
            mutating[0].admission_review_versions.clone(),
            mutating[0].match_policy.clone(),
            "/mutate",
        ),
        (
            validating[0].client_config.clone(),
            validating[0].rules.clone(),
            validating[0].failure_policy.clone(),
            validating[0].side_effects.clone(),
            validating[0].timeout_seconds,
            validating[0].admission_review_versions.clone(),
            validating[0].match_policy.clone(),
            "/validate",
        ),
    ];
    for (client, rules, failure, side_effects, timeout, versions, matching, path) in common {
        let reference = client.service.expect("service reference");
        assert_eq!(reference.name, WEBHOOK);
        assert_eq!(reference.namespace, NAMESPACE);
        assert_eq!(reference.port, Some(443));
        assert_eq!(reference.path.as_deref(), Some(path));
        assert_eq!(failure.as_deref(), Some("Fail"));
        assert_eq!(side_effects, "None");
        assert_eq!(timeout, Some(7));
        assert_eq!(versions, vec!["v1".to_owned()]);
        assert_eq!(matching.as_deref(), Some("Equivalent"));
        let rules = rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].api_groups, Some(vec!["kosmos.io".to_owned()]));
        assert_eq!(rules[0].api_versions, Some(vec!["v1alpha1".to_owned()]));
        assert_eq!(rules[0].resources, Some(vec!["virtualclusters".to_owned()]));
        assert_eq!(
            rules[0].operations,
            Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()])
        );
    }
}

// --- identities ------------------------------------------------------------------------

#[test]
fn rbac_has_no_wildcards_and_binds_each_role_to_the_pod_that_uses_it() {
    let engine = engine_or_skip!();
    // A release name other than the chart's, so nothing passes by being hard-coded.
    let manifests = match Render::new()
        .release("tenants")
        .namespace("platform")
        .set("controller.replicas=2")
        .run(&engine)
    {
        Ok(manifests) => manifests,
        Err(failure) => panic!("render failed: {failure}"),
    };
    let controller = "tenants-kosmos-vc-controller";
    let webhook = "tenants-kosmos-vc-webhook";

    for kind in ["ClusterRole", "Role"] {
        for role in manifests.of_kind(kind) {
            for rule in role["rules"].as_array().expect("rules") {
                for field in [
                    "apiGroups",
                    "resources",
                    "verbs",
                    "resourceNames",
                    "nonResourceURLs",
                ] {
                    let values = rule[field].as_array().cloned().unwrap_or_default();
                    assert!(
                        !values
                            .iter()
                            .any(|value| value.as_str().is_some_and(|s| s.contains('*'))),
                        "{kind} {}: wildcard in {field}: {rule}",
                        role["metadata"]["name"]
                    );
                }
            }
        }
    }

    for (binding_kind, role_kind, account) in [
        ("ClusterRoleBinding", "ClusterRole", controller),
        ("ClusterRoleBinding", "ClusterRole", webhook),
        ("RoleBinding", "Role", controller),
    ] {
        let binding = one(&manifests, binding_kind, account);
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        let role = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        assert!(
            manifests.get(role_kind, role).is_some(),
            "{binding_kind} {account} binds a missing {role_kind}"
        );
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": "platform"}])
        );
        assert!(manifests.get("ServiceAccount", account).is_some());
        let deployment: Deployment = typed(one(&manifests, "Deployment", account));
        assert_eq!(
            deployment
                .spec
                .and_then(|spec| spec.template.spec)
                .and_then(|pod| pod.service_account_name)
                .as_deref(),
            Some(account)
        );
    }

    // The webhook lets exactly the controller's identity write spec.kubeconfig.
    let webhook_container = container(&manifests, webhook);
    assert_eq!(
        flag_value(&webhook_container, "controller-username"),
        Some(format!("system:serviceaccount:platform:{controller}"))
    );
}

/// The apiserver refuses to create or bind a Role granting more than the creator holds
/// (RBAC escalation prevention), and so does the test API server, but only when a
/// scenario reaches that write. This test checks it from the rendered chart alone, with
/// the server's own coverage rules (`vc_test_apiserver::rbac::uncovered_rules`): the chart's
/// controller ClusterRole must cover every rule the controller writes into the
/// clustertree's Role and ClusterRole.
/// Each tenant's pool ResourceQuota counts only pods of the pool's PriorityClass: the
/// chart installs exactly that class, never preempting, never the cluster default.
#[test]
fn the_chart_installs_the_priority_class_pool_quotas_count() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);
    let class = one(
        &manifests,
        "PriorityClass",
        vc_api::constants::POOL_PRIORITY_CLASS,
    );
    assert_eq!(class["value"], 0);
    assert_eq!(class["globalDefault"], false);
    assert_eq!(class["preemptionPolicy"], "Never");
}

#[test]
fn controller_holds_every_right_it_grants_the_clustertree() {
    use vc_controller::resources::{BuildContext, Tenant, clustertree};

    let engine = engine_or_skip!();
    // A release name other than the chart's, so the ClusterRole's name must flow from the
    // chart into the controller's flag.
    let manifests = match Render::new()
        .release("tenants")
        .namespace("platform")
        .run(&engine)
    {
        Ok(manifests) => manifests,
        Err(failure) => panic!("render failed: {failure}"),
    };
    let controller = "tenants-kosmos-vc-controller";
    let fixed_name = "tenants-kosmos-vc-clustertree";
    let controller_role: ClusterRole = typed(one(&manifests, "ClusterRole", controller));
    let held = controller_role.rules.unwrap_or_default();

    // The chart's fixed clustertree ClusterRole is exactly what the controller's code says
    // the clustertree needs in its workload namespace, and the controller is told its name.
    let fixed: ClusterRole = typed(one(&manifests, "ClusterRole", fixed_name));
    assert_eq!(fixed.rules, Some(clustertree::workload_rules()));
    assert_eq!(
        flag_value(
            &container(&manifests, controller),
            "clustertree-cluster-role"
        )
        .as_deref(),
        Some(fixed_name)
    );

    let vc: vc_api::VirtualCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kosmos.io/v1alpha1",
        "kind": "VirtualCluster",
        "metadata": {"name": "prod", "namespace": "team-a", "uid": "0b6f7c1e"},
        "spec": {"promoteResources": {"nodes": ["node1", "node2"], "resources": {"cpu": "4"}}}
    }))
    .expect("VirtualCluster");
    let build = BuildContext {
        clustertree_cluster_role: fixed_name.to_owned(),
        ..BuildContext::default()
    };
    let tenant = Tenant::resolve(&vc, &build).expect("tenant");

    // What the controller writes per tenant it must hold (escalation prevention) ...
    let mut granted = clustertree::virtual_cluster_reader_role(&tenant)
        .rules
        .unwrap_or_default();
    granted.extend(
        clustertree::cluster_role(&tenant, &["node1".to_owned(), "node2".to_owned()])
            .rules
            .unwrap_or_default(),
    );
    assert!(!granted.is_empty(), "the clustertree is granted something");
    let missing = |held: &[PolicyRule], granted: &[PolicyRule]| -> Vec<String> {
        vc_test_apiserver::rbac::uncovered_rules(held, granted)
            .iter()
            .map(vc_test_apiserver::rbac::compact_string)
            .collect()
    };
    assert_eq!(missing(&held, &granted), Vec::<String>::new());

    // ... and the workload rules it only binds: `bind` on that one ClusterRole, by name,
    // while holding none of its rules (pods, exec, Secrets' delete ...).
    let binding = clustertree::role_binding(&tenant);
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, fixed_name);
    let bind_anything = PolicyRule {
        api_groups: Some(vec!["rbac.authorization.k8s.io".to_owned()]),
        resources: Some(vec!["clusterroles".to_owned()]),
        verbs: vec!["bind".to_owned()],
        ..PolicyRule::default()
    };
    let bind = PolicyRule {
        resource_names: Some(vec![fixed_name.to_owned()]),
        ..bind_anything.clone()
    };
    assert_eq!(missing(&held, &[bind]), Vec::<String>::new());
    assert_eq!(missing(&held, &[bind_anything]).len(), 1);
    let workload = clustertree::workload_rules();
    let not_held = missing(&held, &workload);
    for resource in [
        "pods",
        "pods/exec",
        "pods/log",
        "configmaps",
        "endpointslices",
    ] {
        assert!(
            not_held
                .iter()
                .any(|rule| rule.contains(&format!("\"{resource}\""))),
            "the controller holds {resource} rights it only needs to bind: {not_held:?}"
        );
    }
}

/// `controller.claimedNodePods=evict` passes `--claimed-node-pods=evict` and grants the
/// controller what eviction needs (listing pods, creating evictions); `keep` grants
/// neither, and any other value is refused naming the value.
#[test]
fn claimed_node_pods_evict_grants_eviction_only_when_chosen() {
    let engine = engine_or_skip!();
    let pod_rules = |manifests: &Manifests| -> Vec<String> {
        let role: ClusterRole = typed(one(manifests, "ClusterRole", CONTROLLER));
        role.rules
            .unwrap_or_default()
            .iter()
            .filter(|rule| {
                rule.resources
                    .iter()
                    .flatten()
                    .any(|resource| resource == "pods" || resource.starts_with("pods/"))
            })
            .map(vc_test_apiserver::rbac::compact_string)
            .collect()
    };
    let kept = render(&engine, &[]);
    assert_eq!(pod_rules(&kept), Vec::<String>::new());
    assert_eq!(
        flag_value(&container(&kept, CONTROLLER), "claimed-node-pods").as_deref(),
        Some("keep")
    );
    let evicting = render(&engine, &["controller.claimedNodePods=evict"]);
    assert_eq!(
        pod_rules(&evicting),
        [
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["list"]}"#,
            r#"{APIGroups:[""], Resources:["pods/eviction"], Verbs:["create"]}"#,
        ]
    );
    assert_eq!(
        flag_value(&container(&evicting, CONTROLLER), "claimed-node-pods").as_deref(),
        Some("evict")
    );
    let refused = Render::new()
        .set("controller.claimedNodePods=drain")
        .run(&engine)
        .expect_err("drain is not a mode");
    assert!(refused.to_string().contains("claimedNodePods"), "{refused}");
}

#[test]
fn default_release_keeps_the_controller_identity_the_webhook_trusts_by_default() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &[]);
    assert!(manifests.get("ServiceAccount", CONTROLLER).is_some());
    let (user, groups) = manifests
        .service_account_identity(CONTROLLER)
        .expect("controller identity");
    assert_eq!(
        user,
        "system:serviceaccount:kosmos-system:kosmos-vc-controller"
    );
    assert!(groups.contains(&"system:serviceaccounts:kosmos-system".to_owned()));
    // docs/contracts.md: vc-webhook's --controller-username default.
    assert_eq!(
        flag_value(&container(&manifests, WEBHOOK), "controller-username").as_deref(),
        Some("system:serviceaccount:kosmos-system:kosmos-vc-controller")
    );
}

// --- flags --------------------------------------------------------------------------

fn flag_names(container: &k8s_openapi::api::core::v1::Container) -> BTreeSet<String> {
    flags(container).into_iter().map(|(name, _)| name).collect()
}

#[test]
fn values_map_onto_every_flag_of_the_contract() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, EVERYTHING_ON);
    let webhook = container(&manifests, WEBHOOK);
    let expected_webhook: BTreeSet<String> = [
        "listen",
        "tls-cert",
        "tls-key",
        "controller-username",
        "default-kubernetes-version",
        "default-apiserver-replicas",
        "default-apiserver-service-type",
        "default-etcd-replicas",
        "default-etcd-storage-size",
        "default-etcd-storage-class",
        "clustertree-image",
        "overcommit",
        "max-nodes-per-cluster",
        "max-cpu-per-cluster",
        "max-memory-per-cluster",
        "max-clusters-per-namespace",
        "max-connections",
        "tls-handshake-timeout",
        "header-read-timeout",
        "request-timeout",
        "idle-timeout",
        "max-concurrent-streams",
        "max-header-bytes",
        "max-body-bytes",
        "max-body-bytes-in-flight",
        "log-format",
        "log-level",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(flag_names(&webhook), expected_webhook);
    let overcommit: Vec<String> = flags(&webhook)
        .into_iter()
        .filter(|(name, _)| name == "overcommit")
        .filter_map(|(_, value)| value)
        .collect();
    assert_eq!(overcommit, ["cpu=2", "memory=1.5"]);
    for (flag, value) in [
        ("default-kubernetes-version", "v1.33.4"),
        ("default-apiserver-replicas", "1"),
        ("default-apiserver-service-type", "ClusterIP"),
        ("default-etcd-replicas", "1"),
        ("default-etcd-storage-size", "1Gi"),
        ("default-etcd-storage-class", "fast-ssd"),
        (
            "clustertree-image",
            vc_api::constants::DEFAULT_CLUSTERTREE_IMAGE,
        ),
        ("max-nodes-per-cluster", "8"),
        ("max-cpu-per-cluster", "64"),
        ("max-memory-per-cluster", "256Gi"),
        ("max-clusters-per-namespace", "3"),
        ("max-connections", "256"),
        ("tls-handshake-timeout", "5s"),
        ("header-read-timeout", "5s"),
        ("request-timeout", "10s"),
        ("idle-timeout", "90s"),
        ("max-concurrent-streams", "100"),
        ("max-header-bytes", "64Ki"),
        ("max-body-bytes", "3Mi"),
        ("max-body-bytes-in-flight", "64Mi"),
        ("log-format", "json"),
        ("log-level", "info"),
    ] {
        assert_eq!(
            flag_value(&webhook, flag).as_deref(),
            Some(value),
            "--{flag}"
        );
    }

    let controller = container(&manifests, CONTROLLER);
    let expected_controller: BTreeSet<String> = [
        "probe-listen",
        "leader-elect",
        "leader-election-lease-name",
        "image-registry",
        "etcd-image",
        "clustertree-image",
        "clustertree-cluster-role",
        "claimed-node-pods",
        "control-plane-node-selector",
        "host-pod-cidrs",
        "cluster-domain",
        "concurrency",
        "log-format",
        "log-level",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(flag_names(&controller), expected_controller);
    for (flag, value) in [
        ("image-registry", "registry.k8s.io"),
        ("etcd-image", "registry.k8s.io/etcd:3.5.21-0"),
        (
            "clustertree-image",
            vc_api::constants::DEFAULT_CLUSTERTREE_IMAGE,
        ),
        ("cluster-domain", "cluster.local"),
        ("concurrency", "16"),
        ("control-plane-node-selector", "pool=infra"),
        ("clustertree-cluster-role", "kosmos-vc-clustertree"),
        ("claimed-node-pods", "keep"),
        ("host-pod-cidrs", "10.244.0.0/16,fd00:10:244::/56"),
    ] {
        assert_eq!(
            flag_value(&controller, flag).as_deref(),
            Some(value),
            "--{flag}"
        );
    }

    // Unlimited ceilings and no storage class: the flags are left out, not passed empty.
    let default_manifests = render(&engine, &[]);
    for absent in ["control-plane-node-selector", "host-pod-cidrs"] {
        assert!(
            !flag_names(&container(&default_manifests, CONTROLLER)).contains(absent),
            "--{absent} rendered by default"
        );
    }
    let defaults = container(&default_manifests, WEBHOOK);
    for absent in [
        "default-etcd-storage-class",
        "overcommit",
        "max-nodes-per-cluster",
        "max-cpu-per-cluster",
        "max-memory-per-cluster",
        "max-clusters-per-namespace",
    ] {
        assert!(
            !flag_names(&defaults).contains(absent),
            "--{absent} rendered by default"
        );
    }
}

/// Long flags a binary's `--help` lists, and whether each takes a value.
fn help_flags(binary: &Path) -> Result<BTreeMap<String, bool>, String> {
    let output = Command::new(binary)
        .arg("--help")
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --help failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let help = String::from_utf8_lossy(&output.stdout);
    let mut flags = BTreeMap::new();
    for line in help.lines() {
        // Flag definitions start the line ("-h, --help", "--listen <ADDR>"); mentions of
        // flags inside descriptions do not count.
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let Some((_, rest)) = line.split_once("--") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let after = rest[name.len()..].trim_start_matches(['=', ' ']);
        flags.insert(name, after.starts_with('<'));
    }
    Ok(flags)
}

fn built_binary(name: &str) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| helm::workspace_root().join("target"));
    ["debug", "release"]
        .into_iter()
        .map(|profile| target.join(profile).join(name))
        .filter(|path| path.is_file())
        .max_by_key(|path| {
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
        })
}

/// vc-controller is a library dependency of this crate: its own flag parser must accept
/// the rendered arguments, and see the values the chart meant.
#[test]
fn controller_flag_parser_accepts_the_rendered_arguments() {
    use clap::Parser as _;

    let engine = engine_or_skip!();
    for sets in [&[][..], EVERYTHING_ON] {
        let manifests = render(&engine, sets);
        let controller = container(&manifests, CONTROLLER);
        let argv = std::iter::once("vc-controller".to_owned()).chain(args(&controller));
        let flags = vc_controller::flags::Flags::try_parse_from(argv)
            .unwrap_or_else(|error| panic!("vc-controller refuses {sets:?}: {error}"));
        assert_eq!(flags.leader_elect, sets.contains(&"controller.replicas=2"));
        assert_eq!(flags.probe_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(flags.leader_election_lease_name, CONTROLLER);
        assert_eq!(flags.concurrency, 16);
        assert_eq!(flags.log_format, vc_controller::flags::LogFormat::Json);
        assert_eq!(flags.kubeconfig, None, "in-cluster configuration in a pod");
    }
}

#[test]
fn rendered_arguments_are_flags_the_binaries_accept() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, EVERYTHING_ON);
    let mut checked = 0;
    for (deployment, binary) in [(CONTROLLER, "vc-controller"), (WEBHOOK, "vc-webhook")] {
        let Some(path) = built_binary(binary) else {
            eprintln!(
                "skipped: {binary} is not built in the target dir (cargo build -p {binary}); \
                 its flags were checked against docs/contracts.md only"
            );
            continue;
        };
        let accepted = match help_flags(&path) {
            Ok(accepted) => accepted,
            Err(why) => panic!("{why}"),
        };
        for (flag, value) in flags(&container(&manifests, deployment)) {
            let takes_value = accepted.get(&flag).unwrap_or_else(|| {
                panic!(
                    "{binary} does not accept --{flag}; it accepts {:?}",
                    accepted.keys()
                )
            });
            assert_eq!(
                *takes_value,
                value.is_some(),
                "{binary} --{flag}: the chart passes {value:?}"
            );
        }
        checked += 1;
    }
    eprintln!("checked the arguments of {checked} of 2 binaries against their --help");
}

// --- extras and the manifests directory ------------------------------------------------

#[test]
fn service_monitors_scrape_ports_that_exist_with_verified_tls() {
    let engine = engine_or_skip!();
    let secret_mode = secret_mode_sets();
    for tls in [
        vec!["webhook.tls.mode=helm"],
        secret_mode.iter().map(String::as_str).collect(),
    ] {
        let sets: Vec<&str> = tls
            .iter()
            .copied()
            .chain(["serviceMonitor.enabled=true"])
            .collect();
        let manifests = render(&engine, &sets);
        for monitor in manifests.of_kind("ServiceMonitor") {
            let selector = &monitor["spec"]["selector"]["matchLabels"];
            let service = manifests
                .of_kind("Service")
                .find(|service| {
                    selector
                        .as_object()
                        .expect("matchLabels")
                        .iter()
                        .all(|(key, value)| &service["metadata"]["labels"][key] == value)
                })
                .unwrap_or_else(|| panic!("no Service for {}", monitor["metadata"]["name"]));
            for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
                let port = endpoint["port"].as_str().expect("port name");
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .expect("ports")
                        .iter()
                        .any(|candidate| candidate["name"] == port),
                    "{sets:?}: Service {} has no port {port}",
                    service["metadata"]["name"]
                );
                assert!(endpoint["tlsConfig"]["insecureSkipVerify"].is_null());
                if endpoint["scheme"] == "https" {
                    let ca = &endpoint["tlsConfig"]["ca"];
                    let (kind, source) = if ca["secret"].is_object() {
                        ("Secret", &ca["secret"])
                    } else {
                        ("ConfigMap", &ca["configMap"])
                    };
                    let name = source["name"].as_str().expect("CA source name");
                    let holder = one(&manifests, kind, name);
                    let key = source["key"].as_str().expect("CA key");
                    assert!(
                        holder["data"][key].is_string(),
                        "{sets:?}: {kind} {name} lacks {key}"
                    );
                }
            }
        }
        assert_eq!(manifests.of_kind("ServiceMonitor").count(), 2);
    }
}

#[test]
fn network_policies_admit_the_served_ports_and_leave_egress_open() {
    let engine = engine_or_skip!();
    let manifests = render(&engine, &["networkPolicy.enabled=true"]);
    for (name, port) in [(WEBHOOK, "https"), (CONTROLLER, "probes")] {
        let policy: NetworkPolicy = typed(one(&manifests, "NetworkPolicy", name));
        let spec = policy.spec.expect("spec");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let deployment: Deployment = typed(one(&manifests, "Deployment", name));
        assert_eq!(
            spec.pod_selector.and_then(|selector| selector.match_labels),
            deployment.spec.and_then(|spec| spec.selector.match_labels)
        );
        let ingress = spec.ingress.expect("ingress rules");
        let ports: Vec<_> = ingress
            .iter()
            .flat_map(|rule| rule.ports.clone().unwrap_or_default())
            .filter_map(|port| port.port)
            .collect();
        assert_eq!(
            ports,
            vec![
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(port.to_owned())
            ]
        );
        port_named(&container(&manifests, name), port);
    }
    let off = render(&engine, &[]);
    assert!(off.of_kind("NetworkPolicy").next().is_none());
    assert!(off.of_kind("ServiceMonitor").next().is_none());
}

#[test]
fn manifests_directory_holds_every_object_in_install_order() {
    let engine = engine_or_skip!();
    let dir = ScratchDir::new("manifests");
    let files = Render::new()
        .set("webhook.tls.mode=secret")
        .set("webhook.tls.secret.name=given")
        .set(&secret_mode_sets()[2])
        .write_to(&engine, dir.path())
        .unwrap_or_else(|failure| panic!("write_to failed: {failure}"));
    let kinds: Vec<String> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("read manifest");
            assert!(
                !text.lines().any(|line| line.trim_end() == "---"),
                "{} holds more than one object",
                file.display()
            );
            let kinds: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("kind: "))
                .collect();
            assert_eq!(kinds.len(), 1, "{}: one top-level kind", file.display());
            kinds[0].trim().to_owned()
        })
        .collect();
    let position = |kind: &str| kinds.iter().position(|candidate| candidate == kind);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("CustomResourceDefinition")
    );
    assert!(position("ClusterRoleBinding") > position("ClusterRole"));
    assert!(position("Deployment") > position("ServiceAccount"));
    assert!(
        position("MutatingWebhookConfiguration")
            > kinds.iter().rposition(|kind| kind == "Deployment")
    );
    assert!(position("ValidatingWebhookConfiguration") > position("Deployment"));
    let rendered = render(
        &engine,
        &[
            "webhook.tls.mode=secret",
            "webhook.tls.secret.name=given",
            &secret_mode_sets()[2],
        ],
    );
    assert_eq!(files.len(), rendered.objects.len());
}

//! Provisioning at scale on the test API server: N VirtualClusters (default 1,000)
//! created at once, workloads ready with zero delay, each tenant apiserver answered by a
//! minimal TLS `/readyz` responder on its cluster IP with the tenant's own serving
//! certificate. Prints the time until all are Initialized, API requests per tenant (by
//! method, counted on the controller's client), process RSS and PKI time per tenant.
//!
//! Run with `cargo bench -p vc-tests --bench provision [-- TENANTS]`.
//! The RSS is the whole process (test API server, simulators and controller); the
//! growth over the baseline measured before the controller starts bounds the
//! controller's share from above (it also holds the objects the controller created in
//! the in-process test API server).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vc_api::VirtualCluster;
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics};
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CONTROLLER_USER: &str = "system:serviceaccount:kosmos-system:kosmos-vc-controller";
const NAMESPACE: &str = "bench";

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Requests the controller's client sent, by HTTP method.
#[derive(Clone, Default)]
struct RequestCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl RequestCounter {
    fn count(&self, method: &http::Method) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(method.to_string()).or_default() += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }
}

async fn controller_client(server: &TestApiServer, counter: RequestCounter) -> BenchResult<Client> {
    let path = server.kubeconfig_for(CONTROLLER_USER, &["system:masters"])?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let layer =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counter.count(request.method());
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

/// Marks every Deployment and StatefulSet rolled out as soon as it appears or changes.
async fn kubelet(client: Client) {
    let deployments = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    let sets = watcher(
        Api::<k8s_openapi::api::apps::v1::StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    let deployment_task = {
        let client = client.clone();
        deployments.for_each_concurrent(8, move |event| {
            let client = client.clone();
            async move {
                let Ok(object) = event else { return };
                let generation = object.metadata.generation.unwrap_or(1);
                let replicas = object.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = object.status.clone().unwrap_or_default();
                if status.observed_generation == Some(generation) && status.ready_replicas == Some(replicas) {
                    return;
                }
                let api: Api<Deployment> = Api::namespaced(client, &object.namespace().unwrap_or_default());
                let patch = serde_json::json!({"status": {"observedGeneration": generation, "replicas": replicas,
                    "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}});
                let _ = api
                    .patch_status(&object.name_any(), &Default::default(), &kube::api::Patch::Merge(&patch))
                    .await;
            }
        })
    };
    let set_task = sets.for_each_concurrent(8, move |event| {
        let client = client.clone();
        async move {
            let Ok(object) = event else { return };
            let generation = object.metadata.generation.unwrap_or(1);
            let replicas = object.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = object.status.clone().unwrap_or_default();
            if status.observed_generation == Some(generation) && status.ready_replicas == Some(replicas) {
                return;
            }
            let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
                Api::namespaced(client, &object.namespace().unwrap_or_default());
            let revision = format!("rev-{generation}");
            let patch = serde_json::json!({"status": {"observedGeneration": generation, "replicas": replicas,
                "readyReplicas": replicas, "updatedReplicas": replicas, "currentReplicas": replicas,
                "currentRevision": revision, "updateRevision": revision}});
            let _ = api
                .patch_status(&object.name_any(), &Default::default(), &kube::api::Patch::Merge(&patch))
                .await;
        }
    });
    futures::join!(deployment_task, set_task);
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
}

/// Serves `/readyz` → `ok` (and 404 for anything else) over TLS with the tenant's own
/// serving certificate, requiring a client certificate from the tenant CA.
async fn readyz_responder(
    ip: String,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
) -> BenchResult<()> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(format!("{ip}:6443")).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut buffer = vec![0u8; 16 * 1024];
            let mut pending = Vec::new();
            loop {
                let Ok(read) = tls.read(&mut buffer).await else {
                    return;
                };
                if read == 0 {
                    return;
                }
                pending.extend_from_slice(&buffer[..read]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    let (status, body) = if path.starts_with("/readyz") {
                        ("200 OK", "ok".to_owned())
                    } else {
                        ("404 Not Found", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Starts a responder for every tenant whose apiserver Deployment exists.
async fn tenant_responders(client: Client) {
    let mut started = BTreeSet::new();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    loop {
        let params = ListParams::default()
            .labels(&format!("{}=apiserver", vc_api::constants::COMPONENT_LABEL));
        if let Ok(list) = deployments.list(&params).await {
            for deployment in list {
                let Some(tenant) = deployment
                    .labels()
                    .get(vc_api::constants::TENANT_NAME_LABEL)
                    .cloned()
                else {
                    continue;
                };
                if started.contains(&tenant) {
                    continue;
                }
                let (Ok(Some(service)), Ok(Some(tls)), Ok(Some(ca))) = (
                    services.get_opt(&format!("{tenant}-apiserver")).await,
                    secrets.get_opt(&format!("{tenant}-apiserver-tls")).await,
                    secrets.get_opt(&format!("{tenant}-ca")).await,
                ) else {
                    continue;
                };
                let Some(ip) = service.spec.and_then(|spec| spec.cluster_ip) else {
                    continue;
                };
                let (Some(cert), Some(key), Some(ca)) = (
                    secret_text(&tls, "tls.crt"),
                    secret_text(&tls, "tls.key"),
                    secret_text(&ca, "tls.crt"),
                ) else {
                    continue;
                };
                started.insert(tenant.clone());
                tokio::spawn(async move {
                    if let Err(error) = readyz_responder(ip, cert, key, ca).await {
                        eprintln!("responder for {tenant} failed: {error}");
                    }
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pki_time_per_tenant(samples: usize) -> BenchResult<Duration> {
    use vc_controller::pki::{ExistingPki, ensure_pki};
    use vc_controller::resources::{BuildContext, Observed, Tenant, tenant_identity};
    let context = BuildContext::default();
    let mut total = Duration::ZERO;
    for index in 0..samples {
        let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": format!("pki{index}"), "namespace": NAMESPACE, "uid": format!("uid-{index}")},
            "spec": {}
        }))?;
        let tenant = Tenant::resolve(&vc, &context)?;
        let observed = Observed {
            apiserver_cluster_ip: Some("127.100.0.9".parse()?),
            ..Observed::default()
        };
        let identity = tenant_identity(&tenant, &context, &observed)?;
        let started = Instant::now();
        let _material = ensure_pki(
            &identity,
            &ExistingPki::default(),
            k8s_openapi::jiff::Timestamp::now(),
        )?;
        total += started.elapsed();
    }
    Ok(total / u32::try_from(samples.max(1)).unwrap_or(1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let tenants: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(1000);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    println!("provision bench: {tenants} VirtualClusters, zero readiness delay");
    println!(
        "pki: {:.1} ms per tenant (fresh issue of 3 CAs, SA key, 9 leaves)",
        pki_time_per_tenant(20)?.as_secs_f64() * 1000.0
    );

    let server = TestApiServer::start(TestApiServerOptions {
        watch_history: 2_000_000,
        ..TestApiServerOptions::default()
    })?;
    let crd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml");
    server.install_yaml(&crd.display().to_string()).await?;
    let admin = server.client().await?;
    let namespace: Namespace = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    tokio::spawn(kubelet(admin.clone()));
    tokio::spawn(tenant_responders(admin.clone()));

    let vcs: Api<VirtualCluster> = Api::namespaced(admin.clone(), NAMESPACE);
    for index in 0..tenants {
        let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": format!("t{index:04}")},
            "spec": {"promoteResources": {"resources": {"cpu": 1, "memory": "1Gi"}}}
        }))?;
        vcs.create(&PostParams::default(), &vc).await?;
    }
    // Memory settling after the writes has no event to wait for, and RSS never holds
    // still enough to wait for it to stop changing: a fixed pause before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_mib();
    println!(
        "rss before the controller starts: {baseline:.0} MiB (test API server with {tenants} VirtualClusters)"
    );

    let counter = RequestCounter::default();
    let client = controller_client(&server, counter.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let controller = tokio::spawn(run(
        client,
        RunConfig::from_flags(&<vc_controller::flags::Flags as clap::Parser>::parse_from(
            ["vc-controller"],
        )),
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_mib() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let deadline = started + Duration::from_secs(900);
    let mut last_report = Instant::now();
    let elapsed = loop {
        let list = vcs.list(&ListParams::default()).await?;
        let initialized = list
            .items
            .iter()
            .filter(|vc| {
                matches!(
                    vc.status.as_ref().and_then(|s| s.phase),
                    Some(vc_api::Phase::Initialized | vc_api::Phase::Completed)
                )
            })
            .count();
        if initialized == tenants {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:>5.1} s: {initialized}/{tenants} initialized",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            println!(
                "gave up after {:?}: {initialized}/{tenants} initialized",
                started.elapsed()
            );
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let requests = counter.snapshot();
    let total: u64 = requests.values().sum();
    let writes = server.write_counts().requests_by(CONTROLLER_USER);
    println!(
        "time until all {tenants} are Initialized: {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "controller API requests per tenant: {:.1} (by method: {})",
        total as f64 / tenants as f64,
        requests
            .iter()
            .map(|(method, count)| format!("{method} {:.1}", *count as f64 / tenants as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "controller write requests per tenant (server-side count): {:.1}",
        writes as f64 / tenants as f64
    );
    let peak_rss = peak.load(Ordering::Relaxed) as f64;
    println!(
        "process rss: peak {peak_rss:.0} MiB, baseline {baseline:.0} MiB; growth {:.0} MiB = controller + the objects it created in the test API server + responders",
        (peak_rss - baseline).max(0.0)
    );
    sampler.abort();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    Ok(())
}

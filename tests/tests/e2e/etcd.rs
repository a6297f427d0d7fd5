//! The tenant's etcd is a real etcd: `/usr/bin/etcd` started from the StatefulSet the
//! controller created on the host, with the Secrets it mounts written where the pod would
//! see them, and reached exactly as the tenant's apiserver Deployment is configured to
//! (its `--etcd-cafile/--etcd-certfile/--etcd-keyfile` and the host of `--etcd-servers`).
//! Only what belongs to the pod is rewritten: `$(POD_NAME)`, the volume root and the
//! member host:port pairs (127.0.0.1 and free ports). Same approach as
//! `controller/tests/etcd_mtls.rs`, but from the objects the running controller wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use kube::Api;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::harness::{Harness, TENANT_NAMESPACE};

const ETCD_CANDIDATES: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

/// A running etcd, killed when dropped.
struct Etcd {
    child: Child,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(ETCD_CANDIDATES.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

fn only_container(pod: &PodSpec) -> &Container {
    assert_eq!(pod.containers.len(), 1, "one container expected");
    &pod.containers[0]
}

fn pod_of_statefulset(set: &StatefulSet) -> &PodSpec {
    set.spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("the etcd StatefulSet has a pod template")
}

/// Writes each mounted Secret key where the pod would see it, under `root`.
fn lay_out_volumes(pod: &PodSpec, secrets: &BTreeMap<String, Secret>, root: &Path) {
    for mount in only_container(pod).volume_mounts.iter().flatten() {
        let target = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&target).unwrap();
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == mount.name) else {
            continue; // a volumeClaimTemplate: a new PVC is an empty directory
        };
        let sources = volume
            .projected
            .as_ref()
            .map(|p| p.sources.clone().unwrap_or_default())
            .unwrap_or_default();
        for source in sources {
            let Some(projection) = source.secret else {
                continue;
            };
            let secret = &secrets[&projection.name];
            for item in projection.items.iter().flatten() {
                let file = target.join(&item.path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                let data = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&item.key))
                    .unwrap_or_else(|| {
                        panic!("Secret {} has no key {}", projection.name, item.key)
                    });
                std::fs::write(&file, &data.0).unwrap();
            }
        }
    }
}

/// The rendered flags with `$(POD_NAME)`, absolute paths and `scheme://host:port` URLs
/// made local.
fn local_flags(
    args: &[String],
    pod_name: &str,
    root: &Path,
    ports: &BTreeMap<u16, u16>,
) -> Vec<String> {
    args.iter()
        .map(|arg| {
            let arg = arg.replace("$(POD_NAME)", pod_name);
            let Some((flag, value)) = arg.split_once('=') else {
                return arg;
            };
            if value.starts_with('/') {
                return format!(
                    "{flag}={}",
                    root.join(value.trim_start_matches('/')).display()
                );
            }
            if !value.contains("://") {
                return arg;
            }
            let urls: Vec<String> = value
                .split(',')
                .map(|entry| {
                    let (prefix, url) = entry
                        .split_once('=')
                        .map_or((String::new(), entry), |(n, u)| (format!("{n}="), u));
                    let Some((scheme, rest)) = url.split_once("://") else {
                        return entry.to_owned();
                    };
                    let local = rest
                        .rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok())
                        .and_then(|port| ports.get(&port));
                    match local {
                        Some(local) => format!("{prefix}{scheme}://127.0.0.1:{local}"),
                        None => entry.to_owned(),
                    }
                })
                .collect();
            format!("{flag}={}", urls.join(","))
        })
        .collect()
}

fn flag<'a>(container: &'a Container, name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    container
        .args
        .iter()
        .flatten()
        .find_map(|arg| arg.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the tenant apiserver has no --{name}"))
}

/// TLS client config trusting `ca`, presenting `cert`/`key`.
fn tls_config(ca: &[u8], cert: &[u8], key: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert).unwrap()],
        PrivateKeyDer::from_pem_slice(key).unwrap(),
    )
    .unwrap();
    Arc::new(config)
}

/// POSTs JSON to etcd's gRPC gateway; status and body, or why it failed.
async fn post(
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
    port: u16,
    path: &str,
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header("host", format!("127.0.0.1:{port}"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// Starts the tenant's etcd from its StatefulSet and writes/reads a key with the tenant
/// apiserver's etcd client certificate. Skips (printing why) without an etcd binary.
pub async fn tenant_etcd_is_real(harness: &Harness, tenant: &str) {
    let Some(binary) = etcd_binary() else {
        eprintln!(
            "skipped: tenant etcd sub-part: no etcd binary at {ETCD_CANDIDATES:?} and ETCD_BIN is unset"
        );
        return;
    };
    if harness.kind == crate::harness::HostKind::External {
        eprintln!("skipped: tenant etcd sub-part: on an existing cluster the etcd pod itself runs");
        return;
    }
    let sets: Api<StatefulSet> = Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let set = sets.get(&format!("{tenant}-etcd")).await.unwrap();
    let apiserver = deployments
        .get(&format!("{tenant}-apiserver"))
        .await
        .unwrap();
    let secrets: BTreeMap<String, Secret> = secrets
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| Some((s.metadata.name.clone()?, s)))
        .collect();

    let pod = pod_of_statefulset(&set);
    let container = only_container(pod);
    let mut ports = BTreeMap::new();
    for port in container.ports.iter().flatten() {
        let rendered = u16::try_from(port.container_port).unwrap();
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ports.insert(rendered, local);
    }
    let client_port = ports[&2379];
    let root = harness.work_dir().join(format!("{tenant}-etcd-0"));
    lay_out_volumes(pod, &secrets, &root);
    let args = local_flags(
        container.args.as_deref().unwrap_or_default(),
        &format!("{tenant}-etcd-0"),
        &root,
        &ports,
    );
    let log = root.join("etcd.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut etcd = Etcd {
        child: Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
        log,
    };

    // The apiserver's view: its own mounted files and the host it verifies etcd as.
    let apiserver_pod = apiserver
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    let apiserver_root = harness.work_dir().join(format!("{tenant}-apiserver-0"));
    lay_out_volumes(apiserver_pod, &secrets, &apiserver_root);
    let apiserver_container = only_container(apiserver_pod);
    let read = |name: &str| {
        std::fs::read(apiserver_root.join(flag(apiserver_container, name).trim_start_matches('/')))
            .unwrap()
    };
    let servers = flag(apiserver_container, "etcd-servers");
    let server_host = servers
        .strip_prefix("https://")
        .and_then(|rest| rest.split(',').next())
        .and_then(|first| first.rsplit_once(':'))
        .map(|(host, _)| host.to_owned())
        .unwrap_or_else(|| panic!("--etcd-servers={servers} is not https://HOST:PORT"));
    let config = tls_config(
        &read("etcd-cafile"),
        &read("etcd-certfile"),
        &read("etcd-keyfile"),
    );

    let key = STANDARD.encode(format!("/registry/e2e/{tenant}"));
    let value = STANDARD.encode("written by the tenant apiserver's etcd client certificate");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!(
                "etcd exited with {status}; args {args:?}; log:\n{}",
                std::fs::read_to_string(&etcd.log).unwrap_or_default()
            );
        }
        let answer = post(
            &config,
            &server_host,
            client_port,
            "/v3/kv/put",
            serde_json::json!({"key": key, "value": value}),
        )
        .await;
        if let Ok((200, _)) = answer {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd started from StatefulSet {tenant}-etcd did not accept a put within 30 s: {answer:?}; log:\n{}",
            std::fs::read_to_string(&etcd.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = post(
        &config,
        &server_host,
        client_port,
        "/v3/kv/range",
        serde_json::json!({"key": key}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["kvs"][0]["value"].as_str(),
        Some(value.as_str()),
        "{body}"
    );
    eprintln!(
        "tenant etcd: a real etcd from StatefulSet {tenant}-etcd stored and returned a key over the apiserver's mTLS"
    );
}

//! Runs a real etcd exactly as the tenant's StatefulSet renders it.
//!
//! The StatefulSet's flags and certificate layout are taken from the builder; only what
//! belongs to the pod is rewritten: `$(POD_NAME)`, the volume root (a temp dir instead of
//! `/`), and host:port pairs (127.0.0.1 and free ports instead of member DNS names).
//! Then: the tenant's apiserver etcd-client certificate writes and reads a key, another
//! tenant's certificate is refused, and plain HTTP is refused.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vc_api::VirtualCluster;
use vc_controller::pki::{ExistingPki, ensure_pki};
use vc_controller::resources::{BuildContext, DesiredState, Observed, Tenant, tenant_identity};

type TestResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ETCD_CANDIDATES: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(ETCD_CANDIDATES.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

fn virtual_cluster(name: &str) -> TestResult<VirtualCluster> {
    let manifest = format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: {name}\n  namespace: team-a\n  uid: uid-{name}\nspec:\n  controlPlane:\n    etcd:\n      replicas: 1\n"
    );
    Ok(serde_yaml::from_str(&manifest)?)
}

/// Everything the StatefulSet of a fresh tenant renders, with its PKI Secrets.
fn render(name: &str) -> TestResult<DesiredState> {
    let vc = virtual_cluster(name)?;
    let ctx = BuildContext::default();
    let observed = Observed::default();
    let tenant = Tenant::resolve(&vc, &ctx)?;
    let identity = tenant_identity(&tenant, &ctx, &observed)?;
    let (_, pki) = ensure_pki(&identity, &ExistingPki::default(), jiff::Timestamp::now())?;
    Ok(DesiredState::build(&vc, &ctx, &observed, &pki)?)
}

fn secret_data<'a>(state: &'a DesiredState, name: &str, key: &str) -> TestResult<&'a [u8]> {
    let secret: &Secret = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| format!("Secret {name} is not rendered"))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
    Ok(&value.0)
}

fn free_port() -> TestResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes each mounted Secret key where the pod would see it, under `root`.
fn lay_out_volumes(set: &StatefulSet, state: &DesiredState, root: &Path) -> TestResult<()> {
    let pod = set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .ok_or("StatefulSet has no pod template")?;
    let container = pod.containers.first().ok_or("pod has no container")?;
    for mount in container.volume_mounts.iter().flatten() {
        let target = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&target)?;
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == mount.name) else {
            continue; // a volumeClaimTemplate: an empty directory is what a new PVC holds
        };
        let projected = volume
            .projected
            .as_ref()
            .ok_or("only projected volumes expected")?;
        for source in projected.sources.iter().flatten() {
            let secret = source
                .secret
                .as_ref()
                .ok_or("only Secret projections expected")?;
            for item in secret.items.iter().flatten() {
                let file = target.join(&item.path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&file, secret_data(state, &secret.name, &item.key)?)?;
            }
        }
    }
    Ok(())
}

/// Rewrites `scheme://HOST:PORT` so each rendered port maps to a local free port.
fn rewrite_urls(value: &str, ports: &BTreeMap<u16, u16>) -> String {
    value
        .split(',')
        .map(|entry| {
            let (prefix, url) = match entry.split_once('=') {
                Some((name, url)) => (format!("{name}="), url),
                None => (String::new(), entry),
            };
            let Some((scheme, rest)) = url.split_once("://") else {
                return entry.to_owned();
            };
            let port = rest
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .and_then(|port| ports.get(&port));
            match port {
                Some(local) => format!("{prefix}{scheme}://127.0.0.1:{local}"),
                None => entry.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The rendered flags with only the pod-specific values rewritten.
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
                let local = root.join(value.trim_start_matches('/'));
                return format!("{flag}={}", local.display());
            }
            if value.contains("://") {
                return format!("{flag}={}", rewrite_urls(value, ports));
            }
            arg
        })
        .collect()
}

/// A running etcd, killed when dropped.
struct EtcdProcess {
    child: Child,
    client_port: u16,
    log: PathBuf,
    _root: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EtcdProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_etcd(binary: &Path, state: &DesiredState, pod_name: &str) -> TestResult<EtcdProcess> {
    let set = &state.etcd.stateful_set;
    let root = tempfile::tempdir()?;
    lay_out_volumes(set, state, root.path())?;
    let container = set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .ok_or("no etcd container")?;
    let rendered_ports: Vec<u16> = container
        .ports
        .iter()
        .flatten()
        .map(|port| u16::try_from(port.container_port))
        .collect::<Result<_, _>>()?;
    let mut ports = BTreeMap::new();
    for port in rendered_ports {
        ports.insert(port, free_port()?);
    }
    let client_port = *ports.get(&2379).ok_or("no client port rendered")?;
    let flags = local_flags(
        container.args.as_deref().unwrap_or_default(),
        pod_name,
        root.path(),
        &ports,
    );
    let log = root.path().join("etcd.log");
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(binary)
        .args(&flags)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()?;
    Ok(EtcdProcess {
        child,
        client_port,
        log,
        _root: root,
    })
}

/// A TLS client trusting `ca_pem` and presenting `client` (certificate, key) if given.
fn tls_config(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> TestResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert)?],
            PrivateKeyDer::from_pem_slice(key)?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// POSTs JSON to etcd's gRPC gateway over HTTPS; returns status and body.
async fn post(
    config: &rustls::ClientConfig,
    port: u16,
    path: &str,
    body: serde_json::Value,
) -> TestResult<(u16, serde_json::Value)> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
        let server = ServerName::try_from("127.0.0.1")?.to_owned();
        let tls = connector.connect(server, tcp).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header(http::header::HOST, format!("127.0.0.1:{port}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        TestResult::Ok((status, json))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await?
}

async fn put(config: &rustls::ClientConfig, port: u16, key: &str, value: &str) -> TestResult<u16> {
    let body = serde_json::json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)});
    Ok(post(config, port, "/v3/kv/put", body).await?.0)
}

async fn get(config: &rustls::ClientConfig, port: u16, key: &str) -> TestResult<Option<String>> {
    let body = serde_json::json!({"key": STANDARD.encode(key)});
    let (status, json) = post(config, port, "/v3/kv/range", body).await?;
    if status != 200 {
        return Err(format!("range answered {status}: {json}").into());
    }
    let Some(encoded) = json["kvs"][0]["value"].as_str() else {
        return Ok(None);
    };
    Ok(Some(String::from_utf8(STANDARD.decode(encoded)?)?))
}

/// Waits until the tenant's client can read, or the deadline passes.
async fn wait_ready(etcd: &EtcdProcess, config: &rustls::ClientConfig) -> TestResult<()> {
    let started = Instant::now();
    loop {
        match get(config, etcd.client_port, "readiness-probe").await {
            Ok(_) => return Ok(()),
            Err(error) if started.elapsed() > STARTUP_DEADLINE => {
                return Err(format!("etcd not ready: {error}\n{}", etcd.log_text()).into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Sends a plain-HTTP request to the TLS port and returns whatever comes back.
async fn plain_http_put(port: u16) -> TestResult<String> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let body =
            serde_json::json!({"key": STANDARD.encode("plain"), "value": STANDARD.encode("x")})
                .to_string();
        let request = format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        // etcd either answers with a TLS alert / HTTP 400 or just closes; both end the read.
        let _ = tcp.read_to_end(&mut answer).await;
        TestResult::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await?
}

#[tokio::test]
async fn rendered_etcd_serves_only_its_own_tenant_over_mtls() {
    let Some(binary) = etcd_binary() else {
        eprintln!(
            "skipped: no etcd binary at {ETCD_CANDIDATES:?} and ETCD_BIN is unset (install Debian etcd-server)"
        );
        return;
    };
    let tenant = render("tenant-a").unwrap();
    let intruder = render("tenant-b").unwrap();
    let etcd = start_etcd(&binary, &tenant, "tenant-a-etcd-0").unwrap();

    let etcd_ca = secret_data(&tenant, "tenant-a-apiserver-etcd-client", "ca.crt").unwrap();
    let own = tls_config(
        etcd_ca,
        Some((
            secret_data(&tenant, "tenant-a-apiserver-etcd-client", "tls.crt").unwrap(),
            secret_data(&tenant, "tenant-a-apiserver-etcd-client", "tls.key").unwrap(),
        )),
    )
    .unwrap();
    wait_ready(&etcd, &own).await.unwrap();

    // The tenant's apiserver client certificate can write and read.
    assert_eq!(
        put(&own, etcd.client_port, "/registry/probe", "written")
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        get(&own, etcd.client_port, "/registry/probe")
            .await
            .unwrap()
            .as_deref(),
        Some("written")
    );

    // Another tenant's client certificate is refused (signed by another etcd CA).
    let foreign = tls_config(
        etcd_ca,
        Some((
            secret_data(&intruder, "tenant-b-apiserver-etcd-client", "tls.crt").unwrap(),
            secret_data(&intruder, "tenant-b-apiserver-etcd-client", "tls.key").unwrap(),
        )),
    )
    .unwrap();
    let attempt = put(&foreign, etcd.client_port, "/registry/probe", "stolen").await;
    let refusal = attempt.expect_err("a foreign certificate was served");
    eprintln!("foreign certificate refused: {refusal}");

    // No client certificate at all is refused too.
    let anonymous = tls_config(etcd_ca, None).unwrap();
    let attempt = put(&anonymous, etcd.client_port, "/registry/probe", "anonymous").await;
    let refusal = attempt.expect_err("a client without certificate was served");
    eprintln!("anonymous client refused: {refusal}");

    // The other tenant's etcd CA does not vouch for this etcd's serving certificate.
    let wrong_trust = tls_config(
        secret_data(&intruder, "tenant-b-apiserver-etcd-client", "ca.crt").unwrap(),
        Some((
            secret_data(&tenant, "tenant-a-apiserver-etcd-client", "tls.crt").unwrap(),
            secret_data(&tenant, "tenant-a-apiserver-etcd-client", "tls.key").unwrap(),
        )),
    )
    .unwrap();
    assert!(
        get(&wrong_trust, etcd.client_port, "/registry/probe")
            .await
            .is_err()
    );

    // Plain HTTP is refused.
    let answer = plain_http_put(etcd.client_port).await.unwrap();
    eprintln!("plain HTTP answered: {answer:?}");
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "plain HTTP was served: {answer}"
    );

    // None of the refused writes landed.
    assert_eq!(
        get(&own, etcd.client_port, "/registry/probe")
            .await
            .unwrap()
            .as_deref(),
        Some("written")
    );
    assert_eq!(get(&own, etcd.client_port, "plain").await.unwrap(), None);
}

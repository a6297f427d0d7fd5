//! Runs real etcd members exactly as the tenant's StatefulSet renders them, and talks to
//! them exactly as the tenant's apiserver Deployment is configured to.
//!
//! Flags and certificate layouts come from the builders; only what belongs to the pod is
//! rewritten: `$(POD_NAME)`, the volume root (a temp dir instead of `/`), and host:port
//! pairs (127.0.0.1 and free ports instead of member DNS names). Then: the apiserver's
//! etcd client certificate writes and reads a key, another tenant's certificate is
//! refused, a client without certificate is refused, plain HTTP is refused, and three
//! members replicate over peer mTLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
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

fn skip_without_etcd() -> Option<PathBuf> {
    let binary = etcd_binary();
    if binary.is_none() {
        eprintln!(
            "skipped: no etcd binary at {ETCD_CANDIDATES:?} and ETCD_BIN is unset (install Debian etcd-server)"
        );
    }
    binary
}

/// Everything a fresh tenant renders, with its PKI Secrets.
fn render(name: &str, etcd_replicas: i32) -> TestResult<DesiredState> {
    let manifest = format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: {name}\n  namespace: team-a\n  uid: uid-{name}\nspec:\n  controlPlane:\n    etcd:\n      replicas: {etcd_replicas}\n"
    );
    let vc: VirtualCluster = serde_yaml::from_str(&manifest)?;
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
    Ok(vc_test_apiserver::ports::free_port()?)
}

fn only_container(pod: &PodSpec) -> TestResult<&Container> {
    match pod.containers.as_slice() {
        [container] => Ok(container),
        _ => Err("expected exactly one container".into()),
    }
}

/// Writes each mounted Secret key where the pod would see it, under `root`.
fn lay_out_volumes(pod: &PodSpec, state: &DesiredState, root: &Path) -> TestResult<()> {
    for mount in only_container(pod)?.volume_mounts.iter().flatten() {
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

/// Local ports of each member, keyed by the port the StatefulSet renders.
type MemberPorts = Vec<BTreeMap<u16, u16>>;

/// Rewrites every `scheme://HOST:PORT` in a flag value. `HOST` names a member either
/// explicitly (`NAME-etcd-N.NAME-etcd-peer...`) or implicitly (the listening member).
fn rewrite_urls(value: &str, member_prefix: &str, current: usize, ports: &MemberPorts) -> String {
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
            let Some((host, port)) = rest.rsplit_once(':') else {
                return entry.to_owned();
            };
            let member = host
                .strip_prefix(member_prefix)
                .and_then(|tail| tail.split('.').next())
                .and_then(|ordinal| ordinal.parse::<usize>().ok())
                .unwrap_or(current);
            let local = port
                .parse::<u16>()
                .ok()
                .and_then(|port| ports.get(member)?.get(&port));
            match local {
                Some(local) => format!("{prefix}{scheme}://127.0.0.1:{local}"),
                None => entry.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The rendered flags of member `ordinal`, with only the pod-specific values rewritten.
fn local_flags(
    args: &[String],
    tenant: &str,
    ordinal: usize,
    root: &Path,
    ports: &MemberPorts,
) -> Vec<String> {
    let member_prefix = format!("{tenant}-etcd-");
    args.iter()
        .map(|arg| {
            let arg = arg.replace("$(POD_NAME)", &format!("{member_prefix}{ordinal}"));
            let Some((flag, value)) = arg.split_once('=') else {
                return arg;
            };
            if value.starts_with('/') {
                let local = root.join(value.trim_start_matches('/'));
                return format!("{flag}={}", local.display());
            }
            if value.contains("://") {
                return format!(
                    "{flag}={}",
                    rewrite_urls(value, &member_prefix, ordinal, ports)
                );
            }
            arg
        })
        .collect()
}

/// A running etcd member, killed when dropped.
struct EtcdProcess {
    child: Child,
    client_port: u16,
    peer_port: u16,
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

/// Starts every member of the tenant's rendered StatefulSet.
fn start_members(
    binary: &Path,
    state: &DesiredState,
    tenant: &str,
) -> TestResult<Vec<EtcdProcess>> {
    let spec = state
        .etcd
        .stateful_set
        .spec
        .as_ref()
        .ok_or("StatefulSet has no spec")?;
    let replicas = usize::try_from(spec.replicas.ok_or("no replicas rendered")?)?;
    let pod = spec.template.spec.as_ref().ok_or("no pod template")?;
    let container = only_container(pod)?;
    let rendered_ports: Vec<u16> = container
        .ports
        .iter()
        .flatten()
        .map(|port| u16::try_from(port.container_port))
        .collect::<Result<_, _>>()?;
    let mut ports: MemberPorts = Vec::new();
    for _ in 0..replicas {
        let mut member = BTreeMap::new();
        for port in &rendered_ports {
            member.insert(*port, free_port()?);
        }
        ports.push(member);
    }
    let mut members = Vec::new();
    for (ordinal, member_ports) in ports.iter().enumerate() {
        let root = tempfile::tempdir()?;
        lay_out_volumes(pod, state, root.path())?;
        let flags = local_flags(
            container.args.as_deref().unwrap_or_default(),
            tenant,
            ordinal,
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
        members.push(EtcdProcess {
            child,
            client_port: *member_ports.get(&2379).ok_or("no client port rendered")?,
            peer_port: *member_ports.get(&2380).ok_or("no peer port rendered")?,
            log,
            _root: root,
        });
    }
    Ok(members)
}

/// How the rendered apiserver reaches etcd: the files its `--etcd-*` flags name, laid out
/// from its own volumes, and the host of `--etcd-servers` it verifies the server as.
struct ApiserverEtcdClient {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    server_host: String,
}

fn apiserver_etcd_client(state: &DesiredState) -> TestResult<ApiserverEtcdClient> {
    let pod = state
        .apiserver_deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .ok_or("apiserver Deployment has no pod template")?;
    let root = tempfile::tempdir()?;
    lay_out_volumes(pod, state, root.path())?;
    let container = only_container(pod)?;
    let flag = |name: &str| -> TestResult<String> {
        let prefix = format!("--{name}=");
        container
            .args
            .iter()
            .flatten()
            .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_owned))
            .ok_or_else(|| format!("apiserver has no --{name}").into())
    };
    let read = |name: &str| -> TestResult<Vec<u8>> {
        let path = flag(name)?;
        Ok(std::fs::read(
            root.path().join(path.trim_start_matches('/')),
        )?)
    };
    let servers = flag("etcd-servers")?;
    let server_host = servers
        .strip_prefix("https://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host.to_owned())
        .ok_or_else(|| format!("--etcd-servers={servers} is not https://HOST:PORT"))?;
    Ok(ApiserverEtcdClient {
        ca: read("etcd-cafile")?,
        cert: read("etcd-certfile")?,
        key: read("etcd-keyfile")?,
        server_host,
    })
}

/// A TLS client towards one etcd.
#[derive(Clone)]
struct EtcdClient {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl EtcdClient {
    /// Trusts `ca_pem`, verifies the server as `server_name`, presents `client` if given.
    fn new(ca_pem: &[u8], client: Option<(&[u8], &[u8])>, server_name: &str) -> TestResult<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem)?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder.with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert)?],
                PrivateKeyDer::from_pem_slice(key)?,
            )?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
            server_name: ServerName::try_from(server_name.to_owned())?,
        })
    }

    /// The rendered apiserver's own view of etcd.
    fn for_apiserver(client: &ApiserverEtcdClient) -> TestResult<Self> {
        Self::new(
            &client.ca,
            Some((&client.cert, &client.key)),
            &client.server_host,
        )
    }

    /// POSTs JSON to etcd's gRPC gateway on 127.0.0.1:`port`; returns status and body.
    async fn post(
        &self,
        port: u16,
        path: &str,
        body: serde_json::Value,
    ) -> TestResult<(u16, serde_json::Value)> {
        let body = Bytes::from(serde_json::to_vec(&body)?);
        self.request(http::Method::POST, port, path, body).await
    }

    /// One HTTPS request to 127.0.0.1:`port`; returns status and JSON body.
    async fn request(
        &self,
        method: http::Method,
        port: u16,
        path: &str,
        body: Bytes,
    ) -> TestResult<(u16, serde_json::Value)> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            let tls = connector.connect(self.server_name.clone(), tcp).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, format!("127.0.0.1:{port}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            TestResult::Ok((status, json))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await?
    }

    async fn put(&self, port: u16, key: &str, value: &str) -> TestResult<u16> {
        let body =
            serde_json::json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)});
        Ok(self.post(port, "/v3/kv/put", body).await?.0)
    }

    /// A linearizable read: it needs a quorum of members.
    async fn get(&self, port: u16, key: &str) -> TestResult<Option<String>> {
        let body = serde_json::json!({"key": STANDARD.encode(key)});
        let (status, json) = self.post(port, "/v3/kv/range", body).await?;
        if status != 200 {
            return Err(format!("range answered {status}: {json}").into());
        }
        let Some(encoded) = json["kvs"][0]["value"].as_str() else {
            return Ok(None);
        };
        Ok(Some(String::from_utf8(STANDARD.decode(encoded)?)?))
    }

    /// Waits until `member` answers a linearizable read, or the deadline passes.
    async fn wait_ready(&self, member: &EtcdProcess) -> TestResult<()> {
        let started = Instant::now();
        loop {
            match self.get(member.client_port, "readiness-probe").await {
                Ok(_) => return Ok(()),
                Err(error) if started.elapsed() > STARTUP_DEADLINE => {
                    return Err(format!("etcd not ready: {error}\n{}", member.log_text()).into());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
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
        // etcd either answers with an error or just closes; both end the read.
        let _ = tcp.read_to_end(&mut answer).await;
        TestResult::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await?
}

#[tokio::test]
async fn rendered_etcd_serves_only_its_own_tenant_over_mtls() {
    let Some(binary) = skip_without_etcd() else {
        return;
    };
    let tenant = render("tenant-a", 1).unwrap();
    let intruder = render("tenant-b", 1).unwrap();
    let members = start_members(&binary, &tenant, "tenant-a").unwrap();
    let etcd = &members[0];

    // The apiserver as rendered: its --etcd-* files, verifying etcd as its --etcd-servers host.
    let apiserver = apiserver_etcd_client(&tenant).unwrap();
    assert_eq!(apiserver.server_host, "tenant-a-etcd.team-a.svc");
    let own = EtcdClient::for_apiserver(&apiserver).unwrap();
    own.wait_ready(etcd).await.unwrap();
    assert_eq!(
        own.put(etcd.client_port, "/registry/probe", "written")
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        own.get(etcd.client_port, "/registry/probe")
            .await
            .unwrap()
            .as_deref(),
        Some("written")
    );

    // Another tenant's apiserver client certificate is refused (another etcd CA signed it).
    let foreign = apiserver_etcd_client(&intruder).unwrap();
    let stolen = EtcdClient::new(
        &apiserver.ca,
        Some((&foreign.cert, &foreign.key)),
        &apiserver.server_host,
    )
    .unwrap();
    let refusal = stolen
        .put(etcd.client_port, "/registry/probe", "stolen")
        .await
        .expect_err("a foreign certificate was served");
    eprintln!("foreign certificate refused: {refusal}");

    // A client without certificate is refused too.
    let anonymous = EtcdClient::new(&apiserver.ca, None, &apiserver.server_host).unwrap();
    let refusal = anonymous
        .put(etcd.client_port, "/registry/probe", "anonymous")
        .await
        .expect_err("a client without certificate was served");
    eprintln!("anonymous client refused: {refusal}");

    // The other tenant's etcd CA does not vouch for this etcd's serving certificate.
    let wrong_trust = EtcdClient::new(
        &foreign.ca,
        Some((&apiserver.cert, &apiserver.key)),
        &apiserver.server_host,
    )
    .unwrap();
    assert!(
        wrong_trust
            .get(etcd.client_port, "/registry/probe")
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
        own.get(etcd.client_port, "/registry/probe")
            .await
            .unwrap()
            .as_deref(),
        Some("written")
    );
    assert_eq!(own.get(etcd.client_port, "plain").await.unwrap(), None);
}

#[tokio::test]
async fn three_rendered_members_replicate_over_peer_mtls() {
    let Some(binary) = skip_without_etcd() else {
        return;
    };
    let tenant = render("tenant-c", 3).unwrap();
    let members = start_members(&binary, &tenant, "tenant-c").unwrap();
    assert_eq!(members.len(), 3);
    let client = EtcdClient::for_apiserver(&apiserver_etcd_client(&tenant).unwrap()).unwrap();
    for member in &members {
        client.wait_ready(member).await.unwrap();
    }
    assert_eq!(
        client
            .put(members[0].client_port, "/registry/replicated", "yes")
            .await
            .unwrap(),
        200
    );
    // Linearizable reads on the other members need the quorum reached over peer mTLS.
    for member in &members[1..] {
        assert_eq!(
            client
                .get(member.client_port, "/registry/replicated")
                .await
                .unwrap()
                .as_deref(),
            Some("yes"),
            "{}",
            member.log_text()
        );
    }
}

#[tokio::test]
async fn peer_port_admits_only_the_tenant_peer_certificate() {
    let Some(binary) = skip_without_etcd() else {
        return;
    };
    let tenant = render("tenant-d", 1).unwrap();
    let intruder = render("tenant-e", 1).unwrap();
    let members = start_members(&binary, &tenant, "tenant-d").unwrap();
    let etcd = &members[0];
    let client = EtcdClient::for_apiserver(&apiserver_etcd_client(&tenant).unwrap()).unwrap();
    client.wait_ready(etcd).await.unwrap();

    // Peers verify each other by member name, with the etcd CA.
    let member_name = "tenant-d-etcd-0.tenant-d-etcd-peer.team-a.svc";
    let ca = secret_data(&tenant, "tenant-d-etcd-server", "ca.crt").unwrap();
    let peer = |state: &DesiredState, secret: &str| {
        EtcdClient::new(
            ca,
            Some((
                secret_data(state, secret, "tls.crt").unwrap(),
                secret_data(state, secret, "tls.key").unwrap(),
            )),
            member_name,
        )
        .unwrap()
    };
    // `GET /members` is etcd's peer-to-peer membership endpoint.
    let own = peer(&tenant, "tenant-d-etcd-peer");
    let (status, members_json) = own
        .request(http::Method::GET, etcd.peer_port, "/members", Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200, "{members_json}");
    assert_eq!(members_json[0]["name"], "tenant-d-etcd-0", "{members_json}");

    let foreign = peer(&intruder, "tenant-e-etcd-peer");
    let refusal = foreign
        .request(http::Method::GET, etcd.peer_port, "/members", Bytes::new())
        .await
        .expect_err("another tenant's peer certificate was admitted");
    eprintln!("foreign peer refused: {refusal}");
    let anonymous = EtcdClient::new(ca, None, member_name).unwrap();
    assert!(
        anonymous
            .request(http::Method::GET, etcd.peer_port, "/members", Bytes::new())
            .await
            .is_err(),
        "a peer without certificate was admitted"
    );
}

//! A tenant's etcd reached the way its kube-apiserver reaches it: mutual TLS with the
//! apiserver's etcd client certificate, the member's certificate verified against the
//! name the rendered `--etcd-servers` carries. Tests speak JSON to etcd's gRPC gateway
//! (`/v3/kv/put`, `/v3/kv/range`) so that no etcd client library is needed to show that a
//! real etcd accepts what vc-controller issued.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where etcd is looked for after `ETCD_BIN`: the distribution package, then a manual install.
pub const ETCD_FALLBACKS: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

/// How long one request may take; a member that is still starting answers nothing, and
/// callers poll rather than wait on a hung connection.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Why talking to etcd's gateway failed, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdGatewayError {
    #[error("reading the {which} PEM: {source}")]
    ReadPem {
        which: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("building the TLS client config: {0}")]
    BuildTls(#[source] rustls::Error),
    #[error("{server_name:?} is neither a DNS name nor an IP address")]
    ServerName { server_name: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} as {server_name}: {source}")]
    TlsHandshake {
        addr: SocketAddr,
        server_name: String,
        source: std::io::Error,
    },
    #[error("HTTP/1 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("building the request for {path}: {source}")]
    BuildRequest { path: String, source: http::Error },
    #[error("POST {path} to {addr}: {source}")]
    Request {
        addr: SocketAddr,
        path: String,
        source: hyper::Error,
    },
    #[error("reading the answer to {path}: {source}")]
    ReadBody { path: String, source: hyper::Error },
    #[error("the answer to {path} (status {status}) is not JSON: {source}")]
    ParseBody {
        path: String,
        status: u16,
        source: serde_json::Error,
    },
    #[error("no answer from {addr} within {ANSWER_WITHIN:?}")]
    Timeout { addr: SocketAddr },
}

/// The etcd binary of this machine: `ETCD_BIN`, else [`ETCD_FALLBACKS`]. One lookup for
/// every test and the local control plane, so that they all skip or run together.
pub fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(ETCD_FALLBACKS.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

/// A client trusting `ca_pem` and presenting `cert_pem`/`key_pem`, as the apiserver's
/// `--etcd-cafile/--etcd-certfile/--etcd-keyfile` make it.
pub fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, EtcdGatewayError> {
    let read_pem = |which| move |source| EtcdGatewayError::ReadPem { which, source };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem).map_err(read_pem("CA certificate"))?)
        .map_err(EtcdGatewayError::BuildTls)?;
    let cert = CertificateDer::from_pem_slice(cert_pem).map_err(read_pem("client certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(read_pem("client key"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(EtcdGatewayError::BuildTls)?
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![cert], key)
    .map_err(EtcdGatewayError::BuildTls)?;
    Ok(Arc::new(config))
}

/// POSTs `json_body` to `path` on the gateway at `addr`, verifying the member's
/// certificate as `server_name` (a DNS name or an IP address): the status and the JSON
/// answer. `addr` and `server_name` are apart because the apiserver's rendered name is an
/// in-cluster one while the local member listens on loopback.
pub async fn post(
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
    addr: SocketAddr,
    path: &str,
    json_body: serde_json::Value,
) -> Result<(u16, serde_json::Value), EtcdGatewayError> {
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| EtcdGatewayError::ServerName {
            server_name: server_name.to_owned(),
        })?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| EtcdGatewayError::Connect { addr, source })?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| EtcdGatewayError::TlsHandshake {
                addr,
                server_name: server_name.to_owned(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|source| EtcdGatewayError::Handshake { addr, source })?;
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(json_body.to_string())))
            .map_err(|source| EtcdGatewayError::BuildRequest {
                path: path.to_owned(),
                source,
            })?;
        let response =
            sender
                .send_request(request)
                .await
                .map_err(|source| EtcdGatewayError::Request {
                    addr,
                    path: path.to_owned(),
                    source,
                })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| EtcdGatewayError::ReadBody {
                path: path.to_owned(),
                source,
            })?
            .to_bytes();
        let answer =
            serde_json::from_slice(&bytes).map_err(|source| EtcdGatewayError::ParseBody {
                path: path.to_owned(),
                status,
                source,
            })?;
        Ok((status, answer))
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .map_err(|_| EtcdGatewayError::Timeout { addr })?
}

//! Shared by the HTTPS tests and the benchmark: a throw-away PKI, and a minimal HTTPS
//! client that trusts only the test CA (no verification is ever skipped).

use std::net::SocketAddr;

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA that issues serving certificates for `localhost` and `127.0.0.1`.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM-encoded.
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl TestPki {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vc-webhook test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { ca })
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// Issues a certificate whose common name is `label`, so tests can tell two apart.
    pub fn issue(&self, label: &str) -> anyhow::Result<ServingPair> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(ServingPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }
}

impl ServingPair {
    /// Writes `tls.crt` and `tls.key` into `dir`, returning their paths.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A client configuration trusting exactly `ca`.
pub fn client_config(ca: CertificateDer<'static>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One HTTP/1.1 keep-alive connection over TLS.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The leaf certificate the server presented.
    pub server_cert: CertificateDer<'static>,
}

pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<Connection> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    let server_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the server presented no certificate")?
        .clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(Connection {
        sender,
        server_cert,
    })
}

impl Connection {
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, body.into()).await
    }
}

/// A running webhook and what a test needs to talk to it.
#[cfg(test)]
pub struct Harness {
    pub server: vc_webhook::server::RunningServer,
    pub client: Arc<ClientConfig>,
    pub webhook: Arc<vc_webhook::server::Webhook>,
    _directory: tempfile::TempDir,
}

/// A webhook serving over real TLS on 127.0.0.1 with a certificate of a fresh test CA,
/// and a client config that trusts only that CA.
#[cfg(test)]
pub async fn start_limited(
    admission: vc_webhook::review::Admission,
    readiness: vc_webhook::server::Readiness,
    limits: vc_webhook::Limits,
) -> Harness {
    use vc_webhook::server::Webhook;
    use vc_webhook::tls::{CertificatePaths, ReloadingCertificate, crypto_provider, server_config};
    let pki = TestPki::new().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let (cert, key) = pki
        .issue("vc-webhook")
        .unwrap()
        .write_to(directory.path())
        .unwrap();
    let provider = crypto_provider();
    let certificate = Arc::new(
        ReloadingCertificate::load(CertificatePaths { cert, key }, Arc::clone(&provider)).unwrap(),
    );
    let webhook = Arc::new(Webhook {
        admission,
        metrics: vc_webhook::metrics::Metrics::new(),
        readiness: Arc::new(readiness),
        limits,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = vc_webhook::spawn(
        listener,
        server_config(certificate, provider).unwrap(),
        Arc::clone(&webhook),
    )
    .unwrap();
    Harness {
        server,
        client: client_config(pki.ca_der()).unwrap(),
        webhook,
        _directory: directory,
    }
}

/// Admission enforcing the rules over `inventory`, with default policy and defaults.
#[cfg(test)]
pub fn enforce(inventory: vc_api::admission::Inventory) -> vc_webhook::review::Admission {
    use vc_api::admission::{Defaults, Policy};
    use vc_webhook::review::{Admission, Enforcement};
    Admission::Enforce(Box::new(Enforcement {
        inventory: Arc::new(parking_lot::RwLock::new(inventory)),
        policy: Policy::default(),
        defaults: Defaults::default(),
    }))
}

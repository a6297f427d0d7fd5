//! HTTPS transport: TLS with optional client certificates, identity extraction,
//! bearer tokens, and the hyper service that hands requests to the API handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;

use super::api;
use super::hooks::UserInfo;
use super::state::State;
use super::status::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

/// Errors while building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("parsing the serving certificate PEM: {0}")]
    ParseServingCert(rustls::pki_types::pem::Error),
    #[error("parsing the serving key PEM: {0}")]
    ParseServingKey(rustls::pki_types::pem::Error),
    #[error("parsing the client CA PEM: {0}")]
    ParseClientCa(String),
    #[error("building the TLS server configuration: {0}")]
    BuildConfig(String),
}

/// rustls server config: serving cert, client certs optional (anonymous and bearer
/// tokens still work) but verified against `client_ca_pem` when presented.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(TlsError::ParseServingCert)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(TlsError::ParseServingKey)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| TlsError::ParseClientCa(e.to_string()))?;
        roots
            .add(ca)
            .map_err(|e| TlsError::ParseClientCa(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::BuildConfig(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::BuildConfig(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::BuildConfig(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity in a verified client certificate: CN = user, O = groups.
fn identity_of(cert: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let username = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    if !groups.iter().any(|group| group == "system:authenticated") {
        groups.push("system:authenticated".to_string());
    }
    let fingerprint = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(cert.as_ref()))
    };
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        "authentication.kubernetes.io/credential-id".to_string(),
        vec![format!("X509SHA256={fingerprint}")],
    );
    Some(UserInfo {
        username,
        uid: String::new(),
        groups,
        extra,
    })
}

/// Accepts connections until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let _nodelay = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let mut conn_stop = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls_stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let identity = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity_of);
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handle(state, identity, peer, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_stop.changed() => {}
            }
        });
    }
}

const MAX_BODY: usize = 64 << 20;

async fn handle(
    state: Arc<State>,
    identity: Option<UserInfo>,
    _peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::with_code(
                413,
                Some("RequestEntityTooLarge"),
                "request body too large",
            ));
        }
    };
    let user = match authenticate(&state, identity, &parts.headers) {
        Ok(user) => user,
        Err(e) => return error_response(&e),
    };
    api::handle(state, user, parts, bytes).await
}

fn authenticate(
    state: &State,
    identity: Option<UserInfo>,
    headers: &http::HeaderMap,
) -> Result<UserInfo, ApiError> {
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ").map(str::trim)
    {
        let tokens = state
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        return tokens
            .get(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized);
    }
    Ok(identity.unwrap_or_else(UserInfo::anonymous))
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn error_response(e: &ApiError) -> hyper::Response<Body> {
    let mut builder = hyper::Response::builder()
        .status(e.code)
        .header("Cache-Control", "no-cache, private");
    if let Some(secs) = e.retry_after {
        builder = builder.header("Retry-After", secs.to_string());
    }
    let plain = match e.body_override.as_deref() {
        Some(super::status::BodyOverride::PlainText(text)) => Some(text.clone()),
        _ => None,
    };
    let response = match plain {
        Some(text) => builder
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("X-Content-Type-Options", "nosniff")
            .body(full(text)),
        None => builder
            .header("Content-Type", "application/json")
            .body(full(e.body())),
    };
    response.unwrap_or_else(|_| hyper::Response::new(full("internal error")))
}

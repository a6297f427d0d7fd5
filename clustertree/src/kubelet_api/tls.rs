//! Who may call the kubelet API, and what it serves with.
//!
//! A caller must present a client certificate chained to the tenant's cluster CA (the
//! `certificate-authority-data` of the tenant kubeconfig, which signs the tenant
//! apiserver's kubelet-client certificate) whose common name is
//! [`KUBELET_CLIENT_COMMON_NAME`]. A certificate of another CA fails the handshake; none
//! at all, or another name, gets 401 or 403 from [`super`] before anything reaches the
//! host. A real kubelet would authorise other names through SubjectAccessReviews; ours
//! proxies with the clustertree's host credential, so it serves the apiserver alone.
//!
//! The serving certificate is generated at start unless files are given: kube-apiserver
//! does not verify a kubelet's serving certificate unless it runs with
//! `--kubelet-certificate-authority`, which the controller's tenant apiservers do not set.
//! Where it is set, pass a certificate of that CA for the advertised address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The common name of kube-apiserver's client certificate towards kubelets.
pub const KUBELET_CLIENT_COMMON_NAME: &str = "kube-apiserver-kubelet-client";

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "the tenant kubeconfig names no certificate authority, so the tenant apiserver's \
         kubelet-client certificate cannot be verified"
    )]
    NoClientCa,
    #[error("adding the tenant cluster CA as the client CA: {0}")]
    AddClientCa(rustls::Error),
    #[error("building the client certificate verifier: {0}")]
    BuildVerifier(rustls::server::VerifierBuilderError),
    #[error("generating the serving certificate for {address}: {source}")]
    GenerateCertificate {
        address: String,
        source: rcgen::Error,
    },
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    ParseCertificate { path: PathBuf },
    /// The key itself is never printed.
    #[error("{path} holds no PEM private key")]
    ParseKey { path: PathBuf },
    #[error("building the TLS server configuration: {0}")]
    BuildServerConfig(rustls::Error),
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingCertificate {
    /// Self-signed, for the advertised address, made at start.
    Generated { address: String },
    /// PEM files: the certificate chain and its key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Who presented what, decided once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The tenant apiserver's kubelet client.
    KubeletClient,
    /// No client certificate.
    Anonymous,
    /// A certificate of the tenant CA under another common name.
    Other(String),
}

/// The caller behind `peer`, the verified chain of a connection (leaf first).
pub fn caller(peer: Option<&[CertificateDer<'_>]>) -> Caller {
    let Some(leaf) = peer.and_then(<[_]>::first) else {
        return Caller::Anonymous;
    };
    let common_name = x509_parser::parse_x509_certificate(leaf)
        .ok()
        .and_then(|(_, certificate)| {
            certificate
                .subject()
                .iter_common_name()
                .next()
                .and_then(|name| name.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default();
    if common_name == KUBELET_CLIENT_COMMON_NAME {
        Caller::KubeletClient
    } else {
        Caller::Other(common_name)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration: client certificates of `client_ca` (DER) verified when
/// presented, `serving` served, HTTP/1.1 only (the upgrades of exec need it).
pub fn server_config(
    client_ca: &[Vec<u8>],
    serving: &ServingCertificate,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_and_chain(client_ca, serving).map(|(config, _)| config)
}

/// [`server_config`], and the serving chain as PEM: what a client of the tenant
/// apiserver's webhooks must trust (the webhook configuration's `caBundle`).
pub fn server_config_and_chain(
    client_ca: &[Vec<u8>],
    serving: &ServingCertificate,
) -> Result<(Arc<ServerConfig>, Vec<u8>), TlsError> {
    if client_ca.is_empty() {
        return Err(TlsError::NoClientCa);
    }
    let mut roots = RootCertStore::empty();
    for der in client_ca {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(TlsError::AddClientCa)?;
    }
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::BuildVerifier)?;
    let (chain, key, pem) = match serving {
        ServingCertificate::Generated { address } => generate(address)?,
        ServingCertificate::Files { cert, key } => read_pair(cert, key)?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::BuildServerConfig)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::BuildServerConfig)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), pem))
}

/// The chain, its key, and the chain as PEM.
type Pair = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Vec<u8>,
);

fn generate(address: &str) -> Result<Pair, TlsError> {
    let fail = |source| TlsError::GenerateCertificate {
        address: address.to_owned(),
        source,
    };
    let generated =
        rcgen::generate_simple_self_signed(vec![address.to_owned(), "localhost".to_owned()])
            .map_err(fail)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let pem = generated.cert.pem().into_bytes();
    Ok((vec![generated.cert.der().clone()], key, pem))
}

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::ReadFile {
            path: path.to_owned(),
            source,
        })
    };
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TlsError::ParseCertificate {
            path: cert.to_owned(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::ParseKey {
        path: key.to_owned(),
    })?;
    Ok((chain, key, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn only_the_apiservers_kubelet_client_is_the_kubelet_client() {
        assert_eq!(caller(None), Caller::Anonymous);
        assert_eq!(caller(Some(&[][..])), Caller::Anonymous);
        assert_eq!(
            caller(Some(&[certificate(KUBELET_CLIENT_COMMON_NAME)][..])),
            Caller::KubeletClient
        );
        assert_eq!(
            caller(Some(&[certificate("system:node:node1")][..])),
            Caller::Other("system:node:node1".to_owned())
        );
    }

    #[test]
    fn no_client_ca_no_server() {
        let serving = ServingCertificate::Generated {
            address: "127.0.0.1".to_owned(),
        };
        assert!(matches!(
            server_config(&[], &serving),
            Err(TlsError::NoClientCa)
        ));
        let ca = certificate("tenant-ca").to_vec();
        assert!(server_config(&[ca], &serving).is_ok());
    }
}

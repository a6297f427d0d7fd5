//! The serving certificate, reloaded from its files without a restart.
//!
//! cert-manager and Kubernetes Secret volumes replace certificates behind the webhook's
//! back: a Secret volume swaps its `..data` symlink atomically, other tools rewrite the
//! files in place. We therefore re-read both files through their configured paths (which
//! follows the symlinks) and compare bytes, instead of trusting inotify or mtimes. Only
//! new TLS handshakes see a new certificate; connections already open keep theirs, so no
//! request is dropped. A half-written or mismatched pair is refused and the previous
//! certificate keeps serving.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are re-read by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(3);

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file that failed.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` block, or a broken one.
    #[error("{path} holds no valid PEM certificate (expected a \"BEGIN CERTIFICATE\" block)")]
    ParseCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key, or a broken one. The key itself is never printed.
    #[error("{path} holds no valid PEM private key (expected PKCS#8, PKCS#1 or SEC1)")]
    ParseKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key is of a kind the crypto provider cannot sign with.
    #[error("the private key in {path} cannot be used for TLS: {source}")]
    LoadKey {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// Certificate and key do not belong together (typically one file was replaced and
    /// the other not yet).
    #[error("the certificate in {cert} does not match the private key in {key}: {source}")]
    MatchKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The rustls server configuration could not be built.
    #[error("cannot build the TLS server configuration: {0}")]
    BuildServerConfig(rustls::Error),
}

/// Where the certificate chain and its private key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The pair currently served, with the bytes it was loaded from.
struct Loaded {
    certified: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A [`ResolvesServerCert`] whose certificate follows the files on disk.
pub struct ReloadingCertificate {
    paths: CertificatePaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
    /// Fingerprint of the last pair that failed to load, so a broken pair is logged once
    /// and not at every poll.
    last_rejected: Mutex<Option<u64>>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        formatter
            .debug_struct("ReloadingCertificate")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Loads the pair once; fails when the files are absent or unusable, because a webhook
    /// without a certificate cannot serve anything.
    pub fn load(paths: CertificatePaths, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = read_pair(&paths)?;
        let certified = parse_pair(&paths, &cert_pem, &key_pem, &provider)?;
        Ok(Self {
            paths,
            provider,
            current: RwLock::new(Loaded {
                certified: Arc::new(certified),
                cert_pem,
                key_pem,
            }),
            last_rejected: Mutex::new(None),
        })
    }

    /// The certificate chain new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().certified)
    }

    /// Re-reads both files and switches to them when their bytes changed and they form a
    /// valid pair. Returns whether the served certificate changed.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = read_pair(&self.paths)?;
        {
            let current = self.current.read();
            if current.cert_pem == cert_pem && current.key_pem == key_pem {
                return Ok(false);
            }
        }
        let certified = parse_pair(&self.paths, &cert_pem, &key_pem, &self.provider)?;
        *self.current.write() = Loaded {
            certified: Arc::new(certified),
            cert_pem,
            key_pem,
        };
        *self.last_rejected.lock() = None;
        Ok(true)
    }

    /// Polls the files every `interval` until `shutdown` fires. Failures are logged once
    /// per distinct file content and the previous certificate stays in use.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => self.poll_once(),
            }
        }
    }

    fn poll_once(&self) {
        match self.reload_if_changed() {
            Ok(true) => tracing::info!(
                cert = %self.paths.cert.display(),
                "reloaded the serving certificate; new connections use it"
            ),
            Ok(false) => {}
            Err(error) => {
                let fingerprint = fingerprint_files(&self.paths);
                let mut last = self.last_rejected.lock();
                if *last != Some(fingerprint) {
                    *last = Some(fingerprint);
                    tracing::warn!(%error, "keeping the previous serving certificate");
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS server configuration serving `certificate`, offering HTTP/2 and HTTP/1.1.
pub fn server_config(
    certificate: Arc<ReloadingCertificate>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::BuildServerConfig)?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The ring crypto provider every TLS endpoint of the webhook uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(paths: &CertificatePaths) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((read_file(&paths.cert)?, read_file(&paths.key)?))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn parse_pair(
    paths: &CertificatePaths,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TlsError::ParseCertificate {
            path: paths.cert.clone(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::ParseKey {
        path: paths.key.clone(),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::LoadKey {
            path: paths.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::MatchKey {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    Ok(certified)
}

fn fingerprint_files(paths: &CertificatePaths) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(&paths.cert).ok().hash(&mut hasher);
    std::fs::read(&paths.key).ok().hash(&mut hasher);
    hasher.finish()
}

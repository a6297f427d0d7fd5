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
    #[error("cannot read {path}: {reason}")]
    ReadFile {
        /// The file that failed.
        path: PathBuf,
        /// What the OS said.
        reason: std::io::Error,
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
    #[error("the private key in {path} cannot be used for TLS: {reason}")]
    LoadKey {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// Certificate and key do not belong together (typically one file was replaced and
    /// the other not yet).
    #[error("the certificate in {cert} does not match the private key in {key}: {reason}")]
    MatchKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
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
    std::fs::read(path).map_err(|reason| TlsError::ReadFile {
        path: path.to_owned(),
        reason,
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
        .map_err(|reason| TlsError::LoadKey {
            path: paths.key.clone(),
            reason,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|reason| TlsError::MatchKey {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            reason,
        })?;
    Ok(certified)
}

fn fingerprint_files(paths: &CertificatePaths) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(&paths.cert).ok().hash(&mut hasher);
    std::fs::read(&paths.key).ok().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert_pem: String,
        key_pem: String,
    }

    fn self_signed(name: &str) -> Pair {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Pair {
            cert_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
        }
    }

    fn write(directory: &Path, cert: &str, key: &str) -> CertificatePaths {
        let paths = CertificatePaths {
            cert: directory.join("tls.crt"),
            key: directory.join("tls.key"),
        };
        std::fs::write(&paths.cert, cert).unwrap();
        std::fs::write(&paths.key, key).unwrap();
        paths
    }

    fn served_der(certificate: &ReloadingCertificate) -> Vec<u8> {
        certificate.current().end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn unusable_files_are_refused_naming_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let good = self_signed("a");
        let other = self_signed("b");
        let cases = [
            ("", good.key_pem.as_str(), "holds no valid PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\ngarbage",
                good.key_pem.as_str(),
                "holds no valid PEM certificate",
            ),
            (
                good.cert_pem.as_str(),
                "not a key",
                "holds no valid PEM private key",
            ),
            (
                good.cert_pem.as_str(),
                other.key_pem.as_str(),
                "does not match the private key",
            ),
        ];
        for (cert, key, expected) in cases {
            let paths = write(directory.path(), cert, key);
            let error = ReloadingCertificate::load(paths, crypto_provider()).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(
                message.contains(&directory.path().display().to_string()),
                "{message}"
            );
            assert!(
                !message.contains("PRIVATE KEY-----"),
                "key material leaked: {message}"
            );
        }
        let missing = CertificatePaths {
            cert: directory.path().join("absent.crt"),
            key: directory.path().join("absent.key"),
        };
        let error = ReloadingCertificate::load(missing, crypto_provider()).unwrap_err();
        assert!(error.to_string().starts_with("cannot read "), "{error}");
    }

    #[test]
    fn reload_switches_only_to_a_complete_new_pair() {
        let directory = tempfile::tempdir().unwrap();
        let first = self_signed("first");
        let second = self_signed("second");
        let paths = write(directory.path(), &first.cert_pem, &first.key_pem);
        let certificate = ReloadingCertificate::load(paths.clone(), crypto_provider()).unwrap();
        let first_der = served_der(&certificate);
        assert!(
            !certificate.reload_if_changed().unwrap(),
            "unchanged files are no change"
        );

        // Half-way through a rewrite: new certificate, old key.
        std::fs::write(&paths.cert, &second.cert_pem).unwrap();
        assert!(certificate.reload_if_changed().is_err());
        assert_eq!(served_der(&certificate), first_der);

        std::fs::write(&paths.key, &second.key_pem).unwrap();
        assert!(certificate.reload_if_changed().unwrap());
        assert_ne!(served_der(&certificate), first_der);

        // A file that disappears keeps the current certificate serving.
        std::fs::remove_file(&paths.key).unwrap();
        assert!(certificate.reload_if_changed().is_err());
        assert!(certificate.current().end_entity_cert().is_ok());
    }

    #[test]
    fn debug_output_never_contains_key_material() {
        let directory = tempfile::tempdir().unwrap();
        let pair = self_signed("a");
        let paths = write(directory.path(), &pair.cert_pem, &pair.key_pem);
        let certificate = ReloadingCertificate::load(paths, crypto_provider()).unwrap();
        let debug = format!("{certificate:?}");
        assert!(
            debug.contains("tls.crt") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }
}

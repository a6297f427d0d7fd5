//! What a tenant's Secrets already hold, read back into certificates and keys.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;

use super::encryption::{ENCRYPTION_CONFIG_KEY, EncryptionConfig};
use super::inspect::{CertificateFacts, inspect_certificate, public_key_of_private_key};
use super::kubeconfig;
use super::{CaKind, Decision, IssueReason, LeafKind};

/// Secret key of a PEM certificate.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of a PEM private key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the PEM CA certificate that signed `tls.crt`.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the admin CA's Secret holding what the apiserver's `--client-ca-file` trusts:
/// the cluster CA (every component) and the admin CA, in that order.
pub const CLIENT_CA_BUNDLE_KEY: &str = "client-ca.crt";
/// Secret key of the service-account private key (kubeadm's file name).
pub const SA_PRIVATE_KEY: &str = "sa.key";
/// Secret key of the service-account public key (kubeadm's file name).
pub const SA_PUBLIC_KEY: &str = "sa.pub";

/// A PEM private key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// Wraps a PEM private key.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text, for writing into a Secret or a file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// A certificate with its key as stored, plus the CA certificate stored beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: PrivateKeyPem,
    /// PEM CA certificate stored beside it (`ca.crt`), if any.
    pub ca_pem: Option<String>,
}

impl StoredCertificate {
    /// Parses the certificate and checks that the key belongs to it.
    pub(crate) fn facts(&self) -> Result<CertificateFacts, IssueReason> {
        let facts =
            inspect_certificate(self.cert_pem.as_bytes()).map_err(|_| IssueReason::Unparseable)?;
        let public_key =
            public_key_of_private_key(self.key_pem.expose()).ok_or(IssueReason::Unparseable)?;
        if public_key != facts.public_key {
            return Err(IssueReason::KeyMismatch);
        }
        Ok(facts)
    }

    /// Whether `ca` signed this certificate and is the CA stored beside it.
    pub(crate) fn is_signed_by(&self, ca: &StoredCertificate) -> bool {
        if self
            .ca_pem
            .as_deref()
            .is_some_and(|stored_ca| stored_ca.trim() != ca.cert_pem.trim())
        {
            return false;
        }
        super::inspect::verify_signed_by(self.cert_pem.as_bytes(), ca.cert_pem.as_bytes())
    }
}

/// The service-account key pair as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredServiceAccountKey {
    pub(crate) private_pem: PrivateKeyPem,
    pub(crate) public_pem: String,
}

/// Everything a tenant's PKI Secrets hold. Missing or broken entries are simply absent
/// or fail to parse; the plan then reissues them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingPki {
    cas: BTreeMap<CaKind, StoredCertificate>,
    leaves: BTreeMap<LeafKind, StoredCertificate>,
    service_account: Option<StoredServiceAccountKey>,
    /// The encryption-at-rest configuration: `None` when its Secret or key is absent,
    /// the reason when it is there but unusable.
    encryption: Option<Result<EncryptionConfig, String>>,
    /// The rotation request the stored admin CA was issued for.
    admin_rotation: Option<String>,
}

impl ExistingPki {
    /// Reads the PKI of tenant `tenant_name` out of `secrets` (any Secrets of the
    /// namespace; those with other names are ignored).
    pub fn from_secrets<'a>(
        tenant_name: &str,
        secrets: impl IntoIterator<Item = &'a Secret>,
    ) -> Self {
        let by_name: BTreeMap<&str, &Secret> = secrets
            .into_iter()
            .filter_map(|secret| Some((secret.metadata.name.as_deref()?, secret)))
            .collect();
        let data_of = |name: String| {
            by_name
                .get(name.as_str())
                .and_then(|secret| secret.data.as_ref())
                .map(|data| {
                    data.iter()
                        .map(|(key, value)| (key.clone(), value.0.clone()))
                        .collect::<BTreeMap<String, Vec<u8>>>()
                })
        };
        let mut existing = Self::default();
        for kind in CaKind::ALL {
            if let Some(stored) =
                data_of(kind.secret_name(tenant_name)).and_then(|data| tls_from_data(&data))
            {
                existing.cas.insert(kind, stored);
            }
        }
        for kind in LeafKind::ALL {
            let Some(data) = data_of(kind.secret_name(tenant_name)) else {
                continue;
            };
            let stored = if kind.stored_in_kubeconfig() {
                text(&data, vc_api::constants::KUBECONFIG_SECRET_KEY)
                    .and_then(|yaml| kubeconfig::client_credentials(&yaml))
                    .map(|mut stored| {
                        // A kubeconfig's CA data is the cluster CA, which verifies the
                        // server but does not sign the admin certificate: the signature
                        // alone tells whether the admin CA signed it.
                        if kind == LeafKind::Admin {
                            stored.ca_pem = None;
                        }
                        stored
                    })
            } else {
                tls_from_data(&data)
            };
            if let Some(stored) = stored {
                existing.leaves.insert(kind, stored);
            }
        }
        existing.service_account = data_of(vc_api::names::service_account_key_secret(tenant_name))
            .and_then(|data| {
                Some(StoredServiceAccountKey {
                    private_pem: PrivateKeyPem::new(text(&data, SA_PRIVATE_KEY)?),
                    public_pem: text(&data, SA_PUBLIC_KEY)?,
                })
            });
        existing.admin_rotation = by_name
            .get(CaKind::Admin.secret_name(tenant_name).as_str())
            .and_then(|secret| secret.metadata.annotations.as_ref())
            .and_then(|annotations| {
                annotations.get(vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION)
            })
            .cloned();
        existing.encryption = data_of(vc_api::names::apiserver_encryption_secret(tenant_name))
            .and_then(|data| {
                let bytes = data.get(ENCRYPTION_CONFIG_KEY)?;
                Some(EncryptionConfig::parse(bytes).map_err(|error| error.to_string()))
            });
        existing
    }

    /// The stored CA of `kind`.
    pub fn ca(&self, kind: CaKind) -> Option<&StoredCertificate> {
        self.cas.get(&kind)
    }

    /// The stored leaf of `kind`.
    pub fn leaf(&self, kind: LeafKind) -> Option<&StoredCertificate> {
        self.leaves.get(&kind)
    }

    pub(crate) fn service_account(&self) -> Option<&StoredServiceAccountKey> {
        self.service_account.as_ref()
    }

    /// The rotation request the stored admin CA was issued for.
    pub fn admin_rotation(&self) -> Option<&str> {
        self.admin_rotation.as_deref()
    }

    pub(crate) fn encryption(&self) -> Option<&Result<EncryptionConfig, String>> {
        self.encryption.as_ref()
    }

    /// A key is drawn only when none is stored; a stored configuration that does not
    /// parse is kept (and refused when issuing), never replaced.
    pub(crate) fn encryption_decision(&self) -> Decision {
        match self.encryption {
            None => Decision::Issue(IssueReason::Missing),
            Some(_) => Decision::Keep,
        }
    }

    /// Puts a CA in place, as if read from its Secret.
    pub fn insert_ca(&mut self, kind: CaKind, stored: StoredCertificate) {
        self.cas.insert(kind, stored);
    }

    /// Puts a leaf in place, as if read from its Secret.
    pub fn insert_leaf(&mut self, kind: LeafKind, stored: StoredCertificate) {
        self.leaves.insert(kind, stored);
    }

    /// The service-account key is kept whenever its private key parses and matches the
    /// public key: rotating it would invalidate every token the tenant has issued.
    pub(crate) fn service_account_decision(&self) -> Decision {
        let Some(stored) = &self.service_account else {
            return Decision::Issue(IssueReason::Missing);
        };
        match public_key_of_private_key(stored.private_pem.expose()) {
            None => Decision::Issue(IssueReason::Unparseable),
            Some(public_key) => {
                match super::inspect::public_key_of_public_pem(&stored.public_pem) {
                    Some(stored_public) if stored_public == public_key => Decision::Keep,
                    _ => Decision::Issue(IssueReason::KeyMismatch),
                }
            }
        }
    }
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|bytes| String::from_utf8(bytes.clone()).ok())
}

fn tls_from_data(data: &BTreeMap<String, Vec<u8>>) -> Option<StoredCertificate> {
    Some(StoredCertificate {
        cert_pem: text(data, TLS_CERT_KEY)?,
        key_pem: PrivateKeyPem::new(text(data, TLS_KEY_KEY)?),
        ca_pem: text(data, CA_CERT_KEY),
    })
}

//! The test server's own certificate authority: a serving certificate for 127.0.0.1 and
//! client certificates whose subject carries the identity (CN = user, O = groups), the
//! way kube-apiserver's x509 authenticator reads it.

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Errors while minting certificates or writing kubeconfigs.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating the test CA: {0}")]
    GenerateCa(rcgen::Error),
    #[error("issuing a certificate for {subject}: {source}")]
    IssueCertificate {
        subject: String,
        source: rcgen::Error,
    },
    #[error(
        "issuing a certificate for {subject}: it can carry at most two groups besides \
         system:authenticated, not {groups:?} (rcgen writes one value per attribute type); \
         use a bearer token (TestApiServer::token_for) for more"
    )]
    TooManyGroups {
        subject: String,
        groups: Vec<String>,
    },
    #[error("rendering a kubeconfig: {0}")]
    RenderKubeconfig(serde_yaml::Error),
    #[error("writing kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: String,
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertKeyPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeyPem")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The CA that signs the serving certificate and every client certificate.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn new_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
}

/// `O` spelled as a custom attribute type: rcgen keeps one value per type, and pushing
/// `OrganizationName` twice silently kept only the last group (a ServiceAccount's
/// `system:serviceaccounts` and `system:serviceaccounts:NS` became neither). Readers match
/// attributes by OID, so kube-apiserver and `x509-parser` see two `O`s.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// CN = user, one O per group. `system:authenticated` is left out: every authenticator
/// adds it, as kube-apiserver's AuthenticatedGroupAdder does.
fn client_subject(user: &str, groups: &[String]) -> Result<DistinguishedName, PkiError> {
    let groups: Vec<&String> = groups
        .iter()
        .filter(|group| *group != "system:authenticated")
        .collect();
    let mut subject = DistinguishedName::new();
    match groups.as_slice() {
        [] => {}
        [only] => subject.push(DnType::OrganizationName, only.as_str()),
        [first, second] => {
            subject.push(DnType::OrganizationName, first.as_str());
            subject.push(
                DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
                second.as_str(),
            );
        }
        _ => {
            return Err(PkiError::TooManyGroups {
                subject: user.to_owned(),
                groups: groups.into_iter().cloned().collect(),
            });
        }
    }
    subject.push(DnType::CommonName, user);
    Ok(subject)
}

impl TestCa {
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = new_key().map_err(PkiError::GenerateCa)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(PkiError::GenerateCa)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate valid for `localhost`, `127.0.0.1` and `extra_sans`.
    pub fn issue_server(&self, extra_sans: &[String]) -> Result<CertKeyPem, PkiError> {
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        sans.extend(extra_sans.iter().cloned());
        let subject = "vc-test-apiserver".to_string();
        let fail = |source| PkiError::IssueCertificate {
            subject: subject.clone(),
            source,
        };
        let key = new_key().map_err(fail)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.as_str());
        params.distinguished_name = dn;
        for san in sans {
            let entry = match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into().map_err(fail)?),
            };
            params.subject_alt_names.push(entry);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `groups` (CN = user, one O per group).
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<CertKeyPem, PkiError> {
        let fail = |source| PkiError::IssueCertificate {
            subject: user.to_string(),
            source,
        };
        let key = new_key().map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = client_subject(user, groups)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// How a kubeconfig user authenticates.
#[derive(Debug, Clone)]
pub enum KubeconfigCredential {
    ClientCert(CertKeyPem),
    Token(String),
}

/// A kubeconfig with one cluster, user and context named `context`.
pub fn render_kubeconfig(
    server_url: &str,
    ca_pem: &str,
    context: &str,
    credential: &KubeconfigCredential,
) -> Result<String, PkiError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = match credential {
        KubeconfigCredential::ClientCert(pair) => serde_json::json!({
            "client-certificate-data": b64(&pair.cert_pem),
            "client-key-data": b64(&pair.key_pem),
        }),
        KubeconfigCredential::Token(token) => serde_json::json!({ "token": token }),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).map_err(PkiError::RenderKubeconfig)
}

/// Writes a kubeconfig file readable only by the owner (it holds a private key).
pub fn write_private_file(path: &std::path::Path, contents: &str) -> Result<(), PkiError> {
    let fail = |source| PkiError::WriteKubeconfig {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, contents).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    use super::{PkiError, TestCa};

    fn subject_of(cert_pem: &str) -> (Vec<String>, Vec<String>) {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let subject = parsed.subject();
        let read = |values: Vec<&x509_parser::x509::AttributeTypeAndValue<'_>>| -> Vec<String> {
            values
                .into_iter()
                .map(|value| value.as_str().unwrap().to_owned())
                .collect()
        };
        (
            read(subject.iter_common_name().collect()),
            read(subject.iter_organization().collect()),
        )
    }

    #[test]
    fn a_service_account_certificate_carries_both_of_its_groups() {
        let ca = TestCa::generate("test").unwrap();
        let user = "system:serviceaccount:kosmos-system:kosmos-vc-controller";
        let groups = [
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:kosmos-system".to_owned(),
            "system:authenticated".to_owned(),
        ];
        let cert = ca.issue_client(user, &groups).unwrap();
        assert_eq!(
            subject_of(&cert.cert_pem),
            (vec![user.to_owned()], groups[..2].to_vec())
        );

        let admin = ca
            .issue_client("admin", &["system:masters".to_owned()])
            .unwrap();
        assert_eq!(
            subject_of(&admin.cert_pem),
            (vec!["admin".to_owned()], vec!["system:masters".to_owned()])
        );
        let nobody = ca.issue_client("nobody", &[]).unwrap();
        assert_eq!(subject_of(&nobody.cert_pem).1, Vec::<String>::new());
    }

    #[test]
    fn more_groups_than_a_certificate_can_carry_are_refused_by_name() {
        let ca = TestCa::generate("test").unwrap();
        let groups = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let error = ca.issue_client("alice", &groups).unwrap_err();
        assert!(matches!(error, PkiError::TooManyGroups { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("alice") && message.contains("token_for"),
            "{message}"
        );
    }
}

//! Reading stored certificates with x509-parser.

use std::collections::BTreeSet;
use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::PkiError;
use super::profile::Usage;

/// What the PKI plan needs to know about a stored certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization, if any.
    pub organization: Option<String>,
    /// DNS SANs.
    pub dns_names: BTreeSet<String>,
    /// IP SANs.
    pub ip_addresses: BTreeSet<IpAddr>,
    /// Extended key usage, if it is one of ours.
    pub usage: Option<Usage>,
    /// Basic constraints say CA.
    pub is_ca: bool,
    /// The CA's path length limit; `None` when the certificate sets none (or is no CA).
    pub path_len: Option<u32>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Raw subject public key (the EC point).
    pub public_key: Vec<u8>,
}

impl CertificateFacts {
    /// Whether the certificate is within its validity period at `now`.
    pub fn valid_at(&self, now: jiff::Timestamp) -> bool {
        let now = now.as_second();
        self.not_before <= now && now < self.not_after
    }

    /// Whether the certificate's validity has ended at `now`.
    pub fn expired_at(&self, now: jiff::Timestamp) -> bool {
        now.as_second() >= self.not_after
    }

    /// End of validity as a timestamp; `None` only for a date no timestamp can hold.
    pub fn not_after_timestamp(&self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_second(self.not_after).ok()
    }

    /// Whether less than a third of the lifetime is left at `now`.
    pub fn needs_renewal(&self, now: jiff::Timestamp) -> bool {
        let lifetime = self.not_after - self.not_before;
        let remaining = self.not_after - now.as_second();
        remaining.saturating_mul(3) < lifetime
    }
}

fn parse_pem(pem: &[u8]) -> Result<x509_parser::pem::Pem, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|error| error.to_string())?;
    if pem.label != "CERTIFICATE" {
        return Err(format!(
            "expected a CERTIFICATE PEM block, found {:?}",
            pem.label
        ));
    }
    Ok(pem)
}

/// Parses a PEM certificate into the facts the plan compares.
pub fn inspect_certificate(pem: &[u8]) -> Result<CertificateFacts, PkiError> {
    let failed = |reason: String| PkiError::ParseExistingCertificate {
        what: "PEM".to_owned(),
        reason,
    };
    let pem = parse_pem(pem).map_err(failed)?;
    let certificate = pem
        .parse_x509()
        .map_err(|error| failed(error.to_string()))?;
    Ok(facts_of(&certificate))
}

fn facts_of(certificate: &X509Certificate<'_>) -> CertificateFacts {
    let subject = certificate.subject();
    let first = |mut values: Box<dyn Iterator<Item = _> + '_>| {
        values
            .next()
            .and_then(|attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
                attribute.as_str().ok().map(str::to_owned)
            })
    };
    let common_name = first(Box::new(subject.iter_common_name())).unwrap_or_default();
    let organization = first(Box::new(subject.iter_organization()));
    let mut dns_names = BTreeSet::new();
    let mut ip_addresses = BTreeSet::new();
    if let Ok(Some(sans)) = certificate.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    dns_names.insert((*dns).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.insert(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let usage = match certificate.extended_key_usage() {
        Ok(Some(eku)) => match (eku.value.server_auth, eku.value.client_auth) {
            (true, true) => Some(Usage::ServerAndClient),
            (true, false) => Some(Usage::Server),
            (false, true) => Some(Usage::Client),
            (false, false) => None,
        },
        _ => None,
    };
    let (is_ca, path_len) = match certificate.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {
            (true, constraints.value.path_len_constraint)
        }
        _ => (false, None),
    };
    CertificateFacts {
        common_name,
        organization,
        dns_names,
        ip_addresses,
        usage,
        is_ca,
        path_len,
        not_before: certificate.validity().not_before.timestamp(),
        not_after: certificate.validity().not_after.timestamp(),
        public_key: certificate.public_key().subject_public_key.data.to_vec(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether the certificate `leaf_pem` carries a valid signature by the key of `ca_pem`.
pub fn verify_signed_by(leaf_pem: &[u8], ca_pem: &[u8]) -> bool {
    let (Ok(leaf), Ok(ca)) = (parse_pem(leaf_pem), parse_pem(ca_pem)) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// The raw public key (EC point) of a PEM private key, or `None` when it does not parse.
pub(crate) fn public_key_of_private_key(pem: &str) -> Option<Vec<u8>> {
    rcgen::KeyPair::from_pem(pem)
        .ok()
        .map(|key| key.public_key_raw().to_vec())
}

/// The raw public key (EC point) of a PEM `PUBLIC KEY`.
pub(crate) fn public_key_of_public_pem(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    if pem.label != "PUBLIC KEY" {
        return None;
    }
    public_key_of_spki_der(&pem.contents)
}

fn public_key_of_spki_der(der: &[u8]) -> Option<Vec<u8>> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(der).ok()?;
    Some(spki.subject_public_key.data.to_vec())
}

//! The only gate between tenant-controlled text and a signed certificate.
//!
//! The admission webhook refuses bad names and hosts, but a VirtualCluster written while
//! the webhook was down or bypassed, or a load-balancer host from a Service's status,
//! never went through it. rcgen accepts any ASCII as a DNS SAN (spaces, commas, `/`,
//! control characters), so without this check such text would be signed as given.

use std::net::IpAddr;

use super::{PkiError, TenantIdentity};

/// Longest value an error repeats: enough to recognise it, too short to flood a message.
pub const MAX_SHOWN: usize = 64;
/// Longest DNS name (RFC 1035).
const DNS_NAME_MAX: usize = 253;
/// Longest DNS label (RFC 1035).
const DNS_LABEL_MAX: usize = 63;

const NAME_RULE: &str = "a VirtualCluster name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)";
const NAMESPACE_RULE: &str = "a namespace must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)";
const HOST_RULE: &str =
    "write an IP address or a DNS name such as vc.example.com (a leading *. is allowed)";
const DOMAIN_RULE: &str = "the cluster domain must be a DNS name such as cluster.local";
const SAN_RULE: &str = "every DNS name must have labels of 1 to 63 letters, digits or '-', at most 253 characters in all";

impl TenantIdentity {
    /// Refuses the identity if any text in it could not go into a certificate verbatim.
    pub fn check_names(&self) -> Result<(), PkiError> {
        if !is_dns1035_label(&self.name) {
            return Err(refused("metadata.name", &self.name, NAME_RULE));
        }
        if !is_dns1123_label(&self.namespace) {
            return Err(refused(
                "metadata.namespace",
                &self.namespace,
                NAMESPACE_RULE,
            ));
        }
        if !is_dns_name(&self.cluster_domain, false) {
            return Err(refused(
                "the --cluster-domain flag",
                &self.cluster_domain,
                DOMAIN_RULE,
            ));
        }
        for host in &self.external_hosts {
            if !is_host(host, true) {
                return Err(refused(
                    "spec.controlPlane.apiServer.externalHosts",
                    host,
                    HOST_RULE,
                ));
            }
        }
        // Wildcards come only from the spec, where the webhook let the author ask for one.
        for host in &self.load_balancer_hosts {
            if !is_host(host, false) {
                return Err(refused(
                    "the apiserver Service's load-balancer ingress",
                    host,
                    HOST_RULE,
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a DNS SAN built from checked parts that still breaks a length limit.
pub(super) fn check_san(what: &'static str, name: &str) -> Result<(), PkiError> {
    if is_dns_name(name, true) {
        Ok(())
    } else {
        Err(refused(what, name, SAN_RULE))
    }
}

fn refused(field: &'static str, value: &str, rule: &'static str) -> PkiError {
    PkiError::CheckName {
        field,
        value: value.chars().take(MAX_SHOWN).collect(),
        rule,
    }
}

fn is_host(host: &str, allow_wildcard: bool) -> bool {
    host.parse::<IpAddr>().is_ok() || is_dns_name(host, allow_wildcard)
}

/// Letters, digits and inner '-' per label; either case, as DNS compares without it.
fn is_dns_name(name: &str, allow_wildcard: bool) -> bool {
    let name = match name.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        _ => name,
    };
    !name.is_empty()
        && name.len() <= DNS_NAME_MAX
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= DNS_LABEL_MAX
                && bytes
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DNS_LABEL_MAX
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns1035_label(name: &str) -> bool {
    is_dns1123_label(name) && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests;

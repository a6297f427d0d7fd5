//! What an operator must hear about a tenant's CAs before it hurts.
//!
//! A CA is replaced only once it has expired (see the module rules), and replacing it
//! restarts every component with new certificates and invalidates every kubeconfig handed
//! out. An operator warned in time can choose when that happens instead.

use super::inspect::{CertificateFacts, inspect_certificate};
use super::{CaKind, PkiError, PkiMaterial};

/// How long before a CA's notAfter the tenant is warned.
///
/// Not the leaves' "last third": for a ten-year CA that would be a warning standing for
/// over three years, which people learn to ignore. Ninety days is long enough to plan a
/// maintenance window, and from then on every leaf already ends with its CA.
pub const CA_EXPIRY_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 90);

/// The CA's notAfter when it falls within [`CA_EXPIRY_WARNING`] of `now` (or has passed),
/// `None` while it is further away.
pub fn approaching_expiry(
    ca_cert_pem: &str,
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, PkiError> {
    expiry_within_warning(&inspect_certificate(ca_cert_pem.as_bytes())?, now)
}

fn expiry_within_warning(
    facts: &CertificateFacts,
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, PkiError> {
    let not_after = facts
        .not_after_timestamp()
        .ok_or(PkiError::ValidityPeriod { what: "CA" })?;
    let warn_from = not_after
        .checked_sub(CA_EXPIRY_WARNING)
        .unwrap_or(jiff::Timestamp::MIN);
    Ok((now >= warn_from).then_some(not_after))
}

/// Everything about a tenant's CAs worth a status condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaNotices {
    /// CAs within [`CA_EXPIRY_WARNING`] of their end, soonest first, with their notAfter.
    pub expiring: Vec<(CaKind, jiff::Timestamp)>,
    /// CAs without `pathLen 0`, kept until their next replacement (see `decide_ca`).
    pub without_path_len_zero: Vec<CaKind>,
}

impl CaNotices {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.expiring.is_empty() && self.without_path_len_zero.is_empty()
    }
}

/// The notices for the CAs `material` holds, which are the ones the tenant runs with
/// after this reconcile: an expired CA was just replaced and is not reported.
///
/// A CA certificate that does not parse is skipped rather than failing the reconcile:
/// the plan never keeps one, so `material` cannot hold it.
pub fn ca_notices(material: &PkiMaterial, now: jiff::Timestamp) -> CaNotices {
    let mut notices = CaNotices::default();
    for kind in CaKind::ALL {
        let Ok(facts) = inspect_certificate(material.ca(kind).cert_pem.as_bytes()) else {
            continue;
        };
        if let Ok(Some(not_after)) = expiry_within_warning(&facts, now) {
            notices.expiring.push((kind, not_after));
        }
        if facts.path_len != Some(0) {
            notices.without_path_len_zero.push(kind);
        }
    }
    notices.expiring.sort_by_key(|(_, not_after)| *not_after);
    notices
}

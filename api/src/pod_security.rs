//! The Pod Security level a tenant's pods are held to on the host: chosen per tenant by
//! the cluster admin, never by the VirtualCluster's author, through a label on the
//! namespace the VirtualCluster lives in ([`WORKLOAD_POD_SECURITY_LABEL`]).

use std::fmt;
use std::str::FromStr;

/// Label on a VirtualCluster's namespace: the Pod Security level of the workload
/// namespaces of the VirtualClusters there. Namespace labels are the cluster admin's, so
/// a VirtualCluster's author cannot lower it.
pub const WORKLOAD_POD_SECURITY_LABEL: &str = "vc.kosmos.io/workload-pod-security";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodSecurityLevel {
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

impl PodSecurityLevel {
    pub const ALL: [PodSecurityLevel; 3] = [
        PodSecurityLevel::Privileged,
        PodSecurityLevel::Baseline,
        PodSecurityLevel::Restricted,
    ];

    /// The label value Pod Security admission reads.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }
}

impl fmt::Display for PodSecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not a level, with what would be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a Pod Security level: use privileged, baseline or restricted")]
pub struct UnknownLevel {
    pub value: String,
}

impl FromStr for PodSecurityLevel {
    type Err = UnknownLevel;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        PodSecurityLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == value)
            .ok_or_else(|| UnknownLevel {
                value: value.to_owned(),
            })
    }
}

/// The level for the workload namespaces of a VirtualCluster whose namespace carries
/// `label` ([`WORKLOAD_POD_SECURITY_LABEL`]): `baseline` without one.
pub fn workload_level(label: Option<&str>) -> Result<PodSecurityLevel, UnknownLevel> {
    label.map_or(Ok(PodSecurityLevel::Baseline), str::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_label_chooses_the_level_and_baseline_is_the_default() {
        assert_eq!(workload_level(None), Ok(PodSecurityLevel::Baseline));
        for level in PodSecurityLevel::ALL {
            assert_eq!(workload_level(Some(level.as_str())), Ok(level));
        }
        let error = workload_level(Some("Privileged")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"Privileged\" is not a Pod Security level: use privileged, baseline or restricted"
        );
    }
}

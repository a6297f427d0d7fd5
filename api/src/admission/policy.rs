//! The admin's admission policy: who may write reserved fields, overcommit and ceilings.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The identity allowed to write `spec.kubeconfig` unless a flag says otherwise.
pub const DEFAULT_CONTROLLER_USERNAME: &str =
    "system:serviceaccount:kosmos-system:kosmos-vc-controller";

/// Thousandths in one: ratios keep three decimals.
const RATIO_SCALE: i128 = 1000;

/// An overcommit ratio of at least 1, kept exactly to three decimals (`"1.5"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ratio(i128);

/// Why an overcommit ratio was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RatioError {
    /// Not a decimal number with at most three decimals.
    #[error("overcommit ratio {text:?} is not a number like \"1.5\" (at most three decimals)")]
    ParseRatio {
        /// The text as written.
        text: String,
    },
    /// Below one: the pool would promise less than it has, which is not overcommit.
    #[error("overcommit ratio {text:?} is below 1; use 1.0 to give exactly the pool's capacity")]
    BelowOne {
        /// The text as written.
        text: String,
    },
}

impl Ratio {
    /// Exactly the pool's capacity, no overcommit.
    pub const ONE: Ratio = Ratio(RATIO_SCALE);

    /// Parses `"1"`, `"1.5"`, `"2.125"`; refuses values below 1.
    pub fn parse(text: &str) -> Result<Self, RatioError> {
        let invalid = || RatioError::ParseRatio {
            text: text.to_owned(),
        };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 9
            || fraction.len() > 3
            || !digits_only(whole)
            || !digits_only(fraction)
        {
            return Err(invalid());
        }
        let whole: i128 = whole.parse().map_err(|_| invalid())?;
        let fraction: i128 = format!("{fraction:0<3}").parse().map_err(|_| invalid())?;
        let thousandths = whole * RATIO_SCALE + fraction;
        if thousandths < RATIO_SCALE {
            return Err(RatioError::BelowOne {
                text: text.to_owned(),
            });
        }
        Ok(Self(thousandths))
    }

    /// `amount × ratio`, rounded down so the pool never promises a fraction it lacks.
    pub fn apply(self, amount: i128) -> i128 {
        amount.saturating_mul(self.0) / RATIO_SCALE
    }
}

impl Default for Ratio {
    fn default() -> Self {
        Self::ONE
    }
}

impl FromStr for Ratio {
    type Err = RatioError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// `1.0`, `1.5`, `1.25`: always with a decimal point, so it reads as a ratio.
impl fmt::Display for Ratio {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / RATIO_SCALE;
        let fraction = format!("{:03}", self.0 % RATIO_SCALE);
        let fraction = fraction.trim_end_matches('0');
        let fraction = if fraction.is_empty() { "0" } else { fraction };
        write!(formatter, "{whole}.{fraction}")
    }
}

/// Everything the admin decides about admission, from the webhook's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The only user allowed to write `spec.kubeconfig` and to remove the finalizer
    /// (`--controller-username`).
    pub controller_username: String,
    /// The clustertree image the controller runs (`--clustertree-image`): the only value
    /// `spec.clusterTree.image` may be given, since the clustertree holds host credentials.
    pub clustertree_image: String,
    /// Overcommit ratio per resource (`--overcommit RESOURCE=RATIO`); 1.0 when absent.
    pub overcommit: BTreeMap<String, Ratio>,
    /// `--max-nodes-per-cluster`.
    pub max_nodes_per_cluster: Option<usize>,
    /// `--max-cpu-per-cluster`, in milli-cores, counting pooled CPU and promoted nodes.
    pub max_cpu_per_cluster: Option<i128>,
    /// `--max-memory-per-cluster`, in milli-bytes, counting pooled memory and promoted nodes.
    pub max_memory_per_cluster: Option<i128>,
    /// `--max-clusters-per-namespace`.
    pub max_clusters_per_namespace: Option<usize>,
}

impl Policy {
    /// The overcommit ratio of `resource`, 1.0 unless the admin set one.
    pub fn overcommit_of(&self, resource: &str) -> Ratio {
        self.overcommit.get(resource).copied().unwrap_or_default()
    }
}

/// The contract's flag defaults: the default controller identity and clustertree image, no
/// overcommit, no ceilings.
impl Default for Policy {
    fn default() -> Self {
        Self {
            controller_username: DEFAULT_CONTROLLER_USERNAME.to_owned(),
            clustertree_image: crate::constants::DEFAULT_CLUSTERTREE_IMAGE.to_owned(),
            overcommit: BTreeMap::new(),
            max_nodes_per_cluster: None,
            max_cpu_per_cluster: None,
            max_memory_per_cluster: None,
            max_clusters_per_namespace: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_parse_exactly_and_print_with_a_decimal_point() {
        assert_eq!(Ratio::parse("1").unwrap(), Ratio::ONE);
        assert_eq!(Ratio::parse("1.0").unwrap().to_string(), "1.0");
        assert_eq!(Ratio::parse("1.5").unwrap().to_string(), "1.5");
        assert_eq!(Ratio::parse("2.125").unwrap().to_string(), "2.125");
        assert_eq!(Ratio::parse("1.50").unwrap().apply(16_000), 24_000);
        assert_eq!(Ratio::parse("1.333").unwrap().apply(1), 1);
    }

    #[test]
    fn ratios_below_one_or_malformed_are_refused_with_the_fix() {
        assert_eq!(
            Ratio::parse("0.5").unwrap_err().to_string(),
            "overcommit ratio \"0.5\" is below 1; use 1.0 to give exactly the pool's capacity"
        );
        for text in ["", ".5", "1.2345", "-1", "1e2", "one"] {
            assert!(
                matches!(Ratio::parse(text), Err(RatioError::ParseRatio { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn overcommit_defaults_to_one() {
        let policy = Policy {
            overcommit: BTreeMap::from([("cpu".to_owned(), Ratio::parse("2").unwrap())]),
            ..Policy::default()
        };
        assert_eq!(policy.overcommit_of("cpu").to_string(), "2.0");
        assert_eq!(policy.overcommit_of("memory"), Ratio::ONE);
    }
}

//! IP networks written as `ADDRESS/PREFIX`, checked the way a NetworkPolicy's `ipBlock`
//! needs them: the operator's host pod CIDRs become `except` entries of `0.0.0.0/0` and
//! `::/0`, which the apiserver accepts only as canonical, strict subsets.

use std::fmt;
use std::net::IpAddr;

/// An IP network whose address has no bits set past its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address.
    pub address: IpAddr,
    /// The prefix length: 1-32 for IPv4, 1-128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Whether this is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.address.is_ipv6()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix)
    }
}

/// Why a CIDR was refused; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `ADDRESS/PREFIX` with an IP address and a number.
    #[error(
        "{text:?} is not an IP network; write ADDRESS/PREFIX such as 10.244.0.0/16 or fd00:10:244::/56"
    )]
    Syntax {
        /// What was written.
        text: String,
    },
    /// The prefix is 0 (everything) or longer than the address.
    #[error(
        "{text:?} has prefix /{prefix}; use 1-{max} for this address family, a pod network is never all addresses"
    )]
    Prefix {
        /// What was written.
        text: String,
        /// The prefix given.
        prefix: u32,
        /// The longest prefix of the family.
        max: u32,
    },
    /// Bits are set past the prefix.
    #[error("{text:?} has host bits set; write the network address {canonical}")]
    HostBits {
        /// What was written.
        text: String,
        /// The network it means.
        canonical: String,
    },
}

/// Reads one CIDR, refusing a non-canonical address, prefix 0 and host bits.
pub fn parse_cidr(text: &str) -> Result<Cidr, CidrError> {
    let syntax = || CidrError::Syntax {
        text: text.to_owned(),
    };
    let (address, prefix) = text.trim().split_once('/').ok_or_else(syntax)?;
    if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(syntax());
    }
    let prefix: u32 = prefix.parse().map_err(|_| syntax())?;
    let address: IpAddr = address.parse().map_err(|_| syntax())?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_error = || CidrError::Prefix {
        text: text.to_owned(),
        prefix,
        max,
    };
    if prefix == 0 || prefix > max {
        return Err(prefix_error());
    }
    let network = match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - prefix);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - prefix);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    let prefix = u8::try_from(prefix).map_err(|_| prefix_error())?;
    let cidr = Cidr {
        address: network,
        prefix,
    };
    if network != address {
        return Err(CidrError::HostBits {
            text: text.to_owned(),
            canonical: cidr.to_string(),
        });
    }
    Ok(cidr)
}

/// Reads a comma-separated list of CIDRs (empty entries skipped), sorted and without
/// duplicates.
pub fn parse_cidr_list(text: &str) -> Result<Vec<Cidr>, CidrError> {
    let mut cidrs = text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_cidr)
        .collect::<Result<Vec<_>, _>>()?;
    cidrs.sort();
    cidrs.dedup();
    Ok(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_networks_of_both_families_are_read() {
        let cidrs = parse_cidr_list(" 10.244.0.0/16, fd00:10:244::/56,,10.244.0.0/16").unwrap();
        let written: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(written, ["10.244.0.0/16", "fd00:10:244::/56"]);
        assert!(!cidrs[0].is_ipv6());
        assert!(cidrs[1].is_ipv6());
        assert_eq!(parse_cidr_list("").unwrap(), Vec::new());
    }

    #[test]
    fn refusals_name_the_value_and_the_fix() {
        for (text, says) in [
            ("10.244.0.0", "write ADDRESS/PREFIX"),
            ("10.244.0.0/x", "write ADDRESS/PREFIX"),
            ("10.244.0.0/+8", "write ADDRESS/PREFIX"),
            ("pods/16", "write ADDRESS/PREFIX"),
            ("0.0.0.0/0", "use 1-32"),
            ("10.0.0.0/33", "use 1-32"),
            ("::/0", "use 1-128"),
            ("10.244.1.0/16", "write the network address 10.244.0.0/16"),
            ("fd00::1/64", "write the network address fd00::/64"),
        ] {
            let error = parse_cidr(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains(text), "{text}: {error}");
        }
    }
}

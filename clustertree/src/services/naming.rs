//! Host names of the objects standing for tenant Services and EndpointSlices.

use crate::pods::naming::derived_name;

/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// `endpointslice.kubernetes.io/managed-by` of the host EndpointSlices: anything but the
/// host controllers' own values, so its endpointslice and mirroring controllers leave them
/// alone.
pub const ENDPOINT_SLICE_MANAGED_BY: &str = "vc-clustertree.kosmos.io";

/// Name of the host Service standing for tenant Service `namespace/name`. A Service name
/// must be an RFC 1035 label, which starts with a letter, while a namespace may start
/// with a digit: such a name gets a leading `s` and keeps its hash.
pub fn host_service_name(namespace: &str, name: &str) -> String {
    let derived = derived_name("service", namespace, name);
    if derived.starts_with(|c: char| c.is_ascii_lowercase()) {
        return derived;
    }
    let keep = derived.len().saturating_sub(MAX_LABEL - 1);
    format!("s{}", derived.get(keep..).unwrap_or(&derived))
}

/// Name of the host EndpointSlice standing for tenant EndpointSlice `namespace/name`.
pub fn host_endpoint_slice_name(namespace: &str, name: &str) -> String {
    derived_name("endpointslice", namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::host_pod_name;

    fn valid_label(name: &str) -> bool {
        (1..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
    }

    #[test]
    fn service_names_are_dns_labels_that_never_meet() {
        let name = host_service_name("shop", "web");
        assert!(name.starts_with("shop-web-"), "{name}");
        assert!(valid_label(&name), "{name}");
        assert_eq!(name, host_service_name("shop", "web"));
        assert_ne!(host_service_name("a-b", "c"), host_service_name("a", "b-c"));
        assert_ne!(
            host_service_name("shop", "web"),
            host_pod_name("shop", "web")
        );
        let long = host_service_name(&"n".repeat(63), &"s".repeat(63));
        assert!(valid_label(&long), "{long}");
        for namespace in ["1shop", "0", &"9".repeat(63)] {
            let name = host_service_name(namespace, "web");
            assert!(valid_label(&name), "{name}");
            assert_ne!(name, host_service_name(namespace, "web2"));
        }
        assert_ne!(
            host_endpoint_slice_name("shop", "web"),
            host_service_name("shop", "web")
        );
        assert!(valid_label(&host_endpoint_slice_name(
            "shop",
            &format!("{}-x7b2q", "w".repeat(57))
        )));
    }
}

//! Host names and ownership marks derived from tenant objects: deterministic, so a
//! restart finds what an earlier run wrote without keeping any state.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest as _, Sha256};
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, TENANT_OBJECT_ANNOTATION,
    TENANT_OBJECT_NAME_LABEL, TENANT_OBJECT_NAMESPACE_LABEL, TENANT_OBJECT_UID_ANNOTATION,
};

use super::PodRef;

/// Longest DNS label, hence the longest name that is also a valid hostname.
const MAX_LABEL: usize = 63;
/// Hex digits of the hash in derived names: 40 bits, so a collision among a tenant's
/// objects is not a practical concern, and the readable prefix keeps 52 characters.
const HASH_DIGITS: usize = 10;

/// A host name derived from a tenant `namespace/name`: a readable prefix plus a hash of
/// `kind` and both names, so `a-b/c` and `a/b-c` never meet, and the result is a valid
/// DNS label (so a valid object name and hostname) whatever the lengths.
pub(crate) fn derived_name(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{kind}\n{namespace}/{name}").as_bytes());
    let hash: String = digest
        .iter()
        .flat_map(|byte| [byte >> 4, byte & 0xf])
        .take(HASH_DIGITS)
        .filter_map(|nibble| char::from_digit(u32::from(nibble), 16))
        .collect();
    let readable: String = format!("{namespace}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(MAX_LABEL - HASH_DIGITS - 1)
        .collect();
    let prefix = readable.trim_matches('-');
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Name of the host pod standing for tenant pod `namespace/name`.
pub fn host_pod_name(namespace: &str, name: &str) -> String {
    derived_name("pod", namespace, name)
}

/// Name of the host copy of tenant ConfigMap `namespace/name`.
pub fn config_map_copy_name(namespace: &str, name: &str) -> String {
    derived_name("configmap", namespace, name)
}

/// Name of the host copy of tenant Secret `namespace/name`.
pub fn secret_copy_name(namespace: &str, name: &str) -> String {
    derived_name("secret", namespace, name)
}

/// Name of the host Secret holding tenant pod `namespace/name`'s ServiceAccount token.
pub fn token_secret_name(namespace: &str, pod: &str) -> String {
    derived_name("token", namespace, pod)
}

/// The hostname the container sees: its tenant pod's name, as a kubelet makes it.
pub(super) fn hostname(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(MAX_LABEL)
        .collect();
    label.trim_end_matches('-').to_owned()
}

/// Whether `value` may be a label value.
fn valid_label_value(value: &str) -> bool {
    value.len() <= MAX_LABEL
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

/// The labels and annotations marking a host object as standing for a tenant object.
pub fn ownership(
    namespace: &str,
    name: &str,
    uid: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::from([(
        MANAGED_BY_LABEL.to_owned(),
        CLUSTERTREE_MANAGED_BY_VALUE.to_owned(),
    )]);
    if valid_label_value(namespace) {
        labels.insert(
            TENANT_OBJECT_NAMESPACE_LABEL.to_owned(),
            namespace.to_owned(),
        );
    }
    if valid_label_value(name) {
        labels.insert(TENANT_OBJECT_NAME_LABEL.to_owned(), name.to_owned());
    }
    let annotations = BTreeMap::from([
        (
            TENANT_OBJECT_ANNOTATION.to_owned(),
            format!("{namespace}/{name}"),
        ),
        (TENANT_OBJECT_UID_ANNOTATION.to_owned(), uid.to_owned()),
    ]);
    (labels, annotations)
}

/// The tenant UID a host object records, when it is one vc-clustertree wrote: only such
/// an object is ever deleted or updated by it.
pub fn recorded_uid(meta: &ObjectMeta) -> Option<&str> {
    let ours = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == CLUSTERTREE_MANAGED_BY_VALUE);
    if !ours {
        return None;
    }
    meta.annotations
        .as_ref()?
        .get(TENANT_OBJECT_UID_ANNOTATION)
        .map(String::as_str)
        .filter(|uid| !uid.is_empty())
}

/// Name of the Event recording `reason` on a tenant pod: one per pod and reason, so a
/// refusal retried every pass is recorded once.
pub fn event_name(pod: &PodRef, reason: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{reason}", pod.uid).as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let name: String = pod.name.chars().take(200).collect();
    format!("{name}.{hash}")
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn valid_label(name: &str) -> bool {
        name.len() <= 63
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn host_pod_names_are_valid_deterministic_and_do_not_collide() {
        let a = host_pod_name("a-b", "c");
        let b = host_pod_name("a", "b-c");
        assert_ne!(a, b);
        assert!(a.starts_with("a-b-c-"), "{a}");
        assert_eq!(a, host_pod_name("a-b", "c"));
        let long = host_pod_name(&"n".repeat(63), &format!("{}.x", "p".repeat(253 - 2)));
        assert!(valid_label(&long), "{long}");
        assert_ne!(
            long,
            host_pod_name(&"n".repeat(63), &format!("{}.y", "p".repeat(251)))
        );
        assert!(valid_label(&host_pod_name("ns", "web.v1-abc")));
        assert_ne!(config_map_copy_name("a", "b"), secret_copy_name("a", "b"));
        assert_ne!(secret_copy_name("a", "b"), token_secret_name("a", "b"));
    }

    #[test]
    fn event_names_are_one_per_pod_and_reason() {
        let pod = PodRef {
            namespace: "shop".to_owned(),
            name: "x".repeat(253),
            uid: "u1".to_owned(),
        };
        let name = event_name(&pod, "HostPolicyRefused");
        assert!(name.len() <= 253);
        assert_eq!(name, event_name(&pod, "HostPolicyRefused"));
        assert_ne!(name, event_name(&pod, "HostPodLost"));
    }
}

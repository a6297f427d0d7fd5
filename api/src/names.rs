//! Names of every object of a tenant, exactly as `docs/contracts.md` lists them.
//!
//! The controller names what it builds with these functions and the webhook refuses a
//! VirtualCluster whose names would land on a sibling's, so both read one table: a suffix
//! added here is at once built by the one and guarded by the other.

use std::sync::LazyLock;

use crate::constants::ADMIN_KUBECONFIG_SECRET_SUFFIX;

/// An object the controller names `<VirtualCluster name><suffix>` in the VirtualCluster's
/// own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedObject {
    /// Kind of the object; two names clash only within one kind.
    pub kind: &'static str,
    /// What the tenant uses the object for, as a denial names it ("its etcd CA").
    pub purpose: &'static str,
    /// What follows the VirtualCluster's name.
    pub suffix: &'static str,
}

impl DerivedObject {
    /// The name of this object for VirtualCluster `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }
}

/// Declares each derived object once: its constant, the function naming it where callers
/// want one, and its place in [`DERIVED_OBJECTS`].
macro_rules! derived_objects {
    ($(
        $(#[$attribute:meta])*
        $constant:ident $(, fn $function:ident)?: $kind:literal, $suffix:expr, $purpose:literal;
    )+) => {
        $(
            $(#[$attribute])*
            pub const $constant: DerivedObject = DerivedObject {
                kind: $kind,
                purpose: $purpose,
                suffix: $suffix,
            };
            $(
                #[doc = concat!(
                    "Name of [`", stringify!($constant), "`] of VirtualCluster `name`."
                )]
                pub fn $function(name: &str) -> String {
                    $constant.name(name)
                }
            )?
        )+

        /// Every object named after the VirtualCluster in its own namespace. Objects in the
        /// workload namespace and cluster-scoped ones carry the namespace in their name and
        /// are guarded by the workload-namespace rule instead.
        pub const DERIVED_OBJECTS: [DerivedObject; [$(stringify!($constant)),+].len()] =
            [$($constant),+];
    };
}

derived_objects! {
    /// Secret of the cluster CA (signs the apiserver, kubelet-client and component certs).
    CLUSTER_CA_SECRET, fn cluster_ca_secret: "Secret", "-ca", "cluster CA";
    /// Secret of the etcd CA.
    ETCD_CA_SECRET, fn etcd_ca_secret: "Secret", "-etcd-ca", "etcd CA";
    /// Secret of the front-proxy (aggregation layer) CA.
    FRONT_PROXY_CA_SECRET, fn front_proxy_ca_secret: "Secret", "-front-proxy-ca", "front-proxy CA";
    /// Secret of the admin client CA (signs the admin kubeconfig alone, so that replacing it
    /// revokes every admin kubeconfig and nothing else). Not `-admin-ca`: that is the cluster
    /// CA of a sibling named `NAME-admin`, which existing namespaces may hold.
    ADMIN_CA_SECRET, fn admin_ca_secret: "Secret", "-admin-signer", "admin client CA";
    /// Secret of the service-account signing key pair.
    SERVICE_ACCOUNT_KEY_SECRET, fn service_account_key_secret:
        "Secret", "-sa", "service-account signing key";
    /// Secret of the apiserver serving certificate.
    APISERVER_TLS_SECRET, fn apiserver_tls_secret:
        "Secret", "-apiserver-tls", "apiserver serving certificate";
    /// Secret of the apiserver's etcd client certificate.
    APISERVER_ETCD_CLIENT_SECRET, fn apiserver_etcd_client_secret:
        "Secret", "-apiserver-etcd-client", "apiserver's etcd client certificate";
    /// Secret of the apiserver's kubelet client certificate.
    APISERVER_KUBELET_CLIENT_SECRET, fn apiserver_kubelet_client_secret:
        "Secret", "-apiserver-kubelet-client", "apiserver's kubelet client certificate";
    /// Secret of the apiserver's admission configuration (how it authenticates to webhooks).
    APISERVER_ADMISSION_SECRET, fn apiserver_admission_secret:
        "Secret", "-apiserver-admission", "apiserver's admission configuration";
    /// Secret of the apiserver's encryption-at-rest configuration (its secretbox keys).
    APISERVER_ENCRYPTION_SECRET, fn apiserver_encryption_secret:
        "Secret", "-apiserver-encryption", "apiserver's encryption-at-rest keys";
    /// Secret of the front-proxy client certificate.
    FRONT_PROXY_CLIENT_SECRET, fn front_proxy_client_secret:
        "Secret", "-front-proxy-client", "front-proxy client certificate";
    /// Secret of the etcd serving certificate.
    ETCD_SERVER_SECRET, fn etcd_server_secret: "Secret", "-etcd-server", "etcd serving certificate";
    /// Secret of the etcd peer certificate.
    ETCD_PEER_SECRET, fn etcd_peer_secret: "Secret", "-etcd-peer", "etcd peer certificate";
    /// Secret of the controller-manager's kubeconfig.
    CONTROLLER_MANAGER_KUBECONFIG_SECRET, fn controller_manager_kubeconfig_secret:
        "Secret", "-controller-manager-kubeconfig", "controller-manager kubeconfig";
    /// Secret of the scheduler's kubeconfig.
    SCHEDULER_KUBECONFIG_SECRET, fn scheduler_kubeconfig_secret:
        "Secret", "-scheduler-kubeconfig", "scheduler kubeconfig";
    /// Secret of the admin kubeconfig.
    ADMIN_KUBECONFIG_SECRET: "Secret", ADMIN_KUBECONFIG_SECRET_SUFFIX, "admin kubeconfig";
    /// etcd StatefulSet; its client Service ([`ETCD_SERVICE`]) has the same name.
    ETCD_STATEFUL_SET, fn etcd: "StatefulSet", "-etcd", "etcd";
    /// etcd client Service.
    ETCD_SERVICE: "Service", "-etcd", "etcd client Service";
    /// Headless Service giving each etcd member a stable DNS name.
    ETCD_PEER_SERVICE, fn etcd_peer_service: "Service", "-etcd-peer", "etcd peer Service";
    /// kube-apiserver Service.
    APISERVER_SERVICE: "Service", "-apiserver", "kube-apiserver Service";
    /// kube-apiserver Deployment; its Service ([`APISERVER_SERVICE`]) has the same name.
    APISERVER_DEPLOYMENT, fn apiserver: "Deployment", "-apiserver", "kube-apiserver";
    /// kube-controller-manager Deployment.
    CONTROLLER_MANAGER_DEPLOYMENT, fn controller_manager:
        "Deployment", "-controller-manager", "kube-controller-manager";
    /// kube-scheduler Deployment.
    SCHEDULER_DEPLOYMENT, fn scheduler: "Deployment", "-scheduler", "kube-scheduler";
    /// clustertree Deployment; its ServiceAccount, Role and RoleBinding have the same name.
    CLUSTERTREE_DEPLOYMENT, fn clustertree: "Deployment", "-clustertree", "clustertree";
    /// clustertree ServiceAccount.
    CLUSTERTREE_SERVICE_ACCOUNT: "ServiceAccount", "-clustertree", "clustertree identity";
    /// Role letting the clustertree read its VirtualCluster.
    CLUSTERTREE_READER_ROLE: "Role", "-clustertree", "clustertree's VirtualCluster reader role";
    /// RoleBinding of [`CLUSTERTREE_READER_ROLE`].
    CLUSTERTREE_READER_BINDING:
        "RoleBinding", "-clustertree", "clustertree's VirtualCluster reader binding";
    /// NetworkPolicy admitting only this tenant's apiserver (client port) and members (peer
    /// port) to its etcd pods.
    ETCD_NETWORK_POLICY: "NetworkPolicy", "-etcd", "etcd's NetworkPolicy";
    /// NetworkPolicy opening the kube-apiserver pods' secure port.
    APISERVER_NETWORK_POLICY: "NetworkPolicy", "-apiserver", "kube-apiserver's NetworkPolicy";
    /// NetworkPolicy closing the kube-controller-manager pods to the pod network.
    CONTROLLER_MANAGER_NETWORK_POLICY:
        "NetworkPolicy", "-controller-manager", "kube-controller-manager's NetworkPolicy";
    /// NetworkPolicy closing the kube-scheduler pods to the pod network.
    SCHEDULER_NETWORK_POLICY: "NetworkPolicy", "-scheduler", "kube-scheduler's NetworkPolicy";
    /// NetworkPolicy admitting the tenant's apiserver and workloads to the clustertree.
    CLUSTERTREE_NETWORK_POLICY: "NetworkPolicy", "-clustertree", "clustertree's NetworkPolicy";
}

/// Where VirtualCluster `name` and another one of the same namespace would both own an
/// object: the other's name, the object's kind and name, and what each uses it for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameClash {
    /// Name of the other VirtualCluster.
    pub other: String,
    /// Kind of the shared object.
    pub kind: &'static str,
    /// Name of the shared object.
    pub object: String,
    /// What VirtualCluster `name` would use it for.
    pub purpose: &'static str,
    /// What the other VirtualCluster uses it for.
    pub other_purpose: &'static str,
}

/// Pairs `(ours, theirs)` of [`DERIVED_OBJECTS`] of one kind whose suffixes differ and
/// one ends with the other, in table order. Only such a pair can make two names derive
/// the same object, and there are a handful, so an admission request checks these
/// instead of comparing the whole table with itself.
static OVERLAPPING_SUFFIXES: LazyLock<Vec<(DerivedObject, DerivedObject)>> = LazyLock::new(|| {
    DERIVED_OBJECTS
        .iter()
        .flat_map(|ours| {
            DERIVED_OBJECTS
                .iter()
                .filter(|theirs| {
                    theirs.kind == ours.kind
                        && theirs.suffix != ours.suffix
                        && (ours.suffix.ends_with(theirs.suffix)
                            || theirs.suffix.ends_with(ours.suffix))
                })
                .map(|theirs| (*ours, *theirs))
        })
        .collect()
});

/// Every VirtualCluster name that derives one of `name`'s object names, each with the
/// object, for the caller to look up among the existing VirtualClusters.
pub fn possible_clashes(name: &str) -> Vec<NameClash> {
    clashes_with(name, |_| true).collect()
}

/// The clashes of [`possible_clashes`] whose other name `exists`, in the same order. A
/// candidate name is built in one reused buffer and passed to `exists` borrowed; only a
/// clash found is written out.
///
/// `name + ours` ends with `theirs` when `ours` ends with `theirs` (then the other name is
/// `name` plus the rest of `ours`), or when `theirs` ends with `ours` and `name` ends with
/// the rest of `theirs` (then the other name is `name` without it).
pub fn clashes_with<'a>(
    name: &'a str,
    mut exists: impl FnMut(&str) -> bool + 'a,
) -> impl Iterator<Item = NameClash> + 'a {
    let longest_rest = OVERLAPPING_SUFFIXES
        .iter()
        .map(|(ours, _)| ours.suffix.len())
        .max()
        .unwrap_or(0);
    let mut extended = String::with_capacity(name.len() + longest_rest);
    OVERLAPPING_SUFFIXES
        .iter()
        .filter_map(move |(ours, theirs)| {
            let other = match ours.suffix.strip_suffix(theirs.suffix) {
                Some(rest_of_ours) => {
                    extended.clear();
                    extended.push_str(name);
                    extended.push_str(rest_of_ours);
                    extended.as_str()
                }
                None => {
                    let rest_of_theirs = theirs.suffix.strip_suffix(ours.suffix)?;
                    name.strip_suffix(rest_of_theirs)?
                }
            };
            if other.is_empty() || other == name || !exists(other) {
                return None;
            }
            Some(NameClash {
                other: other.to_owned(),
                kind: ours.kind,
                object: ours.name(name),
                purpose: ours.purpose,
                other_purpose: theirs.purpose,
            })
        })
}

/// RoleBinding in the workload namespace granting the clustertree the chart's fixed
/// clustertree ClusterRole there. Not `NAME-clustertree`: a binding of that name from an
/// older release references a Role, and a roleRef cannot change.
pub fn clustertree_workload_binding(name: &str) -> String {
    format!("{name}-clustertree-workload")
}
/// ClusterRole and ClusterRoleBinding granting read access to the claimed nodes. `:` is
/// in no namespace or VirtualCluster name, so no two tenants share it.
pub fn clustertree_cluster_role(namespace: &str, name: &str) -> String {
    format!("kosmos-vc:{namespace}:{name}:clustertree")
}
/// NetworkPolicy in the workload namespace fencing the tenant's pods from other tenants.
pub fn workload_network_policy(name: &str) -> String {
    format!("{name}-workloads")
}
/// ResourceQuota of the pooled resources in the workload namespace.
pub fn pool_quota(name: &str) -> String {
    format!("{name}-pool")
}
/// Pod name of etcd member `ordinal`.
pub fn etcd_member(name: &str, ordinal: i32) -> String {
    format!("{name}-etcd-{ordinal}")
}
/// Stable in-cluster host name of etcd member `ordinal` (without the cluster domain).
pub fn etcd_member_host(namespace: &str, name: &str, ordinal: i32) -> String {
    format!(
        "{}.{}.{namespace}.svc",
        etcd_member(name, ordinal),
        etcd_peer_service(name)
    )
}
/// In-cluster URL of the tenant apiserver, used by the internal kubeconfigs.
pub fn internal_apiserver_url(namespace: &str, name: &str) -> String {
    format!("https://{}.{namespace}.svc:6443", apiserver(name))
}
/// URL the tenant apiserver reaches etcd through.
pub fn etcd_client_url(namespace: &str, name: &str) -> String {
    format!("https://{}.{namespace}.svc:2379", etcd(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_etcd_and_x_share_the_etcd_ca_secret() {
        let clashes = possible_clashes("x-etcd");
        assert!(clashes.contains(&NameClash {
            other: "x".into(),
            kind: "Secret",
            object: "x-etcd-ca".into(),
            purpose: "cluster CA",
            other_purpose: "etcd CA",
        }));
        let reverse = possible_clashes("x");
        assert!(reverse.contains(&NameClash {
            other: "x-etcd".into(),
            kind: "Secret",
            object: "x-etcd-ca".into(),
            purpose: "etcd CA",
            other_purpose: "cluster CA",
        }));
        assert!(
            reverse
                .iter()
                .any(|clash| clash.other == "x-front-proxy" && clash.object == "x-front-proxy-ca")
        );
    }

    /// What two names derive the same object means, written as the whole table compared
    /// with itself.
    fn clashes_over_the_whole_table(name: &str) -> Vec<NameClash> {
        let mut clashes = Vec::new();
        for ours in &DERIVED_OBJECTS {
            let object = ours.name(name);
            for theirs in DERIVED_OBJECTS
                .iter()
                .filter(|theirs| theirs.kind == ours.kind)
            {
                let Some(other) = object.strip_suffix(theirs.suffix) else {
                    continue;
                };
                if !other.is_empty() && other != name {
                    clashes.push(NameClash {
                        other: other.to_owned(),
                        kind: ours.kind,
                        object: object.clone(),
                        purpose: ours.purpose,
                        other_purpose: theirs.purpose,
                    });
                }
            }
        }
        clashes
    }

    #[test]
    fn the_overlapping_suffixes_find_every_clash_of_the_whole_table_in_its_order() {
        let mut names = vec!["x".to_owned(), "prod".to_owned(), "ca".to_owned()];
        for object in &DERIVED_OBJECTS {
            let suffix = object.suffix.trim_start_matches('-');
            names.push(format!("x{}", object.suffix));
            names.push(suffix.to_owned());
            names.push(format!("x-{}", &suffix[suffix.len() / 2..]));
        }
        for name in &names {
            assert_eq!(
                possible_clashes(name),
                clashes_over_the_whole_table(name),
                "{name}"
            );
        }
        assert!(
            OVERLAPPING_SUFFIXES.len() < DERIVED_OBJECTS.len(),
            "{} pairs to check per request",
            OVERLAPPING_SUFFIXES.len()
        );
    }

    #[test]
    fn clashes_with_yields_the_possible_clashes_whose_other_name_exists_in_order() {
        for name in ["x", "x-etcd", "prod-front-proxy"] {
            let all = possible_clashes(name);
            assert!(all.len() >= 2, "{name}: {all:?}");
            // Every second other name exists: the buffer a candidate is built in is reused,
            // so each must still be passed whole and in order.
            let existing: Vec<String> = all
                .iter()
                .step_by(2)
                .map(|clash| clash.other.clone())
                .collect();
            let mut asked = Vec::new();
            let found: Vec<NameClash> = clashes_with(name, |other| {
                asked.push(other.to_owned());
                existing.iter().any(|existing| existing == other)
            })
            .collect();
            let expected: Vec<NameClash> = all
                .iter()
                .filter(|clash| existing.contains(&clash.other))
                .cloned()
                .collect();
            assert_eq!(found, expected, "{name}");
            let others: Vec<String> = all.iter().map(|clash| clash.other.clone()).collect();
            assert_eq!(asked, others, "{name}");
        }
    }

    #[test]
    fn a_name_never_clashes_with_itself_and_kinds_stay_apart() {
        for name in ["x", "x-etcd", "prod"] {
            for clash in possible_clashes(name) {
                assert_ne!(clash.other, name);
                assert!(!clash.other.is_empty());
                assert_eq!(
                    format!("{}{}", clash.other, &clash.object[clash.other.len()..]),
                    clash.object
                );
            }
        }
        // "x-etcd" is x's StatefulSet and Service, but VirtualCluster "x-etcd" names no
        // StatefulSet or Service "x-etcd": only Secrets clash.
        assert!(
            possible_clashes("x-etcd")
                .iter()
                .all(|clash| clash.kind == "Secret")
        );
    }

    /// A sibling pair both created before a suffix was added has never been checked
    /// against it; the suffix is safe only if it can land on none of the pair's objects:
    /// neither it nor an older suffix of its kind may end with the other.
    #[test]
    fn suffixes_added_later_land_on_no_older_object() {
        let added = [APISERVER_ENCRYPTION_SECRET, ADMIN_CA_SECRET];
        for new in added {
            for old in DERIVED_OBJECTS
                .iter()
                .filter(|old| old.kind == new.kind && !added.contains(old))
            {
                assert!(
                    !new.suffix.ends_with(old.suffix) && !old.suffix.ends_with(new.suffix),
                    "{} and {} overlap",
                    new.suffix,
                    old.suffix
                );
            }
        }
    }

    #[test]
    fn every_derived_name_is_unique_within_its_kind() {
        let mut seen = std::collections::BTreeSet::new();
        for object in DERIVED_OBJECTS.iter() {
            assert!(
                seen.insert((object.kind, object.suffix)),
                "{object:?} appears twice"
            );
        }
    }
}

//! How a tenant pod runs on the host, and how its status comes back: pure functions, so
//! every rule is unit-tested without a cluster; [`crate::pod_sync`] only does the I/O.
//!
//! vc-clustertree is the kubelet of the tenant's mirrored Nodes. A tenant pod the tenant
//! scheduler bound to one of them becomes one host pod in the tenant's workload namespace
//! (`vc-NS-NAME`), named by [`host_pod_name`], recording the tenant pod's namespace, name
//! and UID. On a promoted node the host pod is pinned there by node affinity and tolerates
//! exactly the claim taint; on the pool node the host scheduler picks any unclaimed worker.
//! Nothing of the host's identity reaches the container: no host ServiceAccount token, no
//! host Service environment; the tenant's own token, CA and namespace are mounted instead.
//!
//! A tenant pod the host's Pod Security `baseline` level would refuse, or one needing a
//! volume type not carried over yet, is refused here ([`refusal`]), before the host sees
//! it, so the tenant gets a reason naming the field rather than a pod stuck Pending.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, LocalObjectReference, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSecurityContext, PodSpec, PodStatus,
    SecretVolumeSource, SecurityContext, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use sha2::{Digest as _, Sha256};
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, CONTROL_PLANE_NODE_LABELS, MANAGED_BY_LABEL,
    NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, POOL_NODE_NAME, TENANT_OBJECT_ANNOTATION,
    TENANT_OBJECT_NAME_LABEL, TENANT_OBJECT_NAMESPACE_LABEL, TENANT_OBJECT_UID_ANNOTATION,
};

/// Longest DNS label, hence the longest name that is also a valid hostname.
const MAX_LABEL: usize = 63;
/// Hex digits of the hash in derived names: 40 bits, so a collision among a tenant's
/// objects is not a practical concern, and the readable prefix keeps 52 characters.
const HASH_DIGITS: usize = 10;
/// Capabilities Pod Security `baseline` allows a container to add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Sysctls Pod Security `baseline` considers safe.
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// SELinux types Pod Security `baseline` allows.
const BASELINE_SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
/// Annotation prefix of the AppArmor profile before the field existed.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
/// What the tenant's ServiceAccount admission names its token volume.
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap the tenant publishes its CA in, in every namespace.
pub const TENANT_ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Lifetime asked for a tenant token when the pod's volume does not say (as the
/// ServiceAccount admission's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;
/// Reason on a tenant pod whose host pod disappeared after it had started.
pub const HOST_POD_LOST_REASON: &str = "HostPodLost";

/// Which tenant, on which host namespace.
#[derive(Clone, Debug)]
pub struct Tenancy {
    /// `vc-NS-NAME`, where every host object of the tenant's pods lives.
    pub workload_namespace: String,
    /// The VirtualCluster's name: the value of its claim taint.
    pub virtual_cluster: String,
}

/// A tenant pod, by identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn of(pod: &Pod) -> Option<PodRef> {
        Some(PodRef {
            namespace: pod.namespace()?,
            name: pod.name_any(),
            uid: pod.uid()?,
        })
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which policy a refusal enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The host's Pod Security `baseline` level.
    Baseline,
    /// Something vc-clustertree does not carry over to the host yet.
    Unsupported,
}

/// Why a tenant pod is not run on the host: the rule and the field that breaks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub policy: Policy,
    /// Path of the offending field, as `containers[0].securityContext.privileged`.
    pub field: String,
    pub message: String,
}

impl Refusal {
    fn baseline(field: impl Into<String>, message: &str) -> Self {
        Refusal {
            policy: Policy::Baseline,
            field: field.into(),
            message: message.to_owned(),
        }
    }

    fn unsupported(field: impl Into<String>, message: &str) -> Self {
        Refusal {
            policy: Policy::Unsupported,
            field: field.into(),
            message: message.to_owned(),
        }
    }

    /// The Event and status reason the tenant sees.
    pub fn reason(&self) -> &'static str {
        match self.policy {
            Policy::Baseline => "HostPolicyRefused",
            Policy::Unsupported => "UnsupportedByHost",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        if self.policy == Policy::Baseline {
            write!(f, " (Pod Security \"baseline\")")?;
        }
        Ok(())
    }
}

/// A host name derived from a tenant `namespace/name`: a readable prefix plus a hash of
/// `kind` and both names, so `a-b/c` and `a/b-c` never meet, and the result is a valid
/// DNS label (so a valid object name and hostname) whatever the lengths.
fn derived_name(kind: &str, namespace: &str, name: &str) -> String {
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
fn hostname(name: &str) -> String {
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

/// A host ConfigMap or Secret copied from the tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Copy {
    pub kind: CopyKind,
    pub tenant_namespace: String,
    pub tenant_name: String,
    pub host_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CopyKind {
    ConfigMap,
    Secret,
}

/// The host Secret standing for a tenant pod's ServiceAccount token volume: every file
/// the tenant's kubelet would have projected, under its path as the Secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub pod: PodRef,
    pub service_account: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    /// Where the token goes.
    pub token_path: String,
    /// Downward API files, resolved to the tenant pod's values.
    pub files: BTreeMap<String, String>,
    /// Tenant ConfigMaps projected, as (name, `key -> path`; every key when `None`).
    pub config_maps: Vec<(String, Option<BTreeMap<String, String>>)>,
    pub host_secret: String,
}

/// Everything the host needs to run one tenant pod.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPod {
    pub pod: Pod,
    pub copies: Vec<Copy>,
    pub token: Option<Token>,
}

/// Why `pod` would not run on the host, checked before anything of it reaches the host.
pub fn refusal(pod: &Pod) -> Option<Refusal> {
    let spec = pod.spec.as_ref()?;
    for (field, on) in [
        ("spec.hostNetwork", spec.host_network),
        ("spec.hostPID", spec.host_pid),
        ("spec.hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            return Some(Refusal::baseline(field, "host namespaces are not allowed"));
        }
    }
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        if volume.host_path.is_some() {
            return Some(Refusal::baseline(
                format!("volumes[{index}].hostPath"),
                "hostPath volumes are not allowed",
            ));
        }
    }
    if let Some(context) = &spec.security_context
        && let Some(refusal) = pod_context_refusal(context)
    {
        return Some(refusal);
    }
    for (key, value) in pod.annotations() {
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX) && value == "unconfined" {
            return Some(Refusal::baseline(
                format!("metadata.annotations[{key}]"),
                "the AppArmor profile may not be unconfined",
            ));
        }
    }
    let containers = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in containers {
        for (index, container) in containers.iter().enumerate() {
            if let Some(refusal) = container_refusal(&format!("{list}[{index}]"), container) {
                return Some(refusal);
            }
        }
    }
    None
}

fn pod_context_refusal(context: &PodSecurityContext) -> Option<Refusal> {
    if let Some(options) = &context.se_linux_options
        && let Some(refusal) = selinux_refusal("spec.securityContext.seLinuxOptions", options)
    {
        return Some(refusal);
    }
    if context
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some(Refusal::baseline(
            "spec.securityContext.seccompProfile.type",
            "the seccomp profile may not be Unconfined",
        ));
    }
    if context
        .app_armor_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some(Refusal::baseline(
            "spec.securityContext.appArmorProfile.type",
            "the AppArmor profile may not be Unconfined",
        ));
    }
    for (index, sysctl) in context.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            return Some(Refusal::baseline(
                format!("spec.securityContext.sysctls[{index}].name"),
                "unsafe sysctls are not allowed",
            ));
        }
    }
    if context
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        == Some(true)
    {
        return Some(Refusal::baseline(
            "spec.securityContext.windowsOptions.hostProcess",
            "hostProcess pods are not allowed",
        ));
    }
    None
}

fn selinux_refusal(
    field: &str,
    options: &k8s_openapi::api::core::v1::SELinuxOptions,
) -> Option<Refusal> {
    if let Some(type_) = options.type_.as_deref().filter(|t| !t.is_empty())
        && !BASELINE_SELINUX_TYPES.contains(&type_)
    {
        return Some(Refusal::baseline(
            format!("{field}.type"),
            "this SELinux type is not allowed",
        ));
    }
    for (name, value) in [("user", &options.user), ("role", &options.role)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Some(Refusal::baseline(
                format!("{field}.{name}"),
                "a custom SELinux user or role is not allowed",
            ));
        }
    }
    None
}

fn container_refusal(path: &str, container: &Container) -> Option<Refusal> {
    for (index, port) in container.ports.iter().flatten().enumerate() {
        if port.host_port.is_some_and(|p| p != 0) {
            return Some(Refusal::baseline(
                format!("{path}.ports[{index}].hostPort"),
                "host ports are not allowed",
            ));
        }
    }
    let context = container.security_context.as_ref()?;
    security_context_refusal(&format!("{path}.securityContext"), context)
}

fn security_context_refusal(path: &str, context: &SecurityContext) -> Option<Refusal> {
    if context.privileged == Some(true) {
        return Some(Refusal::baseline(
            format!("{path}.privileged"),
            "privileged containers are not allowed",
        ));
    }
    let added = context
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .enumerate();
    for (index, capability) in added {
        let name = capability.strip_prefix("CAP_").unwrap_or(capability);
        if !BASELINE_CAPABILITIES.contains(&name) {
            return Some(Refusal::baseline(
                format!("{path}.capabilities.add[{index}]"),
                "adding this capability is not allowed",
            ));
        }
    }
    if context
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        == Some(true)
    {
        return Some(Refusal::baseline(
            format!("{path}.windowsOptions.hostProcess"),
            "hostProcess containers are not allowed",
        ));
    }
    if context
        .proc_mount
        .as_deref()
        .is_some_and(|m| m != "Default")
    {
        return Some(Refusal::baseline(
            format!("{path}.procMount"),
            "only the Default procMount is allowed",
        ));
    }
    if let Some(options) = &context.se_linux_options
        && let Some(refusal) = selinux_refusal(&format!("{path}.seLinuxOptions"), options)
    {
        return Some(refusal);
    }
    if context
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some(Refusal::baseline(
            format!("{path}.seccompProfile.type"),
            "the seccomp profile may not be Unconfined",
        ));
    }
    if context
        .app_armor_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        return Some(Refusal::baseline(
            format!("{path}.appArmorProfile.type"),
            "the AppArmor profile may not be Unconfined",
        ));
    }
    None
}

/// Where the host scheduler may put the pod: exactly the promoted node, or (for the
/// pool) any worker no tenant claimed and no control-plane node.
fn placement(node: &str) -> Affinity {
    let term = if node == POOL_NODE_NAME {
        let absent = |key: &str| NodeSelectorRequirement {
            key: key.to_owned(),
            operator: "DoesNotExist".to_owned(),
            values: None,
        };
        NodeSelectorTerm {
            match_expressions: Some(
                std::iter::once(NODE_OWNER_NAME_LABEL)
                    .chain(CONTROL_PLANE_NODE_LABELS)
                    .map(absent)
                    .collect(),
            ),
            match_fields: None,
        }
    } else {
        NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
        }
    };
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![term],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        pod_affinity: None,
        pod_anti_affinity: None,
    }
}

/// The tenant's tolerations, less any that would let the pod onto a node another tenant
/// claimed, plus, on a promoted node, exactly this tenant's claim.
fn tolerations(tenant: &[Toleration], node: &str, virtual_cluster: &str) -> Vec<Toleration> {
    let mut kept: Vec<Toleration> = tenant
        .iter()
        .filter(|t| {
            let key = t.key.as_deref().unwrap_or_default();
            let everything = key.is_empty() && t.operator.as_deref() == Some("Exists");
            key != NODE_CLAIM_TAINT_KEY && !everything
        })
        .cloned()
        .collect();
    if node != POOL_NODE_NAME {
        kept.push(Toleration {
            key: Some(NODE_CLAIM_TAINT_KEY.to_owned()),
            operator: Some("Equal".to_owned()),
            value: Some(virtual_cluster.to_owned()),
            effect: Some("NoSchedule".to_owned()),
            toleration_seconds: None,
        });
    }
    kept
}

/// The tenant ServiceAccount admission's token volume as a [`Token`], when `volume` is
/// one: a `kube-api-access-*` projection of one token, ConfigMaps and downward API
/// fields, every file at a path usable as a Secret key.
fn token_source(volume: &Volume, pod: &Pod, reference: &PodRef) -> Option<Token> {
    let projected = volume.projected.as_ref()?;
    if !volume.name.starts_with(TOKEN_VOLUME_PREFIX) {
        return None;
    }
    let flat = |path: &str| !path.is_empty() && !path.contains('/');
    let mut token = None;
    let mut files = BTreeMap::new();
    let mut config_maps = Vec::new();
    for source in projected.sources.iter().flatten() {
        if let Some(projection) = &source.service_account_token {
            if token.is_some() || !flat(&projection.path) {
                return None;
            }
            token = Some(projection.clone());
        } else if let Some(projection) = &source.config_map {
            let items = match &projection.items {
                Some(items) if items.iter().all(|i| flat(&i.path)) => Some(
                    items
                        .iter()
                        .map(|i| (i.key.clone(), i.path.clone()))
                        .collect(),
                ),
                Some(_) => return None,
                None => None,
            };
            config_maps.push((projection.name.clone(), items));
        } else if let Some(projection) = &source.downward_api {
            for item in projection.items.iter().flatten() {
                let field = item.field_ref.as_ref()?;
                if !flat(&item.path) {
                    return None;
                }
                files.insert(item.path.clone(), resolved_field(pod, &field.field_path)?);
            }
        } else {
            return None;
        }
    }
    let token = token?;
    Some(Token {
        pod: reference.clone(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        audience: token.audience,
        expiration_seconds: token.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
        token_path: token.path,
        files,
        config_maps,
        host_secret: token_secret_name(&reference.namespace, &reference.name),
    })
}

/// Which kind of source a projection is; `unknown` for one newer than the API version
/// this is built against.
fn projection_kind(source: &k8s_openapi::api::core::v1::VolumeProjection) -> &'static str {
    if source.service_account_token.is_some() {
        "serviceAccountToken"
    } else if source.config_map.is_some() {
        "configMap"
    } else if source.secret.is_some() {
        "secret"
    } else if source.downward_api.is_some() {
        "downwardAPI"
    } else if source.cluster_trust_bundle.is_some() {
        "clusterTrustBundle"
    } else {
        "unknown"
    }
}

/// Tenant-side values of the `metadata.*` fields a container may read through the
/// downward API, which on the host would show the host pod's.
fn resolved_field(pod: &Pod, path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => Some(pod.name_any()),
        "metadata.namespace" => pod.namespace(),
        "metadata.uid" => pod.uid(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        _ => {
            let key = |prefix: &str| {
                path.strip_prefix(prefix)?
                    .strip_suffix("']")
                    .map(str::to_owned)
            };
            if let Some(key) = key("metadata.labels['") {
                return Some(pod.labels().get(&key).cloned().unwrap_or_default());
            }
            key("metadata.annotations['")
                .map(|key| pod.annotations().get(&key).cloned().unwrap_or_default())
        }
    }
}

struct Translation<'a> {
    pod: &'a Pod,
    namespace: String,
    copies: BTreeSet<Copy>,
}

impl Translation<'_> {
    fn config_map(&mut self, name: &str) -> String {
        let host_name = config_map_copy_name(&self.namespace, name);
        self.copies.insert(Copy {
            kind: CopyKind::ConfigMap,
            tenant_namespace: self.namespace.clone(),
            tenant_name: name.to_owned(),
            host_name: host_name.clone(),
        });
        host_name
    }

    fn secret(&mut self, name: &str) -> String {
        let host_name = secret_copy_name(&self.namespace, name);
        self.copies.insert(Copy {
            kind: CopyKind::Secret,
            tenant_namespace: self.namespace.clone(),
            tenant_name: name.to_owned(),
            host_name: host_name.clone(),
        });
        host_name
    }

    fn env(&mut self, var: &EnvVar) -> EnvVar {
        let mut var = var.clone();
        let Some(source) = var.value_from.take() else {
            return var;
        };
        if let Some(field) = &source.field_ref
            && let Some(value) = resolved_field(self.pod, &field.field_path)
        {
            var.value = Some(value);
            return var;
        }
        let mut source: EnvVarSource = source;
        if let Some(reference) = source.config_map_key_ref.as_mut() {
            reference.name = self.config_map(&reference.name);
        }
        if let Some(reference) = source.secret_key_ref.as_mut() {
            reference.name = self.secret(&reference.name);
        }
        var.value_from = Some(source);
        var
    }

    fn container(&mut self, container: &Container) -> Container {
        let mut copy = container.clone();
        copy.env = container
            .env
            .as_ref()
            .map(|vars| vars.iter().map(|var| self.env(var)).collect());
        for from in copy.env_from.iter_mut().flatten() {
            if let Some(reference) = from.config_map_ref.as_mut() {
                reference.name = self.config_map(&reference.name);
            }
            if let Some(reference) = from.secret_ref.as_mut() {
                reference.name = self.secret(&reference.name);
            }
        }
        copy
    }
}

/// The host pod (and the copies it needs) standing for a tenant pod bound to `node`.
pub fn host_pod(tenant: &Pod, tenancy: &Tenancy) -> Result<HostPod, Refusal> {
    if let Some(refusal) = refusal(tenant) {
        return Err(refusal);
    }
    let spec = tenant
        .spec
        .as_ref()
        .ok_or_else(|| Refusal::unsupported("spec", "the pod has no spec"))?;
    let (Some(reference), Some(node)) = (PodRef::of(tenant), spec.node_name.as_deref()) else {
        return Err(Refusal::unsupported(
            "spec.nodeName",
            "the pod is not bound to a node yet",
        ));
    };
    let mut translation = Translation {
        pod: tenant,
        namespace: reference.namespace.clone(),
        copies: BTreeSet::new(),
    };
    let mut token = None;
    let mut volumes = Vec::new();
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        let mut host = Volume {
            name: volume.name.clone(),
            ..Volume::default()
        };
        if volume.empty_dir.is_some() || volume.downward_api.is_some() {
            host.empty_dir = volume.empty_dir.clone();
            host.downward_api = volume.downward_api.clone();
        } else if let Some(source) = &volume.config_map {
            let mut source = source.clone();
            source.name = translation.config_map(&source.name);
            host.config_map = Some(source);
        } else if let Some(source) = &volume.secret {
            let mut source = source.clone();
            let name = source.secret_name.clone().unwrap_or_default();
            source.secret_name = Some(translation.secret(&name));
            host.secret = Some(source);
        } else if let Some(wanted) = token_source(volume, tenant, &reference) {
            host.secret = Some(SecretVolumeSource {
                secret_name: Some(wanted.host_secret.clone()),
                default_mode: volume.projected.as_ref().and_then(|p| p.default_mode),
                items: None,
                optional: Some(false),
            });
            token = Some(wanted);
        } else if let Some(projected) = &volume.projected {
            let kinds: Vec<&str> = projected
                .sources
                .iter()
                .flatten()
                .map(projection_kind)
                .collect();
            return Err(Refusal::unsupported(
                format!("volumes[{index}].projected"),
                &format!(
                    "volume {:?} projects {kinds:?}: only the ServiceAccount token volume \
                     is carried to the host so far",
                    volume.name
                ),
            ));
        } else {
            return Err(Refusal::unsupported(
                format!("volumes[{index}]"),
                &format!(
                    "volume {:?}: only emptyDir, configMap, secret, downwardAPI and the \
                     ServiceAccount token volume are carried to the host so far",
                    volume.name
                ),
            ));
        }
        volumes.push(host);
    }
    let containers: Vec<Container> = spec
        .containers
        .iter()
        .map(|c| translation.container(c))
        .collect();
    let init_containers: Option<Vec<Container>> = spec
        .init_containers
        .as_ref()
        .map(|list| list.iter().map(|c| translation.container(c)).collect());
    let image_pull_secrets: Option<Vec<LocalObjectReference>> =
        spec.image_pull_secrets.as_ref().map(|list| {
            list.iter()
                .map(|reference| LocalObjectReference {
                    name: translation.secret(&reference.name),
                })
                .collect()
        });
    let (labels, annotations) = ownership(&reference.namespace, &reference.name, &reference.uid);
    let tolerations = tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        node,
        &tenancy.virtual_cluster,
    );
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(host_pod_name(&reference.namespace, &reference.name)),
            namespace: Some(tenancy.workload_namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            hostname: Some(hostname(&reference.name)),
            containers,
            init_containers,
            volumes: (!volumes.is_empty()).then_some(volumes),
            image_pull_secrets,
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            affinity: Some(placement(node)),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            restart_policy: spec.restart_policy.clone(),
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            active_deadline_seconds: spec.active_deadline_seconds,
            security_context: spec.security_context.clone(),
            share_process_namespace: spec.share_process_namespace,
            host_aliases: spec.host_aliases.clone(),
            os: spec.os.clone(),
            ..PodSpec::default()
        }),
        status: None,
    };
    Ok(HostPod {
        pod,
        copies: translation.copies.into_iter().collect(),
        token,
    })
}

/// What the tenant should see of its pod, from the host pod running it.
pub fn tenant_status(host: &Pod) -> PodStatus {
    reported(host.status.as_ref())
}

/// The part of a pod status vc-clustertree reports, as a kubelet would.
fn reported(status: Option<&PodStatus>) -> PodStatus {
    let Some(status) = status else {
        return PodStatus::default();
    };
    PodStatus {
        phase: status.phase.clone(),
        conditions: status.conditions.clone(),
        pod_ip: status.pod_ip.clone(),
        pod_ips: status.pod_ips.clone(),
        host_ip: status.host_ip.clone(),
        host_ips: status.host_ips.clone(),
        start_time: status.start_time.clone(),
        container_statuses: status.container_statuses.clone(),
        init_container_statuses: status.init_container_statuses.clone(),
        reason: status.reason.clone(),
        message: status.message.clone(),
        qos_class: status.qos_class.clone(),
        ..PodStatus::default()
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// One thing the loop must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write the copies, then the host pod.
    CreateHostPod { tenant: PodRef, host: Box<HostPod> },
    /// Delete host pod `name`, precondition `uid`.
    DeleteHostPod {
        name: String,
        uid: String,
        grace_period_seconds: Option<i64>,
        why: &'static str,
    },
    UpdateTenantStatus {
        tenant: PodRef,
        status: Box<PodStatus>,
    },
    /// The host pod is gone: remove the tenant pod for good, as a kubelet does.
    FinishTenantDeletion { tenant: PodRef },
    /// Set the tenant pod Failed with this reason and message, and record an Event.
    FailTenantPod {
        tenant: PodRef,
        reason: String,
        message: String,
    },
}

/// What one pass sees.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Every tenant pod (those not bound to a mirrored node are ignored).
    pub tenant_pods: &'a [Pod],
    /// The host pods in the workload namespace (those not ours are ignored).
    pub host_pods: &'a [Pod],
    /// Names of the tenant Nodes vc-clustertree mirrors.
    pub mirrored_nodes: &'a BTreeSet<String>,
}

/// What one pass does, and which host copies and tokens must exist afterwards (every
/// other copy of ours is removed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub copies: BTreeSet<Copy>,
    pub tokens: Vec<Token>,
}

/// The actions that bring the host pods and the tenant pods' status in line.
pub fn plan(observed: Observed<'_>, tenancy: &Tenancy) -> Plan {
    let hosts: BTreeMap<String, (&Pod, &str)> = observed
        .host_pods
        .iter()
        .filter_map(|pod| Some((pod.name_any(), (pod, recorded_uid(&pod.metadata)?))))
        .collect();
    let mut plan = Plan::default();
    let mut wanted_hosts = BTreeSet::new();
    for tenant in observed.tenant_pods {
        let on_mirrored = tenant
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|node| observed.mirrored_nodes.contains(node));
        let Some(reference) = PodRef::of(tenant).filter(|_| on_mirrored) else {
            continue;
        };
        let host_name = host_pod_name(&reference.namespace, &reference.name);
        wanted_hosts.insert(host_name.clone());
        let host = hosts.get(&host_name).copied();
        plan_one(&mut plan, tenant, reference, host_name, host, tenancy);
    }
    for (name, (pod, _)) in &hosts {
        if !wanted_hosts.contains(name) && pod.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: name.clone(),
                uid: pod.uid().unwrap_or_default(),
                grace_period_seconds: None,
                why: "its tenant pod is gone",
            });
        }
    }
    plan
}

fn plan_one(
    plan: &mut Plan,
    tenant: &Pod,
    reference: PodRef,
    host_name: String,
    host: Option<(&Pod, &str)>,
    tenancy: &Tenancy,
) {
    let host_uid = |host: &Pod| host.uid().unwrap_or_default();
    let (current, stale) = match host {
        Some((pod, uid)) if uid == reference.uid => (Some(pod), None),
        Some((pod, _)) => (None, Some(pod)),
        None => (None, None),
    };
    if let Some(stale) = stale {
        // Of a tenant pod deleted and re-created under this name: never adopted.
        if stale.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: host_name,
                uid: host_uid(stale),
                grace_period_seconds: None,
                why: "it stands for an earlier tenant pod of the same name",
            });
        }
        if tenant.metadata.deletion_timestamp.is_some() {
            plan.actions
                .push(Action::FinishTenantDeletion { tenant: reference });
        }
        return;
    }
    if tenant.metadata.deletion_timestamp.is_some() {
        match current {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                plan.actions.push(Action::DeleteHostPod {
                    name: host_name,
                    uid: host_uid(pod),
                    grace_period_seconds: tenant.metadata.deletion_grace_period_seconds,
                    why: "its tenant pod is being deleted",
                });
            }
            Some(_) => {}
            None => plan
                .actions
                .push(Action::FinishTenantDeletion { tenant: reference }),
        }
        return;
    }
    if let Some(pod) = current {
        let status = tenant_status(pod);
        let reporting = pod.status.as_ref().is_some_and(|s| s.phase.is_some());
        if reporting && status != reported(tenant.status.as_ref()) && !terminal(tenant) {
            plan.actions.push(Action::UpdateTenantStatus {
                tenant: reference.clone(),
                status: Box::new(status),
            });
        }
        if terminal(tenant) && !terminal(pod) && pod.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: host_name,
                uid: host_uid(pod),
                grace_period_seconds: None,
                why: "its tenant pod has finished",
            });
            return;
        }
        if !terminal(pod)
            && pod.metadata.deletion_timestamp.is_none()
            && let Ok(wanted) = host_pod(tenant, tenancy)
        {
            plan.copies.extend(wanted.copies);
            plan.tokens.extend(wanted.token);
        }
        return;
    }
    if terminal(tenant) {
        return;
    }
    let started = tenant
        .status
        .as_ref()
        .is_some_and(|s| s.start_time.is_some());
    if started {
        plan.actions.push(Action::FailTenantPod {
            tenant: reference,
            reason: HOST_POD_LOST_REASON.to_owned(),
            message: format!(
                "host pod {}/{host_name} disappeared after the pod had started",
                tenancy.workload_namespace
            ),
        });
        return;
    }
    match host_pod(tenant, tenancy) {
        Ok(wanted) => {
            plan.copies.extend(wanted.copies.iter().cloned());
            plan.tokens.extend(wanted.token.iter().cloned());
            plan.actions.push(Action::CreateHostPod {
                tenant: reference,
                host: Box::new(wanted),
            });
        }
        Err(refusal) => plan.actions.push(Action::FailTenantPod {
            tenant: reference,
            reason: refusal.reason().to_owned(),
            message: refusal.to_string(),
        }),
    }
}

/// Annotation on a host token Secret: when it should be refreshed (RFC 3339).
pub const TOKEN_REFRESH_ANNOTATION: &str = "vc.kosmos.io/token-refresh-after";

/// When a token valid until `expires` should be replaced: half-way through its remaining
/// life, as a kubelet renews well before expiry so a slow pass never serves a dead token.
pub fn token_refresh_after(now: jiff::Timestamp, expires: jiff::Timestamp) -> jiff::Timestamp {
    let remaining = expires.duration_since(now);
    now.checked_add(remaining / 2).unwrap_or(now)
}

/// Whether a host token Secret still serves tenant pod `pod_uid` and is not yet due.
pub fn token_fresh(secret: &ObjectMeta, pod_uid: &str, now: jiff::Timestamp) -> bool {
    let due = secret
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOKEN_REFRESH_ANNOTATION))
        .and_then(|at| at.parse::<jiff::Timestamp>().ok());
    recorded_uid(secret) == Some(pod_uid) && due.is_some_and(|due| now < due)
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
    use serde_json::{Value, json};

    use super::*;

    fn tenancy() -> Tenancy {
        Tenancy {
            workload_namespace: "vc-team-a-tenant1".to_owned(),
            virtual_cluster: "tenant1".to_owned(),
        }
    }

    fn pod_json(name: &str, uid: &str, node: &str, extra_spec: Value) -> Value {
        let mut spec = json!({
            "nodeName": node,
            "serviceAccountName": "default",
            "containers": [{
                "name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
                "ports": [{"containerPort": 80}],
                "env": [
                    {"name": "PLAIN", "value": "1"},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ],
                "resources": {"requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
            }],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": NODE_CLAIM_TAINT_KEY, "operator": "Exists"},
                {"operator": "Exists"}
            ],
            "volumes": [{
                "name": "kube-api-access-x1",
                "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}
            }]
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (key, value) in extra {
                spec.insert(key.clone(), value.clone());
            }
        }
        json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
            "spec": spec,
            "status": {"phase": "Pending"}
        })
    }

    fn pod(name: &str, uid: &str, node: &str) -> Pod {
        serde_json::from_value(pod_json(name, uid, node, json!({}))).unwrap()
    }

    fn with(pod: &Pod, patch: Value) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap();
        merge(&mut value, &patch);
        serde_json::from_value(value).unwrap()
    }

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }

    fn host_of(tenant: &Pod) -> Pod {
        let mut host = host_pod(tenant, &tenancy()).unwrap().pod;
        host.metadata.uid = Some(format!("host-{}", tenant.uid().unwrap()));
        host
    }

    fn nodes() -> BTreeSet<String> {
        ["node1".to_owned(), POOL_NODE_NAME.to_owned()].into()
    }

    fn plan_of(tenant: Vec<Pod>, host: Vec<Pod>) -> Vec<Action> {
        let nodes = nodes();
        plan(
            Observed {
                tenant_pods: &tenant,
                host_pods: &host,
                mirrored_nodes: &nodes,
            },
            &tenancy(),
        )
        .actions
    }

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
    fn a_pod_on_a_promoted_node_is_pinned_there_and_tolerates_only_this_claim() {
        let host = host_pod(&pod("web-1", "u1", "node1"), &tenancy()).unwrap();
        let spec = host.pod.spec.clone().unwrap();
        assert_eq!(
            spec.node_name, None,
            "nodeName would bypass the host's taints"
        );
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let fields = term.match_fields.clone().unwrap();
        assert_eq!(fields[0].key, "metadata.name");
        assert_eq!(fields[0].values, Some(vec!["node1".to_owned()]));
        let tolerations = spec.tolerations.unwrap();
        let keys: Vec<(Option<String>, Option<String>)> = tolerations
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (Some("node.kubernetes.io/not-ready".to_owned()), None),
                (
                    Some(NODE_CLAIM_TAINT_KEY.to_owned()),
                    Some("tenant1".to_owned())
                ),
            ]
        );
        assert_eq!(tolerations[1].operator.as_deref(), Some("Equal"));
        assert_eq!(tolerations[1].effect.as_deref(), Some("NoSchedule"));
    }

    #[test]
    fn a_pool_pod_avoids_claimed_and_control_plane_nodes_and_has_no_claim_toleration() {
        let host = host_pod(&pod("web-1", "u1", POOL_NODE_NAME), &tenancy()).unwrap();
        let spec = host.pod.spec.unwrap();
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let absent: Vec<(String, String)> = term
            .match_expressions
            .clone()
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.operator))
            .collect();
        assert_eq!(
            absent,
            [
                (NODE_OWNER_NAME_LABEL.to_owned(), "DoesNotExist".to_owned()),
                (
                    CONTROL_PLANE_NODE_LABELS[0].to_owned(),
                    "DoesNotExist".to_owned()
                ),
                (
                    CONTROL_PLANE_NODE_LABELS[1].to_owned(),
                    "DoesNotExist".to_owned()
                ),
            ]
        );
        assert!(term.match_fields.is_none());
        assert!(
            spec.tolerations
                .unwrap()
                .iter()
                .all(|t| t.key.as_deref() != Some(NODE_CLAIM_TAINT_KEY))
        );
    }

    #[test]
    fn the_host_pod_records_the_tenant_pod_and_carries_nothing_of_the_hosts_identity() {
        let tenant = pod("web-1", "u1", "node1");
        let host = host_pod(&tenant, &tenancy()).unwrap();
        let meta = &host.pod.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("vc-team-a-tenant1"));
        assert_eq!(recorded_uid(meta), Some("u1"));
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels[TENANT_OBJECT_NAMESPACE_LABEL], "shop");
        assert_eq!(labels[TENANT_OBJECT_NAME_LABEL], "web-1");
        assert_eq!(labels[MANAGED_BY_LABEL], CLUSTERTREE_MANAGED_BY_VALUE);
        let spec = host.pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.service_account_name, None);
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(
            container.args,
            tenant.spec.as_ref().unwrap().containers[0].args
        );
        assert_eq!(
            container.volume_mounts,
            tenant.spec.as_ref().unwrap().containers[0].volume_mounts
        );
        let env: BTreeMap<String, EnvVar> = container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        assert_eq!(env["MY_NAME"].value.as_deref(), Some("web-1"));
        assert!(env["MY_IP"].value_from.is_some());
        let cm = env["FROM_CM"]
            .value_from
            .clone()
            .unwrap()
            .config_map_key_ref
            .unwrap();
        assert_eq!(cm.name, config_map_copy_name("shop", "settings"));
        let secret = env["FROM_SECRET"]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(secret.name, secret_copy_name("shop", "creds"));
        let volume = &spec.volumes.unwrap()[0];
        assert!(volume.projected.is_none());
        let secret = volume.secret.clone().unwrap();
        assert_eq!(secret.secret_name, Some(token_secret_name("shop", "web-1")));
        let token = host.token.unwrap();
        assert_eq!(token.service_account, "default");
        assert_eq!(token.pod.uid, "u1");
        assert_eq!(token.token_path, "token");
        assert_eq!(token.files["namespace"], "shop", "the tenant's namespace");
        assert_eq!(
            token.config_maps,
            [(
                TENANT_ROOT_CA_CONFIG_MAP.to_owned(),
                Some(BTreeMap::from([("ca.crt".to_owned(), "ca.crt".to_owned())]))
            )]
        );
        let kinds: Vec<(CopyKind, &str)> = host
            .copies
            .iter()
            .map(|c| (c.kind, c.tenant_name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (CopyKind::ConfigMap, "settings"),
                (CopyKind::Secret, "creds")
            ]
        );
    }

    #[test]
    fn config_map_and_secret_volumes_become_host_copies_and_other_volumes_are_refused() {
        let tenant = with(
            &pod("web-1", "u1", "node1"),
            json!({"spec": {"volumes": [
                {"name": "conf", "configMap": {"name": "site"}},
                {"name": "tls", "secret": {"secretName": "cert"}},
                {"name": "scratch", "emptyDir": {}}
            ]}}),
        );
        let host = host_pod(&tenant, &tenancy()).unwrap();
        let volumes = host.pod.spec.unwrap().volumes.unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            config_map_copy_name("shop", "site")
        );
        assert_eq!(
            volumes[1].secret.as_ref().unwrap().secret_name,
            Some(secret_copy_name("shop", "cert"))
        );
        assert!(volumes[2].empty_dir.is_some());
        let claim = with(
            &tenant,
            json!({"spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]}}),
        );
        let refusal = host_pod(&claim, &tenancy()).unwrap_err();
        assert_eq!(refusal.field, "volumes[0]");
        assert_eq!(refusal.reason(), "UnsupportedByHost");
    }

    #[test]
    fn baseline_refusals_name_the_rule_and_the_field() {
        let base = pod("p", "u", "node1");
        let cases = [
            (
                json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}}),
                "containers[0].securityContext.privileged: privileged containers are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"hostNetwork": true}}),
                "spec.hostNetwork: host namespaces are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"hostPID": true}}),
                "spec.hostPID: host namespaces are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"hostIPC": true}}),
                "spec.hostIPC: host namespaces are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
                "volumes[0].hostPath: hostPath volumes are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}}),
                "containers[0].ports[0].hostPort: host ports are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["CHOWN", "SYS_ADMIN"]}}}]}}),
                "initContainers[0].securityContext.capabilities.add[1]: adding this capability is not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "securityContext": {"windowsOptions": {"hostProcess": true}}}]}}),
                "containers[0].securityContext.windowsOptions.hostProcess: hostProcess containers are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}}),
                "containers[0].securityContext.procMount: only the Default procMount is allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}}),
                "spec.securityContext.seLinuxOptions.type: this SELinux type is not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "securityContext": {"seLinuxOptions": {"user": "root"}}}]}}),
                "containers[0].securityContext.seLinuxOptions.user: a custom SELinux user or role is not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}}),
                "spec.securityContext.sysctls[0].name: unsafe sysctls are not allowed (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}}),
                "containers[0].securityContext.appArmorProfile.type: the AppArmor profile may not be Unconfined (Pod Security \"baseline\")",
            ),
            (
                json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}}),
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: the AppArmor profile may not be unconfined (Pod Security \"baseline\")",
            ),
            (
                json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
                "spec.securityContext.seccompProfile.type: the seccomp profile may not be Unconfined (Pod Security \"baseline\")",
            ),
        ];
        for (patch, expected) in cases {
            let refused = refusal(&with(&base, patch.clone())).map(|r| r.to_string());
            assert_eq!(refused.as_deref(), Some(expected), "{patch}");
        }
        let allowed = with(
            &base,
            json!({"spec": {
                "securityContext": {"seLinuxOptions": {"type": "container_t"}, "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}],
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}, "procMount": "Default"}}]
            }}),
        );
        assert_eq!(refusal(&allowed), None);
        assert_eq!(refusal(&base), None);
    }

    #[test]
    fn status_comes_up_from_the_host_pod() {
        let tenant = pod("web-1", "u1", "node1");
        let host = with(
            &host_of(&tenant),
            json!({"status": {
                "phase": "Running", "podIP": "127.200.0.1", "podIPs": [{"ip": "127.200.0.1"}],
                "hostIP": "10.0.0.7", "startTime": "2026-01-01T00:00:00Z", "qosClass": "Burstable",
                "nominatedNodeName": "host-business",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "nginx:1.27", "imageID": "", "ready": true, "restartCount": 0}]
            }}),
        );
        let status = tenant_status(&host);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.200.0.1"));
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
        assert_eq!(status.nominated_node_name, None);
        assert_eq!(status.container_statuses.unwrap()[0].ready, true);
        let actions = plan_of(vec![tenant.clone()], vec![host.clone()]);
        assert!(
            matches!(&actions[..], [Action::UpdateTenantStatus { status, .. }] if status.phase.as_deref() == Some("Running"))
        );
        let synced = with(
            &tenant,
            json!({"status": serde_json::to_value(tenant_status(&host)).unwrap()}),
        );
        assert_eq!(plan_of(vec![synced], vec![host]), []);
    }

    #[test]
    fn a_bound_pod_without_host_pod_gets_one_and_a_restart_creates_no_second() {
        let tenant = pod("web-1", "u1", "node1");
        let actions = plan_of(vec![tenant.clone()], vec![]);
        assert!(matches!(&actions[..], [Action::CreateHostPod { tenant: r, .. }] if r.uid == "u1"));
        let host = host_of(&tenant);
        assert_eq!(plan_of(vec![tenant], vec![host]), []);
    }

    #[test]
    fn pods_not_on_mirrored_nodes_and_host_pods_not_ours_are_left_alone() {
        let elsewhere = pod("own", "u2", "tenant-made");
        let mut unbound = pod("pending", "u3", "node1");
        unbound.spec.as_mut().unwrap().node_name = None;
        let foreign: Pod = serde_json::from_value(json!({
            "metadata": {"name": "someone-else", "uid": "h9", "labels": {MANAGED_BY_LABEL: "helm"},
                         "annotations": {TENANT_OBJECT_UID_ANNOTATION: "x"}}
        }))
        .unwrap();
        assert_eq!(plan_of(vec![elsewhere, unbound], vec![foreign]), []);
    }

    #[test]
    fn a_host_pod_without_tenant_pod_is_deleted_by_uid() {
        let host = host_of(&pod("gone", "u1", "node1"));
        let actions = plan_of(vec![], vec![host.clone()]);
        assert_eq!(
            actions,
            [Action::DeleteHostPod {
                name: host.name_any(),
                uid: "host-u1".to_owned(),
                grace_period_seconds: None,
                why: "its tenant pod is gone",
            }]
        );
        let deleting = with(
            &host,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(plan_of(vec![], vec![deleting]), []);
    }

    #[test]
    fn a_recreated_tenant_pod_replaces_the_stale_host_pod_first() {
        let old = host_of(&pod("web-1", "old", "node1"));
        let tenant = pod("web-1", "new", "node1");
        let actions = plan_of(vec![tenant.clone()], vec![old.clone()]);
        assert!(
            matches!(&actions[..], [Action::DeleteHostPod { uid, .. }] if uid == "host-old"),
            "{actions:?}"
        );
        let actions = plan_of(vec![tenant], vec![]);
        assert!(
            matches!(&actions[..], [Action::CreateHostPod { tenant, .. }] if tenant.uid == "new")
        );
    }

    #[test]
    fn a_deleting_tenant_pod_deletes_its_host_pod_with_its_grace_then_finishes() {
        let tenant = with(
            &pod("web-1", "u1", "node1"),
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 7}}),
        );
        let host = host_of(&tenant);
        let actions = plan_of(vec![tenant.clone()], vec![host.clone()]);
        assert!(matches!(
            &actions[..],
            [Action::DeleteHostPod { grace_period_seconds: Some(7), uid, .. }] if uid == "host-u1"
        ));
        let terminating = with(
            &host,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(plan_of(vec![tenant.clone()], vec![terminating]), []);
        let actions = plan_of(vec![tenant], vec![]);
        assert!(
            matches!(&actions[..], [Action::FinishTenantDeletion { tenant }] if tenant.uid == "u1")
        );
    }

    #[test]
    fn a_started_pod_whose_host_pod_vanished_fails_and_a_pending_one_is_recreated() {
        let started = with(
            &pod("web-1", "u1", "node1"),
            json!({"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}}),
        );
        let actions = plan_of(vec![started.clone()], vec![]);
        assert!(matches!(
            &actions[..],
            [Action::FailTenantPod { reason, .. }] if reason == HOST_POD_LOST_REASON
        ));
        let failed = with(&started, json!({"status": {"phase": "Failed"}}));
        assert_eq!(plan_of(vec![failed], vec![]), []);
    }

    #[test]
    fn an_evicted_host_pod_fails_the_tenant_pod_through_its_status() {
        let tenant = with(
            &pod("web-1", "u1", "node1"),
            json!({"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}}),
        );
        let host = with(
            &host_of(&tenant),
            json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}),
        );
        let actions = plan_of(vec![tenant], vec![host]);
        assert!(matches!(
            &actions[..],
            [Action::UpdateTenantStatus { status, .. }]
                if status.phase.as_deref() == Some("Failed") && status.reason.as_deref() == Some("Evicted")
        ));
    }

    #[test]
    fn a_refused_pod_is_failed_once_and_never_reaches_the_host() {
        let tenant = with(
            &pod("root", "u1", "node1"),
            json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}}),
        );
        let actions = plan_of(vec![tenant.clone()], vec![]);
        assert!(matches!(
            &actions[..],
            [Action::FailTenantPod { reason, message, .. }]
                if reason == "HostPolicyRefused" && message.contains("containers[0].securityContext.privileged")
        ));
        let failed = with(
            &tenant,
            json!({"status": {"phase": "Failed", "reason": "HostPolicyRefused"}}),
        );
        assert_eq!(plan_of(vec![failed], vec![]), []);
    }

    #[test]
    fn a_finished_tenant_pod_stops_its_host_pod() {
        let tenant = with(
            &pod("job", "u1", "node1"),
            json!({"status": {"phase": "Failed"}}),
        );
        let host = with(&host_of(&tenant), json!({"status": {"phase": "Running"}}));
        let actions = plan_of(vec![tenant], vec![host]);
        assert!(matches!(
            &actions[..],
            [Action::DeleteHostPod {
                why: "its tenant pod has finished",
                ..
            }]
        ));
    }

    #[test]
    fn the_plan_keeps_the_copies_and_token_of_live_host_pods_only() {
        let tenant = pod("web-1", "u1", "node1");
        let host = host_of(&tenant);
        let nodes = nodes();
        let live = plan(
            Observed {
                tenant_pods: std::slice::from_ref(&tenant),
                host_pods: std::slice::from_ref(&host),
                mirrored_nodes: &nodes,
            },
            &tenancy(),
        );
        assert_eq!(live.copies.len(), 2);
        assert_eq!(live.tokens.len(), 1);
        let gone = plan(
            Observed {
                tenant_pods: &[],
                host_pods: &[host],
                mirrored_nodes: &nodes,
            },
            &tenancy(),
        );
        assert!(gone.copies.is_empty() && gone.tokens.is_empty());
    }

    #[test]
    fn a_token_is_refreshed_half_way_and_when_its_pod_changed() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let due = token_refresh_after(now, expires);
        assert_eq!(due.to_string(), "2026-01-01T00:30:00Z");
        let (labels, mut annotations) = ownership("shop", "web-1", "u1");
        annotations.insert(TOKEN_REFRESH_ANNOTATION.to_owned(), due.to_string());
        let meta = ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        };
        assert!(token_fresh(&meta, "u1", now));
        assert!(!token_fresh(&meta, "u2", now), "another pod's token");
        assert!(!token_fresh(&meta, "u1", due));
        assert!(!token_fresh(&ObjectMeta::default(), "u1", now));
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

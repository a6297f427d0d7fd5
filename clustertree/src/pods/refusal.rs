//! The host's Pod Security rules at the tenant's level (`baseline` unless the cluster
//! admin chose another), checked before anything of a tenant pod reaches the host so the
//! tenant is told which field breaks which rule.

use std::fmt;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};
use kube::ResourceExt as _;
use vc_api::pod_security::PodSecurityLevel;

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
/// Volume types Pod Security `restricted` allows.
const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// Annotation prefix of the AppArmor profile before the field existed.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Which policy a refusal enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The tenant's Pod Security level on the host.
    PodSecurity(PodSecurityLevel),
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
        Refusal::pod_security(PodSecurityLevel::Baseline, field, message)
    }

    fn restricted(field: impl Into<String>, message: &str) -> Self {
        Refusal::pod_security(PodSecurityLevel::Restricted, field, message)
    }

    fn pod_security(level: PodSecurityLevel, field: impl Into<String>, message: &str) -> Self {
        Refusal {
            policy: Policy::PodSecurity(level),
            field: field.into(),
            message: message.to_owned(),
        }
    }

    pub(super) fn unsupported(field: impl Into<String>, message: &str) -> Self {
        Refusal {
            policy: Policy::Unsupported,
            field: field.into(),
            message: message.to_owned(),
        }
    }

    /// The Event and status reason the tenant sees.
    pub fn reason(&self) -> &'static str {
        match self.policy {
            Policy::PodSecurity(_) => "HostPolicyRefused",
            Policy::Unsupported => "UnsupportedByHost",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        if let Policy::PodSecurity(level) = self.policy {
            write!(f, " (Pod Security \"{level}\")")?;
        }
        Ok(())
    }
}

/// Why `pod` would not run on the host at Pod Security `level`, checked before anything
/// of it reaches the host. `restricted` is `baseline` and more; `privileged` refuses
/// nothing.
pub fn refusal(pod: &Pod, level: PodSecurityLevel) -> Option<Refusal> {
    match level {
        PodSecurityLevel::Privileged => None,
        PodSecurityLevel::Baseline => baseline_refusal(pod),
        PodSecurityLevel::Restricted => baseline_refusal(pod).or_else(|| restricted_refusal(pod)),
    }
}

/// What `restricted` forbids beyond `baseline`.
fn restricted_refusal(pod: &Pod) -> Option<Refusal> {
    let spec = pod.spec.as_ref()?;
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        let value = serde_json::to_value(volume).ok()?;
        let kind = value
            .as_object()?
            .keys()
            .find(|key| key.as_str() != "name")
            .cloned()
            .unwrap_or_default();
        if !RESTRICTED_VOLUME_TYPES.contains(&kind.as_str()) {
            return Some(Refusal::restricted(
                format!("volumes[{index}].{kind}"),
                "this volume type is not allowed",
            ));
        }
    }
    let pod_context = spec.security_context.as_ref();
    let pod_non_root = pod_context.and_then(|c| c.run_as_non_root) == Some(true);
    if pod_context.and_then(|c| c.run_as_user) == Some(0) {
        return Some(Refusal::restricted(
            "spec.securityContext.runAsUser",
            "running as root (UID 0) is not allowed",
        ));
    }
    let pod_seccomp = pod_context
        .and_then(|c| c.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    for (path, container) in containers(spec) {
        if let Some(refusal) = restricted_container_refusal(
            &format!("{path}.securityContext"),
            container,
            pod_non_root,
            pod_seccomp,
        ) {
            return Some(refusal);
        }
    }
    None
}

/// What `baseline` forbids.
fn baseline_refusal(pod: &Pod) -> Option<Refusal> {
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
    containers(spec).find_map(|(path, container)| container_refusal(&path, container))
}

/// What `restricted` forbids in one container, given the pod's `runAsNonRoot` and seccomp
/// profile, which a container inherits unless it sets its own.
fn restricted_container_refusal(
    path: &str,
    container: &Container,
    pod_non_root: bool,
    pod_seccomp: Option<&str>,
) -> Option<Refusal> {
    let context = container.security_context.as_ref();
    if !context
        .and_then(|c| c.run_as_non_root)
        .unwrap_or(pod_non_root)
    {
        return Some(Refusal::restricted(
            format!("{path}.runAsNonRoot"),
            "must be true (here or in spec.securityContext)",
        ));
    }
    if context.and_then(|c| c.run_as_user) == Some(0) {
        return Some(Refusal::restricted(
            format!("{path}.runAsUser"),
            "running as root (UID 0) is not allowed",
        ));
    }
    if context.and_then(|c| c.allow_privilege_escalation) != Some(false) {
        return Some(Refusal::restricted(
            format!("{path}.allowPrivilegeEscalation"),
            "must be false",
        ));
    }
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let drops_all = capabilities
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|drop| drop.iter().any(|name| name == "ALL"));
    if !drops_all {
        return Some(Refusal::restricted(
            format!("{path}.capabilities.drop"),
            "must include ALL",
        ));
    }
    let added = capabilities
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten();
    for (add, capability) in added.enumerate() {
        if capability.strip_prefix("CAP_").unwrap_or(capability) != "NET_BIND_SERVICE" {
            return Some(Refusal::restricted(
                format!("{path}.capabilities.add[{add}]"),
                "only NET_BIND_SERVICE may be added",
            ));
        }
    }
    let seccomp = context
        .and_then(|c| c.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
        .or(pod_seccomp);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        return Some(Refusal::restricted(
            format!("{path}.seccompProfile.type"),
            "must be RuntimeDefault or Localhost (here or in spec.securityContext)",
        ));
    }
    None
}

/// Every container and init container of `spec`, with its path in the pod
/// (`containers[0]`, `initContainers[1]`).
fn containers(spec: &PodSpec) -> impl Iterator<Item = (String, &Container)> {
    let init = spec.init_containers.as_deref().unwrap_or_default();
    [
        ("containers", spec.containers.as_slice()),
        ("initContainers", init),
    ]
    .into_iter()
    .flat_map(|(list, containers)| {
        containers
            .iter()
            .enumerate()
            .map(move |(index, container)| (format!("{list}[{index}]"), container))
    })
}

fn pod_context_refusal(context: &PodSecurityContext) -> Option<Refusal> {
    if let Some(options) = &context.se_linux_options
        && let Some(refusal) = selinux_refusal("spec.securityContext.seLinuxOptions", options)
    {
        return Some(refusal);
    }
    if let Some(refusal) = unconfined_refusal(
        "spec.securityContext",
        context.seccomp_profile.as_ref(),
        context.app_armor_profile.as_ref(),
    ) {
        return Some(refusal);
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
    unconfined_refusal(
        path,
        context.seccomp_profile.as_ref(),
        context.app_armor_profile.as_ref(),
    )
}

/// The seccomp and AppArmor rules, which read the same in a pod's and a container's
/// security context.
fn unconfined_refusal(
    path: &str,
    seccomp: Option<&SeccompProfile>,
    app_armor: Option<&AppArmorProfile>,
) -> Option<Refusal> {
    if seccomp.is_some_and(|p| p.type_ == "Unconfined") {
        return Some(Refusal::baseline(
            format!("{path}.seccompProfile.type"),
            "the seccomp profile may not be Unconfined",
        ));
    }
    if app_armor.is_some_and(|p| p.type_ == "Unconfined") {
        return Some(Refusal::baseline(
            format!("{path}.appArmorProfile.type"),
            "the AppArmor profile may not be Unconfined",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::pods::test_support::{pod, with};

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
            let refused = refusal(&with(&base, patch.clone()), PodSecurityLevel::Baseline)
                .map(|r| r.to_string());
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
        assert_eq!(refusal(&allowed, PodSecurityLevel::Baseline), None);
        assert_eq!(refusal(&base, PodSecurityLevel::Baseline), None);
    }

    /// `restricted` refuses what `baseline` lets through, naming the field; a pod written
    /// for `restricted` passes; `privileged` refuses nothing, not even a privileged pod.
    #[test]
    fn the_tenants_level_decides_what_is_refused() {
        let hardened = with(
            &pod("p", "u", "node1"),
            json!({"spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "securityContext": {
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                }}],
            }}),
        );
        assert_eq!(refusal(&hardened, PodSecurityLevel::Restricted), None);
        let plain = pod("p", "u", "node1");
        assert_eq!(refusal(&plain, PodSecurityLevel::Baseline), None);
        let refused = refusal(&plain, PodSecurityLevel::Restricted).unwrap();
        assert!(
            refused
                .to_string()
                .ends_with("(Pod Security \"restricted\")"),
            "{refused}"
        );
        for (patch, field) in [
            (
                json!({"spec": {"containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": true}}]}}),
                "containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                json!({"spec": {"containers": [{"name": "app", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_TIME"]}}}]}}),
                "containers[0].securityContext.capabilities.add[0]",
            ),
            (
                json!({"spec": {"securityContext": {"seccompProfile": null}}}),
                "containers[0].securityContext.seccompProfile.type",
            ),
            (
                json!({"spec": {"securityContext": {"runAsUser": 0}}}),
                "spec.securityContext.runAsUser",
            ),
        ] {
            let refused = refusal(&with(&hardened, patch), PodSecurityLevel::Restricted);
            assert_eq!(refused.map(|r| r.field), Some(field.to_owned()));
        }
        let privileged = with(
            &plain,
            json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}}),
        );
        assert!(refusal(&privileged, PodSecurityLevel::Baseline).is_some());
        assert_eq!(refusal(&privileged, PodSecurityLevel::Privileged), None);
    }
}

//! What the admission webhook changes in a tenant Service, and how it words a refusal.

use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use vc_api::constants::{CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL};

/// Name of the tenant's MutatingWebhookConfiguration kept by vc-clustertree.
pub const WEBHOOK_CONFIGURATION: &str = "vc-clustertree";
/// Path of the Service webhook on the kubelet API listener.
pub const ADMISSION_PATH: &str = "/admission/services";
/// How long the tenant apiserver waits for the webhook, which makes one host write.
const WEBHOOK_TIMEOUT_SECONDS: i32 = 10;

/// The tenant's MutatingWebhookConfiguration sending Service creates and updates to
/// `https://{address}:{port}{ADMISSION_PATH}`, trusting `ca_bundle` (PEM). Failing closed:
/// a Service stored without the host's addresses would route nowhere. The tenant
/// apiserver's own Service and those without a cluster IP are left out before any call,
/// so a clustertree that is down never blocks the apiserver's bootstrap.
pub fn webhook_configuration(
    address: &str,
    port: i32,
    ca_bundle: &[u8],
) -> MutatingWebhookConfiguration {
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    let condition = |name: &str, expression: &str| MatchCondition {
        name: name.to_owned(),
        expression: expression.to_owned(),
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIGURATION.to_owned()),
            labels: Some(
                [(
                    MANAGED_BY_LABEL.to_owned(),
                    CLUSTERTREE_MANAGED_BY_VALUE.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "services.vc-clustertree.kosmos.io".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(format!("https://{host}:{port}{ADMISSION_PATH}")),
                ca_bundle: Some(ByteString(ca_bundle.to_vec())),
                service: None,
            },
            failure_policy: Some("Fail".to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            side_effects: "NoneOnDryRun".to_owned(),
            timeout_seconds: Some(WEBHOOK_TIMEOUT_SECONDS),
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                resources: Some(vec!["services".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            match_conditions: Some(vec![
                condition(
                    "not-the-tenant-apiserver",
                    "!(request.namespace == 'default' && request.name == 'kubernetes')",
                ),
                condition(
                    "has-a-cluster-ip",
                    "(!has(object.spec.type) || object.spec.type != 'ExternalName') && \
                     (!has(object.spec.clusterIP) || object.spec.clusterIP != 'None')",
                ),
            ]),
            ..MutatingWebhook::default()
        }]),
    }
}

/// The JSON patch giving tenant Service `tenant` (as the tenant apiserver is about to
/// store it) the cluster IPs, IP families and node ports the host allocated for `host`.
/// Ports are matched by port number and protocol, as both sides have the same list.
pub fn admission_patch(tenant: &Service, host: &Service) -> Patch {
    let mut operations = Vec::new();
    let (Some(tenant_spec), Some(host_spec)) = (&tenant.spec, &host.spec) else {
        return Patch(operations);
    };
    let mut set = |path: String, want: Value, have: Value| {
        if !want.is_null() && want != have {
            operations.push(PatchOperation::Add(AddOperation {
                path: path.parse().unwrap_or_default(),
                value: want,
            }));
        }
    };
    set(
        "/spec/clusterIP".to_owned(),
        json!(host_spec.cluster_ip),
        json!(tenant_spec.cluster_ip),
    );
    set(
        "/spec/clusterIPs".to_owned(),
        json!(host_spec.cluster_ips),
        json!(tenant_spec.cluster_ips),
    );
    set(
        "/spec/ipFamilies".to_owned(),
        json!(host_spec.ip_families),
        json!(tenant_spec.ip_families),
    );
    set(
        "/spec/ipFamilyPolicy".to_owned(),
        json!(host_spec.ip_family_policy),
        json!(tenant_spec.ip_family_policy),
    );
    set(
        "/spec/healthCheckNodePort".to_owned(),
        json!(host_spec.health_check_node_port),
        json!(tenant_spec.health_check_node_port),
    );
    let host_ports = host_spec.ports.as_deref().unwrap_or_default();
    for (index, port) in tenant_spec.ports.iter().flatten().enumerate() {
        let protocol = |p: &Option<String>| p.clone().unwrap_or_else(|| "TCP".to_owned());
        let twin = host_ports.iter().find(|host| {
            host.port == port.port && protocol(&host.protocol) == protocol(&port.protocol)
        });
        if let Some(node_port) = twin.and_then(|twin| twin.node_port) {
            set(
                format!("/spec/ports/{index}/nodePort"),
                json!(node_port),
                json!(port.node_port),
            );
        }
    }
    Patch(operations)
}

/// The characters kube-apiserver draws generated name suffixes from: no vowels, so no
/// words, and no look-alikes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated suffix, as kube-apiserver makes it.
const NAME_SUFFIX: usize = 5;
/// Longest object name; the prefix is cut so prefix and suffix fit.
const MAX_NAME: usize = 63;

/// The name kube-apiserver would generate from `generate_name`: the prefix (cut to leave
/// room) and five characters drawn with `draw` (any value; taken modulo the alphabet).
/// The webhook names a `generateName` Service itself, since admission runs before the
/// apiserver names it and the host Service, which the name is part of, must exist
/// before the tenant Service is stored.
pub fn generated_name(generate_name: &str, mut draw: impl FnMut() -> usize) -> String {
    let mut prefix = generate_name.to_owned();
    let room = MAX_NAME - NAME_SUFFIX;
    if prefix.len() > room {
        let mut cut = room;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    let suffix: String = (0..NAME_SUFFIX)
        .map(|_| char::from(NAME_ALPHABET[draw() % NAME_ALPHABET.len()]))
        .collect();
    prefix + &suffix
}

/// The JSON patch operation naming the tenant Service `name`.
pub fn name_operation(name: &str) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: "/metadata/name".parse().unwrap_or_default(),
        value: json!(name),
    })
}

/// Why the tenant's create or update is refused, from the host's refusal: naming the
/// tenant's field and the fix when the host holds the address or port asked for, the
/// host's own words (with the host's names for the object replaced) otherwise.
pub fn refusal_message(
    tenant: &Service,
    host_message: &str,
    host_name: &str,
    workload_namespace: &str,
) -> String {
    let spec = tenant.spec.as_ref();
    let taken = host_message.contains("already allocated");
    if taken && host_message.contains("clusterIP") {
        let asked = spec
            .and_then(|spec| spec.cluster_ip.clone())
            .unwrap_or_default();
        return format!(
            "spec.clusterIP: {asked} is already in use on the host cluster, which allocates \
             this cluster's Service IPs; leave spec.clusterIP empty to get a free address, \
             or choose another"
        );
    }
    if taken && host_message.contains("nodePort") {
        let asked: Vec<String> = spec
            .and_then(|spec| spec.ports.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(index, port)| {
                port.node_port
                    .map(|node_port| format!("spec.ports[{index}].nodePort {node_port}"))
            })
            .collect();
        return format!(
            "{} is already in use on the host cluster, which allocates this cluster's node \
             ports; leave nodePort empty to get a free port, or choose another",
            asked.join(", ")
        );
    }
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let namespace = tenant.metadata.namespace.as_deref().unwrap_or_default();
    format!(
        "the host cluster refused this Service: {}",
        host_message
            .replace(host_name, name)
            .replace(workload_namespace, namespace)
    )
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::super::translate::tests::service;
    use super::*;

    #[test]
    fn a_generated_name_is_the_prefix_and_five_of_the_apiservers_characters() {
        let mut draws = [0usize, 1, 26, 27, 100].into_iter();
        assert_eq!(
            generated_name("web-", || draws.next().unwrap()),
            "web-bc9bz"
        );
        let long = "a".repeat(70);
        let name = generated_name(&long, || 3);
        assert_eq!(name.len(), 63);
        assert_eq!(name, format!("{}fffff", "a".repeat(58)));
        assert_eq!(
            serde_json::to_value(name_operation("web-x")).unwrap(),
            json!({"op": "add", "path": "/metadata/name", "value": "web-x"})
        );
    }

    fn tenant() -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
            ]},
        }))
    }

    fn host() -> Service {
        service(json!({
            "metadata": {"name": "shop-web-0123456789", "namespace": "vc-team-a-tenant1"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31080},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 31053},
            ]},
        }))
    }

    #[test]
    fn the_patch_gives_the_tenant_what_the_host_allocated() {
        let patch = serde_json::to_value(admission_patch(&tenant(), &host())).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/spec/clusterIP", "value": "10.96.7.7"},
                {"op": "add", "path": "/spec/clusterIPs", "value": ["10.96.7.7"]},
                {"op": "add", "path": "/spec/ipFamilies", "value": ["IPv4"]},
                {"op": "add", "path": "/spec/ipFamilyPolicy", "value": "SingleStack"},
                {"op": "add", "path": "/spec/ports/0/nodePort", "value": 31080},
                {"op": "add", "path": "/spec/ports/1/nodePort", "value": 31053},
            ])
        );
        let mut applied = serde_json::to_value(tenant()).unwrap();
        json_patch::patch(&mut applied, &admission_patch(&tenant(), &host())).unwrap();
        let applied: Service = serde_json::from_value(applied).unwrap();
        assert_eq!(admission_patch(&applied, &host()).0, vec![]);
    }

    #[test]
    fn the_webhook_configuration_fails_closed_on_services_only() {
        let config =
            serde_json::to_value(webhook_configuration("10.0.0.7", 10250, b"PEM")).unwrap();
        let webhook = &config["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["url"],
            "https://10.0.0.7:10250/admission/services"
        );
        assert_eq!(webhook["clientConfig"]["caBundle"], "UEVN");
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(
            webhook["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                    "resources": ["services"], "scope": "Namespaced"}])
        );
        let ipv6 = webhook_configuration("fd00::7", 10250, b"PEM");
        assert_eq!(
            ipv6.webhooks.unwrap()[0].client_config.url.as_deref(),
            Some("https://[fd00::7]:10250/admission/services")
        );
    }

    #[test]
    fn a_taken_cluster_ip_is_refused_naming_the_field_and_the_fix() {
        let mut asked = tenant();
        asked.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.50".to_owned());
        let message = refusal_message(
            &asked,
            "Service \"shop-web-0123456789\" is invalid: spec.clusterIPs: Invalid value: \
             []string{\"10.96.0.50\"}: failed to allocate IP 10.96.0.50: provided IP is already allocated",
            "shop-web-0123456789",
            "vc-team-a-tenant1",
        );
        assert!(
            message.starts_with("spec.clusterIP: 10.96.0.50 is already in use"),
            "{message}"
        );
        assert!(message.contains("leave spec.clusterIP empty"), "{message}");
    }

    #[test]
    fn a_taken_node_port_is_refused_naming_the_port() {
        let message = refusal_message(
            &tenant(),
            "Service \"shop-web-0123456789\" is invalid: spec.ports[2].nodePort: Invalid value: \
             30053: provided port is already allocated",
            "shop-web-0123456789",
            "vc-team-a-tenant1",
        );
        assert!(
            message.starts_with("spec.ports[2].nodePort 30053 is already in use"),
            "{message}"
        );
    }

    #[test]
    fn other_refusals_speak_of_the_tenant_service() {
        let message = refusal_message(
            &tenant(),
            "services \"shop-web-0123456789\" is forbidden: exceeded quota in vc-team-a-tenant1",
            "shop-web-0123456789",
            "vc-team-a-tenant1",
        );
        assert_eq!(
            message,
            "the host cluster refused this Service: services \"web\" is forbidden: exceeded quota in shop"
        );
    }
}

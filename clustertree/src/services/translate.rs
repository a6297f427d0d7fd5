//! The host Service and EndpointSlices standing for a tenant Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use serde_json::Value;
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, POOL_NODE_NAME, TENANT_OBJECT_UID_ANNOTATION,
};

use super::naming::{ENDPOINT_SLICE_MANAGED_BY, host_endpoint_slice_name, host_service_name};
use crate::pods::{host_pod_name, ownership};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
const ENDPOINT_SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The tenant apiserver's own Service, which only the tenant apiserver serves.
const TENANT_APISERVER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// Whether tenant Service `service` gets a host Service: it has, or will be given, a
/// cluster IP for the host to route, and it is not the tenant apiserver's own.
pub fn is_synced(service: &Service) -> bool {
    let namespace = service.namespace().unwrap_or_default();
    if (namespace.as_str(), service.name_any().as_str()) == TENANT_APISERVER_SERVICE {
        return false;
    }
    let Some(spec) = &service.spec else {
        return false;
    };
    let typed = matches!(
        spec.type_.as_deref(),
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer")
    );
    typed && spec.cluster_ip.as_deref() != Some("None")
}

/// Whether a host object carries our managed-by label: only such an object is ever
/// updated or deleted.
pub fn is_ours(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == CLUSTERTREE_MANAGED_BY_VALUE)
}

/// Ownership marks of a host object standing for tenant `namespace/name`; a tenant object
/// not stored yet (admission of its create) has no UID, so none is recorded.
fn owned_meta(namespace: &str, name: &str, uid: Option<&str>, host_name: String) -> ObjectMeta {
    let (labels, mut annotations) = ownership(namespace, name, uid.unwrap_or_default());
    if uid.is_none_or(str::is_empty) {
        annotations.remove(TENANT_OBJECT_UID_ANNOTATION);
    }
    ObjectMeta {
        name: Some(host_name),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// The host Service standing for tenant Service `tenant` in `workload_namespace`, or
/// `None` when it gets none ([`is_synced`]). Cluster IPs and node ports are carried over
/// when the tenant has them, so the host keeps (or is asked for) the same; without them the
/// host allocates. External IPs are not carried over: on the host they would capture
/// traffic of other tenants to those addresses.
pub fn host_service(tenant: &Service, workload_namespace: &str) -> Option<Service> {
    if !is_synced(tenant) {
        return None;
    }
    let namespace = tenant.namespace()?;
    let name = tenant.name_any();
    let spec = tenant.spec.as_ref()?;
    let mut metadata = owned_meta(
        &namespace,
        &name,
        tenant.uid().as_deref(),
        host_service_name(&namespace, &name),
    );
    metadata.namespace = Some(workload_namespace.to_owned());
    let ports = spec.ports.as_ref().map(|ports| {
        ports
            .iter()
            .map(|port| ServicePort {
                name: port.name.clone(),
                protocol: port.protocol.clone(),
                app_protocol: port.app_protocol.clone(),
                port: port.port,
                target_port: port.target_port.clone(),
                node_port: port.node_port.filter(|port| *port != 0),
            })
            .collect()
    });
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    Some(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: spec.type_.clone(),
            cluster_ip: spec.cluster_ip.clone().filter(|ip| !ip.is_empty()),
            cluster_ips: spec.cluster_ips.clone().filter(|ips| !ips.is_empty()),
            ip_families: spec
                .ip_families
                .clone()
                .filter(|families| !families.is_empty()),
            ip_family_policy: spec.ip_family_policy.clone(),
            ports,
            session_affinity: spec.session_affinity.clone(),
            session_affinity_config: spec.session_affinity_config.clone(),
            external_traffic_policy: spec.external_traffic_policy.clone(),
            internal_traffic_policy: spec.internal_traffic_policy.clone(),
            health_check_node_port: spec.health_check_node_port.filter(|port| *port != 0),
            allocate_load_balancer_node_ports: spec
                .allocate_load_balancer_node_ports
                .filter(|_| load_balancer),
            load_balancer_class: spec.load_balancer_class.clone().filter(|_| load_balancer),
            load_balancer_source_ranges: spec
                .load_balancer_source_ranges
                .clone()
                .filter(|_| load_balancer),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The host EndpointSlice standing for tenant EndpointSlice `tenant` of a synced Service,
/// or `None` when it belongs to no Service. Addresses carry over as they are (a tenant pod
/// IP is its host pod's IP); a node name only when it is a host node, not the pool; a
/// target reference points at the host pod. Topology hints are dropped: they name the
/// tenant's view of zones, which the host computes for itself.
pub fn host_endpoint_slice(
    tenant: &EndpointSlice,
    workload_namespace: &str,
) -> Option<EndpointSlice> {
    let namespace = tenant.namespace()?;
    let service = tenant.labels().get(SERVICE_NAME_LABEL)?.clone();
    let name = tenant.name_any();
    let mut metadata = owned_meta(
        &namespace,
        &name,
        tenant.uid().as_deref(),
        host_endpoint_slice_name(&namespace, &name),
    );
    metadata.namespace = Some(workload_namespace.to_owned());
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(
        SERVICE_NAME_LABEL.to_owned(),
        host_service_name(&namespace, &service),
    );
    labels.insert(
        ENDPOINT_SLICE_MANAGED_BY_LABEL.to_owned(),
        ENDPOINT_SLICE_MANAGED_BY.to_owned(),
    );
    let endpoints = tenant
        .endpoints
        .iter()
        .map(|endpoint| Endpoint {
            addresses: endpoint.addresses.clone(),
            conditions: endpoint.conditions.clone(),
            hostname: endpoint.hostname.clone(),
            node_name: endpoint
                .node_name
                .clone()
                .filter(|node| node != POOL_NODE_NAME),
            zone: endpoint.zone.clone(),
            target_ref: endpoint
                .target_ref
                .as_ref()
                .filter(|target| target.kind.as_deref() == Some("Pod"))
                .map(|target| k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".to_owned()),
                    namespace: Some(workload_namespace.to_owned()),
                    name: Some(host_pod_name(
                        target.namespace.as_deref().unwrap_or(&namespace),
                        target.name.as_deref().unwrap_or_default(),
                    )),
                    ..Default::default()
                }),
            ..Endpoint::default()
        })
        .collect();
    Some(EndpointSlice {
        metadata,
        address_type: tenant.address_type.clone(),
        endpoints,
        ports: tenant.ports.clone(),
    })
}

/// Whether `existing` already holds everything `desired` says: every member of a desired
/// object is in the existing one with a value it contains, arrays element by element and
/// of the same length. Members only the apiserver sets (defaults, status, managed fields)
/// are ignored, so an unchanged object is never written again.
pub fn contains(existing: &Value, desired: &Value) -> bool {
    match (existing, desired) {
        (Value::Object(existing), Value::Object(desired)) => {
            desired.iter().all(|(key, want)| match existing.get(key) {
                Some(have) => contains(have, want),
                None => want.is_null(),
            })
        }
        (Value::Array(existing), Value::Array(desired)) => {
            existing.len() == desired.len()
                && existing
                    .iter()
                    .zip(desired)
                    .all(|(have, want)| contains(have, want))
        }
        _ => existing == desired,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;
    use vc_api::constants::{TENANT_OBJECT_ANNOTATION, TENANT_OBJECT_NAME_LABEL};

    use super::*;

    const WORKLOADS: &str = "vc-team-a-tenant1";

    pub(in crate::services) fn service(value: Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn web(spec: Value) -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-web",
                         "labels": {"app": "web"}, "annotations": {"team": "a"}},
            "spec": spec,
        }))
    }

    #[test]
    fn cluster_ip_node_port_and_load_balancer_services_are_synced() {
        for kind in ["ClusterIP", "NodePort", "LoadBalancer"] {
            assert!(is_synced(&web(json!({"type": kind}))), "{kind}");
        }
        assert!(is_synced(&web(json!({}))), "type defaults to ClusterIP");
    }

    #[test]
    fn headless_external_name_and_the_tenant_apiserver_are_not() {
        assert!(!is_synced(&web(json!({"clusterIP": "None"}))));
        assert!(!is_synced(&web(
            json!({"type": "ExternalName", "externalName": "example.com"})
        )));
        assert!(!is_synced(&service(json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1"},
        }))));
        assert!(is_synced(&service(json!({
            "metadata": {"name": "kubernetes", "namespace": "shop"},
            "spec": {"type": "ClusterIP"},
        }))));
        assert_eq!(
            host_service(&web(json!({"clusterIP": "None"})), WORKLOADS),
            None
        );
    }

    #[test]
    fn the_host_service_has_no_selector_and_the_same_addresses() {
        let tenant = web(json!({
            "type": "NodePort",
            "selector": {"app": "web"},
            "clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
            "sessionAffinity": "ClientIP",
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            "externalIPs": ["1.2.3.4"],
        }));
        let host = serde_json::to_value(host_service(&tenant, WORKLOADS).unwrap()).unwrap();
        assert_eq!(
            host["spec"],
            json!({
                "type": "NodePort",
                "clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
                "sessionAffinity": "ClientIP",
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            })
        );
        assert_eq!(host["metadata"]["namespace"], WORKLOADS);
        assert_eq!(host["metadata"]["name"], host_service_name("shop", "web"));
        assert_eq!(
            host["metadata"]["labels"][MANAGED_BY_LABEL],
            CLUSTERTREE_MANAGED_BY_VALUE
        );
        assert_eq!(host["metadata"]["labels"][TENANT_OBJECT_NAME_LABEL], "web");
        assert_eq!(host["metadata"]["labels"].get("app"), None);
        assert_eq!(
            host["metadata"]["annotations"],
            json!({TENANT_OBJECT_ANNOTATION: "shop/web", TENANT_OBJECT_UID_ANNOTATION: "u-web"})
        );
    }

    #[test]
    fn a_service_not_stored_yet_asks_the_host_to_allocate_and_records_no_uid() {
        let mut tenant = web(json!({"type": "LoadBalancer", "clusterIP": "",
            "ports": [{"port": 443, "nodePort": 0}], "allocateLoadBalancerNodePorts": true,
            "loadBalancerSourceRanges": ["10.0.0.0/8"]}));
        tenant.metadata.uid = None;
        let host = host_service(&tenant, WORKLOADS).unwrap();
        let spec = host.spec.unwrap();
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
        assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
        assert_eq!(
            spec.load_balancer_source_ranges,
            Some(vec!["10.0.0.0/8".to_owned()])
        );
        assert!(is_ours(&host.metadata));
        let annotations = host.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(TENANT_OBJECT_UID_ANNOTATION));
        assert_eq!(annotations[TENANT_OBJECT_ANNOTATION], "shop/web");
        assert!(!is_ours(&web(json!({})).metadata));
    }

    #[test]
    fn endpoint_slices_keep_addresses_and_point_at_host_pods() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-x7b2q", "namespace": "shop", "uid": "u-slice",
                         "labels": {SERVICE_NAME_LABEL: "web",
                                    ENDPOINT_SLICE_MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node1",
                 "zone": "z1", "hints": {"forZones": [{"name": "z1"}]},
                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p1"}},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": false}, "nodeName": POOL_NODE_NAME,
                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-2", "uid": "p2"}},
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap();
        let host = serde_json::to_value(host_endpoint_slice(&slice, WORKLOADS).unwrap()).unwrap();
        assert_eq!(
            host["metadata"]["name"],
            host_endpoint_slice_name("shop", "web-x7b2q")
        );
        assert_eq!(host["metadata"]["namespace"], WORKLOADS);
        assert_eq!(
            host["metadata"]["labels"][SERVICE_NAME_LABEL],
            host_service_name("shop", "web")
        );
        assert_eq!(
            host["metadata"]["labels"][ENDPOINT_SLICE_MANAGED_BY_LABEL],
            ENDPOINT_SLICE_MANAGED_BY
        );
        assert_eq!(
            host["metadata"]["annotations"][TENANT_OBJECT_UID_ANNOTATION],
            "u-slice"
        );
        assert_eq!(
            host["endpoints"],
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node1",
                 "zone": "z1",
                 "targetRef": {"kind": "Pod", "namespace": WORKLOADS, "name": host_pod_name("shop", "web-1")}},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "namespace": WORKLOADS, "name": host_pod_name("shop", "web-2")}},
            ])
        );
        assert_eq!(
            host["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        let mut orphan = slice.clone();
        orphan.metadata.labels = None;
        assert_eq!(host_endpoint_slice(&orphan, WORKLOADS), None);
    }

    #[test]
    fn contains_ignores_what_only_the_apiserver_adds() {
        let desired = json!({"spec": {"ports": [{"port": 80}], "type": "ClusterIP"}});
        let existing = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}],
                              "type": "ClusterIP", "clusterIP": "10.96.0.9"}, "status": {}});
        assert!(contains(&existing, &desired));
        assert!(!contains(
            &existing,
            &json!({"spec": {"ports": [{"port": 81}]}})
        ));
        assert!(!contains(
            &existing,
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}})
        ));
        assert!(!contains(
            &existing,
            &json!({"spec": {"sessionAffinity": "ClientIP"}})
        ));
        assert!(contains(
            &existing,
            &json!({"spec": {"sessionAffinity": null}})
        ));
    }
}

//! What one pass of the Service loop does, from what it read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::Serialize;
use kube::ResourceExt as _;

use super::translate::{
    SERVICE_NAME_LABEL, contains, host_endpoint_slice, host_service, is_ours, is_synced,
};
use crate::pods::recorded_uid;

/// How long a host Service the webhook created may wait for its tenant Service: the
/// tenant apiserver stores the Service right after admission, so one still without a
/// twin after this long belongs to a create the tenant then refused.
pub const GRACE: Duration = Duration::from_secs(30);

/// What a pass read.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every tenant Service.
    pub tenant_services: Vec<Service>,
    /// Every tenant EndpointSlice.
    pub tenant_slices: Vec<EndpointSlice>,
    /// Every host Service of the workload namespace.
    pub host_services: Vec<Service>,
    /// Every host EndpointSlice of the workload namespace.
    pub host_slices: Vec<EndpointSlice>,
    /// When the pass began.
    pub now: jiff::Timestamp,
}

/// One step of a pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Server-side apply this host Service.
    ApplyService(Box<Service>),
    /// Delete host Service `name` if it still has UID `uid`.
    DeleteService { name: String, uid: String },
    /// Server-side apply this host EndpointSlice.
    ApplySlice(Box<EndpointSlice>),
    /// Delete host EndpointSlice `name` if it still has UID `uid`.
    DeleteSlice { name: String, uid: String },
    /// Set tenant Service `namespace/name`'s `status.loadBalancer` to the host's.
    ReflectLoadBalancer {
        namespace: String,
        name: String,
        status: LoadBalancerStatus,
    },
    /// The host Service named for tenant Service `service` is not ours: left alone.
    Foreign { service: String, host: String },
}

fn as_json(object: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}

/// Whether `host` may be written for a tenant object of UID `uid`: ours, and recording
/// that UID or none yet (created by the webhook before the tenant stored its object).
fn stands_for(
    host: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    is_ours(host) && recorded_uid(host).is_none_or(|recorded| recorded == uid)
}

/// The steps bringing the host in line with the tenant's Services in `workload_namespace`.
pub fn plan(observed: &Observed, workload_namespace: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    let host_services: BTreeMap<String, &Service> = observed
        .host_services
        .iter()
        .map(|service| (service.name_any(), service))
        .collect();
    let host_slices: BTreeMap<String, &EndpointSlice> = observed
        .host_slices
        .iter()
        .map(|slice| (slice.name_any(), slice))
        .collect();
    let mut wanted_services = BTreeSet::new();
    let mut wanted_slices = BTreeSet::new();
    let mut synced = BTreeSet::new();
    for tenant in observed.tenant_services.iter().filter(|s| is_synced(s)) {
        let (Some(namespace), Some(uid)) = (tenant.namespace(), tenant.uid()) else {
            continue;
        };
        let Some(desired) = host_service(tenant, workload_namespace) else {
            continue;
        };
        let name = desired.name_any();
        wanted_services.insert(name.clone());
        match host_services.get(&name) {
            None => actions.push(Action::ApplyService(Box::new(desired))),
            Some(existing) if !is_ours(&existing.metadata) => {
                actions.push(Action::Foreign {
                    service: format!("{namespace}/{}", tenant.name_any()),
                    host: name,
                });
                continue;
            }
            Some(existing) if !stands_for(&existing.metadata, &uid) => {
                // A tenant Service of the same name, since deleted: its host Service
                // goes first, and the next pass creates this one's.
                wanted_services.remove(&name);
                continue;
            }
            Some(existing) => {
                if !contains(&as_json(*existing), &as_json(&desired)) {
                    actions.push(Action::ApplyService(Box::new(desired)));
                }
                let load_balancer = tenant
                    .spec
                    .as_ref()
                    .is_some_and(|spec| spec.type_.as_deref() == Some("LoadBalancer"));
                let host_status = existing
                    .status
                    .as_ref()
                    .and_then(|status| status.load_balancer.clone())
                    .unwrap_or_default();
                let tenant_status = tenant
                    .status
                    .as_ref()
                    .and_then(|status| status.load_balancer.clone())
                    .unwrap_or_default();
                if load_balancer && host_status != tenant_status {
                    actions.push(Action::ReflectLoadBalancer {
                        namespace: namespace.clone(),
                        name: tenant.name_any(),
                        status: host_status,
                    });
                }
            }
        }
        synced.insert((namespace, tenant.name_any()));
    }
    for tenant in &observed.tenant_slices {
        let (Some(namespace), Some(uid)) = (tenant.namespace(), tenant.uid()) else {
            continue;
        };
        let Some(service) = tenant.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        if !synced.contains(&(namespace.clone(), service.clone())) {
            continue;
        }
        let Some(desired) = host_endpoint_slice(tenant, workload_namespace) else {
            continue;
        };
        let name = desired.name_any();
        match host_slices.get(&name) {
            None => {
                wanted_slices.insert(name);
                actions.push(Action::ApplySlice(Box::new(desired)));
            }
            Some(existing) if !is_ours(&existing.metadata) => {
                actions.push(Action::Foreign {
                    service: format!("{namespace}/{service}"),
                    host: name,
                });
            }
            Some(existing) if !stands_for(&existing.metadata, &uid) => {}
            Some(existing) => {
                wanted_slices.insert(name);
                if !contains(&as_json(*existing), &as_json(&desired)) {
                    actions.push(Action::ApplySlice(Box::new(desired)));
                }
            }
        }
    }
    for (name, existing) in &host_services {
        if wanted_services.contains(name) || !is_ours(&existing.metadata) {
            continue;
        }
        let Some(uid) = existing.uid() else { continue };
        let pending = recorded_uid(&existing.metadata).is_none();
        let young = existing.creation_timestamp().is_some_and(|created| {
            observed
                .now
                .duration_since(created.0)
                .unsigned_abs()
                .lt(&GRACE)
        });
        if pending && young {
            continue;
        }
        actions.push(Action::DeleteService {
            name: name.clone(),
            uid,
        });
    }
    for (name, existing) in &host_slices {
        if wanted_slices.contains(name) || !is_ours(&existing.metadata) {
            continue;
        }
        if let Some(uid) = existing.uid() {
            actions.push(Action::DeleteSlice {
                name: name.clone(),
                uid,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::{Value, json};
    use vc_api::constants::{
        CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, TENANT_OBJECT_UID_ANNOTATION,
    };

    use super::*;
    use crate::services::host_service_name;

    const WORKLOADS: &str = "vc-team-a-tenant1";

    fn service(value: Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn tenant_web() -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-web"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 80, "nodePort": 30080}]},
        }))
    }

    /// The host twin as the apiserver returns it: desired plus what it filled in.
    fn host_twin(tenant: &Service, uid: &str) -> Service {
        let mut host = host_service(tenant, WORKLOADS).unwrap();
        host.metadata.uid = Some(uid.to_owned());
        host.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        host.spec.as_mut().unwrap().session_affinity = Some("None".to_owned());
        host
    }

    fn slice(name: &str, service: &str, uid: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    fn at(seconds_after_creation: i64) -> jiff::Timestamp {
        "2026-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .checked_add(jiff::SignedDuration::from_secs(seconds_after_creation))
            .unwrap()
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|action| match action {
                Action::ApplyService(s) => format!("apply service {}", s.name_any()),
                Action::DeleteService { name, uid } => format!("delete service {name} {uid}"),
                Action::ApplySlice(s) => format!("apply slice {}", s.name_any()),
                Action::DeleteSlice { name, uid } => format!("delete slice {name} {uid}"),
                Action::ReflectLoadBalancer { name, .. } => format!("reflect {name}"),
                Action::Foreign { host, .. } => format!("foreign {host}"),
            })
            .collect()
    }

    #[test]
    fn a_new_service_and_its_slices_are_created() {
        let observed = Observed {
            tenant_services: vec![tenant_web()],
            tenant_slices: vec![
                slice("web-a", "web", "s1", "10.244.0.5"),
                slice("db-a", "db", "s2", "10.244.0.6"),
            ],
            now: at(0),
            ..Observed::default()
        };
        let actions = plan(&observed, WORKLOADS);
        assert_eq!(
            names(&actions),
            vec![
                format!("apply service {}", host_service_name("shop", "web")),
                format!(
                    "apply slice {}",
                    crate::services::host_endpoint_slice_name("shop", "web-a")
                ),
            ]
        );
    }

    #[test]
    fn an_unchanged_service_is_not_written_again() {
        let tenant = tenant_web();
        let slices = vec![slice("web-a", "web", "s1", "10.244.0.5")];
        let mut host_slice = host_endpoint_slice(&slices[0], WORKLOADS).unwrap();
        host_slice.metadata.uid = Some("h-s1".to_owned());
        let observed = Observed {
            host_services: vec![host_twin(&tenant, "h1")],
            host_slices: vec![host_slice],
            tenant_services: vec![tenant],
            tenant_slices: slices,
            now: at(100),
        };
        assert_eq!(plan(&observed, WORKLOADS), vec![]);
    }

    #[test]
    fn changed_ports_and_endpoints_are_written() {
        let tenant = tenant_web();
        let mut changed = tenant.clone();
        changed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        let old_slice = slice("web-a", "web", "s1", "10.244.0.5");
        let mut host_slice = host_endpoint_slice(&old_slice, WORKLOADS).unwrap();
        host_slice.metadata.uid = Some("h-s1".to_owned());
        let observed = Observed {
            host_services: vec![host_twin(&tenant, "h1")],
            host_slices: vec![host_slice],
            tenant_services: vec![changed],
            tenant_slices: vec![slice("web-a", "web", "s1", "10.244.0.9")],
            now: at(100),
        };
        assert_eq!(
            names(&plan(&observed, WORKLOADS)),
            vec![
                format!("apply service {}", host_service_name("shop", "web")),
                format!(
                    "apply slice {}",
                    crate::services::host_endpoint_slice_name("shop", "web-a")
                ),
            ]
        );
    }

    #[test]
    fn the_hosts_load_balancer_ingress_is_reflected() {
        let tenant = tenant_web();
        let mut host = host_twin(&tenant, "h1");
        host.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}))
                .unwrap(),
        );
        let observed = Observed {
            host_services: vec![host],
            tenant_services: vec![tenant],
            now: at(100),
            ..Observed::default()
        };
        let actions = plan(&observed, WORKLOADS);
        assert_eq!(
            actions,
            vec![Action::ReflectLoadBalancer {
                namespace: "shop".to_owned(),
                name: "web".to_owned(),
                status: serde_json::from_value(json!({"ingress": [{"ip": "203.0.113.7"}]}))
                    .unwrap(),
            }]
        );
    }

    #[test]
    fn a_host_service_without_a_tenant_twin_is_deleted_by_uid() {
        let tenant = tenant_web();
        let host = host_twin(&tenant, "h1");
        let mut slice =
            host_endpoint_slice(&slice("web-a", "web", "s1", "10.244.0.5"), WORKLOADS).unwrap();
        slice.metadata.uid = Some("h-s1".to_owned());
        let observed = Observed {
            host_services: vec![host],
            host_slices: vec![slice],
            now: at(1),
            ..Observed::default()
        };
        assert_eq!(
            names(&plan(&observed, WORKLOADS)),
            vec![
                format!("delete service {} h1", host_service_name("shop", "web")),
                format!(
                    "delete slice {} h-s1",
                    crate::services::host_endpoint_slice_name("shop", "web-a")
                ),
            ]
        );
    }

    #[test]
    fn a_webhook_created_service_waits_its_grace_then_goes() {
        let mut pending = tenant_web();
        pending.metadata.uid = None;
        let host = host_twin(&pending, "h1");
        assert_eq!(recorded_uid(&host.metadata), None);
        let observed = |now| Observed {
            host_services: vec![host.clone()],
            now,
            ..Observed::default()
        };
        assert_eq!(plan(&observed(at(5)), WORKLOADS), vec![]);
        assert_eq!(
            names(&plan(&observed(at(31)), WORKLOADS)),
            vec![format!(
                "delete service {} h1",
                host_service_name("shop", "web")
            )]
        );
        // Its tenant Service stored: the next apply records the UID.
        let stored = Observed {
            tenant_services: vec![tenant_web()],
            ..observed(at(5))
        };
        let actions = plan(&stored, WORKLOADS);
        let [Action::ApplyService(applied)] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        assert_eq!(
            applied.annotations()[TENANT_OBJECT_UID_ANNOTATION],
            "u-web".to_owned()
        );
    }

    #[test]
    fn a_host_service_of_an_earlier_twin_goes_before_the_new_one_is_made() {
        let tenant = tenant_web();
        let mut earlier = tenant.clone();
        earlier.metadata.uid = Some("u-old".to_owned());
        let observed = Observed {
            host_services: vec![host_twin(&earlier, "h-old")],
            tenant_services: vec![tenant],
            now: at(100),
            ..Observed::default()
        };
        assert_eq!(
            names(&plan(&observed, WORKLOADS)),
            vec![format!(
                "delete service {} h-old",
                host_service_name("shop", "web")
            )]
        );
    }

    #[test]
    fn what_is_not_ours_is_never_touched() {
        let tenant = tenant_web();
        let mut foreign = host_twin(&tenant, "h1");
        foreign
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.to_owned(), "someone-else".to_owned());
        let mut other = foreign.clone();
        other.metadata.name = Some("unrelated".to_owned());
        let observed = Observed {
            host_services: vec![foreign, other],
            tenant_services: vec![tenant],
            now: at(100),
            ..Observed::default()
        };
        assert_eq!(
            names(&plan(&observed, WORKLOADS)),
            vec![format!("foreign {}", host_service_name("shop", "web"))]
        );
        assert_ne!(CLUSTERTREE_MANAGED_BY_VALUE, "someone-else");
    }

    #[test]
    fn headless_services_get_nothing_and_lose_what_they_had() {
        let tenant = tenant_web();
        let host = host_twin(&tenant, "h1");
        let headless = service(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-web"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }));
        let observed = Observed {
            host_services: vec![host],
            tenant_services: vec![headless],
            tenant_slices: vec![slice("web-a", "web", "s1", "10.244.0.5")],
            now: at(100),
            ..Observed::default()
        };
        assert_eq!(
            names(&plan(&observed, WORKLOADS)),
            vec![format!(
                "delete service {} h1",
                host_service_name("shop", "web")
            )]
        );
    }
}

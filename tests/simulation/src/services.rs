//! What the service and endpoint controllers and a cloud load balancer would write:
//! `status.loadBalancer.ingress` for LoadBalancer Services (the Service's own cluster IP,
//! a loopback address on which the test API server also serves tenant apiservers), and
//! Endpoints plus one EndpointSlice per Service with a selector, from the matching Pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{SimError, SimHandle, wait_for_next_pass, watch_store};

/// Label the endpoints controller puts on the Endpoints it manages.
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// Its value.
pub const ENDPOINTS_MANAGED_BY: &str = "endpoint-controller";
/// Label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming an EndpointSlice's manager.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Its value for slices the endpointslice controller owns.
pub const SLICE_MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// How the service simulator behaves.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Give LoadBalancer Services an ingress address.
    pub load_balancers: bool,
    /// Maintain Endpoints and EndpointSlices (turn off against a real
    /// kube-controller-manager, whose controllers already do it).
    pub endpoints: bool,
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    pub resync: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            load_balancers: true,
            endpoints: true,
            namespace: None,
            resync: Duration::from_secs(2),
        }
    }
}

/// One backend address of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: String,
    pub pod: String,
    pub uid: String,
    pub node: Option<String>,
    pub ready: bool,
    /// Resolved (name, port, protocol) for every Service port this pod serves.
    pub ports: Vec<(String, i32, String)>,
}

/// The backends of `service` among `pods`: pods with an IP that match the selector and
/// are not terminating.
pub fn backends(service: &Service, pods: &[Arc<Pod>]) -> Vec<Backend> {
    let Some(selector) = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let namespace = service.namespace().unwrap_or_default();
    let service_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut result: Vec<Backend> = pods
        .iter()
        .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| selector.iter().all(|(k, v)| pod.labels().get(k) == Some(v)))
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ports = service_ports
                .iter()
                .filter_map(|port| resolve_port(port, pod))
                .collect();
            Some(Backend {
                ip,
                pod: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                ready,
                ports,
            })
        })
        .collect();
    result.sort();
    result
}

/// A Service port's target on one pod: a number, or a named container port.
fn resolve_port(port: &ServicePort, pod: &Pod) -> Option<(String, i32, String)> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    Some((
        port.name.clone().unwrap_or_default(),
        number,
        port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
    ))
}

/// Endpoints as the endpoints controller writes them: one subset per distinct port set.
pub fn endpoints_for(service: &Service, backends: &[Backend]) -> Value {
    /// Ready and not-ready addresses of one port set.
    type Addresses = (Vec<Value>, Vec<Value>);
    let mut subsets: BTreeMap<Vec<(String, i32, String)>, Addresses> = BTreeMap::new();
    for backend in backends.iter().filter(|b| !b.ports.is_empty()) {
        let address = json!({
            "ip": backend.ip,
            "nodeName": backend.node,
            "targetRef": {"kind": "Pod", "name": backend.pod, "namespace": service.namespace(), "uid": backend.uid},
        });
        let entry = subsets.entry(backend.ports.clone()).or_default();
        if backend.ready {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
                .collect();
            json!({
                "addresses": if ready.is_empty() { Value::Null } else { json!(ready) },
                "notReadyAddresses": if not_ready.is_empty() { Value::Null } else { json!(not_ready) },
                "ports": ports,
            })
        })
        .collect();
    let mut labels = service.labels().clone();
    labels.insert(
        ENDPOINTS_MANAGED_BY_LABEL.to_owned(),
        ENDPOINTS_MANAGED_BY.to_owned(),
    );
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": service.name_any(), "namespace": service.namespace(), "labels": labels},
        "subsets": if subsets.is_empty() { Value::Null } else { json!(subsets) },
    })
}

/// The EndpointSlice body (without name) as the endpointslice controller writes it.
pub fn endpoint_slice_for(service: &Service, backends: &[Backend]) -> Value {
    let endpoints: Vec<Value> = backends
        .iter()
        .map(|b| {
            json!({
                "addresses": [b.ip],
                "conditions": {"ready": b.ready, "serving": b.ready, "terminating": false},
                "nodeName": b.node,
                "targetRef": {"kind": "Pod", "name": b.pod, "namespace": service.namespace(), "uid": b.uid},
            })
        })
        .collect();
    let ports: Vec<Value> = backends
        .iter()
        .flat_map(|b| b.ports.iter())
        .map(|(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
        .fold(Vec::new(), |mut unique, port| {
            if !unique.contains(&port) {
                unique.push(port);
            }
            unique
        });
    let mut labels = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), service.name_any());
    labels.insert(
        SLICE_MANAGED_BY_LABEL.to_owned(),
        SLICE_MANAGED_BY.to_owned(),
    );
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "namespace": service.namespace(),
            "generateName": format!("{}-", service.name_any()),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": service.name_any(),
                "uid": service.uid(), "controller": true, "blockOwnerDeletion": true
            }]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// The load-balancer address a LoadBalancer Service gets: its cluster IP.
pub fn load_balancer_ip(service: &Service) -> Option<String> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    spec.cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}

/// Starts the service simulator.
pub fn spawn(client: Client, options: ServiceOptions) -> SimHandle {
    let notify = Arc::new(Notify::new());
    let namespaced = |ns: &Option<String>| ns.clone();
    let ns = namespaced(&options.namespace);
    let api = |client: &Client| match &ns {
        Some(ns) => (
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Endpoints>::namespaced(client.clone(), ns),
            Api::<EndpointSlice>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (services_api, pods_api, endpoints_api, slices_api) = api(&client);
    let (services, t1) = watch_store(services_api, watcher::Config::default(), notify.clone());
    let mut tasks = vec![t1];
    let stores = if options.endpoints {
        let (pods, t2) = watch_store(pods_api, watcher::Config::default(), notify.clone());
        let (endpoints, t3) =
            watch_store(endpoints_api, watcher::Config::default(), notify.clone());
        let slice_config = watcher::Config::default()
            .labels(&format!("{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGED_BY}"));
        let (slices, t4) = watch_store(slices_api, slice_config, notify.clone());
        tasks.extend([t2, t3, t4]);
        Some((pods, endpoints, slices))
    } else {
        None
    };
    let sim = ServiceSim {
        client,
        options,
        services,
        stores,
    };
    let resync = sim.options.resync;
    tasks.push(tokio::spawn(async move {
        if sim.wait_ready().await {
            loop {
                let next = sim.pass().await;
                wait_for_next_pass(&notify, next, resync).await;
            }
        }
    }));
    SimHandle::new(tasks)
}

struct ServiceSim {
    client: Client,
    options: ServiceOptions,
    services: Store<Service>,
    stores: Option<(Store<Pod>, Store<Endpoints>, Store<EndpointSlice>)>,
}

impl ServiceSim {
    async fn wait_ready(&self) -> bool {
        let others = match &self.stores {
            Some((p, e, s)) => {
                p.wait_until_ready().await.is_ok()
                    && e.wait_until_ready().await.is_ok()
                    && s.wait_until_ready().await.is_ok()
            }
            None => true,
        };
        self.services.wait_until_ready().await.is_ok() && others
    }

    async fn pass(&self) -> Option<tokio::time::Instant> {
        let services = self.services.state();
        for service in &services {
            if let Err(error) = self.reconcile(service).await {
                super::report_error("service simulation step failed; retrying on resync", &error);
            }
        }
        if let Err(error) = self.remove_orphaned_endpoints(&services).await {
            super::report_error("removing endpoints of deleted services failed", &error);
        }
        None
    }

    async fn reconcile(&self, service: &Service) -> Result<(), SimError> {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        if self.options.load_balancers {
            self.reconcile_load_balancer(service, &namespace, &name)
                .await?;
        }
        let Some((pods, endpoints, slices)) = &self.stores else {
            return Ok(());
        };
        if service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(BTreeMap::is_empty)
        {
            return Ok(());
        }
        let backends = backends(service, &pods.state());
        let desired = without_nulls(endpoints_for(service, &backends));
        let existing = endpoints
            .state()
            .into_iter()
            .find(|e| e.namespace().as_deref() == Some(namespace.as_str()) && e.name_any() == name);
        let api = Api::<Endpoints>::namespaced(self.client.clone(), &namespace);
        let write_error = |source: kube::Error| SimError::WriteEndpoints {
            namespace: namespace.clone(),
            name: name.clone(),
            source: Box::new(source),
        };
        let patch = json!({"metadata": {"labels": desired["metadata"]["labels"]}, "subsets": desired["subsets"]});
        match existing {
            None => {
                let body: Endpoints = serde_json::from_value(desired).unwrap_or_default();
                match api.create(&PostParams::default(), &body).await {
                    Ok(_) => {}
                    // An earlier pass created them and the watch has not delivered that
                    // yet (a loaded machine): write this pass's addresses anyway, or
                    // the slice written next would run ahead of the Endpoints.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(drop)
                            .map_err(write_error)?;
                    }
                    Err(other) => return Err(write_error(other)),
                }
            }
            Some(current) => {
                let current_value = serde_json::to_value(&current.subsets).unwrap_or(Value::Null);
                let labels_match = desired["metadata"]["labels"]
                    == serde_json::to_value(current.labels()).unwrap_or(Value::Null);
                if current_value != desired["subsets"] || !labels_match {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(drop)
                        .map_err(write_error)?;
                }
            }
        }
        // Endpoints first, slice second: a reader that sees an address in the slice
        // finds it in the Endpoints too.
        self.reconcile_slice(service, &namespace, &name, &backends, slices)
            .await
    }

    async fn reconcile_load_balancer(
        &self,
        service: &Service,
        namespace: &str,
        name: &str,
    ) -> Result<(), SimError> {
        let Some(ip) = load_balancer_ip(service) else {
            return Ok(());
        };
        let current = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|ingress| ingress.first())
            .and_then(|i| i.ip.clone());
        if current.as_deref() == Some(ip.as_str()) {
            return Ok(());
        }
        let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| SimError::WriteServiceStatus {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            })
    }

    async fn reconcile_slice(
        &self,
        service: &Service,
        namespace: &str,
        name: &str,
        backends: &[Backend],
        slices: &Store<EndpointSlice>,
    ) -> Result<(), SimError> {
        let desired = without_nulls(endpoint_slice_for(service, backends));
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), namespace);
        let write_error = |source: kube::Error| SimError::WriteEndpointSlice {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        };
        let mut ours: Vec<Arc<EndpointSlice>> = slices
            .state()
            .into_iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(namespace)
                    && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
            })
            .collect();
        if ours.is_empty() {
            // Slices have generated names, so creating one again never conflicts: ask the
            // API server, not the cache, whether an earlier pass already created it (its
            // watch event may not have arrived yet on a loaded machine).
            let selector =
                format!("{SERVICE_NAME_LABEL}={name},{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGED_BY}");
            ours = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(write_error)?
                .items
                .into_iter()
                .map(Arc::new)
                .collect();
        }
        // One slice per Service (this simulator never needs more than one): keep the
        // first by name, so every pass picks the same one, and remove the others, so
        // readers adding up every slice count each pod once.
        ours.sort_by_key(|s| s.name_any());
        for duplicate in ours.iter().skip(1) {
            api.delete(&duplicate.name_any(), &DeleteParams::default())
                .await
                .map(drop)
                .or_else(ignore_not_found)
                .map_err(write_error)?;
        }
        match ours.first() {
            None => {
                let body: EndpointSlice =
                    serde_json::from_value(desired).unwrap_or_else(|_| EndpointSlice {
                        address_type: "IPv4".to_owned(),
                        ..EndpointSlice::default()
                    });
                api.create(&PostParams::default(), &body)
                    .await
                    .map(drop)
                    .map_err(write_error)
            }
            Some(current) => {
                let same_endpoints = serde_json::to_value(&current.endpoints)
                    .unwrap_or(Value::Null)
                    == desired["endpoints"];
                let same_ports = serde_json::to_value(current.ports.clone().unwrap_or_default())
                    .unwrap_or(Value::Null)
                    == desired["ports"];
                if same_endpoints && same_ports {
                    return Ok(());
                }
                let patch = json!({"endpoints": desired["endpoints"], "ports": desired["ports"]});
                api.patch(
                    &current.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map(drop)
                .map_err(write_error)
            }
        }
    }

    /// Endpoints have no owner: the endpoints controller deletes them with their Service.
    async fn remove_orphaned_endpoints(&self, services: &[Arc<Service>]) -> Result<(), SimError> {
        let Some((_, endpoints, _)) = &self.stores else {
            return Ok(());
        };
        for orphan in endpoints.state().iter().filter(|e| {
            e.labels()
                .get(ENDPOINTS_MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(ENDPOINTS_MANAGED_BY)
                && !services
                    .iter()
                    .any(|s| s.namespace() == e.namespace() && s.name_any() == e.name_any())
        }) {
            let namespace = orphan.namespace().unwrap_or_default();
            Api::<Endpoints>::namespaced(self.client.clone(), &namespace)
                .delete(&orphan.name_any(), &DeleteParams::default())
                .await
                .map(drop)
                .or_else(ignore_not_found)
                .map_err(|source| SimError::WriteEndpoints {
                    namespace,
                    name: orphan.name_any(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }
}

/// The JSON an API server returns for `value`: absent optional fields are omitted, not
/// null, so comparisons with what is stored see no false difference.
pub fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn ignore_not_found(error: kube::Error) -> Result<(), kube::Error> {
    match error {
        kube::Error::Api(status) if status.code == 404 => Ok(()),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(selector: Value, ports: Value, type_: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"selector": selector, "ports": ports, "type": type_, "clusterIP": "127.100.0.7"}
        }))
        .unwrap()
    }

    fn pod(name: &str, labels: Value, ip: Option<&str>, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "labels": labels},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn backends_are_selected_pods_with_resolved_ports() {
        let svc = service(
            json!({"app": "web"}),
            json!([{"name": "http", "port": 80, "targetPort": "http"}, {"name": "raw", "port": 90, "targetPort": 9090}]),
            "ClusterIP",
        );
        let pods = vec![
            pod("a", json!({"app": "web"}), Some("127.200.0.1"), true),
            pod("b", json!({"app": "web"}), Some("127.200.0.2"), false),
            pod("c", json!({"app": "web"}), None, false),
            pod("d", json!({"app": "db"}), Some("127.200.0.4"), true),
        ];
        let found = backends(&svc, &pods);
        let names: Vec<&str> = found.iter().map(|b| b.pod.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            found[0].ports,
            vec![
                ("http".to_owned(), 8080, "TCP".to_owned()),
                ("raw".to_owned(), 9090, "TCP".to_owned())
            ]
        );
        let endpoints = endpoints_for(&svc, &found);
        assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.200.0.1");
        assert_eq!(
            endpoints["subsets"][0]["notReadyAddresses"][0]["ip"],
            "127.200.0.2"
        );
        assert_eq!(
            endpoints["metadata"]["labels"][ENDPOINTS_MANAGED_BY_LABEL],
            ENDPOINTS_MANAGED_BY
        );
        let slice = endpoint_slice_for(&svc, &found);
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slice["ports"].as_array().unwrap().len(), 2);
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
    }

    #[test]
    fn services_without_selector_or_pods_have_no_subsets() {
        let svc = service(Value::Null, json!([{"port": 80}]), "ClusterIP");
        assert!(backends(&svc, &[pod("a", json!({}), Some("127.200.0.1"), true)]).is_empty());
        assert_eq!(endpoints_for(&svc, &[])["subsets"], Value::Null);
    }

    #[test]
    fn nulls_are_dropped_at_every_depth() {
        assert_eq!(
            without_nulls(json!({"a": null, "b": [{"c": null, "d": 1}], "e": {"f": null}})),
            json!({"b": [{"d": 1}], "e": {}})
        );
    }

    #[test]
    fn only_load_balancers_get_an_ingress_address() {
        assert_eq!(
            load_balancer_ip(&service(Value::Null, json!([]), "LoadBalancer")).as_deref(),
            Some("127.100.0.7")
        );
        assert_eq!(
            load_balancer_ip(&service(Value::Null, json!([]), "ClusterIP")),
            None
        );
    }
}

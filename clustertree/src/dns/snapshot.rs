//! What the tenant DNS answers from: the tenant's Services and EndpointSlices reduced to
//! the facts the Kubernetes DNS specification turns into records. Built whole from the
//! watch caches after each change, so a query reads one consistent picture and never
//! waits on the apiserver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The port `kubernetes.default.svc` answers on, as in every cluster.
pub const KUBERNETES_PORT: u16 = 443;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The tenant's Services, by lowercase namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The SOA serial: changes whenever the content may have, so secondary caches of
    /// negative answers can tell.
    pub serial: u32,
    pub services: BTreeMap<(String, String), ServiceEntry>,
    /// Every address some record points at, to the names pointing at it (for PTR).
    pub reverse: HashMap<IpAddr, BTreeSet<Owner>>,
}

/// The name a PTR record answers with: `SERVICE.NS.svc.ZONE`, or
/// `HOSTNAME.SERVICE.NS.svc.ZONE` for an endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub hostname: Option<String>,
    pub service: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    /// The Service's named ports: SRV records of a ClusterIP Service.
    pub ports: Vec<NamedPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// The cluster IPs, one per family.
    ClusterIp(Vec<IpAddr>),
    /// The ready endpoints (with `publishNotReadyAddresses`, every endpoint).
    Headless(Vec<Endpoint>),
    /// The lowercase external name, without a trailing dot.
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's `hostname`, else its first address with `.` and `:` as `-`
    /// (as CoreDNS names them), so every endpoint has a name an SRV record can target.
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    /// The named ports of its EndpointSlice: where a headless Service's clients connect.
    pub ports: Vec<NamedPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// Lowercase.
    pub name: String,
    /// Lowercase: `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
}

impl Snapshot {
    /// Reduces Services and EndpointSlices to records. Objects the apiserver would not
    /// have admitted (bad IPs, ports out of range) lose only the affected record.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        serial: u32,
    ) -> Self {
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(namespace) = slice.metadata.namespace.as_deref() else {
                continue;
            };
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            by_service
                .entry((namespace.to_lowercase(), service.to_lowercase()))
                .or_default()
                .push(slice);
        }
        let mut snapshot = Snapshot {
            serial,
            ..Snapshot::default()
        };
        for service in services {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) else {
                continue;
            };
            if service.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let key = (namespace.to_lowercase(), name.to_lowercase());
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            let Some(entry) = service_entry(service, slices) else {
                continue;
            };
            let owner = |hostname: Option<&str>| Owner {
                hostname: hostname.map(str::to_owned),
                service: key.1.clone(),
                namespace: key.0.clone(),
            };
            match &entry.kind {
                ServiceKind::ClusterIp(ips) => {
                    for ip in ips {
                        snapshot.reverse.entry(*ip).or_default().insert(owner(None));
                    }
                }
                ServiceKind::Headless(endpoints) => {
                    for endpoint in endpoints {
                        for ip in &endpoint.addresses {
                            snapshot
                                .reverse
                                .entry(*ip)
                                .or_default()
                                .insert(owner(Some(&endpoint.hostname)));
                        }
                    }
                }
                ServiceKind::ExternalName(_) => {}
            }
            snapshot.services.insert(key, entry);
        }
        snapshot
    }

    /// Makes `kubernetes.default.svc` answer `apiserver` on port 443 (`https`), whatever
    /// the tenant's own `default/kubernetes` Service says. That Service's cluster IP is
    /// the tenant's, and on the host the same address is the host's `kubernetes` Service,
    /// whose certificate is of another CA; `apiserver` is the host cluster IP of the
    /// tenant apiserver's Service, which serves 443 for exactly this name.
    pub fn pin_kubernetes(&mut self, apiserver: IpAddr) {
        let key = ("default".to_owned(), "kubernetes".to_owned());
        for owners in self.reverse.values_mut() {
            owners.retain(|owner| (&owner.namespace, &owner.service) != (&key.0, &key.1));
        }
        self.reverse.retain(|_, owners| !owners.is_empty());
        self.reverse.entry(apiserver).or_default().insert(Owner {
            hostname: None,
            service: key.1.clone(),
            namespace: key.0.clone(),
        });
        self.services.insert(
            key,
            ServiceEntry {
                kind: ServiceKind::ClusterIp(vec![apiserver]),
                ports: vec![NamedPort {
                    name: "https".to_owned(),
                    protocol: "tcp".to_owned(),
                    port: KUBERNETES_PORT,
                }],
            },
        );
    }

    /// Whether some Service lives in `namespace` (lowercase): `NS.svc.ZONE` exists then.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.services
            .range((namespace.to_owned(), String::new())..)
            .next()
            .is_some_and(|((ns, _), _)| ns == namespace)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }
}

fn service_entry(service: &Service, slices: &[&EndpointSlice]) -> Option<ServiceEntry> {
    let spec = service.spec.as_ref()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| named_port(port.name.as_deref(), port.protocol.as_deref(), port.port))
        .collect();
    if spec.type_.as_deref() == Some("ExternalName") {
        let external = spec.external_name.as_deref()?.trim_end_matches('.');
        if external.is_empty() {
            return None;
        }
        return Some(ServiceEntry {
            kind: ServiceKind::ExternalName(external.to_lowercase()),
            ports,
        });
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        return Some(ServiceEntry {
            kind: ServiceKind::Headless(endpoints(slices, publish_not_ready)),
            ports,
        });
    }
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    dedup(&mut ips);
    // A Service not yet given an IP has no record: NXDOMAIN until it has.
    (!ips.is_empty()).then_some(ServiceEntry {
        kind: ServiceKind::ClusterIp(ips),
        ports,
    })
}

fn named_port(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<NamedPort> {
    let name = name.filter(|name| !name.is_empty())?;
    Some(NamedPort {
        name: name.to_lowercase(),
        protocol: protocol.unwrap_or("TCP").to_lowercase(),
        port: u16::try_from(port).ok()?,
    })
}

fn endpoints(slices: &[&EndpointSlice], publish_not_ready: bool) -> Vec<Endpoint> {
    // Merged by hostname: the IPv4 and IPv6 slices of one pod name the same hostname, and
    // the specification wants one record per address of that hostname.
    let mut merged: BTreeMap<String, Endpoint> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: Vec<NamedPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                named_port(port.name.as_deref(), port.protocol.as_deref(), port.port?)
            })
            .collect();
        for endpoint in &slice.endpoints {
            // The API says an unset `ready` means ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.ready)
                .unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            let addresses: Vec<IpAddr> = endpoint
                .addresses
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let Some(first) = addresses.first() else {
                continue;
            };
            let hostname = endpoint
                .hostname
                .as_deref()
                .filter(|hostname| !hostname.is_empty())
                .map(str::to_lowercase)
                .unwrap_or_else(|| dashed(first));
            let entry = merged.entry(hostname.clone()).or_insert_with(|| Endpoint {
                hostname,
                addresses: Vec::new(),
                ports: Vec::new(),
            });
            entry.addresses.extend(addresses);
            dedup(&mut entry.addresses);
            for port in &ports {
                if !entry.ports.contains(port) {
                    entry.ports.push(port.clone());
                }
            }
        }
    }
    merged.into_values().collect()
}

/// An address as one DNS label: `10-0-0-1`, `fd00--1`.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn dedup(ips: &mut Vec<IpAddr>) {
    let mut seen = BTreeSet::new();
    ips.retain(|ip| seen.insert(*ip));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    pub(crate) fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_headless_service_keeps_only_ready_endpoints_merged_by_hostname() {
        let services = [service(json!({
            "metadata": {"name": "DB", "namespace": "Apps"},
            "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]},
        }))];
        let slices = [
            slice(json!({
                "metadata": {"name": "db-v4", "namespace": "Apps", "labels": {SERVICE_NAME_LABEL: "DB"}},
                "addressType": "IPv4",
                "ports": [{"name": "SQL", "port": 5433, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.2"], "conditions": {}},
                    {"addresses": ["10.1.0.3"], "hostname": "db-2", "conditions": {"ready": false}},
                ],
            })),
            slice(json!({
                "metadata": {"name": "db-v6", "namespace": "Apps", "labels": {SERVICE_NAME_LABEL: "DB"}},
                "addressType": "IPv6",
                "endpoints": [{"addresses": ["fd00::1"], "hostname": "db-0"}],
            })),
        ];
        let snapshot = Snapshot::build(&services, &slices, 1);
        let entry = snapshot.service("apps", "db").unwrap();
        let ServiceKind::Headless(endpoints) = &entry.kind else {
            panic!("not headless: {entry:?}");
        };
        let summary: Vec<(&str, Vec<String>)> = endpoints
            .iter()
            .map(|e| {
                (
                    e.hostname.as_str(),
                    e.addresses.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("10-1-0-2", vec!["10.1.0.2".to_owned()]),
                ("db-0", vec!["10.1.0.1".to_owned(), "fd00::1".to_owned()]),
            ]
        );
        assert_eq!(endpoints[1].ports[0].port, 5433);
        assert!(snapshot.has_namespace("apps"));
        assert!(!snapshot.has_namespace("app"));
        assert!(!snapshot.reverse.contains_key(&"10.1.0.3".parse().unwrap()));
    }

    #[test]
    fn publish_not_ready_addresses_keeps_unready_endpoints() {
        let services = [service(json!({
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true},
        }))];
        let slices = [slice(json!({
            "metadata": {"name": "db", "namespace": "apps", "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.3"], "conditions": {"ready": false}}],
        }))];
        let snapshot = Snapshot::build(&services, &slices, 1);
        assert!(snapshot.reverse.contains_key(&"10.1.0.3".parse().unwrap()));
    }

    #[test]
    fn a_service_without_an_ip_yet_and_a_terminating_one_have_no_entry() {
        let services = [
            service(json!({"metadata": {"name": "new", "namespace": "a"}, "spec": {}})),
            service(json!({
                "metadata": {"name": "gone", "namespace": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"clusterIP": "10.0.0.9"},
            })),
        ];
        let snapshot = Snapshot::build(&services, &[], 1);
        assert!(snapshot.services.is_empty());
    }
}

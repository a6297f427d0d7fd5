//! Per-kind behaviour of built-in resources that kube-apiserver's registry strategies
//! implement: which kinds track `generation`, which drop `status` on create, the
//! defaults clients rely on, name rules, and Service address allocation.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use base64::Engine as _;
use serde_json::{Value, json};

use super::registry::ResourceType;
use super::status::{Cause, field_invalid};

fn is(rt: &ResourceType, group: &str, plural: &str) -> bool {
    rt.group == group && rt.plural == plural
}

/// Kinds whose `metadata.generation` is maintained (spec changes bump it).
pub fn tracks_generation(rt: &ResourceType) -> bool {
    rt.crd.is_some()
        || matches!(
            (rt.group.as_str(), rt.plural.as_str()),
            ("apps", _)
                | ("batch", _)
                | ("policy", "poddisruptionbudgets")
                | ("autoscaling", _)
                | ("apiextensions.k8s.io", _)
                | ("admissionregistration.k8s.io", _)
                | ("networking.k8s.io", "ingresses")
                | ("networking.k8s.io", "networkpolicies")
                | ("", "pods")
                | ("", "replicationcontrollers")
                | ("storage.k8s.io", "volumeattributesclasses")
        )
}

/// Whether `status` of the main resource is reset on create (status has its own writers).
pub fn drops_status_on_create(rt: &ResourceType) -> bool {
    rt.status_subresource && !is(rt, "", "nodes") && !is(rt, "", "namespaces")
}

/// The fields that are not spec for generation purposes.
const NON_SPEC: &[&str] = &["metadata", "status", "apiVersion", "kind"];

/// True when anything but metadata and status differs (the generation rule).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !NON_SPEC.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    strip(old) != strip(new)
}

/// Name validation: the rule each kind's strategy applies.
pub fn validate_name(rt: &ResourceType, name: &str) -> Option<Cause> {
    let value = Value::String(name.to_string());
    if is(rt, "", "namespaces") || is(rt, "", "services") {
        if !is_dns1123_label(name) {
            return Some(field_invalid(
                "metadata.name",
                &value,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
        return None;
    }
    if rt.group == "rbac.authorization.k8s.io" {
        if name.contains('/') || name.contains('%') || name == "." || name == ".." {
            return Some(field_invalid(
                "metadata.name",
                &value,
                "may not contain '/' or '%'",
            ));
        }
        return None;
    }
    if !is_dns1123_subdomain(name) {
        return Some(field_invalid(
            "metadata.name",
            &value,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    None
}

/// What kube-apiserver's pod validation refuses that a simulator once wrote: a
/// container mounting a volume the pod does not declare (a StatefulSet pod built without
/// its claim volume). One cause per such mount, worded as the real one.
pub fn validate_pod_volume_mounts(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    if !is(rt, "", "pods") {
        return Vec::new();
    }
    let Some(spec) = obj.get("spec") else {
        return Vec::new();
    };
    let declared: std::collections::BTreeSet<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.get("name")?.as_str())
        .collect();
    let mut causes = Vec::new();
    for list in ["initContainers", "containers"] {
        let containers = spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (index, container) in containers.enumerate() {
            let mounts = container
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for (mount_index, mount) in mounts.enumerate() {
                let name = mount
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !declared.contains(name) {
                    causes.push(Cause {
                        reason: "FieldValueNotFound".to_string(),
                        message: format!("Not found: {name:?}"),
                        field: format!("spec.{list}[{index}].volumeMounts[{mount_index}].name"),
                    });
                }
            }
        }
    }
    causes
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Creation-time defaults and status resets of built-in kinds.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    if drops_status_on_create(rt)
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
            let finalizers = obj
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!(["kubernetes"]));
            obj["spec"] = json!({"finalizers": finalizers});
        }
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "secrets") => default_secret(obj),
        ("apps", "deployments") => {
            default_field(obj, "/spec/replicas", json!(1));
            default_field(obj, "/spec/revisionHistoryLimit", json!(10));
            default_field(obj, "/spec/progressDeadlineSeconds", json!(600));
            default_field(
                obj,
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        ("apps", "statefulsets") => {
            default_field(obj, "/spec/replicas", json!(1));
            default_field(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
            default_field(obj, "/spec/revisionHistoryLimit", json!(10));
            default_field(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        _ => {}
    }
}

/// Update-time normalisation that must also run on every write (secrets' stringData).
pub fn prepare_update(rt: &ResourceType, obj: &mut Value) {
    if is(rt, "", "secrets") {
        default_secret(obj);
    }
}

fn default_secret(obj: &mut Value) {
    default_field(obj, "/type", json!("Opaque"));
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default().to_string();
                data.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
}

fn default_field(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return;
        }
        cur = map.entry((*part).to_string()).or_insert_with(|| json!({}));
    }
}

/// Service cluster IPs from a range and node ports from 30000-32767.
#[derive(Debug)]
pub struct ServiceAllocator {
    base: u32,
    size: u32,
    used_ips: BTreeSet<u32>,
    used_ports: BTreeSet<i64>,
    next_ip: u32,
    next_port: i64,
}

/// Parses `a.b.c.d/len` into (base, size).
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if !(8..=30).contains(&len) {
        return None;
    }
    let mask = u32::MAX << (32 - len);
    Some((Ipv4Addr::from(u32::from(ip) & mask), 1 << (32 - len)))
}

impl ServiceAllocator {
    pub fn new(base: Ipv4Addr, size: u32) -> Self {
        Self {
            base: u32::from(base),
            size,
            used_ips: BTreeSet::new(),
            used_ports: BTreeSet::new(),
            next_ip: 1,
            next_port: 30000,
        }
    }

    /// Starts handing out cluster IPs at `offset` into the range instead of its first
    /// address. Test servers running side by side on one machine share the loopback
    /// range, and tenant API servers bind their Service's cluster IP, so each server
    /// starts at its own place to keep tenants of parallel tests apart.
    pub fn starting_at(mut self, offset: u32) -> Self {
        let last_usable = self.size.saturating_sub(3).max(1);
        self.next_ip = offset.clamp(1, last_usable);
        self
    }

    fn allocate_ip(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..self.size {
            let offset = self.next_ip;
            self.next_ip = if self.next_ip + 2 >= self.size {
                1
            } else {
                self.next_ip + 1
            };
            if self.used_ips.insert(offset) {
                return Some(Ipv4Addr::from(self.base + offset));
            }
        }
        None
    }

    fn claim_ip(&mut self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.base + self.size && self.used_ips.insert(n - self.base)
    }

    fn allocate_port(&mut self) -> Option<i64> {
        for _ in 0..2768 {
            let port = self.next_port;
            self.next_port = if port >= 32767 { 30000 } else { port + 1 };
            if self.used_ports.insert(port) {
                return Some(port);
            }
        }
        None
    }

    /// Releases what a deleted Service held.
    pub fn release(&mut self, service: &Value) {
        if let Some(ip) = service
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            let n = u32::from(ip);
            if n > self.base && n < self.base + self.size {
                self.used_ips.remove(&(n - self.base));
            }
        }
        for port in service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.get("nodePort").and_then(Value::as_i64) {
                self.used_ports.remove(&p);
            }
        }
    }

    /// Fills Service defaults and allocates its addresses; errors name the field.
    pub fn prepare_service(
        &mut self,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<Cause>> {
        default_field(svc, "/spec/type", json!("ClusterIP"));
        default_field(svc, "/spec/sessionAffinity", json!("None"));
        let svc_type = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type != "ExternalName" {
            default_field(svc, "/spec/ipFamilies", json!(["IPv4"]));
            default_field(svc, "/spec/ipFamilyPolicy", json!("SingleStack"));
            default_field(svc, "/spec/internalTrafficPolicy", json!("Cluster"));
        }
        if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut() {
                default_field(port, "/protocol", json!("TCP"));
                if port.get("targetPort").is_none()
                    && let Some(p) = port.get("port").cloned()
                {
                    port["targetPort"] = p;
                }
            }
        }
        // Keep what an update does not change.
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if svc_type != "ExternalName" {
            match (old_ip, requested.as_str()) {
                (Some(Value::String(prev)), "") => {
                    svc["spec"]["clusterIP"] = json!(prev);
                }
                (Some(_), _) => {}
                (None, "None") => {}
                (None, "") => {
                    let ip = self.allocate_ip().ok_or_else(|| {
                        vec![field_invalid(
                            "spec.clusterIPs",
                            &json!(""),
                            "failed to allocate IP: range is full",
                        )]
                    })?;
                    svc["spec"]["clusterIP"] = json!(ip.to_string());
                }
                (None, ip) => {
                    let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                        vec![field_invalid(
                            "spec.clusterIPs[0]",
                            &json!(ip),
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        )]
                    })?;
                    if !self.claim_ip(parsed) {
                        return Err(vec![field_invalid(
                            "spec.clusterIPs",
                            &json!([ip]),
                            "failed to allocate IP: the provided IP is already allocated or not in the valid range",
                        )]);
                    }
                }
            }
            if let Some(ip) = svc.pointer("/spec/clusterIP").cloned() {
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        if svc_type == "NodePort" || svc_type == "LoadBalancer" {
            default_field(svc, "/spec/externalTrafficPolicy", json!("Cluster"));
            let old_ports: Vec<Value> = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut to_allocate = Vec::new();
            if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for (i, port) in ports.iter_mut().enumerate() {
                    if port.get("nodePort").is_some() {
                        continue;
                    }
                    let kept = old_ports
                        .iter()
                        .find(|o| o.get("port") == port.get("port"))
                        .and_then(|o| o.get("nodePort"))
                        .cloned();
                    match kept {
                        Some(np) => port["nodePort"] = np,
                        None => to_allocate.push(i),
                    }
                }
            }
            for i in to_allocate {
                let np = self.allocate_port().ok_or_else(|| {
                    vec![field_invalid(
                        "spec.ports.nodePort",
                        &json!(0),
                        "failed to allocate port: range is full",
                    )]
                })?;
                svc["spec"]["ports"][i]["nodePort"] = json!(np);
            }
        }
        if old.is_none() {
            default_field(svc, "/status", json!({"loadBalancer": {}}));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_start_stays_inside_the_range_and_wraps() {
        let (base, size) = parse_cidr("127.100.7.0/30").unwrap();
        let mut alloc = ServiceAllocator::new(base, size).starting_at(1000);
        let first = alloc.allocate_ip().unwrap();
        let second = alloc.allocate_ip().unwrap();
        assert_eq!(first, Ipv4Addr::new(127, 100, 7, 1));
        assert_eq!(second, Ipv4Addr::new(127, 100, 7, 2));
        assert_eq!(alloc.allocate_ip(), None, "a /30 has two usable addresses");

        let (base, size) = parse_cidr("127.100.0.0/16").unwrap();
        let mut alloc = ServiceAllocator::new(base, size).starting_at(513);
        assert_eq!(alloc.allocate_ip(), Some(Ipv4Addr::new(127, 100, 2, 1)));
    }

    #[test]
    fn services_get_loopback_cluster_ips_and_node_ports() {
        let (base, size) = parse_cidr("127.100.0.0/16").unwrap();
        let mut alloc = ServiceAllocator::new(base, size);
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 6443}]}});
        alloc.prepare_service(&mut svc, None).unwrap();
        assert_eq!(svc["spec"]["clusterIP"], json!("127.100.0.1"));
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], json!(30000));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(6443));
        let mut again = json!({"spec": {"clusterIP": "127.100.0.1"}});
        assert!(alloc.prepare_service(&mut again, None).is_err());
        alloc.release(&svc);
        let mut reuse = json!({"spec": {"clusterIP": "127.100.0.1"}});
        assert!(alloc.prepare_service(&mut reuse, None).is_ok());
    }

    #[test]
    fn secrets_turn_string_data_into_data() {
        let rt = super::super::registry::Registry::builtin()
            .lookup("", "v1", "secrets")
            .unwrap();
        let mut s = json!({"stringData": {"a": "hi"}});
        prepare_create(&rt, &mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "aGk="}}));
    }

    #[test]
    fn names_follow_rfc1123() {
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(!is_dns1123_label("a.b"));
    }
}

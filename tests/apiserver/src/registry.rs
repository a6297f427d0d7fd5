//! Which resources the server serves: the built-in kinds (taken from a real v1.36
//! apiserver's aggregated discovery, so names, verbs and short names match) plus one entry
//! per served version of every established CustomResourceDefinition.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::status::Details;

static CORE_DISCOVERY: &str = include_str!("aggregated-api.json");
static GROUPS_DISCOVERY: &str = include_str!("aggregated-apis.json");

/// Resources that are not stored objects (reviews, bindings, component status) and that
/// a generic store would answer wrongly; they are not served at all.
const NOT_SERVED: &[&str] = &[
    "bindings",
    "componentstatuses",
    "selfsubjectreviews",
    "tokenreviews",
    "localsubjectaccessreviews",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "subjectaccessreviews",
];

/// A column declared by a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What a CRD version adds to a resource type.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub crd_name: String,
    pub schema: Option<Value>,
    pub printer_columns: Vec<PrinterColumn>,
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub status_subresource: bool,
    pub crd: Option<CrdVersion>,
}

impl ResourceType {
    /// `pods` for the core group, `virtualclusters.kosmos.io` otherwise.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` for the core group, `VirtualCluster.kosmos.io` otherwise.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Objects of every version of a resource share one storage bucket.
    pub fn storage_key(&self) -> StorageKey {
        StorageKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn details(&self, name: Option<&str>) -> Details {
        Details {
            name: name.map(str::to_string),
            group: (!self.group.is_empty()).then(|| self.group.clone()),
            kind: Some(self.plural.clone()),
            ..Details::default()
        }
    }

    fn from_discovery(group: &str, version: &str, entry: &Value) -> Option<Self> {
        let plural = entry.get("resource")?.as_str()?.to_string();
        let kind = entry.pointer("/responseKind/kind")?.as_str()?.to_string();
        let strings = |key: &str| -> Vec<String> {
            entry
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let status_subresource = entry
            .get("subresources")
            .and_then(Value::as_array)
            .is_some_and(|subs| {
                subs.iter()
                    .any(|s| s.get("subresource").and_then(Value::as_str) == Some("status"))
            });
        Some(Self {
            group: group.to_string(),
            version: version.to_string(),
            list_kind: format!("{kind}List"),
            kind,
            singular: entry
                .get("singularResource")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            namespaced: entry.get("scope").and_then(Value::as_str) == Some("Namespaced"),
            short_names: strings("shortNames"),
            categories: strings("categories"),
            verbs: strings("verbs"),
            plural,
            status_subresource,
            crd: None,
        })
    }

    /// The entry of this resource in aggregated discovery (`apidiscovery.k8s.io/v2`).
    pub fn aggregated_entry(&self) -> Value {
        let mut entry = json!({
            "resource": self.plural,
            "responseKind": {"group": "", "version": "", "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        if self.status_subresource {
            entry["subresources"] = json!([{
                "subresource": "status",
                "responseKind": {"group": "", "version": "", "kind": self.kind},
                "verbs": ["get", "patch", "update"],
            }]);
        }
        entry
    }

    /// The entries of this resource in a legacy `APIResourceList`.
    pub fn legacy_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut entries = vec![main];
        if self.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

/// Where the objects of a resource live, whatever version they are read through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    pub group: String,
    pub plural: String,
}

/// A group and its versions, preferred version first.
#[derive(Debug, Clone)]
pub struct GroupVersions {
    pub group: String,
    pub versions: Vec<(String, Vec<Arc<ResourceType>>)>,
}

/// Everything served, with an index by (group, version, plural).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    builtin: Vec<GroupVersions>,
    crds: Vec<(String, Vec<Arc<ResourceType>>)>,
    index: HashMap<(String, String, String), Arc<ResourceType>>,
}

impl Registry {
    /// The built-in kinds of a v1.36 apiserver that a generic store can serve faithfully.
    pub fn builtin() -> Self {
        let mut builtin = Vec::new();
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        for doc in [parse(CORE_DISCOVERY), parse(GROUPS_DISCOVERY)] {
            for group_doc in doc
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let group = group_doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // The preferred (first) version only: the store does no conversion.
                let Some(version_doc) = group_doc.pointer("/versions/0") else {
                    continue;
                };
                let version = version_doc
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let resources: Vec<Arc<ResourceType>> = version_doc
                    .get("resources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| ResourceType::from_discovery(group, version, r))
                    .filter(|r| !NOT_SERVED.contains(&r.plural.as_str()))
                    .map(Arc::new)
                    .collect();
                if !resources.is_empty() {
                    builtin.push(GroupVersions {
                        group: group.to_string(),
                        versions: vec![(version.to_string(), resources)],
                    });
                }
            }
        }
        let mut registry = Self {
            builtin,
            crds: Vec::new(),
            index: HashMap::new(),
        };
        registry.reindex();
        registry
    }

    fn reindex(&mut self) {
        self.index.clear();
        let all = self
            .builtin
            .iter()
            .flat_map(|g| g.versions.iter().flat_map(|(_, rs)| rs.iter()))
            .chain(self.crds.iter().flat_map(|(_, rs)| rs.iter()));
        for rt in all {
            self.index.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                rt.clone(),
            );
        }
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.index
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Any served version of a resource, preferring `version` (used to serve an owner or a
    /// stored object whatever version it was written with).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.index
            .values()
            .find(|rt| rt.group == group && rt.version == version && rt.kind == kind)
            .cloned()
    }

    pub fn by_storage(&self, key: &StorageKey) -> Option<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .find(|rt| rt.group == key.group && rt.plural == key.plural)
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.groups()
            .iter()
            .any(|g| g.group == group && g.versions.iter().any(|(v, _)| v == version))
    }

    /// Every served resource type (one per version).
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.groups()
            .into_iter()
            .flat_map(|g| g.versions.into_iter().flat_map(|(_, rs)| rs))
            .collect()
    }

    /// Groups in discovery order: built-ins first, then CRD groups by name.
    pub fn groups(&self) -> Vec<GroupVersions> {
        let mut groups = self.builtin.clone();
        let mut crd_groups: Vec<GroupVersions> = Vec::new();
        for (_, resources) in &self.crds {
            for rt in resources {
                let group = match crd_groups.iter_mut().find(|g| g.group == rt.group) {
                    Some(g) => g,
                    None => {
                        crd_groups.push(GroupVersions {
                            group: rt.group.clone(),
                            versions: Vec::new(),
                        });
                        let last = crd_groups.len() - 1;
                        &mut crd_groups[last]
                    }
                };
                match group.versions.iter_mut().find(|(v, _)| *v == rt.version) {
                    Some((_, rs)) => rs.push(rt.clone()),
                    None => group.versions.push((rt.version.clone(), vec![rt.clone()])),
                }
            }
        }
        crd_groups.sort_by(|a, b| a.group.cmp(&b.group));
        for group in &mut crd_groups {
            group.versions.sort_by(|a, b| compare_versions(&b.0, &a.0));
        }
        groups.extend(crd_groups);
        groups
    }

    /// Serves (or stops serving, with an empty list) the versions of a CRD.
    pub fn set_crd(&mut self, crd_name: &str, resources: Vec<Arc<ResourceType>>) {
        self.crds.retain(|(name, _)| name != crd_name);
        if !resources.is_empty() {
            self.crds.push((crd_name.to_string(), resources));
        }
        self.reindex();
    }
}

/// Kubernetes version priority: GA > beta > alpha, then by number.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> (u8, u32, u32) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().unwrap_or(0);
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return (3, major, 0);
        }
        let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return (0, 0, 0);
        };
        (stage, major, num.parse().unwrap_or(0))
    }
    rank(a).cmp(&rank(b))
}

/// The resource types a CRD object serves, or an explanation why it cannot be served.
pub fn resource_types_of_crd(crd: &Value) -> Result<Vec<Arc<ResourceType>>, String> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = crd.get("spec").ok_or("spec is required")?;
    let text = |ptr: &str| {
        spec.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let strings = |ptr: &str| -> Vec<String> {
        spec.pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = text("/group");
    let plural = text("/names/plural");
    let kind = text("/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("spec.group, spec.names.plural and spec.names.kind are required".to_string());
    }
    let singular = match text("/names/singular") {
        s if s.is_empty() => kind.to_lowercase(),
        s => s,
    };
    let list_kind = match text("/names/listKind") {
        s if s.is_empty() => format!("{kind}List"),
        s => s,
    };
    let namespaced = text("/scope") != "Cluster";
    let mut out = Vec::new();
    for version in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version_name = version
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                type_: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_string(),
                format: c
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                description: c
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect();
        out.push(Arc::new(ResourceType {
            group: group.clone(),
            version: version_name,
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings("/names/shortNames"),
            categories: strings("/names/categories"),
            verbs: [
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            status_subresource: version.pointer("/subresources/status").is_some(),
            crd: Some(CrdVersion {
                crd_name: name.to_string(),
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
                printer_columns,
            }),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_serves_the_kinds_the_team_needs() {
        let r = Registry::builtin();
        for (g, v, p) in [
            ("", "v1", "namespaces"),
            ("", "v1", "nodes"),
            ("", "v1", "pods"),
            ("", "v1", "secrets"),
            ("", "v1", "services"),
            ("apps", "v1", "deployments"),
            ("apps", "v1", "statefulsets"),
            ("coordination.k8s.io", "v1", "leases"),
            ("rbac.authorization.k8s.io", "v1", "clusterroles"),
            (
                "admissionregistration.k8s.io",
                "v1",
                "validatingwebhookconfigurations",
            ),
            ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            ("events.k8s.io", "v1", "events"),
            ("policy", "v1", "poddisruptionbudgets"),
            ("discovery.k8s.io", "v1", "endpointslices"),
        ] {
            assert!(r.lookup(g, v, p).is_some(), "{g}/{v}/{p} not served");
        }
        assert!(r.lookup("", "v1", "bindings").is_none());
        let nodes = r.lookup("", "v1", "nodes").unwrap();
        assert!(!nodes.namespaced);
        assert!(nodes.status_subresource);
        assert_eq!(nodes.short_names, vec!["no"]);
    }

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by(|a, b| compare_versions(b, a));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}

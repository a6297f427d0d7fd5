//! Building the VirtualCluster that `create` sends, from flags or from a manifest.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use vc_api::constants::{API_VERSION, KIND};
use vc_api::{PromoteResources, ResourceQuantity, VirtualCluster, VirtualClusterSpec};

/// Why the VirtualCluster to create cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The name is not a DNS label.
    #[error(
        "name \"{0}\" is not valid: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    CheckName(String),
    /// The same resource is given twice, such as `--cpu 2 --resource cpu=4`.
    #[error("resource \"{0}\" is given twice; give it once, with --{0} or --resource {0}=QUANTITY")]
    CheckResources(String),
    /// A node name repeats.
    #[error("node \"{0}\" is listed twice in --nodes")]
    CheckNodes(String),
    /// The manifest is not YAML/JSON of a VirtualCluster.
    #[error("{source_name} is not a VirtualCluster manifest: {reason}")]
    ParseManifest {
        /// The file name, or `standard input`.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The manifest is of another kind.
    #[error("{source_name} holds {found}, not a {API_VERSION} {KIND}")]
    CheckKind {
        /// The file name.
        source_name: String,
        /// `apiVersion/kind` found.
        found: String,
    },
    /// Neither NAME nor `metadata.name` is given.
    #[error("{source_name} has no metadata.name; add one or pass NAME")]
    FindName {
        /// The file name.
        source_name: String,
    },
    /// NAME differs from `metadata.name`.
    #[error(
        "NAME \"{argument}\" differs from metadata.name \"{manifest}\" in {source_name}; drop one of them"
    )]
    CompareName {
        /// The file name.
        source_name: String,
        /// NAME.
        argument: String,
        /// `metadata.name`.
        manifest: String,
    },
    /// `-n` differs from `metadata.namespace`, refused as kubectl refuses it.
    #[error(
        "the namespace from the provided object \"{manifest}\" does not match the namespace \"{flag}\"; pass --namespace={manifest} or remove metadata.namespace"
    )]
    CompareNamespace {
        /// `metadata.namespace`.
        manifest: String,
        /// `-n`.
        flag: String,
    },
}

/// The build flags of `create`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateFlags {
    /// `--nodes`.
    pub nodes: Vec<String>,
    /// `--cpu`.
    pub cpu: Option<String>,
    /// `--memory`.
    pub memory: Option<String>,
    /// `--resource NAME=QTY`.
    pub resources: Vec<(String, String)>,
    /// `--kubernetes-version`.
    pub kubernetes_version: Option<String>,
}

/// A VirtualCluster from `create` flags.
pub fn from_flags(
    name: &str,
    namespace: &str,
    flags: &CreateFlags,
) -> Result<VirtualCluster, BuildError> {
    if !vc_api::admission::is_dns1123_label(name) {
        return Err(BuildError::CheckName(name.to_owned()));
    }
    let mut nodes: Vec<String> = Vec::new();
    for node in flags
        .nodes
        .iter()
        .map(|node| node.trim())
        .filter(|node| !node.is_empty())
    {
        if nodes.iter().any(|seen| seen == node) {
            return Err(BuildError::CheckNodes(node.to_owned()));
        }
        nodes.push(node.to_owned());
    }
    let mut resources = BTreeMap::new();
    let named = [("cpu", &flags.cpu), ("memory", &flags.memory)];
    let pairs = named
        .iter()
        .filter_map(|(name, quantity)| {
            quantity
                .as_ref()
                .map(|quantity| (name.to_string(), quantity.clone()))
        })
        .chain(flags.resources.iter().cloned());
    for (resource, quantity) in pairs {
        if resources
            .insert(resource.clone(), ResourceQuantity::String(quantity))
            .is_some()
        {
            return Err(BuildError::CheckResources(resource));
        }
    }
    let spec = VirtualClusterSpec {
        promote_resources: PromoteResources { nodes, resources },
        kubernetes_version: flags.kubernetes_version.clone(),
        ..VirtualClusterSpec::default()
    };
    let mut cluster = VirtualCluster::new(name, spec);
    cluster.metadata.namespace = Some(namespace.to_owned());
    Ok(cluster)
}

/// A VirtualCluster from a manifest, with NAME and `-n` reconciled the way kubectl does.
pub fn from_manifest(
    text: &str,
    source_name: &str,
    name_argument: Option<&str>,
    namespace_flag: Option<&str>,
    default_namespace: &str,
) -> Result<VirtualCluster, BuildError> {
    let parse_error = |reason: String| BuildError::ParseManifest {
        source_name: source_name.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|error| parse_error(error.to_string()))?;
    let api_version = value
        .get("apiVersion")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if api_version != API_VERSION || kind != KIND {
        return Err(BuildError::CheckKind {
            source_name: source_name.to_owned(),
            found: format!("{api_version}/{kind}"),
        });
    }
    let mut cluster: VirtualCluster =
        serde_json::from_value(value).map_err(|error| parse_error(error.to_string()))?;
    cluster.metadata.name = match (name_argument, cluster.metadata.name.take()) {
        (Some(argument), Some(manifest)) if argument != manifest => {
            return Err(BuildError::CompareName {
                source_name: source_name.to_owned(),
                argument: argument.to_owned(),
                manifest,
            });
        }
        (_, Some(manifest)) => Some(manifest),
        (Some(argument), None) => Some(argument.to_owned()),
        (None, None) => {
            return Err(BuildError::FindName {
                source_name: source_name.to_owned(),
            });
        }
    };
    cluster.metadata.namespace = Some(resolve_namespace(
        cluster.metadata.namespace.take(),
        namespace_flag,
        default_namespace,
    )?);
    Ok(cluster)
}

fn resolve_namespace(
    manifest: Option<String>,
    flag: Option<&str>,
    default_namespace: &str,
) -> Result<String, BuildError> {
    match (manifest.filter(|namespace| !namespace.is_empty()), flag) {
        (Some(manifest), Some(flag)) if manifest != flag => Err(BuildError::CompareNamespace {
            manifest,
            flag: flag.to_owned(),
        }),
        (Some(manifest), _) => Ok(manifest),
        (None, _) => Ok(default_namespace.to_owned()),
    }
}

/// Metadata of a VirtualCluster for messages: `NAMESPACE/NAME`.
pub fn qualified_name(metadata: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        metadata.namespace.as_deref().unwrap_or("default"),
        metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn flags_become_spec_fields() {
        let flags = CreateFlags {
            nodes: vec!["node1".into(), " node2 ".into(), "".into()],
            cpu: Some("10".into()),
            memory: Some("100Gi".into()),
            resources: vec![("nvidia.com/gpu".into(), "2".into())],
            kubernetes_version: Some("v1.33.4".into()),
        };
        let cluster = from_flags("prod", "team-a", &flags).unwrap();
        let json = serde_json::to_value(&cluster).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "kosmos.io/v1alpha1",
                "kind": "VirtualCluster",
                "metadata": {"name": "prod", "namespace": "team-a"},
                "spec": {
                    "kubernetesVersion": "v1.33.4",
                    "promoteResources": {
                        "nodes": ["node1", "node2"],
                        "resources": {"cpu": "10", "memory": "100Gi", "nvidia.com/gpu": "2"}
                    }
                }
            })
        );
    }

    #[test]
    fn a_resource_given_twice_is_refused() {
        let flags = CreateFlags {
            cpu: Some("2".into()),
            resources: vec![("cpu".into(), "4".into())],
            ..CreateFlags::default()
        };
        assert_eq!(
            from_flags("prod", "default", &flags).unwrap_err(),
            BuildError::CheckResources("cpu".into())
        );
    }

    #[test]
    fn repeated_nodes_are_refused() {
        let flags = CreateFlags {
            nodes: vec!["a".into(), "a".into()],
            ..CreateFlags::default()
        };
        assert_eq!(
            from_flags("prod", "default", &flags).unwrap_err(),
            BuildError::CheckNodes("a".into())
        );
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(from_flags("Prod", "default", &CreateFlags::default()).is_err());
        assert!(from_flags("-a", "default", &CreateFlags::default()).is_err());
        assert!(from_flags(&"a".repeat(64), "default", &CreateFlags::default()).is_err());
        assert!(from_flags("tenant-1", "default", &CreateFlags::default()).is_ok());
    }

    const MANIFEST: &str = "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: tenant1-cluster\nspec:\n  promoteResources:\n    nodes: [node1]\n    resources: {cpu: 10, memory: 100Gi}\n";

    #[test]
    fn manifest_keeps_numbers_and_takes_the_default_namespace() {
        let cluster = from_manifest(MANIFEST, "x.yaml", None, None, "team-a").unwrap();
        assert_eq!(cluster.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            cluster.spec.promote_resources.resources["cpu"],
            ResourceQuantity::Int(10)
        );
    }

    #[test]
    fn manifest_name_and_argument_must_agree() {
        let error = from_manifest(MANIFEST, "x.yaml", Some("other"), None, "default").unwrap_err();
        assert!(error.to_string().contains("drop one of them"), "{error}");
        let unnamed = MANIFEST.replace("  name: tenant1-cluster\n", "  labels: {a: b}\n");
        let cluster = from_manifest(&unnamed, "x.yaml", Some("given"), None, "default").unwrap();
        assert_eq!(cluster.metadata.name.as_deref(), Some("given"));
        assert_eq!(
            from_manifest(&unnamed, "x.yaml", None, None, "default").unwrap_err(),
            BuildError::FindName {
                source_name: "x.yaml".into()
            }
        );
    }

    #[test]
    fn manifest_namespace_conflicting_with_the_flag_is_refused_like_kubectl() {
        let namespaced = MANIFEST.replace(
            "  name: tenant1-cluster\n",
            "  name: tenant1-cluster\n  namespace: a\n",
        );
        let error = from_manifest(&namespaced, "x.yaml", None, Some("b"), "b").unwrap_err();
        assert!(error.to_string().contains("pass --namespace=a"), "{error}");
        let cluster = from_manifest(&namespaced, "x.yaml", None, None, "default").unwrap();
        assert_eq!(cluster.metadata.namespace.as_deref(), Some("a"));
    }

    #[test]
    fn manifest_of_another_kind_is_named() {
        let error = from_manifest(
            "apiVersion: v1\nkind: Pod\n",
            "pod.yaml",
            None,
            None,
            "default",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "pod.yaml holds v1/Pod, not a kosmos.io/v1alpha1 VirtualCluster"
        );
    }

    #[test]
    fn manifest_with_a_wrong_field_type_says_where() {
        let broken = MANIFEST.replace("nodes: [node1]", "nodes: node1");
        let error = from_manifest(&broken, "x.yaml", None, None, "default").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("x.yaml is not a VirtualCluster manifest"),
            "{error}"
        );
    }
}

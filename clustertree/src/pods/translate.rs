//! The host pod standing for a tenant pod: the tenant's spec with every reference to a
//! tenant ConfigMap, Secret or token rewritten to a host copy, and nothing of the host's
//! own identity.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, LocalObjectReference, Pod, PodSpec, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use sha2::{Digest as _, Sha256};

use super::dns::host_dns;
use super::naming::{
    config_map_copy_name, host_pod_name, hostname, ownership, secret_copy_name, token_secret_name,
};
use super::placement::{placement, priority_class, tolerations, with_pool_requests};
use super::refusal::{Refusal, refusal};
use super::{PodRef, Tenancy};

/// What the tenant's ServiceAccount admission names its token volume.
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap the tenant publishes its CA in, in every namespace.
pub const TENANT_ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Lifetime asked for a tenant token when the pod's volume does not say (as the
/// ServiceAccount admission's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;

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

/// Annotation on a host copy: the [`copy_digest`] of the tenant content it holds, so a
/// pass compares a copy by its metadata alone and keeps no copy's data in memory.
pub const COPY_DIGEST_ANNOTATION: &str = "vc.kosmos.io/content-digest";

/// A digest of a copy's content (a ConfigMap's `data` and `binaryData`, a Secret's `type`
/// and `data`, as JSON): equal digests, equal content.
pub fn copy_digest(content: &serde_json::Value) -> String {
    let digest = Sha256::digest(content.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
    /// Where in-cluster clients reach the tenant apiserver ([`Tenancy::apiserver`]).
    apiserver: Option<(String, u16)>,
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
        if let Some((host, port)) = &self.apiserver {
            let env = copy.env.get_or_insert_with(Vec::new);
            for (name, value) in [
                ("KUBERNETES_SERVICE_HOST", host.clone()),
                ("KUBERNETES_SERVICE_PORT", port.to_string()),
            ] {
                if !env.iter().any(|var| var.name == name) {
                    env.push(EnvVar {
                        name: name.to_owned(),
                        value: Some(value),
                        value_from: None,
                    });
                }
            }
        }
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
    if let Some(refusal) = refusal(tenant, tenancy.pod_security) {
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
        apiserver: tenancy.apiserver.clone(),
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
    let pool = priority_class(node).is_some();
    let mut host_container = |container: &Container| {
        let copy = translation.container(container);
        if pool { with_pool_requests(copy) } else { copy }
    };
    let containers: Vec<Container> = spec.containers.iter().map(&mut host_container).collect();
    let init_containers: Option<Vec<Container>> = spec
        .init_containers
        .as_ref()
        .map(|list| list.iter().map(&mut host_container).collect());
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
    let (dns_policy, dns_config) = host_dns(spec, &reference.namespace, tenancy.dns.as_ref());
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
            priority_class_name: priority_class(node),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            restart_policy: spec.restart_policy.clone(),
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            active_deadline_seconds: spec.active_deadline_seconds,
            security_context: spec.security_context.clone(),
            share_process_namespace: spec.share_process_namespace,
            host_aliases: spec.host_aliases.clone(),
            dns_policy,
            dns_config,
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

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;
    use vc_api::constants::{
        CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, TENANT_OBJECT_NAME_LABEL,
        TENANT_OBJECT_NAMESPACE_LABEL,
    };

    use super::*;
    use crate::pods::recorded_uid;
    use crate::pods::test_support::{pod, tenancy, with};

    /// In-cluster clients in the host pod reach the tenant apiserver (with the tenant's
    /// token and CA mounted), never the host's: the kubelet's own
    /// KUBERNETES_SERVICE_HOST/PORT are overridden, unless the tenant pod sets them itself.
    #[test]
    fn in_cluster_clients_are_pointed_at_the_tenant_apiserver() {
        let tenant = pod("web-1", "u1", "node1");
        let host = host_pod(&tenant, &tenancy()).unwrap().pod;
        for container in host.spec.unwrap().containers {
            let env: BTreeMap<String, Option<String>> = container
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|var| (var.name, var.value))
                .collect();
            assert_eq!(
                env["KUBERNETES_SERVICE_HOST"].as_deref(),
                Some("tenant1-apiserver.team-a.svc")
            );
            assert_eq!(env["KUBERNETES_SERVICE_PORT"].as_deref(), Some("6443"));
        }

        let own = with(
            &tenant,
            json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "elsewhere.example"}]}]}}),
        );
        let host = host_pod(&own, &tenancy()).unwrap().pod;
        let env = host.spec.unwrap().containers[0].env.clone().unwrap();
        let hosts: Vec<&str> = env
            .iter()
            .filter(|var| var.name == "KUBERNETES_SERVICE_HOST")
            .filter_map(|var| var.value.as_deref())
            .collect();
        assert_eq!(
            hosts,
            ["elsewhere.example"],
            "the tenant's own value stays, once"
        );

        let unset = Tenancy {
            apiserver: None,
            ..tenancy()
        };
        let host = host_pod(&tenant, &unset).unwrap().pod;
        assert!(
            host.spec.unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .all(|var| !var.name.starts_with("KUBERNETES_SERVICE"))
        );
    }

    /// With the tenant's DNS known, the host pod resolves through it, not the host's.
    #[test]
    fn host_pods_resolve_through_the_tenants_dns() {
        let tenant = pod("web-1", "uid-1", "node1");
        let with_dns = Tenancy {
            dns: Some(crate::pods::ClusterDns {
                nameserver: "10.96.0.10".parse().unwrap(),
                domain: "cluster.local".to_owned(),
            }),
            ..tenancy()
        };
        let spec = host_pod(&tenant, &with_dns).unwrap().pod.spec.unwrap();
        assert_eq!(spec.dns_policy.as_deref(), Some("None"));
        let config = spec.dns_config.unwrap();
        assert_eq!(config.nameservers.unwrap(), ["10.96.0.10"]);
        assert_eq!(
            config.searches.unwrap()[0],
            format!("{}.svc.cluster.local", tenant.namespace().unwrap())
        );
    }

    #[test]
    fn the_tenant_apiserver_address_comes_from_the_kubeconfig_url() {
        let address = |url: &str| crate::pods::apiserver_address(&url.parse().unwrap());
        assert_eq!(
            address("https://prod-apiserver.team-a.svc:6443"),
            Some(("prod-apiserver.team-a.svc".to_owned(), 6443))
        );
        assert_eq!(
            address("https://10.96.0.10"),
            Some(("10.96.0.10".to_owned(), 443))
        );
        assert_eq!(
            address("https://[fd00::7]:6443"),
            Some(("fd00::7".to_owned(), 6443))
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
}

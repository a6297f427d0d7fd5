//! A tenant API server for every tenant kube-apiserver Deployment that becomes ready.
//!
//! When a Deployment labelled `app.kubernetes.io/component=apiserver` and
//! `vc.kosmos.io/virtualcluster=NAME` is ready, this starts a [`TestApiServer`] on the
//! cluster IP and port of Service `NAME-apiserver`, serving the certificate and trusting
//! the client CA that the Deployment mounts (`--tls-cert-file`, `--tls-private-key-file`,
//! `--client-ca-file`, resolved through the container's volume mounts to Secret keys). So
//! the kubeconfigs the controller writes work unchanged. The server stops when the
//! Deployment is deleted or scaled to 0 (not when a rollout makes it briefly unready: real
//! apiserver pods keep serving through a rolling update). Its state lives in memory: a
//! restart starts empty, as a tenant whose etcd was wiped would.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret, Service};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::Notify;
use vc_api::constants::{COMPONENT_LABEL, TENANT_NAME_LABEL};

use super::services::ServiceOptions;
use super::workloads::{WorkloadOptions, deployment_is_ready};
use super::{SimError, SimHandle, wait_for_next_pass, watch_store};
use vc_test_apiserver::{ServingCerts, TestApiServer, TestApiServerOptions};

/// Component label value of the tenant kube-apiserver Deployment and Service.
pub const APISERVER_COMPONENT: &str = "apiserver";

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct TenantOptions {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Service CIDR of the tenant API servers (their own Services' cluster IPs).
    pub tenant_service_cidr: String,
    /// Workload simulation inside each tenant (its kubelets and controllers).
    pub tenant_workloads: Option<WorkloadOptions>,
    /// Service simulation inside each tenant (its endpoints controllers).
    pub tenant_services: Option<ServiceOptions>,
    pub resync: Duration,
}

impl Default for TenantOptions {
    fn default() -> Self {
        TenantOptions {
            namespace: None,
            tenant_service_cidr: "127.101.0.0/16".to_owned(),
            tenant_workloads: Some(WorkloadOptions {
                pod_ip_start: std::net::Ipv4Addr::new(127, 201, 0, 1),
                ..WorkloadOptions::default()
            }),
            tenant_services: Some(ServiceOptions::default()),
            resync: Duration::from_secs(2),
        }
    }
}

/// A running tenant API server, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningTenant {
    pub namespace: String,
    pub name: String,
    pub addr: SocketAddr,
}

struct Tenant {
    info: RunningTenant,
    server: Option<TestApiServer>,
    /// Simulators running inside the tenant.
    inside: SimHandle,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        // Stopping joins the server's thread; never block an async worker with it.
        std::mem::take(&mut self.inside).stop();
        if let Some(server) = self.server.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || drop(server))),
                Err(_) => drop(server),
            }
        }
    }
}

type Tenants = Arc<Mutex<BTreeMap<(String, String), Tenant>>>;

/// The simulator; dropping it stops every tenant API server it started.
pub struct TenantApiServers {
    tenants: Tenants,
    handle: SimHandle,
}

impl std::fmt::Debug for TenantApiServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantApiServers")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl TenantApiServers {
    /// The tenant API servers running now.
    pub fn running(&self) -> Vec<RunningTenant> {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| t.info.clone())
            .collect()
    }

    /// An admin client of a running tenant (bearer token, verified against its CA).
    pub async fn client(&self, namespace: &str, name: &str) -> Option<Client> {
        let key = (namespace.to_owned(), name.to_owned());
        let kubeconfig = {
            let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            tenants
                .get(&key)?
                .server
                .as_ref()?
                .kubeconfig_path()
                .to_owned()
        };
        vc_test_apiserver::client_from_kubeconfig(&kubeconfig)
            .await
            .ok()
    }

    /// Stops the simulator and every tenant API server.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for TenantApiServers {
    fn drop(&mut self) {
        // Abort the pass loop first, so nothing starts a server after this.
        std::mem::take(&mut self.handle).stop();
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Starts the simulator.
pub fn spawn(client: Client, options: TenantOptions) -> TenantApiServers {
    let notify = Arc::new(Notify::new());
    let (deployments_api, services_api) = match &options.namespace {
        Some(ns) => (
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let selector = format!("{COMPONENT_LABEL}={APISERVER_COMPONENT}");
    let config = watcher::Config::default().labels(&selector);
    let (deployments, t1) = watch_store(deployments_api, config.clone(), notify.clone());
    let (services, t2) = watch_store(services_api, config, notify.clone());
    let tenants: Tenants = Arc::default();
    let sim = TenantSim {
        client,
        options,
        deployments,
        services,
        tenants: tenants.clone(),
    };
    let resync = sim.options.resync;
    let t3 = tokio::spawn(async move {
        if sim.deployments.wait_until_ready().await.is_ok()
            && sim.services.wait_until_ready().await.is_ok()
        {
            loop {
                sim.pass().await;
                wait_for_next_pass(&notify, None, resync).await;
            }
        }
    });
    TenantApiServers {
        tenants,
        handle: SimHandle::new(vec![t1, t2, t3]),
    }
}

struct TenantSim {
    client: Client,
    options: TenantOptions,
    deployments: Store<Deployment>,
    services: Store<Service>,
    tenants: Tenants,
}

impl TenantSim {
    async fn pass(&self) {
        let deployments = self.deployments.state();
        let wanted: BTreeMap<(String, String), Arc<Deployment>> = deployments
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0)
            .filter_map(|d| {
                let tenant = d.labels().get(TENANT_NAME_LABEL)?.clone();
                Some(((d.namespace()?, tenant), d.clone()))
            })
            .collect();
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| wanted.contains_key(key));
        for ((namespace, name), deployment) in &wanted {
            let running = self
                .tenants
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&(namespace.clone(), name.clone()));
            if running || !deployment_is_ready(deployment) {
                continue;
            }
            match self.start_tenant(namespace, name, deployment).await {
                Ok(tenant) => {
                    tracing::info!(%namespace, %name, addr = %tenant.info.addr, "tenant API server started");
                    self.tenants
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((namespace.clone(), name.clone()), tenant);
                }
                Err(error) => tracing::warn!(%error, "tenant API server not started; retrying"),
            }
        }
    }

    async fn start_tenant(
        &self,
        namespace: &str,
        name: &str,
        deployment: &Deployment,
    ) -> Result<Tenant, SimError> {
        let read_error = |what: &'static str, reason: String| SimError::ReadTenant {
            what,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let bind = self.service_address(namespace, name).ok_or_else(|| {
            read_error(
                "the cluster IP of Service NAME-apiserver",
                "no such Service with a cluster IP".to_owned(),
            )
        })?;
        let files = ServingFiles::of(deployment)
            .map_err(|reason| read_error("the apiserver flags", reason))?;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let read = |file: &MountedFile| {
            let secrets = secrets.clone();
            let file = file.clone();
            async move {
                let secret = secrets
                    .get(&file.secret)
                    .await
                    .map_err(|e| format!("Secret {}: {e}", file.secret))?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&file.key))
                    .ok_or_else(|| format!("Secret {} has no key {}", file.secret, file.key))?;
                String::from_utf8(bytes.0.clone())
                    .map_err(|_| format!("Secret {} key {} is not PEM text", file.secret, file.key))
            }
        };
        let cert_pem = read(&files.cert)
            .await
            .map_err(|r| read_error("the serving certificate", r))?;
        let key_pem = read(&files.key)
            .await
            .map_err(|r| read_error("the serving key", r))?;
        let client_ca_pem = read(&files.client_ca)
            .await
            .map_err(|r| read_error("the client CA", r))?;
        let options = TestApiServerOptions {
            bind,
            serving: Some(ServingCerts {
                cert_pem,
                key_pem,
                server_ca_pem: client_ca_pem.clone(),
                client_ca_pem,
            }),
            service_cidr: self.options.tenant_service_cidr.clone(),
            ..TestApiServerOptions::default()
        };
        let server = tokio::task::spawn_blocking(move || TestApiServer::start(options))
            .await
            .map_err(|e| e.to_string())
            .and_then(|started| started.map_err(|e| e.to_string()))
            .map_err(|reason| SimError::StartTenantApiServer {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                bind: bind.to_string(),
                reason,
            })?;
        let mut inside = SimHandle::default();
        if self.options.tenant_workloads.is_some() || self.options.tenant_services.is_some() {
            let client = server.client().await.map_err(|e| SimError::ConnectTenant {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
            if let Some(options) = &self.options.tenant_workloads {
                inside = inside.merge(super::workloads::spawn(client.clone(), options.clone()));
            }
            if let Some(options) = &self.options.tenant_services {
                inside = inside.merge(super::services::spawn(client, options.clone()));
            }
        }
        Ok(Tenant {
            info: RunningTenant {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                addr: server.addr(),
            },
            server: Some(server),
            inside,
        })
    }

    /// `CLUSTER_IP:PORT` of Service `NAME-apiserver` (port named `https`, else the first).
    fn service_address(&self, namespace: &str, name: &str) -> Option<SocketAddr> {
        let service = self.services.get(
            &kube::runtime::reflector::ObjectRef::new(&format!("{name}-apiserver"))
                .within(namespace),
        )?;
        service_socket(&service)
    }
}

/// `CLUSTER_IP:PORT` of a Service (port named `https`, else the first).
pub fn service_socket(service: &Service) -> Option<SocketAddr> {
    let spec = service.spec.as_ref()?;
    let ip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let ports = spec.ports.as_deref()?;
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .or_else(|| ports.first())?;
    Some(SocketAddr::new(ip, u16::try_from(port.port).ok()?))
}

/// A file a container sees, and the Secret key it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedFile {
    pub secret: String,
    pub key: String,
}

/// The serving certificate, key and client CA files of a kube-apiserver Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingFiles {
    pub cert: MountedFile,
    pub key: MountedFile,
    pub client_ca: MountedFile,
}

impl ServingFiles {
    /// Finds the flags in the apiserver container and resolves them to Secret keys.
    pub fn of(deployment: &Deployment) -> Result<Self, String> {
        let spec = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .ok_or("the Deployment has no pod template spec")?;
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == "kube-apiserver")
            .or_else(|| spec.containers.first())
            .ok_or("the pod template has no container")?;
        let file = |flag: &str| -> Result<MountedFile, String> {
            let path = flag_value(container, flag)
                .ok_or_else(|| format!("container {} has no --{flag}", container.name))?;
            mounted_secret_file(spec, container, &path)
                .ok_or_else(|| format!("--{flag}={path} is not a file of a mounted Secret"))
        };
        Ok(ServingFiles {
            cert: file("tls-cert-file")?,
            key: file("tls-private-key-file")?,
            client_ca: file("client-ca-file")?,
        })
    }
}

/// The value of `--flag=value` or `--flag value` in a container's command and args.
pub fn flag_value(container: &Container, flag: &str) -> Option<String> {
    let words: Vec<&String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .collect();
    let long = format!("--{flag}");
    let with_value = format!("{long}=");
    words.iter().enumerate().find_map(|(i, word)| {
        if let Some(value) = word.strip_prefix(&with_value) {
            return Some(value.to_owned());
        }
        (**word == long)
            .then(|| words.get(i + 1).map(|v| (*v).clone()))
            .flatten()
    })
}

/// Which Secret key backs `path` in `container`, through `secret` or `projected` volumes.
pub fn mounted_secret_file(
    spec: &PodSpec,
    container: &Container,
    path: &str,
) -> Option<MountedFile> {
    container.volume_mounts.iter().flatten().find_map(|mount| {
        let base = mount.mount_path.trim_end_matches('/');
        let relative = path.strip_prefix(base)?.strip_prefix('/')?;
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)?;
        let mut sources: Vec<(String, Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>)> =
            Vec::new();
        if let Some(secret) = &volume.secret {
            sources.push((secret.secret_name.clone()?, secret.items.clone()));
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(secret) = &source.secret {
                    sources.push((secret.name.clone(), secret.items.clone()));
                }
            }
        }
        sources.into_iter().find_map(|(secret, items)| match items {
            Some(items) => {
                items
                    .iter()
                    .find(|item| item.path == relative)
                    .map(|item| MountedFile {
                        secret: secret.clone(),
                        key: item.key.clone(),
                    })
            }
            // Without items every key is a file named after it.
            None => (!relative.contains('/')).then(|| MountedFile {
                secret: secret.clone(),
                key: relative.to_owned(),
            }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apiserver_deployment(args: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "t-apiserver", "namespace": "team"},
            "spec": {"selector": {}, "template": {"spec": {
                "containers": [{
                    "name": "kube-apiserver", "command": ["kube-apiserver"], "args": args,
                    "volumeMounts": [
                        {"name": "k8s-certs", "mountPath": "/etc/kubernetes/pki"},
                        {"name": "ca", "mountPath": "/etc/ca/"}
                    ]
                }],
                "volumes": [
                    {"name": "k8s-certs", "projected": {"sources": [
                        {"secret": {"name": "t-ca", "items": [{"key": "tls.crt", "path": "ca.crt"}]}},
                        {"secret": {"name": "t-apiserver-tls", "items": [
                            {"key": "tls.crt", "path": "apiserver.crt"}, {"key": "tls.key", "path": "apiserver.key"}
                        ]}}
                    ]}},
                    {"name": "ca", "secret": {"secretName": "plain-ca"}}
                ]
            }}}
        }))
        .unwrap()
    }

    #[test]
    fn serving_files_resolve_through_projected_volumes() {
        let deployment = apiserver_deployment(json!([
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
            "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
            "--tls-private-key-file",
            "/etc/kubernetes/pki/apiserver.key"
        ]));
        let files = ServingFiles::of(&deployment).unwrap();
        let file = |secret: &str, key: &str| MountedFile {
            secret: secret.into(),
            key: key.into(),
        };
        assert_eq!(files.cert, file("t-apiserver-tls", "tls.crt"));
        assert_eq!(files.key, file("t-apiserver-tls", "tls.key"));
        assert_eq!(files.client_ca, file("t-ca", "tls.crt"));
    }

    #[test]
    fn secret_volumes_without_items_expose_every_key() {
        let deployment = apiserver_deployment(json!([
            "--client-ca-file=/etc/ca/ca.crt",
            "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
            "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key"
        ]));
        let files = ServingFiles::of(&deployment).unwrap();
        assert_eq!(
            files.client_ca,
            MountedFile {
                secret: "plain-ca".into(),
                key: "ca.crt".into()
            }
        );
    }

    #[test]
    fn missing_flags_and_unmounted_files_are_named() {
        let no_flag =
            apiserver_deployment(json!(["--tls-cert-file=/etc/kubernetes/pki/apiserver.crt"]));
        assert_eq!(
            ServingFiles::of(&no_flag).unwrap_err(),
            "container kube-apiserver has no --tls-private-key-file"
        );
        let elsewhere = apiserver_deployment(json!([
            "--tls-cert-file=/srv/apiserver.crt",
            "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key",
            "--client-ca-file=/etc/kubernetes/pki/ca.crt"
        ]));
        assert_eq!(
            ServingFiles::of(&elsewhere).unwrap_err(),
            "--tls-cert-file=/srv/apiserver.crt is not a file of a mounted Secret"
        );
    }

    #[test]
    fn service_socket_prefers_the_https_port() {
        let service: Service = serde_json::from_value(json!({
            "spec": {"clusterIP": "127.100.0.9", "ports": [{"name": "metrics", "port": 9090}, {"name": "https", "port": 6443}]}
        }))
        .unwrap();
        assert_eq!(
            service_socket(&service),
            Some("127.100.0.9:6443".parse().unwrap())
        );
        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None", "ports": [{"port": 1}]}}))
                .unwrap();
        assert_eq!(service_socket(&headless), None);
    }
}

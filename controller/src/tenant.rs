//! Talking to a tenant's apiserver: a verified client from the admin credential, the
//! `/readyz` probe, and the promotion objects written inside the tenant.
//!
//! The tenant is reached through its apiserver Service's cluster IP, never cluster DNS
//! (`docs/contracts.md`), and its serving certificate is always verified against the
//! tenant's own cluster CA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sha2::{Digest, Sha256};
use vc_api::tenant_dns::{self, DnsMissing};

/// Why the tenant apiserver could not be reached or read. None carries the kubeconfig,
/// which holds a private key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin kubeconfig is not YAML a client reads. The parser's own error is left
    /// out: it quotes the text it choked on, which may be the private key.
    #[error("the admin kubeconfig does not parse")]
    ParseKubeconfig,

    /// The admin kubeconfig parses but no client configuration comes from it.
    #[error("invalid admin kubeconfig")]
    LoadKubeconfig {
        /// What kube refused.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// No client could be built from the configuration.
    #[error("failed to build a client for the tenant apiserver")]
    BuildClient {
        /// What kube refused.
        #[source]
        source: kube::Error,
    },

    /// The `/readyz` request could not be built.
    #[error("failed to build the /readyz request to {endpoint}")]
    ProbeRequest {
        /// The URL probed.
        endpoint: String,
        /// What was wrong with it.
        #[source]
        source: http::Error,
    },

    /// The tenant apiserver did not answer `/readyz`.
    #[error("tenant apiserver at {endpoint} is not ready")]
    Probe {
        /// The URL probed.
        endpoint: String,
        /// The failed request.
        #[source]
        source: kube::Error,
    },

    /// The tenant apiserver answered `/readyz` with something other than `ok`.
    #[error("tenant apiserver at {endpoint} is not ready: /readyz answered {answer:?}")]
    NotReady {
        /// The URL probed.
        endpoint: String,
        /// The start of its answer.
        answer: String,
    },

    /// Reading the tenant's nodes failed.
    #[error("failed to list nodes in the tenant")]
    ListNodes {
        /// The tenant apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Reading the tenant's DNS Service or its EndpointSlices failed.
    #[error("failed to read the tenant's kube-system/kube-dns")]
    ReadDns {
        /// The tenant apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Clients of tenant apiservers, reused while the endpoint and credential stay the same,
/// so a settled tenant does not pay a TLS setup per reconcile.
#[derive(Default)]
pub struct TenantClients {
    clients: Mutex<HashMap<String, (String, Client)>>,
}

impl std::fmt::Debug for TenantClients {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self
            .clients
            .lock()
            .map(|clients| clients.len())
            .unwrap_or(0);
        formatter
            .debug_struct("TenantClients")
            .field("cached", &count)
            .finish()
    }
}

impl TenantClients {
    /// A client for the tenant `key` (its UID) from an admin kubeconfig whose server is
    /// the cluster IP URL. The kubeconfig's text identifies the cached client by hash, so
    /// a renewed certificate or a moved endpoint builds a new one.
    pub async fn get(&self, key: &str, kubeconfig_yaml: &str, timeout: Duration) -> Result<Client> {
        let fingerprint = hex::encode(Sha256::digest(kubeconfig_yaml.as_bytes()));
        if let Ok(clients) = self.clients.lock()
            && let Some((cached, client)) = clients.get(key)
            && *cached == fingerprint
        {
            return Ok(client.clone());
        }
        let client = build_client(kubeconfig_yaml, timeout).await?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key.to_owned(), (fingerprint, client.clone()));
        }
        Ok(client)
    }

    /// Drops the client of a deleted or settled tenant, closing its connections.
    pub fn forget(&self, key: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(key);
        }
    }
}

/// Builds a client that verifies the tenant's serving certificate with the CA in the
/// kubeconfig. Errors never echo the kubeconfig (it holds a private key).
async fn build_client(kubeconfig_yaml: &str, timeout: Duration) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml).map_err(|_| Error::ParseKubeconfig)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::LoadKubeconfig { source })?;
    config.accept_invalid_certs = false;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    // A wait is a requeue: never retry inside a reconcile.
    config.default_retry = false;
    Client::try_from(config).map_err(|source| Error::BuildClient { source })
}

/// Asks the tenant apiserver's `/readyz` with the admin credential.
pub async fn probe_ready(client: &Client, endpoint: &str) -> Result<()> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|source| Error::ProbeRequest {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let body = client
        .request_text(request)
        .await
        .map_err(|source| Error::Probe {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(Error::NotReady {
            endpoint: endpoint.to_owned(),
            answer: truncate(&body, 200).to_owned(),
        })
    }
}

fn truncate(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// Names of the nodes the tenant lists.
pub async fn tenant_node_names(client: &Client) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list_metadata(&ListParams::default())
        .await
        .map_err(|source| Error::ListNodes { source })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|node| node.metadata.name)
        .collect())
}

/// Whether the tenant's DNS answers ([`tenant_dns::readiness`]): its `kube-dns` Service
/// and that Service's EndpointSlices, read from the tenant.
pub async fn dns_readiness(client: &Client) -> Result<std::result::Result<(), DnsMissing>> {
    let services: Api<Service> = Api::namespaced(client.clone(), tenant_dns::NAMESPACE);
    let service = services
        .get_opt(tenant_dns::SERVICE)
        .await
        .map_err(|source| Error::ReadDns { source })?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), tenant_dns::NAMESPACE);
    let selector = format!("{}={}", tenant_dns::SERVICE_NAME_LABEL, tenant_dns::SERVICE);
    let slices = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ReadDns { source })?;
    Ok(tenant_dns::readiness(service.as_ref(), &slices.items))
}

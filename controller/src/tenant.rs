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

use crate::error::{Error, Result};

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

    /// Drops the client of a deleted tenant.
    pub fn forget(&self, key: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(key);
        }
    }
}

/// Builds a client that verifies the tenant's serving certificate with the CA in the
/// kubeconfig. Errors never echo the kubeconfig (it holds a private key).
async fn build_client(kubeconfig_yaml: &str, timeout: Duration) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml)
        .map_err(|_| Error::TenantClient("the admin kubeconfig does not parse".to_owned()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::TenantClient(format!("invalid admin kubeconfig: {error}")))?;
    config.accept_invalid_certs = false;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    // A wait is a requeue: never retry inside a reconcile.
    config.default_retry = false;
    Client::try_from(config).map_err(|error| Error::TenantClient(error.to_string()))
}

/// Asks the tenant apiserver's `/readyz` with the admin credential.
pub async fn probe_ready(client: &Client, endpoint: &str) -> Result<()> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|error| Error::ProbeTenant {
            endpoint: endpoint.to_owned(),
            reason: error.to_string(),
        })?;
    let body = client
        .request_text(request)
        .await
        .map_err(|error| Error::ProbeTenant {
            endpoint: endpoint.to_owned(),
            reason: error.to_string(),
        })?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(Error::ProbeTenant {
            endpoint: endpoint.to_owned(),
            reason: format!("/readyz answered {:?}", truncate(&body, 200)),
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
        .map_err(Error::ListTenantNodes)?;
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
        .map_err(Error::ReadTenantDns)?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), tenant_dns::NAMESPACE);
    let selector = format!("{}={}", tenant_dns::SERVICE_NAME_LABEL, tenant_dns::SERVICE);
    let slices = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::ReadTenantDns)?;
    Ok(tenant_dns::readiness(service.as_ref(), &slices.items))
}

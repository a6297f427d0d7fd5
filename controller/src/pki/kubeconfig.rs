//! Kubeconfig rendering and reading, as pure functions.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{PrivateKeyPem, StoredCertificate};

/// A kubeconfig file (the subset kosmos-vc writes and reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `Config`.
    #[serde(default)]
    pub kind: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context used by default.
    #[serde(default)]
    pub current_context: String,
    /// Named users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
}

/// A cluster entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Entry name.
    pub name: String,
    /// Connection details.
    pub cluster: ClusterEntry,
}

/// How to reach and trust an apiserver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterEntry {
    /// `https://host:port`.
    pub server: String,
    /// Base64 PEM of the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Path of the CA file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

/// A context entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Entry name.
    pub name: String,
    /// Which cluster and user.
    pub context: ContextEntry,
}

/// A cluster/user pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
}

/// A user entry.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Entry name.
    pub name: String,
    /// Credentials.
    pub user: UserEntry,
}

/// Never prints credentials.
impl std::fmt::Debug for NamedUser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NamedUser")
            .field("name", &self.name)
            .field("user", &"<redacted>")
            .finish()
    }
}

/// Never prints credentials.
impl std::fmt::Debug for UserEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UserEntry")
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// Client credentials.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UserEntry {
    /// Base64 PEM client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Base64 PEM client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Path of a bearer-token file (a projected ServiceAccount token). kubectl spells
    /// this one field in camelCase.
    #[serde(default, rename = "tokenFile", skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// Renders a kubeconfig that authenticates with a client certificate.
pub fn render_client_certificate_kubeconfig(
    cluster_name: &str,
    server: &str,
    ca_pem: &str,
    user_name: &str,
    client_cert_pem: &str,
    client_key: &PrivateKeyPem,
) -> Result<String, serde_yaml::Error> {
    let config = single_context(
        cluster_name,
        ClusterEntry {
            server: server.to_owned(),
            certificate_authority_data: Some(STANDARD.encode(ca_pem)),
            certificate_authority: None,
        },
        user_name,
        UserEntry {
            client_certificate_data: Some(STANDARD.encode(client_cert_pem)),
            client_key_data: Some(STANDARD.encode(client_key.expose())),
            token_file: None,
        },
    );
    serde_yaml::to_string(&config)
}

fn single_context(
    cluster_name: &str,
    cluster: ClusterEntry,
    user_name: &str,
    user: UserEntry,
) -> Kubeconfig {
    let context_name = format!("{user_name}@{cluster_name}");
    Kubeconfig {
        api_version: "v1".to_owned(),
        kind: "Config".to_owned(),
        clusters: vec![NamedCluster {
            name: cluster_name.to_owned(),
            cluster,
        }],
        contexts: vec![NamedContext {
            name: context_name.clone(),
            context: ContextEntry {
                cluster: cluster_name.to_owned(),
                user: user_name.to_owned(),
            },
        }],
        current_context: context_name,
        users: vec![NamedUser {
            name: user_name.to_owned(),
            user,
        }],
    }
}

/// The client certificate, key and CA of the first user and cluster of a kubeconfig,
/// or `None` when any is missing or not valid base64 UTF-8.
pub fn client_credentials(yaml: &str) -> Option<StoredCertificate> {
    let config: Kubeconfig = serde_yaml::from_str(yaml).ok()?;
    let decode = |data: &Option<String>| -> Option<String> {
        let bytes = STANDARD.decode(data.as_deref()?).ok()?;
        String::from_utf8(bytes).ok()
    };
    let user = &config.users.first()?.user;
    let cluster = &config.clusters.first()?.cluster;
    Some(StoredCertificate {
        cert_pem: decode(&user.client_certificate_data)?,
        key_pem: PrivateKeyPem::new(decode(&user.client_key_data)?),
        ca_pem: decode(&cluster.certificate_authority_data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_kubeconfig_round_trips_its_credentials() {
        let yaml = render_client_certificate_kubeconfig(
            "tenant",
            "https://10.0.0.1:6443",
            "CA PEM",
            "admin",
            "CERT PEM",
            &PrivateKeyPem::new("KEY PEM".to_owned()),
        )
        .unwrap();
        let config: Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(config.current_context, "admin@tenant");
        assert_eq!(config.clusters[0].cluster.server, "https://10.0.0.1:6443");
        assert!(yaml.contains("certificate-authority-data:"), "{yaml}");
        assert!(yaml.contains("client-key-data:"), "{yaml}");
        let stored = client_credentials(&yaml).unwrap();
        assert_eq!(stored.cert_pem, "CERT PEM");
        assert_eq!(stored.key_pem.expose(), "KEY PEM");
        assert_eq!(stored.ca_pem.as_deref(), Some("CA PEM"));
    }

    #[test]
    fn garbage_has_no_credentials() {
        assert_eq!(client_credentials("{not yaml"), None);
        assert_eq!(client_credentials("users: []"), None);
    }
}

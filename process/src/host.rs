//! The client of the host cluster: `--kubeconfig FILE` when given, else the pod's
//! ServiceAccount, with the binary's user agent and fixed timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;
use http::header::USER_AGENT;
use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// How long a connection to the host apiserver may take to open: as client-go, long
/// enough for a loaded apiserver, short enough that a dead one is retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing one request may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(295);

/// Why the host client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `--kubeconfig` could not be read or parsed.
    #[error("--kubeconfig {}: cannot read the kubeconfig", path.display())]
    ReadKubeconfig {
        /// The flag value.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: KubeconfigError,
    },
    /// `--kubeconfig` was read but names no usable cluster and user.
    #[error("--kubeconfig {}: invalid kubeconfig", path.display())]
    LoadKubeconfig {
        /// The flag value.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: KubeconfigError,
    },
    /// No `--kubeconfig` and no ServiceAccount mounted.
    #[error("no --kubeconfig given and not running in a pod; pass --kubeconfig FILE")]
    ReadInClusterConfig(#[source] InClusterError),
    /// The user agent is not a valid header value.
    #[error("user agent {user_agent:?} is not a valid header value")]
    SetUserAgent {
        /// The user agent given.
        user_agent: String,
        /// What the header refused.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// The client could not be built from the configuration (its TLS, typically).
    #[error("cannot build the host client")]
    BuildClient(#[source] kube::Error),
}

/// The host configuration: from `kubeconfig` when given, else in-cluster; requests carry
/// `user_agent` (see [`crate::user_agent`]) so the host's audit log names the binary.
pub async fn config(
    kubeconfig: Option<&Path>,
    user_agent: &str,
) -> Result<kube::Config, HostError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| HostError::ReadKubeconfig {
                    path: path.to_owned(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| HostError::LoadKubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(HostError::ReadInClusterConfig)?,
    };
    let agent = HeaderValue::from_str(user_agent).map_err(|source| HostError::SetUserAgent {
        user_agent: user_agent.to_owned(),
        source,
    })?;
    config.headers.push((USER_AGENT, agent));
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    // No read timeout: watches stay open for minutes without a byte, and kube's watcher
    // bounds them itself; callers that must not hang (the leader's renewal) set their own.
    config.read_timeout = None;
    Ok(config)
}

/// The host client of [`config`].
pub async fn client(
    kubeconfig: Option<&Path>,
    user_agent: &str,
) -> Result<kube::Client, HostError> {
    let config = config(kubeconfig, user_agent).await?;
    kube::Client::try_from(config).map_err(HostError::BuildClient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn kubeconfig_for(server: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: host\n  cluster:\n    server: {server}\nusers:\n- name: admin\n  user:\n    token: not-a-secret\ncontexts:\n- name: host\n  context:\n    cluster: host\n    user: admin\ncurrent-context: host\n"
            ),
        )
        .unwrap();
        file
    }

    /// The request line and headers the client sent to a listener that answers 404.
    async fn first_request(client: kube::Client, listener: tokio::net::TcpListener) -> String {
        let server = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                connection.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            connection
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let _not_found = client.apiserver_version().await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn requests_name_the_binary_in_the_user_agent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let file = kubeconfig_for(&format!("http://{}", listener.local_addr().unwrap()));
        let client = client(Some(file.path()), crate::user_agent!())
            .await
            .unwrap();
        let head = first_request(client, listener).await.to_ascii_lowercase();
        let expected = format!("user-agent: vc-process/{}\r\n", env!("CARGO_PKG_VERSION"));
        assert!(head.contains(&expected), "{head}");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_flag_and_the_file() {
        let error = config(Some(Path::new("/nonexistent/kubeconfig")), "vc-test/1")
            .await
            .unwrap_err();
        assert!(
            matches!(error, HostError::ReadKubeconfig { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "--kubeconfig /nonexistent/kubeconfig: cannot read the kubeconfig"
        );
    }
}

//! Runs the same tests against a real kube-apiserver + etcd, started the way
//! controller-runtime's envtest does, when `KUBEBUILDER_ASSETS` holds both binaries.
//! [`TestCluster`] hides which one a test talks to.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::{self, KubeconfigCredential, TestCa};
use super::{ServerError, StartError, TestApiServer, TestApiServerOptions, client_from_kubeconfig};

/// The message a real-apiserver variant prints when it cannot run.
pub const SKIP_MESSAGE: &str =
    "skipped: KUBEBUILDER_ASSETS not set (needs kube-apiserver and etcd)";

/// Why the real control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnvtestError {
    #[error("creating certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("creating the work directory: {0}")]
    WorkDir(std::io::Error),
    #[error("finding a free port: {0}")]
    FreePort(std::io::Error),
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("kube-apiserver did not become ready within {0:?} (logs in {1})")]
    NotReady(Duration, String),
    #[error("writing {path}: {source}")]
    WriteFile {
        path: String,
        source: std::io::Error,
    },
}

/// The directory named by `KUBEBUILDER_ASSETS`, if it holds kube-apiserver and etcd.
pub fn assets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
}

fn free_port() -> Result<u16, EnvtestError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(EnvtestError::FreePort)?;
    Ok(l.local_addr().map_err(EnvtestError::FreePort)?.port())
}

fn write(path: &Path, text: &str) -> Result<(), EnvtestError> {
    std::fs::write(path, text).map_err(|source| EnvtestError::WriteFile {
        path: path.display().to_string(),
        source,
    })
}

/// A real etcd + kube-apiserver pair; both are killed on drop.
#[derive(Debug)]
pub struct Envtest {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    kubeconfig: PathBuf,
    ca: TestCa,
    url: String,
}

impl Envtest {
    /// Starts etcd and kube-apiserver from `assets` and waits until the apiserver is ready.
    pub async fn start(assets: &Path) -> Result<Self, EnvtestError> {
        let dir = tempfile::Builder::new()
            .prefix("vc-envtest")
            .tempdir()
            .map_err(EnvtestError::WorkDir)?;
        let d = dir.path();
        let ca = TestCa::generate("envtest-ca")?;
        let serving = ca.issue_server(&[])?;
        let sa = ca.issue_client("service-accounts", &[])?;
        write(&d.join("ca.crt"), ca.cert_pem())?;
        write(&d.join("apiserver.crt"), &serving.cert_pem)?;
        write(&d.join("apiserver.key"), &serving.key_pem)?;
        write(&d.join("sa.key"), &sa.key_pem)?;
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let log = |name: &str| -> Result<Stdio, EnvtestError> {
            let path = d.join(name);
            std::fs::File::create(&path)
                .map(Stdio::from)
                .map_err(|source| EnvtestError::WriteFile {
                    path: path.display().to_string(),
                    source,
                })
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Command::new(assets.join("etcd"))
            .args([
                &format!("--data-dir={}", d.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            ])
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.err.log")?)
            .spawn()
            .map_err(|source| EnvtestError::Spawn {
                binary: "etcd".into(),
                source,
            })?;
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .args([
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--secure-port={api_port}"),
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", d.display()),
                format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
                format!(
                    "--tls-private-key-file={}",
                    d.join("apiserver.key").display()
                ),
                format!("--client-ca-file={}", d.join("ca.crt").display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
                format!("--service-account-key-file={}", d.join("sa.key").display()),
                format!(
                    "--service-account-signing-key-file={}",
                    d.join("sa.key").display()
                ),
                "--service-cluster-ip-range=10.0.0.0/24".to_string(),
                "--authorization-mode=RBAC".to_string(),
                "--disable-admission-plugins=ServiceAccount".to_string(),
                "--allow-privileged=true".to_string(),
            ])
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.err.log")?)
            .spawn()
            .map_err(|source| EnvtestError::Spawn {
                binary: "kube-apiserver".into(),
                source,
            })?;
        let url = format!("https://127.0.0.1:{api_port}");
        let admin = ca.issue_client("admin", &["system:masters".to_string()])?;
        let text = pki::render_kubeconfig(
            &url,
            ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(admin),
        )?;
        let kubeconfig = d.join("admin.kubeconfig");
        pki::write_private_file(&kubeconfig, &text)?;
        let env = Self {
            dir,
            etcd,
            apiserver,
            kubeconfig,
            ca,
            url,
        };
        env.wait_ready(Duration::from_secs(60)).await?;
        Ok(env)
    }

    async fn wait_ready(&self, limit: Duration) -> Result<(), EnvtestError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(client) = client_from_kubeconfig(&self.kubeconfig).await {
                let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
                if ns.get("default").await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(EnvtestError::NotReady(
            limit,
            self.dir.path().display().to_string(),
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig for `user` in `groups` (client certificate from the envtest CA).
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_string()).collect();
        let cert = self.ca.issue_client(user, &groups)?;
        let text = pki::render_kubeconfig(
            &self.url,
            self.ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(cert),
        )?;
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        pki::write_private_file(&path, &text)?;
        Ok(path)
    }
}

impl Drop for Envtest {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }
}

/// Either the in-process test API server or a real envtest control plane.
#[derive(Debug)]
pub enum TestCluster {
    InProcess(Box<TestApiServer>),
    Real(Box<Envtest>),
}

impl TestCluster {
    /// A fresh in-process server with default options.
    pub fn in_process() -> Result<Self, StartError> {
        Ok(Self::InProcess(Box::new(TestApiServer::start(
            TestApiServerOptions::default(),
        )?)))
    }

    /// A real control plane, or None (after printing [`SKIP_MESSAGE`]) without assets.
    pub async fn real_or_skip() -> Result<Option<Self>, EnvtestError> {
        let Some(assets) = assets() else {
            eprintln!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        Ok(Some(Self::Real(Box::new(Envtest::start(&assets).await?))))
    }

    pub fn kubeconfig_path(&self) -> &Path {
        match self {
            Self::InProcess(s) => s.kubeconfig_path(),
            Self::Real(e) => e.kubeconfig_path(),
        }
    }

    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        match self {
            Self::InProcess(s) => s.kubeconfig_for(user, groups),
            Self::Real(e) => e.kubeconfig_for(user, groups),
        }
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, ServerError> {
        client_from_kubeconfig(self.kubeconfig_path()).await
    }

    /// True for a real kube-apiserver (garbage collection there needs
    /// kube-controller-manager, which envtest does not run).
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }
}

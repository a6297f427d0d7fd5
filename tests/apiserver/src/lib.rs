//! An in-process Kubernetes API server for tests: HTTPS on 127.0.0.1 with its own CA,
//! client-certificate and bearer-token authentication, discovery, a generic object
//! store with real resourceVersion/watch/finalizer/GC semantics, CRDs, admission and
//! RBAC hooks, fault injection and write accounting; and [`envtest`], which runs the real
//! kube-apiserver, etcd and controllers from `KUBEBUILDER_ASSETS` for the same tests.
//! Nothing here knows kosmos-vc: callers install their CRDs and objects. See
//! `tests/README.md`.
//!
//! The server runs on its own Tokio runtime thread, so a test may block (for example
//! on a `kubectl` child process) without starving it.

pub mod admission;
pub mod ports;
pub mod rbac;
pub mod work_dir;

mod api;
mod builtin;
mod escalation;
mod gc;
pub mod hooks;
mod managed;
mod openapi;
mod patch;
pub mod pki;
mod protobuf;
mod registry;
mod schema;
mod selectors;
mod server;
mod state;
pub mod status;
mod store;
mod table;
mod watch;
mod wiring;

pub mod envtest;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};

pub use hooks::{
    AdmissionAttributes, AdmissionHook, AdmissionOperation, AdmissionPhase, AdmissionResult,
    Authorizer, AuthzAttributes, AuthzDecision, FaultMatch, Faults, RbacSnapshot, ServiceResolver,
    UserInfo, WebhookConfigs, WriteCounts,
};
pub use pki::{CertKeyPem, PkiError};
pub use status::ApiError;

use pki::{KubeconfigCredential, TestCa};
use registry::Registry;
use state::{State, WriteCtx};
use store::{Expect, Store};

use crate::work_dir::WorkDir;

/// Serving certificate, key and the CA that client certificates must chain to (tenant
/// API servers use the tenant's own PKI).
#[derive(Clone)]
pub struct ServingCerts {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
    /// The CA's certificate for kubeconfigs (the one that signed `cert_pem`).
    pub server_ca_pem: String,
}

impl std::fmt::Debug for ServingCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCerts")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct TestApiServerOptions {
    /// Where to listen (default 127.0.0.1:0, a free port).
    pub bind: SocketAddr,
    /// Own certificates instead of a generated CA.
    pub serving: Option<ServingCerts>,
    /// Check requests against the stored RBAC objects (members of system:masters always pass).
    pub enforce_rbac: bool,
    /// Service cluster IP range (default `127.100.0.0/16`).
    pub service_cidr: String,
    /// Watch events kept for replay; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Directory for kubeconfigs (default: a temporary directory removed on drop).
    pub work_dir: Option<PathBuf>,
    /// Extra DNS names / IPs in the generated serving certificate.
    pub extra_sans: Vec<String>,
    /// Runs RBAC decisions when `enforce_rbac` is on (default: `crate::rbac`).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Calls admission webhooks (default: the webhook dispatcher of `crate::admission`,
    /// honouring the stored webhook configurations).
    pub admission: Option<Arc<dyn AdmissionHook>>,
}

impl Default for TestApiServerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            serving: None,
            enforce_rbac: false,
            service_cidr: "127.100.0.0/16".to_string(),
            watch_history: 200_000,
            work_dir: None,
            extra_sans: Vec::new(),
            authorizer: None,
            admission: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating the test CA or certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("configuring TLS: {0}")]
    Tls(#[from] server::TlsError),
    #[error("service_cidr {0:?} is not an IPv4 CIDR between /8 and /30 (e.g. 127.100.0.0/16)")]
    InvalidServiceCidr(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating the work directory: {0}")]
    WorkDir(std::io::Error),
    #[error("starting the server runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server thread stopped during start-up")]
    ServerThread,
}

/// Errors of the handle's helpers.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("issuing credentials: {0}")]
    Pki(#[from] PkiError),
    #[error("reading {path}: {source}")]
    ReadManifest {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing YAML document {index}: {source}")]
    ParseManifest {
        index: usize,
        source: serde_yaml::Error,
    },
    #[error("document {index} has no apiVersion/kind")]
    ManifestKind { index: usize },
    #[error("document {index}: {api_version} {kind} is not served")]
    ManifestNotServed {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("installing document {index} ({kind} {name}): {message}")]
    InstallObject {
        index: usize,
        kind: String,
        name: String,
        message: String,
    },
    #[error("building a kube client: {0}")]
    KubeClient(String),
    #[error("the server has stopped")]
    Stopped,
}

/// A running test API server. Dropping it stops it.
pub struct TestApiServer {
    state: Arc<State>,
    addr: SocketAddr,
    ca_pem: String,
    ca: Option<TestCa>,
    work_dir: WorkDir,
    admin_kubeconfig: PathBuf,
    handle: tokio::runtime::Handle,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Starts a server and writes the admin kubeconfig (CN=admin, O=system:masters).
    pub fn start(options: TestApiServerOptions) -> Result<Self, StartError> {
        let (base, size) = builtin::parse_cidr(&options.service_cidr)
            .ok_or_else(|| StartError::InvalidServiceCidr(options.service_cidr.clone()))?;
        let (ca, cert_pem, key_pem, client_ca_pem, ca_pem) = match &options.serving {
            Some(s) => (
                None,
                s.cert_pem.clone(),
                s.key_pem.clone(),
                s.client_ca_pem.clone(),
                s.server_ca_pem.clone(),
            ),
            None => {
                let ca = TestCa::generate("vc-test-apiserver-ca")?;
                let mut sans = options.extra_sans.clone();
                if !options.bind.ip().is_loopback() && !options.bind.ip().is_unspecified() {
                    sans.push(options.bind.ip().to_string());
                }
                let serving = ca.issue_server(&sans)?;
                let ca_pem = ca.cert_pem().to_string();
                (
                    Some(ca),
                    serving.cert_pem,
                    serving.key_pem,
                    ca_pem.clone(),
                    ca_pem,
                )
            }
        };
        let tls = server::tls_config(&cert_pem, &key_pem, &client_ca_pem)?;
        let work_dir = WorkDir::create(options.work_dir.as_deref(), "vc-test-apiserver")
            .map_err(StartError::WorkDir)?;
        let state = Arc::new(State {
            store: Store::new(options.watch_history),
            registry: RwLock::new(Registry::builtin()),
            faults: Faults::default(),
            accounting: hooks::WriteAccounting::default(),
            tokens: RwLock::default(),
            enforce_rbac: options.enforce_rbac,
            authorizer: RwLock::new(options.authorizer.clone().or_else(default_authorizer)),
            admission: RwLock::new(Some(
                options
                    .admission
                    .clone()
                    .unwrap_or_else(|| Arc::new(wiring::WebhookAdmission)),
            )),
            services: Mutex::new(
                builtin::ServiceAllocator::new(base, size)
                    .starting_at(rand::random_range(1..size.max(2))),
            ),
            gc_wake: tokio::sync::Notify::new(),
            server_address: RwLock::new(String::new()),
        });
        create_initial_namespaces(&state);

        let std_listener =
            std::net::TcpListener::bind(options.bind).map_err(|source| StartError::Bind {
                addr: options.bind,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: options.bind,
                source,
            })?;
        *state
            .server_address
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addr.to_string();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vc-test-apiserver")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let handle = runtime.handle().clone();
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("vc-test-apiserver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    tokio::spawn(gc::run(thread_state.clone(), shutdown_rx.clone()));
                    let _ready = ready_tx.send(());
                    server::serve(listener, tls, thread_state, shutdown_rx).await;
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .map_err(StartError::Runtime)?;
        ready_rx.recv().map_err(|_| StartError::ServerThread)?;

        let mut server = Self {
            state,
            addr,
            ca_pem,
            ca,
            admin_kubeconfig: work_dir.path().join("admin.kubeconfig"),
            work_dir,
            handle,
            shutdown,
            thread: Mutex::new(Some(thread)),
        };
        let admin = server
            .write_kubeconfig("admin", &["system:masters".to_string()], "admin.kubeconfig")
            .map_err(|e| match e {
                ServerError::Pki(p) => StartError::Pki(p),
                _ => StartError::ServerThread,
            })?;
        server.admin_kubeconfig = admin;
        Ok(server)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Admin kubeconfig (CN=admin, O=system:masters), usable by kubectl and kube-rs.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The directory holding kubeconfigs.
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// A kubeconfig for any identity: a client certificate (CN=user, O=groups) when the
    /// server has its own CA, else a bearer token.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_string()).collect();
        let file: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.write_kubeconfig(user, &groups, &format!("{file}.kubeconfig"))
    }

    fn write_kubeconfig(
        &self,
        user: &str,
        groups: &[String],
        file: &str,
    ) -> Result<PathBuf, ServerError> {
        let credential = match &self.ca {
            Some(ca) => KubeconfigCredential::ClientCert(ca.issue_client(user, groups)?),
            None => KubeconfigCredential::Token(
                self.token_for(user, &groups.iter().map(String::as_str).collect::<Vec<_>>()),
            ),
        };
        let text = pki::render_kubeconfig(&self.url(), &self.ca_pem, "vc-test", &credential)?;
        let path = self.work_dir.path().join(file);
        pki::write_private_file(&path, &text)?;
        Ok(path)
    }

    /// Registers a bearer token for `user` in `groups` (plus system:authenticated).
    pub fn token_for(&self, user: &str, groups: &[&str]) -> String {
        let token = format!("vc-test-{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_string()).collect();
        if !all.iter().any(|g| g == "system:authenticated") {
            all.push("system:authenticated".into());
        }
        let info = UserInfo {
            username: user.to_string(),
            groups: all,
            ..UserInfo::default()
        };
        self.state
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.clone(), info);
        token
    }

    /// An admin kube::Client (call from inside a Tokio runtime).
    pub async fn client(&self) -> Result<kube::Client, ServerError> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Mutating requests and effective writes so far.
    pub fn write_counts(&self) -> WriteCounts {
        self.state.accounting.snapshot()
    }

    pub fn reset_write_counts(&self) {
        self.state.accounting.reset();
    }

    /// Replaces the admission hook (e.g. once webhooks are running).
    pub fn set_admission(&self, hook: Option<Arc<dyn AdmissionHook>>) {
        *self
            .state
            .admission
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }

    /// Replaces the authorizer used when RBAC is enforced.
    pub fn set_authorizer(&self, authorizer: Option<Arc<dyn Authorizer>>) {
        *self
            .state
            .authorizer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = authorizer;
    }

    /// Forgets all watch history: watches from older resourceVersions get 410 Gone.
    pub fn compact(&self) {
        self.state.store.compact();
    }

    /// Creates (or replaces) every object of a multi-document YAML, given as a file path
    /// or as the YAML text itself, as the admin user.
    pub async fn install_yaml(&self, path_or_yaml: &str) -> Result<Vec<Value>, ServerError> {
        let text = if !path_or_yaml.contains('\n') && Path::new(path_or_yaml).exists() {
            std::fs::read_to_string(path_or_yaml).map_err(|source| ServerError::ReadManifest {
                path: path_or_yaml.to_string(),
                source,
            })?
        } else {
            path_or_yaml.to_string()
        };
        let mut docs = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .map_err(|source| ServerError::ParseManifest { index, source })?;
            if value.is_null() {
                continue;
            }
            docs.push((index, value));
        }
        let state = self.state.clone();
        let task = self.handle.spawn(async move {
            let mut out = Vec::new();
            for (index, doc) in docs {
                out.push(install_one(&state, index, doc).await?);
            }
            Ok(out)
        });
        task.await.map_err(|_| ServerError::Stopped)?
    }

    /// Stops serving and waits for the server thread.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&self) {
        self.shutdown.send_replace(true);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _joined = t.join();
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds a kube::Client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, ServerError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| ServerError::KubeClient(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| ServerError::KubeClient(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ServerError::KubeClient(e.to_string()))
}

fn default_authorizer() -> Option<Arc<dyn Authorizer>> {
    Some(Arc::new(wiring::RbacAuthorizer))
}

fn create_initial_namespaces(state: &State) {
    let key = registry::StorageKey {
        group: String::new(),
        plural: "namespaces".into(),
    };
    let now = state::now_rfc3339();
    for ns in state::INITIAL_NAMESPACES {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "uid": state::new_uid(), "creationTimestamp": now, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let _existing = state.store.commit(
            &key,
            &(String::new(), (*ns).to_string()),
            Expect::Absent,
            Some(obj),
        );
    }
}

async fn install_one(state: &Arc<State>, index: usize, doc: Value) -> Result<Value, ServerError> {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ServerError::ManifestKind { index });
    }
    let rt = state
        .registry()
        .by_kind(&api_version, &kind)
        .ok_or_else(|| ServerError::ManifestNotServed {
            index,
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let name = state::meta_str(&doc, "name")
        .unwrap_or_default()
        .to_string();
    let ns = state::meta_str(&doc, "namespace")
        .unwrap_or("default")
        .to_string();
    let ctx = WriteCtx {
        user: UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..UserInfo::default()
        },
        dry_run: false,
        field_manager: "vc-test-install".into(),
        field_validation: state::FieldValidation::Warn,
        warnings: Arc::default(),
        internal: false,
    };
    let fail = |e: ApiError| ServerError::InstallObject {
        index,
        kind: kind.clone(),
        name: name.clone(),
        message: e.message,
    };
    match state.create(&ctx, &rt, &ns, doc.clone(), None).await {
        Ok((_, obj)) => Ok(obj),
        Err(e) if e.reason.as_deref() == Some("AlreadyExists") => {
            let replacement = doc.clone();
            state
                .update(
                    &ctx,
                    &rt,
                    &ns,
                    &name,
                    "",
                    move |cur| {
                        let mut next = replacement.clone();
                        if let (Some(meta), Some(rv)) = (
                            state::meta_mut(&mut next),
                            cur.pointer("/metadata/resourceVersion"),
                        ) {
                            meta.insert("resourceVersion".into(), rv.clone());
                        }
                        Ok(next)
                    },
                    true,
                )
                .await
                .map(|(_, obj)| obj)
                .map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

//! The kubelet API of the tenant's Nodes: vc-clustertree is their kubelet, so the tenant
//! apiserver comes here for `kubectl logs` and `kubectl exec`, and both are proxied to
//! the host apiserver's `pods/log` and `pods/exec` of the host pod, with the
//! clustertree's own host credential.
//!
//! Nothing is proxied by name alone: the tenant pod is read from the tenant, its host pod
//! is the one [`crate::pods::host_pod_name`] names in the workload namespace, and that
//! host pod must record the tenant pod's UID ([`crate::pods::recorded_uid`]). Only the
//! tenant apiserver's kubelet client may ask ([`tls`]).
//!
//! Exec is an HTTP upgrade (SPDY/3.1 or websocket) whose remotecommand protocol is the
//! same between the tenant apiserver and a kubelet as between a client and the host
//! apiserver, so, as kube-apiserver's UpgradeAwareHandler does towards kubelets, the
//! upgrade request is forwarded with its protocol headers, and once the host answers 101
//! the two connections are spliced byte for byte. A host refusal is relayed as it is.

pub mod request;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pods;
use request::{ContainerRef, Route};
use tls::{Caller, KUBELET_CLIENT_COMMON_NAME};

/// A client that never finishes its handshake holds no task for longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest AdmissionReview read: kube-apiserver's own request limit (3 MiB) and room
/// for the old object beside the new.
const ADMISSION_BODY_LIMIT: usize = 7 * 1024 * 1024;
/// The most of a host error response read to relay its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Upgrade headers of exec passed to the host as they came.
const UPGRADE_REQUEST_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("x-stream-protocol-version"),
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
];
/// Headers of the host's 101 passed back: the protocol it chose.
const UPGRADE_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("x-stream-protocol-version"),
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
];

type BodyError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = UnsyncBoxBody<Bytes, BodyError>;

/// Why a request was not proxied; its status is what the tenant apiserver gets.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading tenant pod {namespace}/{pod}: {source}")]
    ReadTenantPod {
        namespace: String,
        pod: String,
        source: kube::Error,
    },
    #[error("pod {namespace}/{pod} not found")]
    TenantPodNotFound { namespace: String, pod: String },
    #[error("pod {namespace}/{pod} with UID {uid} not found")]
    TenantPodUid {
        namespace: String,
        pod: String,
        uid: String,
    },
    #[error("reading the host pod of {namespace}/{pod}: {source}")]
    ReadHostPod {
        namespace: String,
        pod: String,
        source: kube::Error,
    },
    #[error("pod {namespace}/{pod} is not running on the host yet")]
    HostPodNotFound { namespace: String, pod: String },
    #[error("the host pod named for {namespace}/{pod} does not stand for it; refused")]
    NotOurs { namespace: String, pod: String },
    #[error("exec needs a connection upgrade (SPDY/3.1 or websocket)")]
    NotAnUpgrade,
    #[error("building the host request: {0}")]
    BuildHostRequest(http::Error),
    #[error("calling the host apiserver: {0}")]
    CallHost(kube::Error),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TenantPodNotFound { .. }
            | Self::TenantPodUid { .. }
            | Self::HostPodNotFound { .. } => StatusCode::NOT_FOUND,
            Self::NotOurs { .. } => StatusCode::FORBIDDEN,
            Self::NotAnUpgrade | Self::BuildHostRequest(_) => StatusCode::BAD_REQUEST,
            Self::ReadTenantPod { .. } | Self::ReadHostPod { .. } | Self::CallHost(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// Why the kubelet API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The proxy of one tenant: its clients and its workload namespace on the host.
#[derive(Clone)]
pub struct KubeletApi {
    pub host: Client,
    pub tenant: Client,
    pub workload_namespace: String,
}

impl std::fmt::Debug for KubeletApi {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KubeletApi")
            .field("workload_namespace", &self.workload_namespace)
            .finish_non_exhaustive()
    }
}

/// Binds `address`; failing here fails the start, since Nodes advertise it.
pub async fn listen(address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })
}

/// Serves connections from `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    api: KubeletApi,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let api = Arc::new(api);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(acceptor.clone(), stream, peer, Arc::clone(&api)));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a kubelet API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    api: Arc<KubeletApi>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "kubelet API handshake refused");
            return;
        }
        Err(_) => return,
    };
    let caller = tls::caller(stream.get_ref().1.peer_certificates());
    let service = hyper::service::service_fn(move |request| {
        let api = Arc::clone(&api);
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(api.handle(request, &caller, peer).await) }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, %error, "kubelet API connection ended");
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message.into()))
            .map_err(|never| -> BodyError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl KubeletApi {
    async fn handle(
        &self,
        request: Request<Incoming>,
        caller: &Caller,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        match caller {
            Caller::KubeletClient => {}
            Caller::Anonymous => {
                tracing::info!(%peer, path = %request.uri().path(), "kubelet API call without a client certificate refused");
                return text(
                    StatusCode::UNAUTHORIZED,
                    "a client certificate of the tenant's cluster CA is required",
                );
            }
            Caller::Other(name) => {
                tracing::info!(%peer, %name, path = %request.uri().path(), "kubelet API call of another identity refused");
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{name:?} may not use this kubelet API: only {KUBELET_CLIENT_COMMON_NAME}"
                    ),
                );
            }
        }
        if request.uri().path() == crate::services::ADMISSION_PATH {
            return self.admit_service(request).await;
        }
        let route = request::route(request.uri().path());
        let method = request.method().clone();
        let outcome = match route {
            Route::Logs(target) if method == Method::GET => {
                self.logs(&target, request.uri().query()).await
            }
            Route::Exec(target) if method == Method::GET || method == Method::POST => {
                self.exec(request, &target).await
            }
            Route::Logs(_) | Route::Exec(_) => {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} not allowed"),
                );
            }
            Route::Unsupported(what) => {
                return text(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "vc-clustertree serves containerLogs and exec for tenant pods; {what} is not supported"
                    ),
                );
            }
            Route::NotFound => return text(StatusCode::NOT_FOUND, "404 page not found"),
        };
        outcome.unwrap_or_else(|error| {
            tracing::warn!(%error, "kubelet API request not proxied");
            text(error.status(), error.to_string())
        })
    }

    /// The tenant's Service webhook ([`crate::service_sync::admission`]).
    async fn admit_service(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
        }
        let body = match Limited::new(request.into_body(), ADMISSION_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("reading the AdmissionReview: {error}"),
                );
            }
        };
        match crate::service_sync::admission::review(
            &self.host,
            &self.tenant,
            &self.workload_namespace,
            &body,
        )
        .await
        {
            Ok(answer) => {
                let mut response = Response::new(
                    Full::new(Bytes::from(answer))
                        .map_err(|never| -> BodyError { match never {} })
                        .boxed_unsync(),
                );
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => text(StatusCode::BAD_REQUEST, error.to_string()),
        }
    }

    /// The name of the host pod standing for `target`, once it is sure to be ours.
    async fn resolve(&self, target: &ContainerRef) -> Result<String, ProxyError> {
        let namespace = target.namespace.clone();
        let pod = target.pod.clone();
        let tenant_pod = Api::<Pod>::namespaced(self.tenant.clone(), &target.namespace)
            .get_opt(&target.pod)
            .await
            .map_err(|source| ProxyError::ReadTenantPod {
                namespace: namespace.clone(),
                pod: pod.clone(),
                source,
            })?;
        let Some(uid) = tenant_pod.and_then(|tenant_pod| tenant_pod.uid()) else {
            return Err(ProxyError::TenantPodNotFound { namespace, pod });
        };
        if let Some(wanted) = &target.uid
            && *wanted != uid
        {
            return Err(ProxyError::TenantPodUid {
                namespace,
                pod,
                uid: wanted.clone(),
            });
        }
        let name = pods::host_pod_name(&target.namespace, &target.pod);
        let host_pod = Api::<Pod>::namespaced(self.host.clone(), &self.workload_namespace)
            .get_opt(&name)
            .await
            .map_err(|source| ProxyError::ReadHostPod {
                namespace: namespace.clone(),
                pod: pod.clone(),
                source,
            })?
            .ok_or_else(|| ProxyError::HostPodNotFound {
                namespace: namespace.clone(),
                pod: pod.clone(),
            })?;
        if pods::recorded_uid(&host_pod.metadata) != Some(uid.as_str()) {
            return Err(ProxyError::NotOurs { namespace, pod });
        }
        Ok(name)
    }

    fn host_path(&self, host_pod: &str, subresource: &str, query: &str) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{host_pod}/{subresource}?{query}",
            self.workload_namespace
        )
    }

    async fn logs(
        &self,
        target: &ContainerRef,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let host_pod = self.resolve(target).await?;
        let uri = self.host_path(
            &host_pod,
            "log",
            &request::host_log_query(query, &target.container),
        );
        let host_request = Request::get(uri)
            .body(kube::client::Body::empty())
            .map_err(ProxyError::BuildHostRequest)?;
        let response = self
            .host
            .send(host_request)
            .await
            .map_err(ProxyError::CallHost)?;
        if !response.status().is_success() {
            return Ok(self.relay_refusal(response, target, &host_pod).await);
        }
        let (parts, body) = response.into_parts();
        let mut relayed = Response::new(body.map_err(BodyError::from).boxed_unsync());
        *relayed.status_mut() = parts.status;
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            relayed
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        Ok(relayed)
    }

    async fn exec(
        &self,
        mut tenant_request: Request<Incoming>,
        target: &ContainerRef,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if !tenant_request.headers().contains_key(header::UPGRADE) {
            return Err(ProxyError::NotAnUpgrade);
        }
        let host_pod = self.resolve(target).await?;
        let uri = self.host_path(
            &host_pod,
            "exec",
            &request::host_exec_query(tenant_request.uri().query(), &target.container),
        );
        let mut host_request = Request::builder()
            .method(tenant_request.method().clone())
            .uri(uri);
        for name in &UPGRADE_REQUEST_HEADERS {
            for value in tenant_request.headers().get_all(name) {
                host_request = host_request.header(name, value);
            }
        }
        let host_request = host_request
            .body(kube::client::Body::empty())
            .map_err(ProxyError::BuildHostRequest)?;
        let tenant_side = hyper::upgrade::on(&mut tenant_request);
        let response = self
            .host
            .send(host_request)
            .await
            .map_err(ProxyError::CallHost)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(self.relay_refusal(response, target, &host_pod).await);
        }
        let mut switched = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for name in &UPGRADE_RESPONSE_HEADERS {
            for value in response.headers().get_all(name) {
                switched = switched.header(name, value);
            }
        }
        let host_side = hyper::upgrade::on(response);
        let pod = format!("{}/{}", target.namespace, target.pod);
        tokio::spawn(async move {
            let (tenant_side, host_side) = match tokio::try_join!(tenant_side, host_side) {
                Ok(both) => both,
                Err(error) => {
                    tracing::warn!(%pod, %error, "exec upgrade failed");
                    return;
                }
            };
            let mut tenant_side = TokioIo::new(tenant_side);
            let mut host_side = TokioIo::new(host_side);
            match tokio::io::copy_bidirectional(&mut tenant_side, &mut host_side).await {
                Ok((up, down)) => tracing::debug!(%pod, up, down, "exec stream closed"),
                Err(error) => tracing::debug!(%pod, %error, "exec stream broke"),
            }
        });
        switched
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| -> BodyError { match never {} })
                    .boxed_unsync(),
            )
            .map_err(ProxyError::BuildHostRequest)
    }

    /// The host's refusal as plain text under its status, speaking of the tenant pod
    /// rather than the host's names for it.
    async fn relay_refusal(
        &self,
        response: Response<kube::client::Body>,
        target: &ContainerRef,
        host_pod: &str,
    ) -> Response<ResponseBody> {
        let status = response.status();
        let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|status| status.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let message = message
            .replace(host_pod, &target.pod)
            .replace(&self.workload_namespace, &target.namespace);
        tracing::info!(pod = %format!("{}/{}", target.namespace, target.pod), %status, %message, "the host refused");
        text(status, message)
    }
}

//! The HTTPS server: routes, and an accept loop that terminates TLS with rustls.
//!
//! We run our own accept loop (instead of an axum helper) because the TLS configuration
//! must resolve the certificate per handshake, and because shutdown must wait for
//! in-flight admission requests: the apiserver fails the user's request when a webhook
//! connection breaks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Endpoint, Metrics, OperationLabel, Outcome};
use crate::review::{self, Admission, MAX_BODY_BYTES, Reply};

/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Whether both watch caches have listed everything once.
#[derive(Debug, Default)]
pub struct Readiness {
    nodes: AtomicBool,
    clusters: AtomicBool,
}

impl Readiness {
    /// Readiness with both caches already synced (caches fed directly, in tests and benches).
    pub fn synced() -> Self {
        Self {
            nodes: AtomicBool::new(true),
            clusters: AtomicBool::new(true),
        }
    }

    /// The Node cache has seen its first complete list.
    pub fn mark_nodes_synced(&self) {
        self.nodes.store(true, Ordering::Release);
    }

    /// The VirtualCluster cache has seen its first complete list.
    pub fn mark_clusters_synced(&self) {
        self.clusters.store(true, Ordering::Release);
    }

    /// Caches still waiting for their first list, empty when ready.
    pub fn pending(&self) -> Vec<&'static str> {
        let mut pending = Vec::new();
        if !self.nodes.load(Ordering::Acquire) {
            pending.push("nodes");
        }
        if !self.clusters.load(Ordering::Acquire) {
            pending.push("virtualclusters");
        }
        pending
    }
}

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct Webhook {
    /// Rules or the parse-only baseline.
    pub admission: Admission,
    /// Request counters and latency.
    pub metrics: Metrics,
    /// Cache sync state behind `/readyz`.
    pub readiness: Arc<Readiness>,
}

/// Routes of the webhook.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(webhook)
}

async fn mutate(
    State(webhook): State<Arc<Webhook>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admit(&webhook, Endpoint::Mutate, body)
}

async fn validate(
    State(webhook): State<Arc<Webhook>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admit(&webhook, Endpoint::Validate, body)
}

fn admit(webhook: &Webhook, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let (response, operation, outcome) = match body {
        Err(rejection) => {
            let status = rejection.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the body exceeds the limit of {MAX_BODY_BYTES} bytes (3 MiB)")
            } else {
                format!("cannot read the body: {}", rejection.body_text())
            };
            (
                (status, reason).into_response(),
                OperationLabel::Other,
                Outcome::Invalid,
            )
        }
        Ok(body) => {
            let answer = review::answer(endpoint, &body, &webhook.admission);
            let (response, outcome) = render(answer.reply, answer.outcome);
            (response, answer.operation, outcome)
        }
    };
    webhook
        .metrics
        .observe(endpoint, operation, outcome, started.elapsed());
    response
}

fn render(reply: Reply, outcome: Outcome) -> (Response, Outcome) {
    match reply {
        Reply::BadRequest(reason) => ((StatusCode::BAD_REQUEST, reason).into_response(), outcome),
        Reply::Review(review) => match review::encode_review(&review) {
            Ok(json) => (
                ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                outcome,
            ),
            Err(error) => {
                tracing::error!(%error, "cannot serialize the AdmissionReview answer");
                (
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot serialize the AdmissionReview answer",
                    )
                        .into_response(),
                    Outcome::Error,
                )
            }
        },
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(webhook): State<Arc<Webhook>>) -> Response {
    let pending = webhook.readiness.pending();
    if pending.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the first list of: {}", pending.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(webhook): State<Arc<Webhook>>) -> Response {
    match webhook.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// A server running in the background; dropping it stops it.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (useful after binding port 0).
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, waits for in-flight requests, and returns once the server is gone.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _finished = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `router` over TLS on `listener` in a background task.
pub fn spawn(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
) -> std::io::Result<RunningServer> {
    let local_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, tls, router, shutdown.clone()));
    Ok(RunningServer {
        local_addr,
        shutdown,
        task: Some(task),
    })
}

/// Accepts TLS connections until `shutdown` fires, then waits up to [`SHUTDOWN_GRACE`]
/// for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let builder = ConnectionBuilder::new(TokioExecutor::new());
            let connection = builder
                .serve_connection(TokioIo::new(tls_stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}

//! The HTTPS server: routes, and an accept loop that terminates TLS with rustls.
//!
//! We run our own accept loop (instead of an axum helper) because the TLS configuration
//! must resolve the certificate per handshake, because every connection is bounded by the
//! [`Limits`] (see [`crate::connection`]), and because shutdown must wait for in-flight
//! admission requests: the apiserver fails the user's request when a webhook connection
//! breaks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::connection::{self, Shared};
use crate::limits::{Limits, describe_bytes};
use crate::metrics::{Endpoint, Metrics, OperationLabel, Outcome};
use crate::review::{self, Admission, Reply};

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// While the connection cap is reached, how often idle connections are asked again to
/// make room (ones that were busy or just opened may have become idle since).
const PRESSURE_RECHECK: Duration = Duration::from_millis(250);
/// Past the body limit, how much more of a body is read and thrown away so the client,
/// still sending, gets to read the 413 instead of a reset. Bigger bodies get the 413 with
/// their upload cut.
const MAX_DISCARD_BYTES: usize = 16 * 1024 * 1024;
/// Most body buffer reserved before any of the body arrived.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

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
    /// What one client may take: time, connections, bytes.
    pub limits: Limits,
}

/// What the handlers of one router share.
#[derive(Debug)]
struct Handlers {
    webhook: Arc<Webhook>,
    /// Bytes of request bodies held at once, across all connections and streams: the
    /// connection cap and the HTTP/2 stream limit alone would still let every stream of
    /// every connection hold a maximal body.
    body_budget: Arc<Semaphore>,
}

/// Routes of the webhook: the admission endpoints and the probes.
pub fn router(webhook: Arc<Webhook>) -> Router {
    let budget = webhook
        .limits
        .max_body_bytes_in_flight
        .clamp(1, Semaphore::MAX_PERMITS);
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(Arc::new(Handlers {
            webhook: Arc::clone(&webhook),
            body_budget: Arc::new(Semaphore::new(budget)),
        }))
        .merge(vc_process::probes::router(webhook))
}

/// Ready once both watch caches listed everything; metrics are the webhook's own.
impl vc_process::probes::Probes for Webhook {
    fn unready(&self) -> Option<String> {
        let pending = self.readiness.pending();
        (!pending.is_empty())
            .then(|| format!("waiting for the first list of: {}", pending.join(", ")))
    }

    fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics.encode()
    }
}

async fn mutate(State(handlers): State<Arc<Handlers>>, request: Request) -> Response {
    admit(&handlers, Endpoint::Mutate, request).await
}

async fn validate(State(handlers): State<Arc<Handlers>>, request: Request) -> Response {
    admit(&handlers, Endpoint::Validate, request).await
}

async fn admit(handlers: &Handlers, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let webhook = &handlers.webhook;
    let (parts, body) = request.into_parts();
    let (response, operation, outcome) =
        match read_body(&parts.headers, body, &webhook.limits, &handlers.body_budget).await {
            Err(refusal) => (
                refusal.into_response(),
                OperationLabel::Other,
                Outcome::Invalid,
            ),
            Ok((body, _held)) => {
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

/// Why a request body was not read; answered with the status and this text.
#[derive(Debug, thiserror::Error)]
pub enum ReadBodyError {
    /// The body is larger than `--max-body-bytes`.
    #[error(
        "the body exceeds the limit of {limit} bytes ({}); an AdmissionReview of a VirtualCluster is a few KiB",
        describe_bytes(*limit)
    )]
    CheckSize {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive within `--request-timeout`.
    #[error("the body did not arrive within {0:?}")]
    WaitForBody(Duration),
    /// Other requests hold `--max-body-bytes-in-flight` and did not let go in time.
    #[error(
        "the webhook is receiving too many request bodies at once ({} in flight); retry",
        describe_bytes(*in_flight)
    )]
    ReserveMemory {
        /// The budget in bytes.
        in_flight: usize,
    },
    /// The connection failed while the body was being received.
    #[error("cannot read the body: {0}")]
    ReceiveBody(String),
}

impl IntoResponse for ReadBodyError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::CheckSize { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::WaitForBody(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ReserveMemory { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReceiveBody(_) => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Reads a body of at most `limits.max_body_bytes` within `limits.request_timeout`, and
/// the share of `budget` it holds until the answer is out.
///
/// An oversized body is read on and discarded (up to [`MAX_DISCARD_BYTES`]) before the 413
/// goes out: a client still sending would otherwise see its stream reset (HTTP/2) or its
/// connection closed (HTTP/1.1) instead of reading the answer.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ReadBodyError> {
    let limit = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > (limit.saturating_add(MAX_DISCARD_BYTES)) as u64) {
        return Err(ReadBodyError::CheckSize { limit });
    }
    let mut waiting_for_budget = false;
    let collect = async {
        let mut body = body;
        let mut held: Option<OwnedSemaphorePermit> = None;
        // A declared length is a promise, not bytes received: reserve only a little up
        // front, so clients announcing large bodies they never send cost no memory.
        let mut collected = Vec::with_capacity(declared.map_or(0, |length| {
            usize::try_from(length)
                .unwrap_or(limit)
                .min(limit)
                .min(INITIAL_BODY_CAPACITY)
        }));
        let mut received = 0_usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| ReadBodyError::ReceiveBody(error.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received = received.saturating_add(data.len());
            if received > limit.saturating_add(MAX_DISCARD_BYTES) {
                return Err(ReadBodyError::CheckSize { limit });
            }
            if received <= limit {
                waiting_for_budget = true;
                let share = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let permit = Arc::clone(budget)
                    .acquire_many_owned(share)
                    .await
                    .map_err(|_| ReadBodyError::ReceiveBody("the server is stopping".to_owned()))?;
                waiting_for_budget = false;
                match held.as_mut() {
                    Some(held) => held.merge(permit),
                    None => held = Some(permit),
                }
                collected.extend_from_slice(&data);
            }
        }
        if received > limit {
            return Err(ReadBodyError::CheckSize { limit });
        }
        Ok((Bytes::from(collected), held))
    };
    let collected = tokio::time::timeout(limits.request_timeout, collect).await;
    collected.map_err(|_| {
        if waiting_for_budget {
            ReadBodyError::ReserveMemory {
                in_flight: limits.max_body_bytes_in_flight,
            }
        } else {
            ReadBodyError::WaitForBody(limits.request_timeout)
        }
    })?
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

/// Serves `webhook` over TLS on `listener` in a background task, within `webhook.limits`.
pub fn spawn(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    webhook: Arc<Webhook>,
) -> std::io::Result<RunningServer> {
    let local_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, tls, webhook, shutdown.clone()));
    Ok(RunningServer {
        local_addr,
        shutdown,
        task: Some(task),
    })
}

/// Accepts TLS connections until `shutdown` fires, then waits up to [`SHUTDOWN_GRACE`]
/// for open connections to finish their requests.
///
/// At most `max_connections` are served at once. When a connection arrives at the cap,
/// connections with no request in flight are asked to close, so a cap filled by idle or
/// silent clients never keeps the apiserver out for longer than a moment; busy
/// connections are never cut.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    webhook: Arc<Webhook>,
    shutdown: CancellationToken,
) {
    let limits = webhook.limits.clone();
    let router = router(Arc::clone(&webhook));
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max_connections));
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        limits,
        pressure: Notify::new(),
        shutdown: shutdown.clone(),
        webhook: Arc::clone(&webhook),
    });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_finished) = connections.join_next(), if !connections.is_empty() => continue,
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
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::debug!(%peer, max_connections, "connection cap reached; closing idle connections");
                let waited = wait_for_room(&permits, &shared, &shutdown);
                tokio::pin!(waited);
                let permit = loop {
                    tokio::select! {
                        permit = &mut waited => break permit,
                        Some(_finished) = connections.join_next(), if !connections.is_empty() => {}
                    }
                };
                match permit {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection::serve(
            tcp,
            peer,
            router.clone(),
            Arc::clone(&shared),
            permit,
        ));
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// Waits for a free connection slot, asking idle connections to close meanwhile; `None`
/// when the server shuts down first.
async fn wait_for_room(
    permits: &Arc<Semaphore>,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    loop {
        shared.pressure.notify_waiters();
        tokio::select! {
            () = shutdown.cancelled() => return None,
            permit = Arc::clone(permits).acquire_owned() => return permit.ok(),
            () = tokio::time::sleep(PRESSURE_RECHECK) => {}
        }
    }
}

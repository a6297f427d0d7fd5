//! One client connection from accept to close, bounded by the [`Limits`].
//!
//! hyper bounds HTTP/1.1 header reads itself, but nothing in hyper closes an HTTP/2
//! connection that never sends a request, nor a connection that sits idle while others
//! wait for a slot. So each connection keeps an [`Activity`] record, updated by the
//! service around every request, and a watchdog closes it gracefully when it has been
//! idle too long, or idle at all while the connection cap is reached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::limits::Limits;
use crate::metrics::CloseReason;
use crate::server::Webhook;

/// At the connection cap, a connection idle for this long is closed to make room. Long
/// enough for a real client to get from TCP connect through TLS to its first request.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a connection closed for idleness may take to say goodbye (HTTP/2 GOAWAY,
/// HTTP/1.1 close) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// hyper refuses HTTP/1.1 read buffers smaller than this.
const MIN_HTTP1_BUFFER: usize = 8192;

/// What every connection task of one server shares.
pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) limits: Limits,
    /// Notified while a new connection waits for a slot at the cap.
    pub(crate) pressure: Notify,
    pub(crate) shutdown: CancellationToken,
    pub(crate) webhook: Arc<Webhook>,
}

/// Whether a connection has a request in flight, and since when it has been idle.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    idle_since_millis: AtomicU64,
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_millis: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn now_millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.idle_since_millis
            .store(self.now_millis(), Ordering::Release);
    }

    /// How long the connection has been idle; `None` while a request is in flight.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_millis.load(Ordering::Acquire);
        Some(Duration::from_millis(
            self.now_millis().saturating_sub(since),
        ))
    }

    fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }
}

/// Marks a request in flight from the moment its headers are complete until its answer.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.served.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts the connection in the open-connections gauge for as long as it lives.
struct Open(Gauge);

impl Open {
    fn start(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one accepted TCP connection; `permit` is its slot under the connection cap.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let _open = Open::start(shared.webhook.metrics.open_connections());
    let limits = &shared.limits;
    let activity = Arc::new(Activity::new());

    let handshake = tokio::time::timeout(limits.tls_handshake_timeout, shared.acceptor.accept(tcp));
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                shared.webhook.metrics.connection_closed(CloseReason::HandshakeTimeout);
                return;
            }
        },
        () = evictable(&activity, &shared.pressure) => {
            tracing::debug!(%peer, "closed during the TLS handshake to make room at the connection cap");
            shared.webhook.metrics.connection_closed(CloseReason::Evicted);
            return;
        }
        () = shared.shutdown.cancelled() => return,
    };
    activity.touch();

    let tower = TowerToHyperService::new(router);
    let tracked = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let busy = Busy::start(&tracked);
        let answer = tower.call(request);
        async move {
            let answer = answer.await;
            drop(busy);
            answer
        }
    });
    let mut builder = ConnectionBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(
            usize::try_from(limits.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(MIN_HTTP1_BUFFER),
        );
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);

    let closing = tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            return;
        }
        reason = watch(&activity, limits, &shared.pressure) => Some(reason),
        () = shared.shutdown.cancelled() => None,
    };
    let grace = match closing {
        Some(reason) => {
            tracing::debug!(%peer, reason = reason.as_str(), "closing the connection");
            shared.webhook.metrics.connection_closed(reason);
            CLOSE_GRACE
        }
        None => limits.request_timeout,
    };
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(grace, connection).await.is_err() {
        tracing::debug!(%peer, "connection did not close in time; dropped");
    }
}

/// Resolves when the connection should be closed: idle past its timeout (the header-read
/// timeout before the first request, the idle timeout after), or idle at all while the
/// connection cap is reached.
async fn watch(activity: &Activity, limits: &Limits, pressure: &Notify) -> CloseReason {
    loop {
        let limit = if activity.served() {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        let idle = activity.idle_for();
        if idle.is_some_and(|idle| idle >= limit) {
            return CloseReason::IdleTimeout;
        }
        let recheck = idle.map_or(limit, |idle| limit.saturating_sub(idle));
        let notified = pressure.notified();
        tokio::select! {
            () = tokio::time::sleep(recheck) => {}
            () = notified => {
                if activity.idle_for().is_some_and(|idle| idle >= EVICTABLE_AFTER) {
                    return CloseReason::Evicted;
                }
            }
        }
    }
}

/// Resolves when the connection cap is reached while this connection is idle.
async fn evictable(activity: &Activity, pressure: &Notify) {
    loop {
        pressure.notified().await;
        if activity
            .idle_for()
            .is_some_and(|idle| idle >= EVICTABLE_AFTER)
        {
            return;
        }
    }
}

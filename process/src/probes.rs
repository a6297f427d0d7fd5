//! The probe and metrics endpoints every binary serves: `/healthz` answers while the
//! process serves, `/readyz` follows the binary's own readiness rule, and `/metrics`
//! gives its own metric families in the OpenMetrics text format.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The content type of `/metrics`.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a binary reports through its probes.
pub trait Probes: Send + Sync + 'static {
    /// `None` when ready; otherwise what is still missing, the body of the 503.
    fn unready(&self) -> Option<String>;

    /// The binary's metrics in the OpenMetrics text format.
    fn encode_metrics(&self) -> Result<String, std::fmt::Error>;
}

/// `/healthz`, `/readyz` and `/metrics` answered from `probes`; a binary serving other
/// routes too merges it into its own router.
pub fn router(probes: Arc<dyn Probes>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

async fn readyz(State(probes): State<Arc<dyn Probes>>) -> Response {
    match probes.unready() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(missing) => (StatusCode::SERVICE_UNAVAILABLE, missing).into_response(),
    }
}

async fn metrics(State(probes): State<Arc<dyn Probes>>) -> Response {
    match probes.encode_metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// The plain-HTTP probe server could not bind or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error("cannot bind the probe server to {address}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed after the bind.
    #[error("the probe server failed")]
    Serve(#[source] std::io::Error),
}

/// Binds `address` now, so a taken port fails the start, then serves `router` over plain
/// HTTP in a task until `shutdown` is cancelled.
pub async fn spawn(
    address: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<(), ServeError>>, ServeError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    tracing::info!(address = %listener.local_addr().unwrap_or(address), "probe server listening");
    Ok(tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(ServeError::Serve)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    #[derive(Default)]
    struct Fixed {
        ready: AtomicBool,
        broken_metrics: bool,
    }

    impl Probes for Fixed {
        fn unready(&self) -> Option<String> {
            (!self.ready.load(Ordering::Acquire)).then(|| "caches not synced".to_owned())
        }
        fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
            if self.broken_metrics {
                Err(std::fmt::Error)
            } else {
                Ok("# EOF\n".to_owned())
            }
        }
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn readyz_says_what_is_missing_and_healthz_always_answers() {
        let probes = Arc::new(Fixed::default());
        let router = router(probes.clone());
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
        );
        probes.ready.store(true, Ordering::Release);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_or_a_500() {
        let (status, content_type, body) =
            get(&router(Arc::new(Fixed::default())), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_TEXT));
        assert_eq!(body, "# EOF\n");
        let broken = router(Arc::new(Fixed {
            broken_metrics: true,
            ..Fixed::default()
        }));
        assert_eq!(
            get(&broken, "/metrics").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn the_server_binds_at_once_and_stops_on_the_token() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let refused = spawn(
            address,
            router(Arc::new(Fixed::default())),
            shutdown.clone(),
        )
        .await;
        assert!(
            matches!(refused, Err(ServeError::Bind { .. })),
            "{refused:?}"
        );
        drop(taken);

        let serving = spawn(
            address,
            router(Arc::new(Fixed::default())),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), serving).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }
}

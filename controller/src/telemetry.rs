//! Metrics and what the probe server (`/healthz`, `/readyz`, `/metrics`, served by
//! `vc_process::probes`) reports.
//!
//! Metric labels are bounded: a reconcile's `step` and `outcome` come from closed enums,
//! never from object names or error strings, so the series count stays fixed however many
//! tenants exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Step;

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The reconcile returned an action.
    Success,
    /// The reconcile returned an error.
    Error,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let value = match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    step: Step,
}

/// The controller's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    errors: Family<StepLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vc_controller");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "VirtualCluster reconciles, by outcome",
            reconciles.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time one VirtualCluster reconcile took",
            duration.clone(),
        );
        let errors = Family::<StepLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed VirtualCluster reconciles, by the step of the chain that failed",
            errors.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            errors,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile; `failed_step` is `None` on success.
    pub fn observe(&self, elapsed: Duration, failed_step: Option<Step>) {
        self.duration.observe(elapsed.as_secs_f64());
        let outcome = if failed_step.is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if let Some(step) = failed_step {
            self.errors.get_or_create(&StepLabels { step }).inc();
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What the probes report; shared between the controller and the probe server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the process ready to serve (watches synced, or standby with leader election).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The controller's side of the probes: ready once its watches synced (or, with leader
/// election, once it reached the apiserver as a standby).
#[derive(Clone, Debug)]
struct ControllerProbes {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl vc_process::probes::Probes for ControllerProbes {
    fn unready(&self) -> Option<String> {
        (!self.health.is_ready()).then(|| "watches not synced yet".to_owned())
    }

    fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics.encode()
    }
}

/// The router of the probe server; public so tests can call it without a socket.
pub fn probe_router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    vc_process::probes::router(Arc::new(ControllerProbes { metrics, health }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_health_and_healthz_always_answers() {
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        let router = probe_router(metrics, health.clone());
        assert_eq!(get_text(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get_text(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_ready();
        assert_eq!(get_text(router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_count_reconciles_and_errors_by_step() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe(Duration::from_millis(3), None);
        metrics.observe(Duration::from_millis(5), Some(Step::ClaimNodes));
        metrics.observe(Duration::from_millis(5), Some(Step::ClaimNodes));
        let router = probe_router(metrics, Arc::new(Health::default()));
        let (status, text) = get_text(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("vc_controller_reconciles_total{outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vc_controller_reconciles_total{outcome=\"error\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vc_controller_reconcile_errors_total{step=\"claim_nodes\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vc_controller_reconcile_duration_seconds_count 3"),
            "{text}"
        );
    }
}

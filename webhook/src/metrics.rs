//! Prometheus metrics of the admission endpoints.
//!
//! Every label has a closed set of values (endpoint, operation, result), so a flood of
//! odd requests can never grow the series count.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which admission endpoint answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mutate`
    Mutate,
    /// `/validate`
    Validate,
}

/// The admission operation, with everything unexpected folded into `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OperationLabel {
    /// `CREATE`
    Create,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
    /// `CONNECT`, or a body we could not read.
    Other,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (possibly with a patch or warnings).
    Allowed,
    /// Refused by a rule.
    Denied,
    /// The request itself was malformed: not an AdmissionReview, wrong kind, too large.
    Invalid,
    /// The webhook failed to produce an answer it could stand behind.
    Error,
}

impl Endpoint {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

impl OperationLabel {
    /// The label value, spelled as the apiserver spells operations.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Other => "other",
        }
    }
}

impl From<&kube::core::admission::Operation> for OperationLabel {
    fn from(operation: &kube::core::admission::Operation) -> Self {
        use kube::core::admission::Operation;
        match operation {
            Operation::Create => Self::Create,
            Operation::Update => Self::Update,
            Operation::Delete => Self::Delete,
            Operation::Connect => Self::Other,
        }
    }
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }
}

macro_rules! label_value_from_as_str {
    ($($kind:ty),*) => {$(
        impl EncodeLabelValue for $kind {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
/// Why the server closed a connection before the client did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// No complete request arrived in time after the handshake, or the connection sat
    /// idle past the idle timeout.
    IdleTimeout,
    /// Closed while idle to make room for a new connection at the connection cap.
    Evicted,
}

impl CloseReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Evicted => "evicted",
        }
    }
}

label_value_from_as_str!(Endpoint, OperationLabel, Outcome, CacheKind, CloseReason);

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which endpoint answered.
    pub endpoint: Endpoint,
    /// The admission operation.
    pub operation: OperationLabel,
    /// How it ended.
    pub result: Outcome,
}

/// Which watch cache a gauge describes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CacheKind {
    /// Host Nodes.
    Node,
    /// VirtualClusters.
    VirtualCluster,
}

impl CacheKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::VirtualCluster => "virtualcluster",
        }
    }
}

/// Labels of the cache gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Which cache.
    pub kind: CacheKind,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Which endpoint answered.
    pub endpoint: Endpoint,
}

/// Labels of the closed-connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// Why the server closed it.
    pub reason: CloseReason,
}

/// The webhook's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    cache_objects: Family<CacheLabels, Gauge>,
    open_connections: Gauge,
    closed_connections: Family<CloseLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `vc_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vc_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, operation and result",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "admission_duration_seconds",
            "Time from receiving an admission request to answering it",
            latency.clone(),
        );
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_objects",
            "Objects held in a watch cache",
            cache_objects.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections held, at most --max-connections",
            open_connections.clone(),
        );
        let closed_connections = Family::<CloseLabels, Counter>::default();
        registry.register(
            "closed_connections",
            "Connections the server closed before the client did, by reason",
            closed_connections.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            cache_objects,
            open_connections,
            closed_connections,
        }
    }

    /// Counts one answered request and records how long it took.
    pub fn observe(
        &self,
        endpoint: Endpoint,
        operation: OperationLabel,
        result: Outcome,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                operation,
                result,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// The gauge a cache keeps its object count in.
    pub fn cache_objects(&self, kind: CacheKind) -> Gauge {
        self.cache_objects
            .get_or_create_owned(&CacheLabels { kind })
    }

    /// The gauge of connections held; the server adds and removes them.
    pub fn open_connections(&self) -> Gauge {
        self.open_connections.clone()
    }

    /// Counts a connection the server closed.
    pub fn connection_closed(&self, reason: CloseReason) {
        self.closed_connections
            .get_or_create(&CloseLabels { reason })
            .inc();
    }

    /// How many requests ended with these labels so far.
    pub fn request_count(&self, labels: &RequestLabels) -> u64 {
        self.requests.get_or_create(labels).get()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Buckets from 0.25 ms to about 4 s: admission is expected in the sub-millisecond range,
/// and the apiserver gives up after the webhook's timeout (at most 30 s).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text_format_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.observe(
            Endpoint::Validate,
            OperationLabel::Create,
            Outcome::Denied,
            Duration::from_micros(300),
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"vc_webhook_admission_requests_total{endpoint="validate",operation="CREATE",result="denied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"vc_webhook_admission_duration_seconds_count{endpoint="validate"} 1"#),
            "{text}"
        );
        metrics.cache_objects(CacheKind::Node).set(3);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"vc_webhook_cache_objects{kind="node"} 3"#),
            "{text}"
        );
    }
}

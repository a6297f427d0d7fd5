//! Random bytes and random JSON at the admission endpoints: nothing panics, and every
//! answer is either a well-formed AdmissionReview (200) or a reason (400/413).
//! A fixed, bounded number of cases so CI time stays predictable.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;
use vc_api::admission::{Defaults, Inventory, NodeFacts, Policy, ResourceAmounts};
use vc_webhook::metrics::Metrics;
use vc_webhook::review::{Admission, Enforcement};
use vc_webhook::server::{Readiness, Webhook};

/// The validating CREATE request kube-apiserver v1.36 sent for `vc-adm`.
const RECORDED: &str = include_str!(
    "fixtures/admission-requests/002-validate-CREATE-virtualclusters-vc-adm.request.json"
);

#[cfg(test)]
fn router() -> axum::Router {
    let mut inventory = Inventory::new();
    inventory.upsert_node(NodeFacts {
        name: "node-a".to_owned(),
        ready: true,
        unschedulable: false,
        control_plane: false,
        allocatable: ResourceAmounts::from_iter([("cpu", 64_000)]),
        claimed_by: None,
    });
    vc_webhook::router(Arc::new(Webhook {
        admission: Admission::Enforce(Box::new(Enforcement {
            inventory: Arc::new(parking_lot::RwLock::new(inventory)),
            policy: Policy::default(),
            defaults: Defaults::default(),
        })),
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::synced()),
        limits: vc_webhook::Limits::default(),
    }))
}

/// Sends `body` to both endpoints and checks the shape of each answer.
#[cfg(test)]
fn check(router: &axum::Router, body: Vec<u8>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in ["/mutate", "/validate"] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let (status, answer) = runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        });
        match status {
            StatusCode::OK => {
                let review: Value = serde_json::from_slice(&answer)
                    .map_err(|error| TestCaseError::fail(format!("200 without JSON: {error}")))?;
                prop_assert_eq!(&review["kind"], "AdmissionReview");
                prop_assert!(review["response"]["uid"].is_string(), "{}", review);
                let allowed = review["response"]["allowed"].as_bool();
                prop_assert!(allowed.is_some(), "{}", review);
                if allowed == Some(false) {
                    prop_assert!(
                        review["response"]["status"]["code"].as_u64().is_some(),
                        "{}",
                        review
                    );
                    prop_assert!(
                        review["response"]["status"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty()),
                        "{}",
                        review
                    );
                }
            }
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                prop_assert!(!answer.is_empty(), "{} without a reason", status);
            }
            other => prop_assert!(false, "unexpected status {}", other),
        }
    }
    Ok(())
}

#[cfg(test)]
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("10"),
            Just("100Gi"),
            Just("-1"),
            Just("1e400"),
            Just("node-a"),
            Just("CREATE")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}".boxed(),
                    prop_oneof![
                        Just("spec"),
                        Just("promoteResources"),
                        Just("nodes"),
                        Just("resources"),
                        Just("cpu"),
                        Just("kubeconfig"),
                        Just("controlPlane"),
                        Just("etcd"),
                        Just("replicas"),
                        Just("kubernetesVersion"),
                        Just("status"),
                    ]
                    .prop_map(str::to_owned)
                    .boxed(),
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Paths into the recorded review where random JSON is spliced in.
#[cfg(test)]
const SPLICE_POINTS: [&[&str]; 9] = [
    &["request", "object", "spec"],
    &["request", "object", "spec", "promoteResources"],
    &["request", "object", "spec", "promoteResources", "resources"],
    &["request", "object", "metadata"],
    &["request", "object"],
    &["request", "oldObject"],
    &["request", "operation"],
    &["request", "kind"],
    &["request", "userInfo"],
];

#[cfg(test)]
fn splice(mut review: Value, point: &[&str], value: Value) -> Value {
    let mut target = &mut review;
    for key in point {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        target = target
            .as_object_mut()
            .unwrap()
            .entry((*key).to_owned())
            .or_insert(Value::Null);
    }
    *target = value;
    review
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&router(), body)?;
    }

    #[test]
    fn random_json_never_panics(value in json_value()) {
        check(&router(), serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn recorded_reviews_with_random_parts_never_panic(
        point in 0..SPLICE_POINTS.len(),
        value in json_value(),
    ) {
        let recorded: Value = serde_json::from_str(RECORDED).unwrap();
        let review = splice(recorded, SPLICE_POINTS[point], value);
        check(&router(), serde_json::to_vec(&review).unwrap())?;
    }
}

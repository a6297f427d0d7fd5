//! The service simulator when its watches lag behind its own writes, as they do on a
//! loaded machine: a pass that runs before the watch has delivered the object the
//! previous pass created must neither drop its update nor create a second object.
//!
//! The lag is made deterministic by delaying the simulator's watch of one resource on the
//! test API server (`faults().delay_next` on verb `watch`): its cache is listed (empty)
//! but sees nothing for the length of the delay, which is far longer than the test.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_simulation::services::{self, SERVICE_NAME_LABEL, ServiceOptions};
use vc_test_apiserver::{FaultMatch, TestApiServer};

use crate::support::eventually::eventually;
use crate::support::server::server;

/// How long the lagging watch stays silent: longer than anything the tests wait for.
const WATCH_LAG: Duration = Duration::from_secs(20);

const WAIT: Duration = Duration::from_secs(10);

/// Delays the first watch of `resource` (the simulator's) by [`WATCH_LAG`].
fn lag_watch_of(server: &TestApiServer, resource: &str) {
    server.faults().delay_next(
        1,
        WATCH_LAG,
        FaultMatch {
            verb: Some("watch".to_owned()),
            resource: Some(resource.to_owned()),
            user: None,
        },
    );
}

fn services_fast() -> ServiceOptions {
    ServiceOptions {
        resync: Duration::from_millis(200),
        ..ServiceOptions::default()
    }
}

async fn create_service(client: &Client) {
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
}

/// A pod of Service web, Running and Ready at `ip`, as a kubelet reports it.
async fn create_ready_pod(client: &Client, name: &str, ip: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn slices_of_web(client: &Client) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}=web")))
        .await
        .unwrap()
        .items
}

fn ready_addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut addresses: Vec<String> = slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|endpoint| endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|endpoint| endpoint.addresses.iter().cloned())
        .collect();
    addresses.sort();
    addresses
}

fn endpoints_addresses(endpoints: &Endpoints) -> Vec<String> {
    let mut addresses: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|subset| subset.addresses.iter().flatten())
        .map(|address| address.ip.clone())
        .collect();
    addresses.sort();
    addresses
}

/// The Endpoints are written before the EndpointSlice in every pass, so a reader that
/// sees a ready endpoint in the slice finds it in the Endpoints too, even when the
/// simulator's Endpoints cache has not yet seen the Endpoints it created (the create
/// answers AlreadyExists; that must not skip the update).
#[tokio::test]
async fn endpoints_keep_up_with_the_slice_while_the_endpoints_watch_lags() {
    let (server, client) = server().await;
    lag_watch_of(&server, "endpoints");
    let _services = services::spawn(client.clone(), services_fast());
    create_service(&client).await;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    // The first pass created both, empty (no pod yet).
    eventually(WAIT, "the first Endpoints and EndpointSlice", || async {
        let created = endpoints.get_opt("web").await.ok()?.is_some();
        (created && !slices_of_web(&client).await.is_empty()).then_some(())
    })
    .await;

    create_ready_pod(&client, "web-1", "127.200.0.11").await;
    let sliced = eventually(WAIT, "a ready endpoint in the EndpointSlice", || async {
        let ready = ready_addresses(&slices_of_web(&client).await);
        (!ready.is_empty()).then_some(ready)
    })
    .await;
    let legacy = endpoints_addresses(&endpoints.get("web").await.unwrap());
    assert_eq!(
        legacy, sliced,
        "Endpoints lag the EndpointSlice while the simulator's Endpoints watch is silent"
    );
}

/// A pass whose slice cache is still empty finds the slice the previous pass created
/// (EndpointSlices have generated names, so a second create would not conflict).
#[tokio::test]
async fn one_endpoint_slice_per_service_while_the_slice_watch_lags() {
    let (server, client) = server().await;
    lag_watch_of(&server, "endpointslices");
    let _services = services::spawn(client.clone(), services_fast());
    create_service(&client).await;
    create_ready_pod(&client, "web-1", "127.200.0.11").await;
    eventually(WAIT, "a ready endpoint in an EndpointSlice", || async {
        let ready = ready_addresses(&slices_of_web(&client).await);
        (!ready.is_empty()).then_some(())
    })
    .await;
    // Several resyncs and a backend change, all while the slice cache stays empty.
    create_ready_pod(&client, "web-2", "127.200.0.12").await;
    let slices = eventually(WAIT, "both pods in the EndpointSlices", || async {
        let slices = slices_of_web(&client).await;
        (ready_addresses(&slices).contains(&"127.200.0.12".to_owned())).then_some(slices)
    })
    .await;
    // Once both pods are in, further passes must not add a second slice: settle over
    // several resyncs rather than read once.
    let settled = vc_tests::wait::settled(
        "the EndpointSlices of web",
        WAIT,
        Duration::from_millis(600),
        || slices_of_web(&client),
    )
    .await
    .unwrap();
    let names: Vec<String> = settled.iter().map(|s| s.name_any()).collect();
    assert_eq!(settled.len(), 1, "EndpointSlices of Service web: {names:?}");
    assert_eq!(
        ready_addresses(&settled),
        ["127.200.0.11", "127.200.0.12"],
        "{slices:?}"
    );
}

/// Duplicates left by anyone (an older simulator, a restart) are removed, so readers that
/// add up every slice of a Service count each pod once.
#[tokio::test]
async fn duplicate_endpoint_slices_are_removed() {
    let (_server, client) = server().await;
    create_service(&client).await;
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let duplicate: EndpointSlice = serde_json::from_value(services::without_nulls(
        services::endpoint_slice_for(&service, &[]),
    ))
    .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for _ in 0..2 {
        slices
            .create(&PostParams::default(), &duplicate)
            .await
            .unwrap();
    }
    assert_eq!(slices_of_web(&client).await.len(), 2);
    let _services = services::spawn(client.clone(), services_fast());
    create_ready_pod(&client, "web-1", "127.200.0.11").await;
    let settled = eventually(WAIT, "one EndpointSlice with the ready pod", || async {
        let slices = slices_of_web(&client).await;
        (slices.len() == 1 && ready_addresses(&slices) == ["127.200.0.11"]).then_some(slices)
    })
    .await;
    assert_eq!(settled.len(), 1);
}

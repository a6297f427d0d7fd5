//! The tenant's etcd is a real etcd: `/usr/bin/etcd` started from the StatefulSet the
//! controller created on the host, and reached exactly as the tenant's apiserver
//! Deployment is configured to (its `--etcd-cafile/--etcd-certfile/--etcd-keyfile`, and
//! the host of its rendered `--etcd-servers` as the name etcd's certificate must carry).
//! Both are translated by `vc_simulation::local_control_plane`'s planner, the same
//! one that runs whole tenant control planes: volumes laid out from the mounted Secrets,
//! `$(POD_NAME)`, paths, and member URLs on 127.0.0.1 with free ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::ListParams;
use vc_api::constants::TENANT_NAME_LABEL;
use vc_simulation::etcd_gateway;
use vc_simulation::local_control_plane::{Component, TenantObjects, TenantPlanner};
use vc_simulation::local_pod::VolumeSources;
use vc_simulation::tenant_apiserver::flag_value;

use vc_tests::harness::{self, Harness, TENANT_NAMESPACE};

/// A running etcd, killed when dropped.
struct Etcd {
    child: Child,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// The tenant's workloads, Services and Secrets as the controller wrote them.
async fn tenant_objects(harness: &Harness, tenant: &str) -> TenantObjects {
    let client = harness.admin.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), TENANT_NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), TENANT_NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), TENANT_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client, TENANT_NAMESPACE);
    let secrets: BTreeMap<String, Secret> = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| Some((s.metadata.name.clone()?, s)))
        .collect();
    TenantObjects {
        namespace: TENANT_NAMESPACE.to_owned(),
        name: tenant.to_owned(),
        etcd: Some(sets.get(&format!("{tenant}-etcd")).await.unwrap()),
        apiserver: Some(
            deployments
                .get(&format!("{tenant}-apiserver"))
                .await
                .unwrap(),
        ),
        controller_manager: None,
        scheduler: None,
        services: services
            .list(&ListParams::default().labels(&format!("{TENANT_NAME_LABEL}={tenant}")))
            .await
            .unwrap()
            .items,
        sources: VolumeSources {
            secrets,
            config_maps: BTreeMap::new(),
        },
    }
}

/// Starts the tenant's etcd from its StatefulSet and writes/reads a key with the tenant
/// apiserver's etcd client certificate. Skips (printing why) without an etcd binary.
pub async fn tenant_etcd_is_real(harness: &Harness, tenant: &str) {
    let Some(binary) = etcd_gateway::etcd_binary() else {
        eprintln!(
            "skipped: tenant etcd sub-part: no etcd binary at {:?} and ETCD_BIN is unset",
            etcd_gateway::ETCD_FALLBACKS
        );
        return;
    };
    if harness.kind == harness::HostKind::External {
        eprintln!("skipped: tenant etcd sub-part: on an existing cluster the etcd pod itself runs");
        return;
    }
    let objects = tenant_objects(harness, tenant).await;
    let mut planner = TenantPlanner::new(
        &harness.work_dir().join("tenant-etcd"),
        "cluster.local",
        TENANT_NAMESPACE,
        tenant,
    );
    let etcd_plan = planner.plan(&objects, Component::Etcd, 0).unwrap();
    etcd_plan.materialise().unwrap();
    let args = etcd_plan.args.clone();
    let log = planner.root().join("etcd-0.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut etcd = Etcd {
        child: etcd_plan
            .command(&binary)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap(),
        log,
    };

    // The apiserver's view: its own mounted files, the local address of its
    // --etcd-servers, and the host it verifies etcd as (from the rendered flag).
    let apiserver_plan = planner.plan(&objects, Component::ApiServer, 0).unwrap();
    apiserver_plan.materialise().unwrap();
    let read = |flag: &str| {
        std::fs::read(
            apiserver_plan
                .flag(flag)
                .unwrap_or_else(|| panic!("the tenant apiserver has no --{flag}")),
        )
        .unwrap()
    };
    let rendered_container = objects
        .apiserver
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .unwrap();
    let rendered_servers = flag_value(rendered_container, "etcd-servers").unwrap();
    let server_host = rendered_servers
        .strip_prefix("https://")
        .and_then(|rest| rest.split(',').next())
        .and_then(|first| first.rsplit_once(':'))
        .map(|(host, _)| host.to_owned())
        .unwrap_or_else(|| panic!("--etcd-servers={rendered_servers} is not https://HOST:PORT"));
    let local_servers = apiserver_plan.flag("etcd-servers").unwrap();
    let client_port: u16 = local_servers
        .strip_prefix("https://127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| {
            panic!("--etcd-servers={local_servers} does not point at the local member")
        });
    assert_eq!(
        Some(local_servers),
        etcd_plan.flag("advertise-client-urls"),
        "the apiserver reaches etcd where the member advertises itself"
    );
    let config = etcd_gateway::client_config(
        &read("etcd-cafile"),
        &read("etcd-certfile"),
        &read("etcd-keyfile"),
    )
    .unwrap();
    let client_addr = SocketAddr::from(([127, 0, 0, 1], client_port));

    let key = STANDARD.encode(format!("/registry/e2e/{tenant}"));
    let value = STANDARD.encode("written by the tenant apiserver's etcd client certificate");
    let accepted = vc_tests::wait::until("etcd to accept a put", Duration::from_secs(30), || {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!(
                "etcd exited with {status}; args {args:?}; log:\n{}",
                std::fs::read_to_string(&etcd.log).unwrap_or_default()
            );
        }
        let (config, server_host, key, value) = (&config, &server_host, &key, &value);
        async move {
            match etcd_gateway::post(
                config,
                server_host,
                client_addr,
                "/v3/kv/put",
                serde_json::json!({"key": key, "value": value}),
            )
            .await
            {
                Ok((200, _)) => Ok(()),
                answer => Err(format!("{answer:?}")),
            }
        }
    })
    .await;
    if let Err(timed_out) = accepted {
        panic!(
            "etcd started from StatefulSet {tenant}-etcd: {timed_out}; log:\n{}",
            std::fs::read_to_string(&etcd.log).unwrap_or_default()
        );
    }
    let (status, body) = etcd_gateway::post(
        &config,
        &server_host,
        client_addr,
        "/v3/kv/range",
        serde_json::json!({"key": key}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["kvs"][0]["value"].as_str(),
        Some(value.as_str()),
        "{body}"
    );
    eprintln!(
        "tenant etcd: a real etcd from StatefulSet {tenant}-etcd stored and returned a key over the apiserver's mTLS"
    );
}

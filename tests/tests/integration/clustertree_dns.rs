//! The real `vc-clustertree` serving a tenant's cluster DNS from a real tenant control
//! plane (kube-apiserver and kube-controller-manager), asked by a real DNS client over
//! UDP and TCP: the records of the Kubernetes DNS specification for the tenant's
//! Services, changes within seconds, and nothing of another tenant.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_test_apiserver::ports::free_port;
use vc_tests::clustertree::Launch;

use crate::clustertree_nodes::{NAMESPACE, Process, clustertree_binary, kubectl_apply};
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(30);
/// How soon a Service change must show in DNS.
const PROPAGATION: Duration = Duration::from_secs(5);
const SHOP: &str = "shop";

/// One tenant: its control plane and the clustertree serving its DNS.
struct TenantDns {
    admin: kube::Client,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
    _clustertree: Process,
    _control_plane: Envtest,
}

impl TenantDns {
    async fn start(host: &Envtest, name: &str, control_plane: Envtest) -> Self {
        let admin = vc_test_apiserver::client_from_kubeconfig(control_plane.kubeconfig_path())
            .await
            .unwrap();
        kubectl_apply(
            host.kubeconfig_path(),
            &json!({
                "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"kubernetesVersion": "v1.33.4"},
            })
            .to_string(),
        );
        let address = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        // An upstream nothing listens on: names outside the zone must fail, not resolve
        // through this machine's DNS.
        let upstream = format!("127.0.0.1:{}", free_port().unwrap());
        let log = tempfile::NamedTempFile::new().unwrap();
        let clustertree = Launch::new(
            clustertree_binary(),
            host.kubeconfig_path(),
            control_plane.kubeconfig_path(),
        )
        .name(name)
        .dns_listen(Some(address.to_string()))
        .args([
            format!("--dns-upstream={upstream}"),
            format!("--apiserver-cluster-ip={}", apiserver_ip(name)),
        ])
        .spawn(log.reopen().unwrap())
        .unwrap();
        let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": SHOP}})).unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &shop)
            .await
            .unwrap();
        TenantDns {
            admin,
            address,
            log,
            _clustertree: clustertree,
            _control_plane: control_plane,
        }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    async fn create<K>(&self, object: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).unwrap();
        Api::<K>::namespaced(self.admin.clone(), SHOP)
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    async fn udp(&self) -> Client<TokioRuntimeProvider> {
        let stream = UdpClientStream::builder(self.address, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(2)))
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        client
    }

    async fn tcp(&self) -> Client<TokioRuntimeProvider> {
        let (connect, sender) = TcpClientStream::new(
            self.address,
            None,
            Some(Duration::from_secs(2)),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await.unwrap();
        let (client, background) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(background);
        client
    }
}

/// The host cluster IP each tenant's apiserver Service has here, as the controller
/// passes it: what `kubernetes.default.svc` must answer instead of the tenant's own.
/// The tenants' Service range, apart from the host's ([`envtest::DEFAULT_SERVICE_CIDR`]).
const TENANT_SERVICE_CIDR: &str = "10.0.1.0/24";

fn apiserver_ip(tenant: &str) -> &'static str {
    if tenant == "dns-one" {
        "10.0.0.201"
    } else {
        "10.0.0.202"
    }
}

/// The response to one query; `None` when the server does not answer (not serving yet).
async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> Option<Message> {
    let name = Name::from_str(name).unwrap();
    let response = client.query(name, DNSClass::IN, qtype).await.ok()?;
    Some(response.into_message())
}

/// The data of the answer section, as text.
fn data(message: &Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

fn reverse(ip: &str) -> String {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(_) => panic!("the test tenants are IPv4"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_dns_answers_from_the_tenants_services() {
    let Some(assets) = envtest::assets() else {
        assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
        eprintln!("{SKIP_MESSAGE}");
        return;
    };
    // The tenants allocate their Services' IPs from a range of their own, as a tenant
    // apiserver does beside its host: from the host's, a tenant Service could draw the
    // IP of a host Service the DNS answers with, and a reverse lookup would name both.
    let tenant_services = EnvtestOptions {
        service_cidr: TENANT_SERVICE_CIDR.to_owned(),
        ..EnvtestOptions::default()
    };
    let with_controllers = EnvtestOptions {
        controller_manager: true,
        ..tenant_services.clone()
    };
    let (host, first, second) = tokio::join!(
        Envtest::start(&assets),
        Envtest::start_with(&assets, with_controllers),
        Envtest::start_with(&assets, tenant_services),
    );
    let (host, first, second) = (host.unwrap(), first.unwrap(), second.unwrap());
    vc_tests::clustertree::install_crd(host.kubeconfig_path()).unwrap();
    let host_admin = vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path())
        .await
        .unwrap();
    eventually(WAIT, "the CRD to serve VirtualClusters", || async {
        Api::<vc_api::VirtualCluster>::namespaced(host_admin.clone(), NAMESPACE)
            .list(&Default::default())
            .await
            .ok()
    })
    .await;
    let one = TenantDns::start(&host, "dns-one", first).await;
    let two = TenantDns::start(&host, "dns-two", second).await;

    // Tenant one: a ClusterIP Service with a named port, a headless one whose endpoints
    // are written by hand (one ready with a hostname, one not ready), an ExternalName.
    let web: Service = one
        .create(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }))
        .await;
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    let _db: Service = one
        .create(json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]},
        }))
        .await;
    let _slice: EndpointSlice = one
        .create(json!({
            "metadata": {"name": "db-manual", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.1.0.2"], "hostname": "db-1", "conditions": {"ready": false}},
            ],
        }))
        .await;
    let _search: Service = one
        .create(json!({
            "metadata": {"name": "search"},
            "spec": {"type": "ExternalName", "externalName": "search.example.com"},
        }))
        .await;
    // Tenant two: a Service of its own name in a namespace of the same name.
    let _only: Service = two
        .create(json!({"metadata": {"name": "only-two"}, "spec": {"ports": [{"port": 443}]}}))
        .await;

    let mut udp = one.udp().await;
    let web_name = "web.shop.svc.cluster.local.";
    let answer = eventually(WAIT, "tenant one's DNS to answer for web", || async {
        let mut udp = one.udp().await;
        ask(&mut udp, web_name, RecordType::A)
            .await
            .filter(|m| !m.answers.is_empty())
    })
    .await;
    assert_eq!(data(&answer), vec![web_ip.clone()], "{}", one.said());
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.answers[0].ttl, 5);

    // `kubernetes.default.svc` is the tenant apiserver's host Service, not the tenant's
    // own `default/kubernetes` (on the host, the host's apiserver).
    let kubernetes = ask(
        &mut udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await
    .unwrap();
    assert_eq!(data(&kubernetes), vec![apiserver_ip("dns-one")]);

    let srv = ask(
        &mut udp,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await
    .unwrap();
    assert_eq!(data(&srv), vec![format!("0 100 80 {web_name}")]);
    let ptr = ask(&mut udp, &reverse(&web_ip), RecordType::PTR)
        .await
        .unwrap();
    assert_eq!(data(&ptr), vec![web_name.to_owned()]);

    let db = ask(&mut udp, "db.shop.svc.cluster.local.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(data(&db), vec!["10.1.0.1"], "only the ready endpoint");
    let pet = ask(&mut udp, "db-0.db.shop.svc.cluster.local.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(data(&pet), vec!["10.1.0.1"]);
    let db_srv = ask(
        &mut udp,
        "_sql._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await
    .unwrap();
    assert_eq!(
        data(&db_srv),
        vec!["0 100 5432 db-0.db.shop.svc.cluster.local."]
    );
    let db_ptr = ask(&mut udp, "1.0.1.10.in-addr.arpa.", RecordType::PTR)
        .await
        .unwrap();
    assert_eq!(data(&db_ptr), vec!["db-0.db.shop.svc.cluster.local."]);
    let unready = ask(&mut udp, "db-1.db.shop.svc.cluster.local.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(unready.metadata.response_code, ResponseCode::NXDomain);

    let cname = ask(
        &mut udp,
        "search.shop.svc.cluster.local.",
        RecordType::CNAME,
    )
    .await
    .unwrap();
    assert_eq!(data(&cname), vec!["search.example.com."]);
    assert!(matches!(cname.answers[0].data, RData::CNAME(_)));

    let missing = ask(&mut udp, "nope.shop.svc.cluster.local.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let version = ask(&mut udp, "dns-version.cluster.local.", RecordType::TXT)
        .await
        .unwrap();
    assert_eq!(data(&version), vec!["1.1.0"]);
    // Outside the zone: forwarded to the (dead) upstream, never answered from the zone.
    let outside = ask(&mut udp, "example.com.", RecordType::A).await.unwrap();
    assert_eq!(outside.metadata.response_code, ResponseCode::ServFail);

    // The same over TCP.
    let mut tcp = one.tcp().await;
    let over_tcp = ask(&mut tcp, web_name, RecordType::A).await.unwrap();
    assert_eq!(data(&over_tcp), vec![web_ip.clone()]);
    let srv_tcp = ask(
        &mut tcp,
        "_sql._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await
    .unwrap();
    assert_eq!(data(&srv_tcp), data(&db_srv));

    // A Service created now resolves within seconds, and stops resolving once deleted.
    let created = std::time::Instant::now();
    let late: Service = one
        .create(json!({"metadata": {"name": "late"}, "spec": {"ports": [{"port": 8080}]}}))
        .await;
    let late_ip = late.spec.unwrap().cluster_ip.unwrap();
    let late_name = "late.shop.svc.cluster.local.";
    let appeared = eventually(PROPAGATION, "a new Service in DNS", || async {
        let mut udp = one.udp().await;
        ask(&mut udp, late_name, RecordType::A)
            .await
            .filter(|m| !m.answers.is_empty())
    })
    .await;
    assert_eq!(data(&appeared), vec![late_ip]);
    eprintln!("a new Service resolved after {:?}", created.elapsed());
    let deleted = std::time::Instant::now();
    Api::<Service>::namespaced(one.admin.clone(), SHOP)
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    eventually(PROPAGATION, "a deleted Service gone from DNS", || async {
        let mut udp = one.udp().await;
        ask(&mut udp, late_name, RecordType::A)
            .await
            .filter(|m| m.metadata.response_code == ResponseCode::NXDomain)
    })
    .await;
    eprintln!(
        "a deleted Service was NXDOMAIN after {:?}",
        deleted.elapsed()
    );

    // Each tenant sees only its own Services.
    let mut other = two.udp().await;
    let own = eventually(WAIT, "tenant two's DNS to answer", || async {
        let mut udp = two.udp().await;
        ask(&mut udp, "only-two.shop.svc.cluster.local.", RecordType::A)
            .await
            .filter(|m| !m.answers.is_empty())
    })
    .await;
    assert_eq!(own.answers.len(), 1, "{}", two.said());
    for name in [web_name, "db.shop.svc.cluster.local."] {
        let foreign = ask(&mut other, name, RecordType::A).await.unwrap();
        assert_eq!(
            foreign.metadata.response_code,
            ResponseCode::NXDomain,
            "{name} in tenant two"
        );
    }
    let foreign = ask(&mut udp, "only-two.shop.svc.cluster.local.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(foreign.metadata.response_code, ResponseCode::NXDomain);
    let foreign_ptr = ask(&mut other, &reverse(&web_ip), RecordType::PTR)
        .await
        .unwrap();
    assert!(
        foreign_ptr.answers.is_empty(),
        "tenant two names no address of tenant one: {foreign_ptr:?}"
    );
}

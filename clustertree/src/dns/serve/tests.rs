//! The server over real sockets on loopback, with a small upstream nameserver.

use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::op::{Edns, MessageType};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;
use tokio::sync::watch;

use super::*;
use crate::dns::Snapshot;
use crate::dns::snapshot::SERVICE_NAME_LABEL;
use crate::dns::snapshot::tests::{service, slice};

/// An upstream that answers A with 192.0.2.1 and PTR with a name in the cluster zone (as
/// the host's DNS would for a host Service's address).
async fn upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        loop {
            let (length, peer) = socket.recv_from(&mut buffer).await.unwrap();
            let request = Message::from_vec(&buffer[..length]).unwrap();
            let query = request.queries[0].clone();
            let mut answer = Message::response(request.metadata.id, OpCode::Query);
            answer.add_query(query.clone());
            let data = match query.query_type() {
                RecordType::PTR => RData::PTR(PTR(Name::from_str(
                    "kube-dns.kube-system.svc.cluster.local.",
                )
                .unwrap())),
                _ => RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            };
            answer.add_answer(Record::from_rdata(query.name().clone(), 60, data));
            socket
                .send_to(&answer.to_vec().unwrap(), peer)
                .await
                .unwrap();
        }
    });
    address
}

async fn start(servers: Vec<SocketAddr>) -> (SocketAddr, watch::Sender<bool>) {
    let services = [
        service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10"},
        })),
        service(json!({
            "metadata": {"name": "many", "namespace": "shop"},
            "spec": {"clusterIP": "None"},
        })),
        service(json!({
            "metadata": {"name": "search", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "search.example.com"},
        })),
    ];
    let endpoints: Vec<serde_json::Value> = (1..=50)
        .map(|i| json!({"addresses": [format!("10.2.0.{i}")]}))
        .collect();
    let slices = [slice(json!({
        "metadata": {"name": "many", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "many"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))];
    let snapshot = Snapshot::build(&services, &slices, 1);
    let (publish, published) = watch::channel(Some(Arc::new(snapshot)));
    let dns = Arc::new(Dns {
        zone: Zone::new("cluster.local", 5).unwrap(),
        snapshot: published,
        upstream: Upstream {
            servers,
            timeout: Duration::from_millis(500),
        },
    });
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = listeners.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        // The snapshot stays published while the server runs.
        let _publish = publish;
        serve(listeners, dns, async move {
            let _stopped = stopped.wait_for(|stop| *stop).await;
        })
        .await;
    });
    (address, stop)
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    message
}

async fn udp(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    let received = tokio::time::timeout(Duration::from_millis(800), socket.recv(&mut buffer))
        .await
        .ok()?
        .unwrap();
    Some(buffer[..received].to_vec())
}

async fn ask_udp(server: SocketAddr, message: &Message) -> Message {
    Message::from_vec(&udp(server, &message.to_vec().unwrap()).await.unwrap()).unwrap()
}

async fn ask_tcp(server: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = message.to_vec().unwrap();
    stream
        .write_u16(u16::try_from(bytes.len()).unwrap())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let length = stream.read_u16().await.unwrap();
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

#[tokio::test]
async fn udp_and_tcp_answer_on_one_port() {
    let (server, _stop) = start(vec![]).await;
    for answer in [
        ask_udp(server, &query("web.shop.svc.cluster.local.", RecordType::A)).await,
        ask_tcp(server, &query("web.shop.svc.cluster.local.", RecordType::A)).await,
    ] {
        assert_eq!(answer.metadata.id, 7);
        assert_eq!(answer.answers.len(), 1);
    }
}

#[tokio::test]
async fn a_udp_answer_over_512_bytes_is_truncated_unless_edns_allows_more() {
    let (server, _stop) = start(vec![]).await;
    let plain = ask_udp(
        server,
        &query("many.shop.svc.cluster.local.", RecordType::A),
    )
    .await;
    assert!(plain.metadata.truncation);
    assert!(plain.answers.is_empty());
    let mut larger = query("many.shop.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    larger.edns = Some(edns);
    let answer = ask_udp(server, &larger).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 50);
    let tcp = ask_tcp(
        server,
        &query("many.shop.svc.cluster.local.", RecordType::A),
    )
    .await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 50);
}

#[tokio::test]
async fn a_malformed_packet_gets_formerr_and_a_headerless_one_nothing() {
    let (server, _stop) = start(vec![]).await;
    // A header claiming one question, and no question.
    let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xFF];
    let answer = Message::from_vec(&udp(server, &packet).await.unwrap()).unwrap();
    assert_eq!(answer.metadata.id, 0x1234);
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(udp(server, &[1, 2, 3]).await, None);
    // A response sent to us is not answered.
    let mut response = query("web.shop.svc.cluster.local.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(udp(server, &response.to_vec().unwrap()).await, None);
    // And the server still serves.
    let fine = ask_udp(server, &query("web.shop.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(fine.answers.len(), 1);
}

#[tokio::test]
async fn outside_names_are_forwarded_and_servfail_without_an_upstream() {
    let (server, _stop) = start(vec![upstream().await]).await;
    let answer = ask_udp(server, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.id, 7);
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].ttl, 60);
    let (lonely, _stop) = start(vec![]).await;
    let failed = ask_udp(lonely, &query("example.com.", RecordType::A)).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn an_upstream_answer_naming_the_cluster_zone_becomes_nxdomain() {
    let (server, _stop) = start(vec![upstream().await]).await;
    let answer = ask_udp(server, &query("10.0.96.10.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(answer.answers.len(), 1, "the tenant's own address");
    let host = ask_udp(server, &query("20.0.96.10.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(host.metadata.response_code, ResponseCode::NXDomain);
    assert!(host.answers.is_empty());
}

#[tokio::test]
async fn an_external_name_is_completed_from_the_upstream() {
    let (server, _stop) = start(vec![upstream().await]).await;
    let answer = ask_udp(
        server,
        &query("search.shop.svc.cluster.local.", RecordType::A),
    )
    .await;
    let data: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(data, vec!["search.example.com.", "192.0.2.1"]);
}

#[tokio::test]
async fn a_stop_closes_the_sockets() {
    let (server, stop) = start(vec![]).await;
    stop.send_replace(true);
    let closed = async {
        loop {
            if TcpStream::connect(server).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .unwrap();
}

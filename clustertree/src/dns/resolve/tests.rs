//! One test per rule of the Kubernetes DNS specification (and of DNS itself) the resolver
//! follows, over a hand-built tenant.

use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::dns::snapshot::SERVICE_NAME_LABEL;
use crate::dns::snapshot::tests::{service, slice};

fn zone() -> Zone {
    Zone::new("Cluster.Local.", 5).unwrap()
}

fn tenant() -> Snapshot {
    let services = [
        service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                               {"port": 8080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]},
        })),
        service(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]},
        })),
        service(json!({
            "metadata": {"name": "empty", "namespace": "shop"},
            "spec": {"clusterIP": "None"},
        })),
        service(json!({
            "metadata": {"name": "search", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "Search.Example.COM."},
        })),
        service(json!({
            "metadata": {"name": "alias", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"},
        })),
    ];
    let slices = [slice(json!({
        "metadata": {"name": "db-abc", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "sql", "port": 5433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.3"], "hostname": "db-2", "conditions": {"ready": false}},
        ],
    }))];
    Snapshot::build(&services, &slices, 42)
}

fn request(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

fn ask(name: &str, qtype: RecordType) -> Message {
    match answer(&request(name, qtype), Some(&tenant()), &zone()) {
        Resolution::Answer(message) => message,
        other => panic!("{name} {qtype}: {other:?}"),
    }
}

/// The answer section as `NAME TTL TYPE DATA` lines.
fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

fn code(message: &Message) -> ResponseCode {
    message.metadata.response_code
}

#[test]
fn a_cluster_ip_service_has_an_a_record_per_ipv4_cluster_ip() {
    let message = ask("web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(code(&message), ResponseCode::NoError);
    assert!(message.metadata.authoritative);
    assert_eq!(message.metadata.id, 4242);
    assert!(message.metadata.recursion_desired);
    assert_eq!(
        lines(&message.answers),
        vec!["web.shop.svc.cluster.local. 5 A 10.96.0.10"]
    );
}

#[test]
fn a_dual_stack_service_has_an_aaaa_record_for_its_ipv6_cluster_ip() {
    let message = ask("web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        lines(&message.answers),
        vec!["web.shop.svc.cluster.local. 5 AAAA fd00::10"]
    );
}

#[test]
fn names_are_compared_without_case_and_answered_as_asked() {
    let message = ask("WEB.Shop.SVC.cluster.LOCAL.", RecordType::A);
    assert_eq!(
        lines(&message.answers),
        vec!["WEB.Shop.SVC.cluster.LOCAL. 5 A 10.96.0.10"]
    );
}

#[test]
fn an_unknown_service_is_nxdomain_with_the_zone_soa() {
    let message = ask("nope.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(code(&message), ResponseCode::NXDomain);
    assert!(message.answers.is_empty());
    assert_eq!(
        lines(&message.authorities),
        vec![
            "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"
        ]
    );
}

#[test]
fn a_name_with_other_types_only_is_nodata() {
    let message = ask("web.shop.svc.cluster.local.", RecordType::MX);
    assert_eq!(code(&message), ResponseCode::NoError);
    assert!(message.answers.is_empty());
    assert_eq!(message.authorities.len(), 1, "the SOA");
}

#[test]
fn a_namespace_with_services_exists_and_one_without_does_not() {
    assert_eq!(
        code(&ask("shop.svc.cluster.local.", RecordType::A)),
        ResponseCode::NoError
    );
    assert_eq!(
        code(&ask("other.svc.cluster.local.", RecordType::A)),
        ResponseCode::NXDomain
    );
    assert_eq!(
        code(&ask("svc.cluster.local.", RecordType::A)),
        ResponseCode::NoError
    );
}

#[test]
fn a_named_port_has_an_srv_record_targeting_the_service_with_its_address_in_additional() {
    let message = ask("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        lines(&message.answers),
        vec!["_http._tcp.web.shop.svc.cluster.local. 5 SRV 0 100 80 web.shop.svc.cluster.local."]
    );
    assert_eq!(
        lines(&message.additionals),
        vec![
            "web.shop.svc.cluster.local. 5 A 10.96.0.10",
            "web.shop.svc.cluster.local. 5 AAAA fd00::10"
        ]
    );
    let udp = ask("_dns._udp.web.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(udp.answers.len(), 1);
}

#[test]
fn srv_needs_the_ports_name_and_protocol() {
    for name in [
        "_http._udp.web.shop.svc.cluster.local.",
        "_8080._tcp.web.shop.svc.cluster.local.",
        "_nope._tcp.web.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            code(&ask(name, RecordType::SRV)),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    // The protocol level exists when a port of that protocol does.
    assert_eq!(
        code(&ask("_tcp.web.shop.svc.cluster.local.", RecordType::SRV)),
        ResponseCode::NoError
    );
    assert_eq!(
        code(&ask("_sctp.web.shop.svc.cluster.local.", RecordType::SRV)),
        ResponseCode::NXDomain
    );
    // An existing SRV name asked for A is NODATA.
    let message = ask("_http._tcp.web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(code(&message), ResponseCode::NoError);
    assert!(message.answers.is_empty());
}

#[test]
fn a_headless_service_answers_its_ready_endpoints() {
    let message = ask("db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&message.answers),
        vec![
            "db.shop.svc.cluster.local. 5 A 10.1.0.2",
            "db.shop.svc.cluster.local. 5 A 10.1.0.1"
        ]
    );
}

#[test]
fn a_headless_service_without_ready_endpoints_is_nxdomain() {
    assert_eq!(
        code(&ask("empty.shop.svc.cluster.local.", RecordType::A)),
        ResponseCode::NXDomain
    );
}

#[test]
fn a_headless_endpoint_is_named_by_its_hostname_or_its_dashed_address() {
    for (name, address) in [
        ("db-0.db.shop.svc.cluster.local.", "10.1.0.1"),
        ("10-1-0-2.db.shop.svc.cluster.local.", "10.1.0.2"),
    ] {
        let answers = lines(&ask(name, RecordType::A).answers);
        assert_eq!(answers, [format!("{name} 5 A {address}")]);
    }
    // Not ready: no name; and a ClusterIP Service has no endpoint names.
    for name in [
        "db-2.db.shop.svc.cluster.local.",
        "x.web.shop.svc.cluster.local.",
    ] {
        let answer = code(&ask(name, RecordType::A));
        assert_eq!(answer, ResponseCode::NXDomain, "{name}");
    }
}

#[test]
fn a_headless_named_port_has_one_srv_per_ready_endpoint_on_the_endpoint_port() {
    let message = ask("_sql._tcp.db.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        lines(&message.answers),
        vec![
            "_sql._tcp.db.shop.svc.cluster.local. 5 SRV 0 100 5433 10-1-0-2.db.shop.svc.cluster.local.",
            "_sql._tcp.db.shop.svc.cluster.local. 5 SRV 0 100 5433 db-0.db.shop.svc.cluster.local.",
        ]
    );
    assert_eq!(
        lines(&message.additionals),
        vec![
            "10-1-0-2.db.shop.svc.cluster.local. 5 A 10.1.0.2",
            "db-0.db.shop.svc.cluster.local. 5 A 10.1.0.1",
        ]
    );
}

#[test]
fn a_cluster_ip_has_a_ptr_record_to_its_service() {
    let message = ask("10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert!(message.metadata.authoritative);
    assert_eq!(
        lines(&message.answers),
        vec!["10.0.96.10.in-addr.arpa. 5 PTR web.shop.svc.cluster.local."]
    );
    let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(
        lines(&ask(v6, RecordType::PTR).answers),
        vec![format!("{v6} 5 PTR web.shop.svc.cluster.local.")]
    );
}

#[test]
fn an_endpoint_ip_has_a_ptr_record_to_its_endpoint_name() {
    assert_eq!(
        lines(&ask("1.0.1.10.in-addr.arpa.", RecordType::PTR).answers),
        vec!["1.0.1.10.in-addr.arpa. 5 PTR db-0.db.shop.svc.cluster.local."]
    );
}

#[test]
fn a_known_address_asked_for_another_type_is_nodata() {
    let message = ask("10.0.96.10.in-addr.arpa.", RecordType::A);
    assert_eq!(code(&message), ResponseCode::NoError);
    assert!(message.answers.is_empty());
}

#[test]
fn an_address_the_tenant_does_not_have_is_forwarded() {
    for name in [
        "3.0.1.10.in-addr.arpa.",
        "8.8.8.8.in-addr.arpa.",
        "96.10.in-addr.arpa.",
    ] {
        assert_eq!(
            answer(&request(name, RecordType::PTR), Some(&tenant()), &zone()),
            Resolution::Forward,
            "{name}"
        );
    }
}

#[test]
fn an_external_name_service_is_a_cname() {
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let message = ask("search.shop.svc.cluster.local.", qtype);
        assert_eq!(
            lines(&message.answers),
            vec!["search.shop.svc.cluster.local. 5 CNAME search.example.com."],
            "{qtype}"
        );
    }
    assert_eq!(
        external_target(
            &ask("search.shop.svc.cluster.local.", RecordType::A),
            &zone()
        ),
        Some(Name::from_str("search.example.com.").unwrap())
    );
    assert_eq!(
        external_target(
            &ask("search.shop.svc.cluster.local.", RecordType::CNAME),
            &zone()
        ),
        None
    );
}

#[test]
fn an_external_name_inside_the_zone_is_followed() {
    let message = ask("alias.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&message.answers),
        vec![
            "alias.shop.svc.cluster.local. 5 CNAME web.shop.svc.cluster.local.",
            "web.shop.svc.cluster.local. 5 A 10.96.0.10",
        ]
    );
    assert_eq!(external_target(&message, &zone()), None);
}

#[test]
fn an_external_name_loop_stops() {
    let services = [
        service(json!({"metadata": {"name": "a", "namespace": "x"},
                       "spec": {"type": "ExternalName", "externalName": "b.x.svc.cluster.local"}})),
        service(json!({"metadata": {"name": "b", "namespace": "x"},
                       "spec": {"type": "ExternalName", "externalName": "a.x.svc.cluster.local"}})),
    ];
    let snapshot = Snapshot::build(&services, &[], 1);
    let Resolution::Answer(message) = answer(
        &request("a.x.svc.cluster.local.", RecordType::A),
        Some(&snapshot),
        &zone(),
    ) else {
        panic!("no answer");
    };
    assert_eq!(message.answers.len(), MAX_CHAIN + 1);
}

#[test]
fn dns_version_is_a_txt_record_of_the_schema_version() {
    assert_eq!(
        lines(&ask("dns-version.cluster.local.", RecordType::TXT).answers),
        vec!["dns-version.cluster.local. 5 TXT 1.1.0"]
    );
    assert_eq!(
        code(&ask("dns-version.cluster.local.", RecordType::A)),
        ResponseCode::NoError
    );
}

#[test]
fn the_zone_apex_has_a_soa() {
    let message = ask("cluster.local.", RecordType::SOA);
    assert_eq!(message.answers.len(), 1);
    assert!(matches!(message.answers[0].data, RData::SOA(_)));
}

#[test]
fn a_pod_name_is_its_dashed_address() {
    assert_eq!(
        lines(&ask("10-1-2-3.shop.pod.cluster.local.", RecordType::A).answers),
        vec!["10-1-2-3.shop.pod.cluster.local. 5 A 10.1.2.3"]
    );
    assert_eq!(
        lines(&ask("fd00--5.shop.pod.cluster.local.", RecordType::AAAA).answers),
        vec!["fd00--5.shop.pod.cluster.local. 5 AAAA fd00::5"]
    );
    assert_eq!(
        code(&ask("10-1-2.shop.pod.cluster.local.", RecordType::A)),
        ResponseCode::NXDomain
    );
    assert_eq!(
        code(&ask("10-1-2-3.shop.pod.cluster.local.", RecordType::AAAA)),
        ResponseCode::NoError
    );
}

#[test]
fn anything_else_in_the_zone_is_nxdomain_and_never_forwarded() {
    for name in [
        "google.com.shop.svc.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
        "x.cluster.local.",
        "_http.web.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            code(&ask(name, RecordType::A)),
            ResponseCode::NXDomain,
            "{name}"
        );
    }
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    for name in ["example.com.", "local.", "cluster.local.example.com."] {
        assert_eq!(
            answer(&request(name, RecordType::A), Some(&tenant()), &zone()),
            Resolution::Forward,
            "{name}"
        );
    }
}

#[test]
fn the_zone_is_servfail_until_the_first_listing_and_outside_names_still_forward() {
    let Resolution::Answer(message) = answer(
        &request("web.shop.svc.cluster.local.", RecordType::A),
        None,
        &zone(),
    ) else {
        panic!("no answer");
    };
    assert_eq!(code(&message), ResponseCode::ServFail);
    assert_eq!(
        answer(&request("example.com.", RecordType::A), None, &zone()),
        Resolution::Forward
    );
}

#[test]
fn the_ttl_comes_from_the_zone() {
    let zone = Zone::new("cluster.local", 30).unwrap();
    let Resolution::Answer(message) = answer(
        &request("web.shop.svc.cluster.local.", RecordType::A),
        Some(&tenant()),
        &zone,
    ) else {
        panic!("no answer");
    };
    assert_eq!(message.answers[0].ttl, 30);
}

#[test]
fn another_zone_is_served_from_its_flag() {
    let zone = Zone::new("tenant.example", 5).unwrap();
    let Resolution::Answer(message) = answer(
        &request("web.shop.svc.tenant.example.", RecordType::A),
        Some(&tenant()),
        &zone,
    ) else {
        panic!("no answer");
    };
    assert_eq!(message.answers.len(), 1);
    assert_eq!(
        answer(
            &request("web.shop.svc.cluster.local.", RecordType::A),
            Some(&tenant()),
            &zone
        ),
        Resolution::Forward
    );
    assert!(Zone::new("", 5).is_err());
    assert!(Zone::new("bad..name", 5).is_err());
}

#[test]
fn requests_that_are_not_one_plain_query_are_refused_or_rejected() {
    let mut two = request("web.shop.svc.cluster.local.", RecordType::A);
    two.add_query(Query::query(
        Name::from_str("db.shop.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let status = |message: &Message| match answer(message, Some(&tenant()), &zone()) {
        Resolution::Answer(message) => Some(code(&message)),
        _ => None,
    };
    assert_eq!(status(&two), Some(ResponseCode::FormErr));
    let mut update = request("web.shop.svc.cluster.local.", RecordType::A);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(status(&update), Some(ResponseCode::NotImp));
    assert_eq!(
        status(&request("cluster.local.", RecordType::AXFR)),
        Some(ResponseCode::Refused)
    );
    let mut chaos = request("version.bind.", RecordType::TXT);
    let mut query = chaos.queries[0].clone();
    query.set_query_class(DNSClass::CH);
    chaos.queries = vec![query];
    assert_eq!(status(&chaos), Some(ResponseCode::Refused));
    let mut response = request("web.shop.svc.cluster.local.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(
        answer(&response, Some(&tenant()), &zone()),
        Resolution::Ignore
    );
}

#[test]
fn an_edns_request_gets_an_edns_response() {
    let mut edns_request = request("web.shop.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns_request.edns = Some(edns);
    let Resolution::Answer(message) = answer(&edns_request, Some(&tenant()), &zone()) else {
        panic!("no answer");
    };
    assert_eq!(message.edns.map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
    assert!(
        ask("web.shop.svc.cluster.local.", RecordType::A)
            .edns
            .is_none()
    );
}

#[test]
fn any_answers_every_address_family() {
    assert_eq!(
        ask("web.shop.svc.cluster.local.", RecordType::ANY)
            .answers
            .len(),
        2
    );
}

#[test]
fn reverse_names_parse_only_when_whole() {
    let parse = |name: &str| reverse_address(&Name::from_str(name).unwrap());
    assert_eq!(
        parse("4.3.2.1.IN-ADDR.ARPA."),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(parse("256.3.2.1.in-addr.arpa."), None);
    assert_eq!(parse("3.2.1.in-addr.arpa."), None);
    assert_eq!(parse("04x.3.2.1.in-addr.arpa."), None);
    assert_eq!(
        parse("a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."),
        Some("fd00::a".parse().unwrap())
    );
    assert_eq!(
        parse("ab.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."),
        None
    );
}

#[test]
fn kubernetes_default_svc_resolves_to_the_tenant_apiserver() {
    // The tenant's own `kubernetes` Service holds the tenant range's first address, which
    // on the host is the host's apiserver; the pinned address is the tenant apiserver's
    // host Service.
    let services = [service(json!({
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
    }))];
    let mut snapshot = Snapshot::build(&services, &[], 7);
    snapshot.pin_kubernetes("10.96.12.34".parse().unwrap());
    let ask = |name: &str, qtype: RecordType| match answer(
        &request(name, qtype),
        Some(&snapshot),
        &zone(),
    ) {
        Resolution::Answer(message) => message,
        other => panic!("{name} {qtype}: {other:?}"),
    };
    assert_eq!(
        lines(&ask("kubernetes.default.svc.cluster.local.", RecordType::A).answers),
        vec!["kubernetes.default.svc.cluster.local. 5 A 10.96.12.34"]
    );
    assert_eq!(
        lines(
            &ask(
                "_https._tcp.kubernetes.default.svc.cluster.local.",
                RecordType::SRV
            )
            .answers
        ),
        vec![
            "_https._tcp.kubernetes.default.svc.cluster.local. 5 SRV 0 100 443 kubernetes.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        lines(&ask("34.12.96.10.in-addr.arpa.", RecordType::PTR).answers),
        vec!["34.12.96.10.in-addr.arpa. 5 PTR kubernetes.default.svc.cluster.local."]
    );
    // The host's apiserver address is no longer the tenant's `kubernetes`.
    assert!(!snapshot.reverse.contains_key(&"10.96.0.1".parse().unwrap()));
    // Unpinned, the name keeps the tenant Service's own address.
    let unpinned = Snapshot::build(&services, &[], 7);
    match answer(
        &request("kubernetes.default.svc.cluster.local.", RecordType::A),
        Some(&unpinned),
        &zone(),
    ) {
        Resolution::Answer(message) => assert_eq!(
            lines(&message.answers),
            vec!["kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"]
        ),
        other => panic!("{other:?}"),
    }
}

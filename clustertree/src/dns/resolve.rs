//! The answer to one DNS query from a [`Snapshot`], as the Kubernetes DNS-Based Service
//! Discovery specification (schema 1.1.0) defines the cluster zone. Pure: the server
//! does the I/O, including forwarding what this says lies outside the cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::snapshot::{Endpoint, NamedPort, Owner, ServiceKind, Snapshot};

/// The schema version `dns-version.ZONE` announces.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// The UDP payload this server offers in EDNS: the size the DNS flag day 2020 settled on
/// to stay clear of IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;
/// An ExternalName may point at another in-zone ExternalName; a loop stops here.
const MAX_CHAIN: usize = 8;

/// The cluster zone this server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Lowercase and fully qualified.
    pub domain: Name,
    /// TTL of every answer, and of negative answers through the SOA minimum.
    pub ttl: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("--cluster-domain {domain:?} is not a domain name: {reason}")]
pub struct ZoneError {
    domain: String,
    reason: String,
}

impl Zone {
    pub fn new(domain: &str, ttl: u32) -> Result<Self, ZoneError> {
        let error = |reason: String| ZoneError {
            domain: domain.to_owned(),
            reason,
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(error("it is empty".to_owned()));
        }
        let mut name = Name::from_ascii(trimmed).map_err(|e| error(e.to_string()))?;
        name.set_fqdn(true);
        Ok(Zone {
            domain: name.to_lowercase(),
            ttl,
        })
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Send this response.
    Answer(Message),
    /// The name lies outside what this server knows: ask the upstream nameservers.
    Forward,
    /// Not a query (a response sent to us): answering could loop between servers.
    Ignore,
}

/// Answers `request` from `snapshot`; `None` while the first listing of the tenant's
/// Services is not complete, when names in the zone are SERVFAIL (a client retries)
/// rather than NXDOMAIN (which it would cache).
pub fn answer(request: &Message, snapshot: Option<&Snapshot>, zone: &Zone) -> Resolution {
    if request.metadata.message_type != MessageType::Query {
        return Resolution::Ignore;
    }
    if request.metadata.op_code != OpCode::Query {
        return Resolution::Answer(response(request, ResponseCode::NotImp, false));
    }
    let [query] = request.queries.as_slice() else {
        return Resolution::Answer(response(request, ResponseCode::FormErr, false));
    };
    if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        || query.query_class() != DNSClass::IN
    {
        return Resolution::Answer(response(request, ResponseCode::Refused, false));
    }
    let asked = query.name();
    let name = asked.to_lowercase();
    let in_zone = zone.domain.zone_of(&name);
    let Some(snapshot) = snapshot else {
        return if in_zone {
            Resolution::Answer(response(request, ResponseCode::ServFail, false))
        } else {
            Resolution::Forward
        };
    };
    let lookup = if in_zone {
        let relative = usize::from(name.num_labels() - zone.domain.num_labels());
        let labels: Vec<String> = name
            .iter()
            .take(relative)
            .map(|label| String::from_utf8_lossy(label).into_owned())
            .collect();
        Records {
            zone,
            snapshot,
            qtype: query.query_type(),
        }
        .lookup(asked, &labels, 0)
    } else {
        match reverse_address(&name) {
            Some(ip) if snapshot.reverse.contains_key(&ip) => Records {
                zone,
                snapshot,
                qtype: query.query_type(),
            }
            .reverse(asked, &ip),
            // Addresses of the host or the outside world: the upstream's to answer.
            _ => return Resolution::Forward,
        }
    };
    let mut message = match lookup {
        Lookup::Found {
            answers,
            additionals,
        } if !answers.is_empty() => {
            let mut message = response(request, ResponseCode::NoError, true);
            message.answers = answers;
            message.additionals = additionals;
            message
        }
        Lookup::Found { .. } | Lookup::NoData => response(request, ResponseCode::NoError, true),
        Lookup::NxDomain => response(request, ResponseCode::NXDomain, true),
    };
    if message.answers.is_empty() {
        // RFC 2308: a negative answer carries the SOA, whose minimum bounds its caching.
        message.authorities.push(soa(zone, snapshot.serial));
    }
    Resolution::Answer(message)
}

/// A response echoing the request's id, opcode, question and RD bit.
pub fn response(request: &Message, code: ResponseCode, authoritative: bool) -> Message {
    let mut message = Message::response(request.metadata.id, request.metadata.op_code);
    message.metadata.recursion_desired = request.metadata.recursion_desired;
    message.metadata.recursion_available = true;
    message.metadata.authoritative = authoritative;
    message.metadata.response_code = code;
    message.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.edns = Some(edns);
    }
    message
}

enum Lookup {
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, without records of the asked type.
    NoData,
    NxDomain,
}

impl Lookup {
    fn answers(answers: Vec<Record>) -> Self {
        Lookup::Found {
            answers,
            additionals: Vec::new(),
        }
    }
}

struct Records<'a> {
    zone: &'a Zone,
    snapshot: &'a Snapshot,
    qtype: RecordType,
}

impl Records<'_> {
    fn wants(&self, rtype: RecordType) -> bool {
        self.qtype == rtype || self.qtype == RecordType::ANY
    }

    /// `labels` are the lowercase labels of the name below the zone, leftmost first.
    fn lookup(&self, owner: &Name, labels: &[String], depth: usize) -> Lookup {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] if self.wants(RecordType::SOA) => {
                Lookup::answers(vec![soa(self.zone, self.snapshot.serial)])
            }
            [] | ["svc"] | ["pod"] => Lookup::NoData,
            ["dns-version"] if self.wants(RecordType::TXT) => Lookup::answers(vec![record(
                owner,
                self.zone.ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])),
            )]),
            ["dns-version"] => Lookup::NoData,
            [namespace, "svc"] if self.snapshot.has_namespace(namespace) => Lookup::NoData,
            [service, namespace, "svc"] => self.service(owner, service, namespace, depth),
            [first, service, namespace, "svc"] => match first.strip_prefix('_') {
                Some(protocol) => self.protocol(protocol, service, namespace),
                None => self.endpoint(owner, first, service, namespace),
            },
            [port, protocol, service, namespace, "svc"] => {
                match (port.strip_prefix('_'), protocol.strip_prefix('_')) {
                    (Some(port), Some(protocol)) => {
                        self.srv(owner, port, protocol, service, namespace)
                    }
                    _ => Lookup::NxDomain,
                }
            }
            [address, _namespace, "pod"] => self.pod(owner, address),
            _ => Lookup::NxDomain,
        }
    }

    fn service(&self, owner: &Name, service: &str, namespace: &str, depth: usize) -> Lookup {
        let Some(entry) = self.snapshot.service(namespace, service) else {
            return Lookup::NxDomain;
        };
        match &entry.kind {
            ServiceKind::ClusterIp(ips) => self.addresses(owner, ips.iter()),
            // The specification: no ready endpoint, no name.
            ServiceKind::Headless(endpoints) if endpoints.is_empty() => Lookup::NxDomain,
            ServiceKind::Headless(endpoints) => self.addresses(
                owner,
                endpoints.iter().flat_map(|endpoint| &endpoint.addresses),
            ),
            ServiceKind::ExternalName(external) => {
                let Ok(target) = Name::from_ascii(format!("{external}.")) else {
                    return Lookup::NxDomain;
                };
                let mut answers = vec![record(
                    owner,
                    self.zone.ttl,
                    RData::CNAME(CNAME(target.clone())),
                )];
                // An in-zone target is ours to follow; an outside one is the server's to
                // forward (see `external_target`).
                if self.qtype != RecordType::CNAME
                    && depth < MAX_CHAIN
                    && self.zone.domain.zone_of(&target)
                {
                    let relative = usize::from(target.num_labels() - self.zone.domain.num_labels());
                    let labels: Vec<String> = target
                        .iter()
                        .take(relative)
                        .map(|label| String::from_utf8_lossy(label).into_owned())
                        .collect();
                    if let Lookup::Found {
                        answers: more,
                        additionals,
                    } = self.lookup(&target, &labels, depth + 1)
                    {
                        answers.extend(more);
                        return Lookup::Found {
                            answers,
                            additionals,
                        };
                    }
                }
                Lookup::answers(answers)
            }
        }
    }

    /// `_PROTO.SERVICE.NS.svc.ZONE`: exists (without records) when an SRV name is below.
    fn protocol(&self, protocol: &str, service: &str, namespace: &str) -> Lookup {
        let Some(entry) = self.snapshot.service(namespace, service) else {
            return Lookup::NxDomain;
        };
        let exists = match &entry.kind {
            ServiceKind::ClusterIp(_) => entry.ports.iter().any(|p| p.protocol == protocol),
            ServiceKind::Headless(endpoints) => endpoints
                .iter()
                .any(|endpoint| endpoint.ports.iter().any(|p| p.protocol == protocol)),
            ServiceKind::ExternalName(_) => false,
        };
        if exists {
            Lookup::NoData
        } else {
            Lookup::NxDomain
        }
    }

    /// `HOSTNAME.SERVICE.NS.svc.ZONE`: one endpoint of a headless Service.
    fn endpoint(&self, owner: &Name, hostname: &str, service: &str, namespace: &str) -> Lookup {
        let Some(entry) = self.snapshot.service(namespace, service) else {
            return Lookup::NxDomain;
        };
        let ServiceKind::Headless(endpoints) = &entry.kind else {
            return Lookup::NxDomain;
        };
        match endpoints.iter().find(|e| e.hostname == hostname) {
            Some(endpoint) => self.addresses(owner, endpoint.addresses.iter()),
            None => Lookup::NxDomain,
        }
    }

    fn srv(
        &self,
        owner: &Name,
        port: &str,
        protocol: &str,
        service: &str,
        namespace: &str,
    ) -> Lookup {
        let Some(entry) = self.snapshot.service(namespace, service) else {
            return Lookup::NxDomain;
        };
        let matches = |p: &&NamedPort| p.name == port && p.protocol == protocol;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &entry.kind {
            ServiceKind::ClusterIp(ips) => {
                let Some(found) = entry.ports.iter().find(matches) else {
                    return Lookup::NxDomain;
                };
                let Some(target) = self.name(&[service, namespace, "svc"]) else {
                    return Lookup::NxDomain;
                };
                if self.wants(RecordType::SRV) {
                    answers.push(self.srv_record(owner, found.port, &target));
                    additionals.extend(self.address_records(&target, ips.iter(), true));
                }
            }
            ServiceKind::Headless(endpoints) => {
                let found: Vec<(&Endpoint, u16)> = endpoints
                    .iter()
                    .filter_map(|e| e.ports.iter().find(matches).map(|p| (e, p.port)))
                    .collect();
                if found.is_empty() {
                    return Lookup::NxDomain;
                }
                if self.wants(RecordType::SRV) {
                    for (endpoint, number) in found {
                        let Some(target) =
                            self.name(&[&endpoint.hostname, service, namespace, "svc"])
                        else {
                            continue;
                        };
                        answers.push(self.srv_record(owner, number, &target));
                        additionals.extend(self.address_records(
                            &target,
                            endpoint.addresses.iter(),
                            true,
                        ));
                    }
                }
            }
            ServiceKind::ExternalName(_) => return Lookup::NxDomain,
        }
        if answers.is_empty() {
            return Lookup::NoData;
        }
        Lookup::Found {
            answers,
            additionals,
        }
    }

    fn srv_record(&self, owner: &Name, port: u16, target: &Name) -> Record {
        record(
            owner,
            self.zone.ttl,
            RData::SRV(SRV::new(0, 100, port, target.clone())),
        )
    }

    /// `A-B-C-D.NS.pod.ZONE` (or an IPv6 address with `-` for `:`): the address itself,
    /// whatever the namespace, as the specification's deprecated pod records and
    /// CoreDNS's `pods insecure` answer. It tells nothing the asker did not write.
    fn pod(&self, owner: &Name, label: &str) -> Lookup {
        let ip = if label.contains(':') || label.contains('.') {
            None
        } else {
            label
                .replace('-', ".")
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .ok()
                .or_else(|| {
                    label
                        .replace('-', ":")
                        .parse::<Ipv6Addr>()
                        .map(IpAddr::V6)
                        .ok()
                })
        };
        match ip {
            Some(ip) => self.addresses(owner, [ip].iter()),
            None => Lookup::NxDomain,
        }
    }

    fn reverse(&self, owner: &Name, ip: &IpAddr) -> Lookup {
        if !self.wants(RecordType::PTR) {
            return Lookup::NoData;
        }
        let owners = self.snapshot.reverse.get(ip).into_iter().flatten();
        let answers: Vec<Record> = owners
            .filter_map(
                |Owner {
                     hostname,
                     service,
                     namespace,
                 }| match hostname {
                    Some(hostname) => self.name(&[hostname, service, namespace, "svc"]),
                    None => self.name(&[service, namespace, "svc"]),
                },
            )
            .map(|target| record(owner, self.zone.ttl, RData::PTR(PTR(target))))
            .collect();
        Lookup::answers(answers)
    }

    /// A and AAAA records of `ips` at `owner` as asked; NODATA when the name has only
    /// the other family.
    fn addresses<'i>(&self, owner: &Name, ips: impl Iterator<Item = &'i IpAddr>) -> Lookup {
        let answers = self.address_records(owner, ips, false);
        if answers.is_empty() {
            Lookup::NoData
        } else {
            Lookup::answers(answers)
        }
    }

    fn address_records<'i>(
        &self,
        owner: &Name,
        ips: impl Iterator<Item = &'i IpAddr>,
        both: bool,
    ) -> Vec<Record> {
        let mut seen = std::collections::BTreeSet::new();
        ips.filter(|ip| seen.insert(**ip))
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if both || self.wants(RecordType::A) => Some(RData::A(A(*v4))),
                IpAddr::V6(v6) if both || self.wants(RecordType::AAAA) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|data| record(owner, self.zone.ttl, data))
            .collect()
    }

    /// `labels` (lowercase) under the zone.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        Name::from_ascii(format!("{}.", labels.join(".")))
            .ok()?
            .append_domain(&self.zone.domain)
            .ok()
    }
}

fn record(owner: &Name, ttl: u32, data: RData) -> Record {
    Record::from_rdata(owner.clone(), ttl, data)
}

fn soa(zone: &Zone, serial: u32) -> Record {
    let under = |label: &str| {
        Name::from_ascii(label)
            .and_then(|name| name.append_domain(&zone.domain))
            .unwrap_or_else(|_| zone.domain.clone())
    };
    let data = SOA::new(
        under("ns.dns"),
        under("hostmaster"),
        serial,
        7200,
        1800,
        86400,
        zone.ttl,
    );
    record(&zone.domain, zone.ttl, RData::SOA(data))
}

/// The address a fully written reverse name stands for: `D.C.B.A.in-addr.arpa.` or the
/// 32 nibbles of `ip6.arpa.`.
pub fn reverse_address(name: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = name
        .to_lowercase()
        .iter()
        .map(|label| String::from_utf8_lossy(label).into_owned())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    match labels.as_slice() {
        [d, c, b, a, "in-addr", "arpa"] => {
            let octet = |text: &str| {
                (text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| text.parse::<u8>().ok())
                    .flatten()
            };
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., "ip6", "arpa"] if nibbles.len() == 32 => {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                let [digit] = nibble.as_bytes() else {
                    return None;
                };
                value = (value << 4) | u128::from(char::from(*digit).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// The target of an answer that ends in a CNAME out of the zone, for A or AAAA: the
/// server resolves it upstream, as a recursive server would for the client.
pub fn external_target(message: &Message, zone: &Zone) -> Option<Name> {
    let query = message.queries.first()?;
    if !matches!(query.query_type(), RecordType::A | RecordType::AAAA) {
        return None;
    }
    match message.answers.last().map(|record| &record.data) {
        Some(RData::CNAME(CNAME(target))) if !zone.domain.zone_of(target) => Some(target.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

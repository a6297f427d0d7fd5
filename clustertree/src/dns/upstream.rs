//! Forwarding of names outside the cluster zone to the nameservers this process itself
//! uses, as a pod's CoreDNS forwards to its node's resolvers. The query goes out under a
//! fresh random id on a connected socket, so only the asked server's answer is taken.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The largest UDP answer taken from an upstream; a larger one comes over TCP.
const UDP_RECEIVE: usize = 4096;

/// Where names outside the cluster zone are asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub servers: Vec<SocketAddr>,
    /// For each server in turn: the UDP exchange, then the TCP one on truncation.
    pub timeout: Duration,
}

/// Why no upstream answered; the client gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream nameserver is configured (--dns-upstream, or /etc/resolv.conf)")]
    NoUpstream,
    #[error("the query is {0} bytes, shorter than a DNS header")]
    Short(usize),
    #[error("asking {server} over {transport}: {source}")]
    Io {
        server: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("asking {server} over {transport}: no answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        transport: &'static str,
        timeout: Duration,
    },
    #[error("{server} answered over TCP with another id")]
    WrongId { server: SocketAddr },
    #[error("all upstreams failed; the last: {0}")]
    AllFailed(Box<ForwardError>),
}

/// An upstream as written in `--dns-upstream`: `IP` (port 53) or `IP:PORT`
/// (`[IPv6]:PORT`).
pub fn parse_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is neither IP nor IP:PORT"))
}

/// The nameservers of this process's `/etc/resolv.conf` (none when it cannot be read).
pub fn system_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| resolv_conf_servers(&text))
        .unwrap_or_default()
}

/// The `nameserver` lines of a resolv.conf, in order.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A zone index (`fe80::1%eth0`) names an interface a socket address cannot.
        .filter_map(|address| address.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Upstream {
    /// Asks the servers in turn until one answers; the answer carries the query's id.
    pub async fn forward(&self, query: &[u8]) -> Result<Vec<u8>, ForwardError> {
        if query.len() < 12 {
            return Err(ForwardError::Short(query.len()));
        }
        let mut last = ForwardError::NoUpstream;
        for server in &self.servers {
            match self.ask(*server, query).await {
                Ok(answer) => return Ok(answer),
                Err(error) => last = error,
            }
        }
        match last {
            ForwardError::NoUpstream => Err(last),
            other => Err(ForwardError::AllFailed(Box::new(other))),
        }
    }

    async fn ask(&self, server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, ForwardError> {
        let id: u16 = rand::random();
        let mut ours = query.to_vec();
        ours[..2].copy_from_slice(&id.to_be_bytes());
        let mut answer = match self.udp(server, &ours, id).await? {
            answer if answer.get(2).is_some_and(|flags| flags & 0x02 != 0) => {
                self.tcp(server, &ours, id).await?
            }
            answer => answer,
        };
        answer[..2].copy_from_slice(&query[..2]);
        Ok(answer)
    }

    async fn udp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Vec<u8>, ForwardError> {
        let io = |source| ForwardError::Io {
            server,
            transport: "UDP",
            source,
        };
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let exchange = async {
            let socket = UdpSocket::bind(local).await.map_err(io)?;
            // Connected: the kernel drops datagrams from anyone but the server.
            socket.connect(server).await.map_err(io)?;
            socket.send(query).await.map_err(io)?;
            let mut buffer = vec![0; UDP_RECEIVE];
            loop {
                let length = socket.recv(&mut buffer).await.map_err(io)?;
                // A late answer to an earlier query, or a forgery: wait for ours.
                if length >= 12 && buffer[..2] == id.to_be_bytes() {
                    buffer.truncate(length);
                    return Ok(buffer);
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout {
                server,
                transport: "UDP",
                timeout: self.timeout,
            })?
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Vec<u8>, ForwardError> {
        let io = |source| ForwardError::Io {
            server,
            transport: "TCP",
            source,
        };
        let exchange = async {
            let mut stream = TcpStream::connect(server).await.map_err(io)?;
            let length = u16::try_from(query.len()).unwrap_or(u16::MAX);
            let mut framed = length.to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.map_err(io)?;
            let length = stream.read_u16().await.map_err(io)?;
            let mut answer = vec![0; usize::from(length)];
            stream.read_exact(&mut answer).await.map_err(io)?;
            if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
                return Err(ForwardError::WrongId { server });
            }
            Ok(answer)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout {
                server,
                transport: "TCP",
                timeout: self.timeout,
            })?
    }
}

/// Whether an upstream answer names something inside the cluster zone. The upstream is
/// the host's DNS, whose cluster zone is usually the tenant's too, and the tenant's
/// Service IPs come from the host's service CIDR: a reverse lookup of an address the
/// tenant does not have would otherwise tell the host's Service names.
pub fn names_inside(answer: &Message, zone: &Name) -> bool {
    let inside = |name: &Name| zone.zone_of(name);
    answer.answers.iter().any(|record: &Record| {
        inside(&record.name)
            || match &record.data {
                RData::CNAME(target) => inside(&target.0),
                RData::PTR(target) => inside(&target.0),
                RData::NS(target) => inside(&target.0),
                RData::SRV(srv) => inside(&srv.target),
                RData::MX(mx) => inside(&mx.exchange),
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_its_nameservers_in_order_on_port_53() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver  fe80::1%eth0\noptions ndots:5\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_servers(text),
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn an_upstream_flag_takes_an_ip_or_an_ip_and_port() {
        assert_eq!(parse_server("10.0.0.1"), Ok("10.0.0.1:53".parse().unwrap()));
        assert_eq!(
            parse_server("10.0.0.1:5353"),
            Ok("10.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("::1"), Ok("[::1]:53".parse().unwrap()));
        assert!(parse_server("dns.example").is_err());
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp_and_keeps_the_clients_id() {
        // The port UDP got may be taken for TCP by another test's connection: try again.
        let mut bound = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                bound = Some((udp, tcp, port));
                break;
            }
        }
        let (udp, tcp, port) = bound.expect("a port free for both UDP and TCP");
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (length, peer) = udp.recv_from(&mut buffer).await.unwrap();
            let mut answer = buffer[..length].to_vec();
            answer[2] |= 0x82; // QR and TC
            udp.send_to(&answer, peer).await.unwrap();
        });
        tokio::spawn(async move {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let length = stream.read_u16().await.unwrap();
            let mut query = vec![0; usize::from(length)];
            stream.read_exact(&mut query).await.unwrap();
            query[2] |= 0x80;
            query.extend_from_slice(b"tcp");
            stream
                .write_u16(u16::try_from(query.len()).unwrap())
                .await
                .unwrap();
            stream.write_all(&query).await.unwrap();
        });
        let upstream = Upstream {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            timeout: Duration::from_secs(5),
        };
        let query = [0xAB, 0xCD, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let answer = upstream.forward(&query).await.unwrap();
        assert_eq!(answer[..2], [0xAB, 0xCD]);
        assert!(answer.ends_with(b"tcp"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_and_the_next_one_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answering = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let servers = vec![
            silent.local_addr().unwrap(),
            answering.local_addr().unwrap(),
        ];
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (length, peer) = answering.recv_from(&mut buffer).await.unwrap();
            let mut answer = buffer[..length].to_vec();
            answer[2] |= 0x80;
            answering.send_to(&answer, peer).await.unwrap();
        });
        let upstream = Upstream {
            servers,
            timeout: Duration::from_millis(300),
        };
        let answer = upstream
            .forward(&[1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        assert_eq!(answer[..3], [1, 2, 0x81]);
        let failing = Upstream {
            servers: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(100),
        };
        let error = failing
            .forward(&[1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no answer within"), "{error}");
        drop(silent);
    }
}

//! The DNS server on UDP and TCP: decodes, answers from the latest snapshot or forwards,
//! and encodes, within a bounded number of queries in flight. A malformed packet gets
//! FORMERR (or nothing, without even a header); no packet can stop the server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::resolve::{self, EDNS_PAYLOAD, Resolution, Zone};
use super::upstream::{self, Upstream};
use super::watch::Published;

/// Queries answered at once over UDP; past this, datagrams are dropped and clients retry.
const MAX_IN_FLIGHT: usize = 512;
/// TCP connections served at once; past this, new ones are closed.
const MAX_CONNECTIONS: usize = 128;
/// How long a TCP connection may sit without a whole query.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long a stop waits for queries in flight.
const DRAIN: Duration = Duration::from_secs(2);
/// The UDP answer size without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;

/// Why DNS could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the DNS UDP socket {address} (--dns-listen): {source}")]
    BindUdp {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding the DNS TCP socket {address} (--dns-listen): {source}")]
    BindTcp {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The bound sockets, on one port for both transports.
#[derive(Debug)]
pub struct Listeners {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Listeners {
    /// Binds `address`; with port 0, TCP takes the port UDP was given (trying again
    /// when another process holds that port for TCP).
    pub async fn bind(address: SocketAddr) -> Result<Self, ServeError> {
        let mut attempts = if address.port() == 0 { 16 } else { 1 };
        loop {
            let udp = UdpSocket::bind(address)
                .await
                .map_err(|source| ServeError::BindUdp { address, source })?;
            let bound = udp
                .local_addr()
                .map_err(|source| ServeError::BindUdp { address, source })?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => return Ok(Listeners { udp, tcp }),
                Err(_) if attempts > 1 => attempts -= 1,
                Err(source) => {
                    return Err(ServeError::BindTcp {
                        address: bound,
                        source,
                    });
                }
            }
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }
}

/// Everything a query is answered from.
#[derive(Debug)]
pub struct Dns {
    pub zone: Zone,
    pub snapshot: Published,
    pub upstream: Upstream,
}

impl Dns {
    /// The response to one packet, cut to what a UDP client allows (the TC bit set when
    /// it was more); `None` when nothing should be sent back.
    pub async fn handle(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let Ok(request) = Message::from_vec(packet) else {
            return form_error(packet);
        };
        let limit = if udp {
            udp_limit(&request)
        } else {
            usize::from(u16::MAX)
        };
        let snapshot = self.snapshot.borrow().clone();
        let message = match resolve::answer(&request, snapshot.as_deref(), &self.zone) {
            Resolution::Ignore => return None,
            Resolution::Answer(mut message) => {
                if let Some(target) = resolve::external_target(&message, &self.zone) {
                    self.follow(&request, &mut message, target).await;
                }
                message
            }
            Resolution::Forward => match self.upstream.forward(packet).await {
                Ok(answer) => match Message::from_vec(&answer) {
                    Ok(parsed) if upstream::names_inside(&parsed, &self.zone.domain) => {
                        resolve::response(&request, ResponseCode::NXDomain, false)
                    }
                    Ok(parsed) if answer.len() > limit => parsed.truncate(),
                    Ok(_) => return Some(answer),
                    Err(error) => {
                        tracing::debug!(%error, "an upstream answer does not decode");
                        resolve::response(&request, ResponseCode::ServFail, false)
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "forwarding a DNS query");
                    resolve::response(&request, ResponseCode::ServFail, false)
                }
            },
        };
        encode(&message, limit)
    }

    /// Completes an ExternalName answer with the records of its outside target, as the
    /// recursive server a pod's stub resolver expects; without them the CNAME stands
    /// alone.
    async fn follow(
        &self,
        request: &Message,
        message: &mut Message,
        target: hickory_proto::rr::Name,
    ) {
        let Some(query) = request.queries.first() else {
            return;
        };
        let mut outside = Message::query();
        outside.metadata.recursion_desired = true;
        outside.add_query(Query::query(target, query.query_type()));
        let Ok(bytes) = outside.to_vec() else { return };
        let Ok(answer) = self.upstream.forward(&bytes).await else {
            return;
        };
        let Ok(answer) = Message::from_vec(&answer) else {
            return;
        };
        if answer.metadata.response_code == ResponseCode::NoError
            && !upstream::names_inside(&answer, &self.zone.domain)
        {
            message.answers.extend(answer.answers);
        }
    }
}

/// FORMERR for a packet that does not decode, when it has a header to answer.
fn form_error(packet: &[u8]) -> Option<Vec<u8>> {
    let header: [u8; 12] = packet.get(..12)?.try_into().ok()?;
    // Answering a response could loop between two servers.
    if header[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0F);
    Message::error_msg(id, op_code, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// The wire form of `message`, cut to header, question and OPT with TC set when longer
/// than `limit`: the client asks again over TCP.
fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        Ok(_) => message.truncate().to_vec().ok(),
        Err(error) => {
            tracing::warn!(%error, "encoding a DNS response");
            let failed = resolve::response(message, ResponseCode::ServFail, false);
            failed.to_vec().ok()
        }
    }
}

/// The UDP answer size a request allows: 512, or its EDNS payload up to ours.
fn udp_limit(request: &Message) -> usize {
    request
        .edns
        .as_ref()
        .map(|edns| edns.max_payload())
        .map(|payload| usize::from(payload.min(EDNS_PAYLOAD)).max(CLASSIC_UDP))
        .unwrap_or(CLASSIC_UDP)
}

/// Serves until `stop` completes, then waits briefly for queries in flight.
pub async fn serve(listeners: Listeners, dns: Arc<Dns>, stop: impl Future<Output = ()>) {
    let Listeners { udp, tcp } = listeners;
    let udp = Arc::new(udp);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let udp_loop = serve_udp(udp, dns.clone(), in_flight.clone());
    let tcp_loop = serve_tcp(tcp, dns, connections.clone());
    tokio::select! {
        () = stop => {}
        () = udp_loop => {}
        () = tcp_loop => {}
    }
    let drained = async {
        let _udp = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        let _tcp = connections.acquire_many(MAX_CONNECTIONS as u32).await;
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::info!("stopping DNS with queries or connections still open");
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, dns: Arc<Dns>, in_flight: Arc<Semaphore>) {
    let mut buffer = vec![0u8; 65535];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP port-unreachable from an earlier answer surfaces here on Linux.
                tracing::debug!(%error, "receiving a DNS datagram");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS queries in flight; dropping one");
            continue;
        };
        let packet = buffer[..length].to_vec();
        let socket = socket.clone();
        let dns = dns.clone();
        tokio::spawn(async move {
            if let Some(answer) = dns.handle(&packet, true).await
                && let Err(error) = socket.send_to(&answer, peer).await
            {
                tracing::debug!(%error, %peer, "sending a DNS answer");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, dns: Arc<Dns>, connections: Arc<Semaphore>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accepting a DNS connection");
                // Out of file descriptors: give others a moment to close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS connections; closing one");
            continue;
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &dns).await {
                tracing::debug!(%error, %peer, "a DNS connection ended");
            }
            drop(permit);
        });
    }
}

/// Length-prefixed queries (RFC 1035 4.2.2), answered in order, until the client closes
/// or idles.
async fn serve_connection(mut stream: TcpStream, dns: &Dns) -> std::io::Result<()> {
    loop {
        let read = async {
            let length = stream.read_u16().await?;
            let mut packet = vec![0u8; usize::from(length)];
            stream.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        let packet = match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_idle) => return Ok(()),
        };
        let Some(answer) = dns.handle(&packet, false).await else {
            continue;
        };
        let length = u16::try_from(answer.len()).unwrap_or(u16::MAX);
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests;

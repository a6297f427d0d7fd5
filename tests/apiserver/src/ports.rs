//! Free loopback ports for the servers tests start.
//!
//! A port the kernel hands out for `bind(0)` comes from the ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768–60999 by default), which is also where every
//! outgoing connection on the machine takes its source port. Between probing a port and
//! the server binding it, a client connection elsewhere may take it, and the server then
//! exits with "address already in use" (seen as an etcd that died at start while other
//! tests ran). Ports below the ephemeral range are never given to outgoing connections,
//! so only another test choosing the same one at the same moment can collide, and the
//! random start makes that unlikely.

use std::net::{Ipv4Addr, TcpListener};

/// Below the default ephemeral range and below Kubernetes' NodePort range (30000–32767,
/// which the real node's kube-proxy may hold), above the common service ports.
const RANGE: std::ops::Range<u16> = 20_000..30_000;

/// A loopback port nothing listens on now, outside the ephemeral range when one is free.
pub fn free_port() -> std::io::Result<u16> {
    let span = RANGE.end - RANGE.start;
    let start = rand::random::<u16>() % span;
    for offset in 0..span.min(512) {
        let port = RANGE.start + (start + offset) % span;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()
        .map(|addr| addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_free() {
        for _ in 0..20 {
            let port = free_port().unwrap();
            assert!(RANGE.contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}

//! Free loopback ports for the servers tests start.
//!
//! A port the kernel hands out for `bind(0)` comes from the ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768–60999 by default), which is also where every
//! outgoing connection on the machine takes its source port. Between probing a port and
//! the server binding it, a client connection elsewhere may take it, and the server then
//! exits with "address already in use". Ports below the ephemeral range are never given
//! to outgoing connections, so only another test choosing the same one before its server
//! binds it can collide (seen in CI as an etcd that died at start while a real-node
//! scenario ran): every port handed out is therefore also reserved with a lock on a file
//! named after it, which other test processes respect and the kernel drops when this
//! process exits.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

/// Below the default ephemeral range and below Kubernetes' NodePort range (30000–32767,
/// which the real node's kube-proxy may hold), above the common service ports.
const RANGE: std::ops::Range<u16> = 20_000..30_000;

/// How many reservations one process keeps. A server binds its port within seconds, after
/// which the reservation no longer matters; the cap keeps a bench that starts thousands of
/// servers within its file-descriptor limit by letting the oldest go.
const HELD_RESERVATIONS: usize = 256;

/// The lock files of the ports this process handed out, oldest first.
static RESERVATIONS: Mutex<VecDeque<File>> = Mutex::new(VecDeque::new());

/// A loopback port nothing listens on now and no other test process handed out, outside
/// the ephemeral range when one is free.
pub fn free_port() -> std::io::Result<u16> {
    let span = RANGE.end - RANGE.start;
    let start = rand::random::<u16>() % span;
    for offset in 0..span.min(512) {
        let port = RANGE.start + (start + offset) % span;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && reserve(port)? {
            return Ok(port);
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()
        .map(|addr| addr.port())
}

/// The directory of the lock files, shared by every test process of the machine's user.
fn reservation_dir() -> PathBuf {
    std::env::temp_dir().join("vc-test-ports")
}

/// Locks `port`'s file; false when another reservation (of this or another process)
/// holds it.
fn reserve(port: u16) -> std::io::Result<bool> {
    let dir = reservation_dir();
    std::fs::create_dir_all(&dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(error)) => return Err(error),
    }
    let mut held = RESERVATIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.len() >= HELD_RESERVATIONS {
        held.pop_front();
    }
    held.push_back(file);
    Ok(true)
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

    #[test]
    fn a_port_handed_out_is_not_handed_out_again_before_it_is_bound() {
        let ports: std::collections::HashSet<u16> =
            (0..200).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 200);
        for port in &ports {
            assert!(!reserve(*port).unwrap(), "{port} was reserved twice");
        }
    }
}

//! Traffic from this machine to what real nodes serve: HTTP requests (busybox `wget`, as
//! a client outside the cluster sends them) and addresses a test adds to `lo`, as a load
//! balancer or a second machine would own them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The body `url` answers with, trimmed; `None` when it does not answer within 3 s.
pub async fn http_get(url: &str) -> Option<String> {
    let output = tokio::process::Command::new("wget")
        .args(["-q", "-O", "-", "-T", "3", url])
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The distinct bodies `url` answered with, asked until every one of `expected` was seen
/// (kube-proxy picks an endpoint at random) or `limit` passed.
pub async fn answering(
    url: &str,
    expected: &BTreeSet<String>,
    limit: Duration,
) -> BTreeSet<String> {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    while started.elapsed() < limit && !expected.is_subset(&seen) {
        if let Some(body) = http_get(url).await {
            seen.insert(body);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    seen
}

/// An address on `lo` for as long as this lives.
#[derive(Debug)]
pub struct LoopbackAddress(Ipv4Addr);

impl LoopbackAddress {
    /// Adds `address/32` to `lo`.
    pub fn add(address: Ipv4Addr) -> std::io::Result<Self> {
        let output = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .output()?;
        if output.status.success() {
            Ok(LoopbackAddress(address))
        } else {
            Err(std::io::Error::other(format!(
                "adding {address} to lo: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

impl Drop for LoopbackAddress {
    fn drop(&mut self) {
        let _removed = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .status();
    }
}

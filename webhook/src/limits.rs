//! How much the webhook lets one client take: time, connections, streams, bytes.
//!
//! The webhook configurations fail closed, so a webhook tied up by a few idle or slow
//! clients blocks every VirtualCluster write, the controller's finalizer removal
//! included. Every way a client can hold on to the server is therefore bounded: the TLS
//! handshake, the wait for request headers, the body, idle keep-alive, the number of
//! connections and the HTTP/2 streams and headers on each.

use std::time::Duration;

/// Largest AdmissionReview body accepted by default. kube-apiserver refuses request bodies
/// over 3 MiB itself, and a VirtualCluster is a few KiB, so no real review of one comes
/// anywhere near this; a bigger body is refused with 413 instead of being buffered.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The server's limits; [`Limits::default`] holds the defaults of the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Beyond it, new connections wait in the listen backlog
    /// and idle connections are closed to make room.
    pub max_connections: usize,
    /// Time a client has to complete its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time from the end of the TLS handshake to complete request headers, and (HTTP/1.1)
    /// the longest an idle keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body and answer it. kube-apiserver stops waiting after
    /// the webhook's `timeoutSeconds` (10 by default, 30 at most).
    pub request_timeout: Duration,
    /// The longest a connection that has been served is kept open without a request.
    pub idle_timeout: Duration,
    /// HTTP/2 streams (requests) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest request header block, in bytes, over HTTP/1.1 and HTTP/2.
    pub max_header_bytes: u32,
    /// Largest request body, in bytes; larger ones are answered with 413.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once over all connections; requests beyond it wait
    /// (within `request_timeout`, then 503) instead of growing memory.
    pub max_body_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            tls_handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_concurrent_streams: 100,
            max_header_bytes: 64 * 1024,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
        }
    }
}

/// `bytes` the way an operator wrote it, such as "3 MiB", for messages.
pub fn describe_bytes(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// A flag duration such as `500ms`, `5s` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 5s or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        _ => {
            return Err(format!(
                "{text:?} needs a unit: write it as 500ms, 5s or 2m"
            ));
        }
    };
    if duration.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_a_length() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn byte_counts_read_like_the_flag() {
        assert_eq!(describe_bytes(DEFAULT_MAX_BODY_BYTES), "3 MiB");
        assert_eq!(describe_bytes(64 * 1024), "64 KiB");
        assert_eq!(describe_bytes(1000), "1000 bytes");
    }
}

//! The server's limits against clients that hold on to it, over real TLS on 127.0.0.1:
//! silent and slow clients are dropped, oversized bodies get a readable 413 over both
//! HTTP versions, and a connection cap full of idle clients still lets admission through.
//! With `failurePolicy: Fail`, any of these tying the webhook up blocks every
//! VirtualCluster write.

#[allow(
    dead_code,
    reason = "shared with https.rs and the benchmark, which use all of it"
)]
mod support;

#[cfg(test)]
use support::Harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use vc_api::admission::{Inventory, NodeFacts, ResourceAmounts};
use vc_webhook::Limits;
use vc_webhook::server::Readiness;

/// The validating CREATE kube-apiserver v1.36 sent for `vc-adm`, promoting `node-a`.
const RECORDED: &str = include_str!(
    "fixtures/admission-requests/002-validate-CREATE-virtualclusters-vc-adm.request.json"
);

#[cfg(test)]
async fn start(limits: Limits) -> Harness {
    let mut inventory = Inventory::new();
    inventory.upsert_node(NodeFacts {
        name: "node-a".to_owned(),
        ready: true,
        unschedulable: false,
        control_plane: false,
        allocatable: ResourceAmounts::from_iter([("cpu", 64_000)]),
        claimed_by: None,
    });
    support::start_limited(support::enforce(inventory), Readiness::synced(), limits).await
}

#[cfg(test)]
impl Harness {
    async fn tls(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
        let mut config = (*self.client).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.server.local_addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    async fn http2(
        &self,
    ) -> (
        hyper::client::conn::http2::SendRequest<Body>,
        tokio::task::JoinHandle<()>,
    ) {
        let tls = self.tls(b"h2").await;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ended = connection.await;
        });
        (sender, task)
    }
}

#[cfg(test)]
type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

#[cfg(test)]
fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

#[cfg(test)]
fn short_limits() -> Limits {
    Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Reads until the server closes the stream; how long that took, or `None` when it was
/// still open after `patience`.
#[cfg(test)]
async fn closed_within(
    stream: &mut (impl AsyncRead + Unpin),
    patience: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[cfg(test)]
async fn post_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Body>,
    body: Body,
) -> (StatusCode, String) {
    let request = http::Request::post("https://localhost/validate?timeout=10s")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Posts `body` over HTTP/2 with the h2 crate directly, which, unlike hyper's client,
/// shows how the server ended the upload: `Err` with the reset reason when it was cut.
#[cfg(test)]
async fn post_h2_strictly(
    harness: &Harness,
    body: Bytes,
) -> (StatusCode, String, Result<(), String>) {
    let tls = harness.tls(b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ended = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("https://localhost/validate?timeout=10s")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    let upload = tokio::spawn(async move {
        let mut rest = body;
        while !rest.is_empty() {
            stream.reserve_capacity(rest.len().min(64 * 1024));
            let granted = tokio::time::timeout(
                Duration::from_secs(5),
                std::future::poll_fn(|context| stream.poll_capacity(context)),
            )
            .await
            .map_err(|_| "the server stopped reading".to_owned())?;
            match granted {
                Some(Ok(size)) => {
                    let chunk = rest.split_to(size.min(rest.len()));
                    stream
                        .send_data(chunk, rest.is_empty())
                        .map_err(|error| error.to_string())?;
                }
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the stream closed".to_owned()),
            }
        }
        Ok(())
    });
    let response = response.await.unwrap();
    let status = response.status();
    let mut answer = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = answer.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let upload = upload.await.unwrap();
    (status, String::from_utf8_lossy(&text).into_owned(), upload)
}

#[tokio::test]
async fn webhook_drops_a_silent_connection() {
    let harness = start(short_limits()).await;

    // Connects and never starts TLS.
    let mut silent = TcpStream::connect(harness.server.local_addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(4)).await;
    assert!(
        took.is_some(),
        "a client that never starts its TLS handshake must be dropped within the 1s handshake timeout"
    );

    // Completes TLS, then sends nothing: no HTTP/1.1 request line, no HTTP/2 preface.
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let mut tls = harness.tls(alpn).await;
        let took = closed_within(&mut tls, Duration::from_secs(4)).await;
        assert!(
            took.is_some(),
            "a {} client silent after TLS must be dropped within the 1s header-read timeout",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test]
async fn webhook_drops_a_slow_header_sender() {
    let harness = start(short_limits()).await;
    let drips: [(&[u8], Vec<u8>); 2] = [
        (
            b"http/1.1",
            b"POST /validate HTTP/1.1\r\nhost: localhost\r\n"
                .iter()
                .copied()
                .chain(b"x-slow: a\r\n".repeat(100))
                .collect(),
        ),
        // The HTTP/2 connection preface, byte by byte.
        (b"h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
    ];
    for (alpn, bytes) in drips {
        let tls = harness.tls(alpn).await;
        let (mut reader, mut writer) = tokio::io::split(tls);
        let dripping = tokio::spawn(async move {
            for byte in bytes {
                if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let took = closed_within(&mut reader, Duration::from_secs(4)).await;
        dripping.abort();
        assert!(
            took.is_some(),
            "a {} client dripping its headers must be dropped within the 1s header-read timeout",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test]
async fn oversized_body_gets_413_over_http1_and_http2() {
    let harness = start(Limits::default()).await;
    let mut review: Value = serde_json::from_str(RECORDED).unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        json!({ "padding": "x".repeat(5 * 1000 * 1000) });
    let oversized = Bytes::from(serde_json::to_vec(&review).unwrap());
    let says_why = |text: &str| text.contains("exceeds the limit") && text.contains("3 MiB");

    let mut http1 = support::connect(harness.server.local_addr, Arc::clone(&harness.client))
        .await
        .unwrap();
    let (status, text) = http1.post("/validate", oversized.clone()).await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "HTTP/1.1");
    assert!(says_why(&String::from_utf8_lossy(&text)), "{text:?}");

    // As strict as Go's and curl's HTTP/2 clients: the upload must not be reset with an
    // error, or they report a stream error instead of the 413.
    let (status, text, upload) = post_h2_strictly(&harness, oversized.clone()).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "HTTP/2 with content-length"
    );
    assert!(says_why(&text), "{text}");
    assert!(
        upload.is_ok(),
        "the client's upload was cut instead of completing: {upload:?}"
    );

    let (mut http2, _connection) = harness.http2().await;

    // Streamed without a length, as a client that does not know it up front sends it.
    let chunks = oversized
        .chunks(64 * 1024)
        .map(|chunk| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(
                chunk,
            )))
        })
        .collect::<Vec<_>>();
    let streamed = StreamBody::new(futures::stream::iter(chunks)).boxed();
    let (status, text) = post_h2(&mut http2, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "HTTP/2 streamed");
    assert!(says_why(&text), "{text}");

    // The connection survives its 413s.
    let (status, text) = post_h2(&mut http2, full(RECORDED)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn connections_beyond_the_cap_do_not_starve_admission() {
    // Timeouts far beyond the test, so only the cap's handling of idle connections can
    // make room.
    let harness = start(Limits {
        max_connections: 4,
        tls_handshake_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(600),
        ..Limits::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(harness.server.local_addr).await.unwrap());
    }
    let mut idle = Vec::new();
    for _ in 0..2 {
        let (mut sender, connection) = harness.http2().await;
        let (status, text) = post_h2(&mut sender, full(RECORDED)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        idle.push((sender, connection));
    }

    let started = Instant::now();
    let admitted = tokio::time::timeout(Duration::from_secs(8), async {
        let mut connection =
            support::connect(harness.server.local_addr, Arc::clone(&harness.client))
                .await
                .unwrap();
        connection
            .post("/validate?timeout=10s", RECORDED)
            .await
            .unwrap()
    })
    .await;
    let (status, answer) = admitted.expect(
        "with the cap full of idle connections, an AdmissionReview must still be answered well within the apiserver's 10s",
    );
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );

    let mut closed = 0;
    for stream in &mut silent {
        if closed_within(stream, Duration::from_millis(500))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    closed += idle
        .iter()
        .filter(|(_, connection)| connection.is_finished())
        .count();
    assert!(
        closed >= 1,
        "the server holds at most 4 connections, so it must have closed an idle one to answer a fifth"
    );
    let metrics = harness.webhook.metrics.encode().unwrap();
    let open = metrics
        .lines()
        .find_map(|line| line.strip_prefix("vc_webhook_open_connections "))
        .and_then(|value| value.trim().parse::<i64>().ok())
        .expect("the open-connections gauge is exported");
    assert!(open <= 4, "{open} connections open, above the cap of 4");
    assert!(
        metrics.contains(r#"vc_webhook_closed_connections_total{reason="evicted"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn bodies_in_flight_stay_within_their_budget() {
    let harness = start(Limits {
        max_body_bytes: 64 * 1024,
        max_body_bytes_in_flight: 64 * 1024,
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    // A client announces a body of the largest size and holds almost all of it unsent.
    let mut hog = harness.tls(b"http/1.1").await;
    hog.write_all(
        b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 65536\r\n\r\n",
    )
    .await
    .unwrap();
    hog.write_all(&[b' '; 65_000]).await.unwrap();
    hog.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A real review has to wait until the stalled body is given up on.
    let started = Instant::now();
    let mut connection = support::connect(harness.server.local_addr, Arc::clone(&harness.client))
        .await
        .unwrap();
    let (status, answer) = connection
        .post("/validate?timeout=10s", RECORDED)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "answered after {:?}, while the budget was held by the stalled body",
        started.elapsed()
    );

    let mut reply = Vec::new();
    let _closed = tokio::time::timeout(Duration::from_secs(2), hog.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

//! GETs that a harness polls while a process starts (`/readyz`, `/healthz`). A process that
//! is not up yet answers nothing, so every failure is `None` and the caller polls again;
//! [`ANSWER_WITHIN`] keeps one hung connection from eating the caller's whole deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long one GET may take, connection included.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// `GET https://addr/path`, verifying the server's certificate for `addr`'s IP against
/// `ca_pem` (never skipped): the status and the body.
pub async fn https_get(addr: SocketAddr, ca_pem: &str, path: &str) -> Option<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?)
        .ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::from(addr.ip()), tcp)
            .await
            .ok()?;
        get(tls, path).await
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange).await.ok()?
}

/// `GET http://addr/path`: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        get(tcp, path).await
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange).await.ok()?
}

async fn get<S>(stream: S, path: &str) -> Option<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", "127.0.0.1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::{http_get, https_get};
    use vc_test_apiserver::pki::TestCa;
    use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_answers_only_when_the_certificate_chains_to_the_given_ca() {
        let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
        let (status, body) = https_get(server.addr(), server.ca_pem(), "/readyz")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "ok"));

        let stranger = TestCa::generate("some-other-ca").unwrap();
        assert_eq!(
            https_get(server.addr(), stranger.cert_pem(), "/readyz").await,
            None,
            "a server whose certificate another CA signed must not be trusted"
        );
    }

    #[tokio::test]
    async fn http_reads_status_and_body() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let read = stream.read(&mut request).await.unwrap();
            assert!(request[..read].starts_with(b"GET /healthz HTTP/1.1\r\n"));
            stream
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready",
                )
                .await
                .unwrap();
        });
        assert_eq!(
            http_get(addr, "/healthz").await,
            Some((503, "not ready".to_owned()))
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_none() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(http_get(addr, "/readyz").await, None);
        assert_eq!(https_get(addr, "not a PEM", "/readyz").await, None);
    }
}

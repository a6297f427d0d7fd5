//! The real kubectl (a Go TLS client) against a server presenting the tenant's serving
//! certificate and demanding a client certificate of the tenant's cluster CA: the admin
//! kubeconfig the controller writes must work, and another tenant's must not.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::test_support::{default_vc, observed, pki, tenant};
use super::{BuildContext, Observed, secrets, tenant_identity};
use crate::pki::{ExistingPki, LeafKind, PkiMaterial, ensure_pki, inspect_certificate};

const KUBECTL: &str = "/usr/bin/kubectl";

/// Serves `/readyz` with the tenant's serving certificate, requiring client certificates
/// of the CAs its `--client-ca-file` names; reports the common name of every client it
/// served.
async fn tenant_apiserver(material: &PkiMaterial) -> (u16, mpsc::UnboundedReceiver<String>) {
    let mut roots = rustls::RootCertStore::empty();
    let bundle = secrets::client_ca_bundle(material);
    for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    assert_eq!(roots.len(), 2, "the cluster CA and the admin CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let serving = material.leaf(LeafKind::ApiServer);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(serving.key_pem.expose().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (clients, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let clients = clients.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| {
                        let pem = format!(
                            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                            base64::Engine::encode(
                                &base64::engine::general_purpose::STANDARD,
                                cert.as_ref()
                            )
                        );
                        inspect_certificate(pem.as_bytes()).unwrap().common_name
                    });
                let mut head = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let request = String::from_utf8_lossy(&head);
                let (status, body) = if request.starts_with("GET /readyz") {
                    ("200 OK", "ok")
                } else {
                    ("404 Not Found", "not found")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
                if let Some(name) = peer {
                    let _ = clients.send(name);
                }
            });
        }
    });
    (port, seen)
}

/// The admin kubeconfig's `kubeconfig` key, pointed at `port` instead of 6443.
fn admin_kubeconfig(material: &PkiMaterial, observed: &Observed, port: u16) -> String {
    let secret =
        secrets::admin_kubeconfig_secret(&tenant(&default_vc()), observed, material).unwrap();
    let yaml = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone()).unwrap();
    assert!(yaml.contains(":6443"), "{yaml}");
    yaml.replace(":6443", &format!(":{port}"))
}

async fn kubectl_readyz(kubeconfig: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let run = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&path)
        .args(["--request-timeout=10s", "get", "--raw", "/readyz"])
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn kubectl_reaches_the_tenant_with_the_admin_kubeconfig_only() {
    if !std::path::Path::new(KUBECTL).is_file() {
        eprintln!("skipped: no kubectl at {KUBECTL}");
        return;
    }
    let material = pki();
    let (port, mut seen) = tenant_apiserver(material).await;
    // The external endpoint is the cluster IP; on this machine the tenant answers on
    // 127.0.0.1, which the serving certificate names too.
    let local = Observed {
        apiserver_cluster_ip: Some("127.0.0.1".parse().unwrap()),
        ..observed()
    };
    let output = kubectl_readyz(&admin_kubeconfig(material, &local, port)).await;
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    assert_eq!(seen.recv().await.as_deref(), Some("kubernetes-admin"));

    // Another tenant's admin kubeconfig: kubectl distrusts the serving certificate.
    let other_vc = default_vc();
    let identity = tenant_identity(&tenant(&other_vc), &BuildContext::default(), &local).unwrap();
    let (_, other) =
        ensure_pki(&identity, &ExistingPki::default(), jiff::Timestamp::now()).unwrap();
    let output = kubectl_readyz(&admin_kubeconfig(&other, &local, port)).await;
    assert!(
        !output.status.success(),
        "another tenant's kubeconfig was served"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

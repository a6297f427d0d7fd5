//! The `vc-controller` binary as an operator runs it: every flag documented, probes on
//! `--probe-listen`, JSON logs, and a clean exit on SIGTERM. No cluster is needed: the
//! kubeconfig points at an address where nothing listens, so the watches never sync and
//! `/readyz` must say so.

#[cfg(test)]
mod binary {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const BINARY: &str = env!("CARGO_BIN_EXE_vc-controller");

    fn free_port() -> u16 {
        vc_test_apiserver::ports::free_port().unwrap()
    }

    /// A kubeconfig for an unreachable apiserver, with a real CA so nothing skips TLS.
    fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.pem());
        let port = free_port();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca_data}\nusers:\n- name: u\n  user:\n    token: not-a-secret\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        Some((status, body))
    }

    fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    #[test]
    fn help_documents_every_contract_flag() {
        let output = Command::new(BINARY).arg("--help").output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        for flag in [
            "--kubeconfig",
            "--probe-listen",
            "--leader-elect",
            "--leader-election-namespace",
            "--leader-election-lease-name",
            "--image-registry",
            "--etcd-image",
            "--cluster-domain",
            "--concurrency",
            "--log-format",
            "--log-level",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        }
    }

    #[test]
    fn a_bad_flag_is_refused_with_a_clear_message() {
        let output = Command::new(BINARY)
            .args(["--log-format", "xml"])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--log-format"), "{stderr}");
        assert!(
            stderr.contains("json"),
            "the message lists the accepted values: {stderr}"
        );
    }

    #[test]
    fn probes_answer_and_sigterm_exits_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = unreachable_kubeconfig(dir.path());
        let port = free_port();
        // Logs go to a file: a full pipe would block the process on write.
        let log_path = dir.path().join("stdout.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(BINARY)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--probe-listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json", "--log-level", "info"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        let healthz = loop {
            if let Some(answer) = http_get(port, "/healthz") {
                break answer;
            }
            assert!(Instant::now() < deadline, "the probe server never answered");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(healthz, (200, "ok".to_owned()));
        let (status, body) = http_get(port, "/readyz").unwrap();
        assert_eq!(
            status, 503,
            "watches cannot sync against an unreachable apiserver: {body}"
        );
        let (status, metrics) = http_get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(
            metrics.contains("vc_controller_reconcile_duration_seconds"),
            "{metrics}"
        );
        assert!(metrics.contains("# EOF"), "{metrics}");

        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = wait_for_exit(&mut child, Duration::from_secs(15));
        if status.is_none() {
            let _ = child.kill();
        }
        let status = status.expect("vc-controller did not exit within 15 s of SIGTERM");
        assert!(status.success(), "exit status {status:?}");

        let stdout = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert!(!lines.is_empty(), "no log output");
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
            assert!(value.get("level").is_some(), "{line}");
        }
        assert!(
            stdout.contains("probe server listening") && stdout.contains("SIGTERM received"),
            "{stdout}"
        );
    }
}

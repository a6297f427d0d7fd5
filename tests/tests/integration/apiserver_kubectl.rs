//! The real `kubectl` (v1.32 on the machine) against the in-process test API server:
//! the commands the team and the e2e tests use must behave as against a real cluster.

mod kubectl {
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

    fn kubectl_available() -> bool {
        let found = Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipped: kubectl not found on PATH");
        }
        found
    }

    fn crd_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kosmos-vc/crds")
    }

    struct Kubectl<'a> {
        server: &'a TestApiServer,
        dir: PathBuf,
    }

    impl Kubectl<'_> {
        fn command(&self, args: &[&str]) -> Command {
            let mut cmd = Command::new("kubectl");
            cmd.args(args)
                .env("KUBECONFIG", self.server.kubeconfig_path())
                .env("KUBECACHEDIR", self.dir.join("cache"))
                .env("HOME", &self.dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd
        }

        fn run(&self, args: &[&str]) -> Output {
            let mut child = self.command(args).spawn().expect("kubectl starts");
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().expect("kubectl waits").is_none() {
                assert!(Instant::now() < deadline, "kubectl {args:?} hung");
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().expect("kubectl output")
        }

        /// Runs and asserts success; returns stdout.
        fn ok(&self, args: &[&str]) -> String {
            let out = self.run(args);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
            );
            stdout
        }

        fn fails(&self, args: &[&str]) -> String {
            let out = self.run(args);
            assert!(!out.status.success(), "kubectl {args:?} should fail");
            String::from_utf8_lossy(&out.stderr).into_owned()
        }

        fn apply_text(&self, yaml: &str, extra: &[&str]) -> String {
            let path = self
                .dir
                .join(format!("manifest-{}.yaml", rand::random::<u32>()));
            std::fs::write(&path, yaml).expect("manifest written");
            let mut args = vec!["apply", "-f", path.to_str().expect("utf-8 path")];
            args.extend_from_slice(extra);
            self.ok(&args)
        }
    }

    /// A kubectl that keeps running (`wait`, `get -w`), its output collected as it comes so
    /// the test can wait for what it has printed.
    struct Running {
        child: std::process::Child,
        stdout: Arc<Mutex<String>>,
        stderr: Arc<Mutex<String>>,
    }

    impl Running {
        fn start(mut command: Command) -> Running {
            let mut child = command.spawn().expect("kubectl starts");
            drop(child.stdin.take());
            let collect = |mut stream: Box<dyn Read + Send>| {
                let text = Arc::new(Mutex::new(String::new()));
                let sink = text.clone();
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(read @ 1..) = stream.read(&mut chunk) {
                        let piece = String::from_utf8_lossy(&chunk[..read]).into_owned();
                        sink.lock().expect("output lock").push_str(&piece);
                    }
                });
                text
            };
            let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
            let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
            Running {
                child,
                stdout,
                stderr,
            }
        }

        /// Waits until what kubectl printed on stdout (`on_stdout`) or stderr satisfies
        /// `printed`; returns that output.
        fn wait_for(&self, what: &str, on_stdout: bool, printed: impl Fn(&str) -> bool) -> String {
            let output = if on_stdout {
                &self.stdout
            } else {
                &self.stderr
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            runtime
                .block_on(vc_tests::wait::until(what, Duration::from_secs(30), || {
                    let text = output.lock().expect("output lock").clone();
                    let outcome = if printed(&text) {
                        Ok(text)
                    } else {
                        Err(format!("printed:\n{text}"))
                    };
                    async move { outcome }
                }))
                .unwrap_or_else(|timed_out| panic!("kubectl: {timed_out}"))
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _killed = self.child.kill();
            let _reaped = self.child.wait();
        }
    }

    fn setup(server: &TestApiServer) -> Kubectl<'_> {
        let dir = server.work_dir().join("kubectl");
        std::fs::create_dir_all(&dir).expect("kubectl dir");
        Kubectl { server, dir }
    }

    const VC: &str = "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: team-a\n  namespace: default\nspec:\n  promoteResources:\n    nodes: [node1]\n";

    #[test]
    fn kubectl_manages_virtual_clusters_from_the_chart_crd() {
        if !kubectl_available() {
            return;
        }
        let server = TestApiServer::start(TestApiServerOptions::default()).expect("server starts");
        let k = setup(&server);
        let out = k.ok(&["apply", "-f", crd_dir().to_str().expect("utf-8")]);
        assert!(out.contains("virtualclusters.kosmos.io created"), "{out}");
        k.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/virtualclusters.kosmos.io",
            "--timeout=10s",
        ]);

        // Client-side apply creates, then configures, then reports unchanged.
        assert!(
            k.apply_text(VC, &[])
                .contains("virtualcluster.kosmos.io/team-a created")
        );
        assert!(k.apply_text(VC, &[]).contains("unchanged"));
        let changed = VC.replace("[node1]", "[node1, node2]");
        assert!(k.apply_text(&changed, &[]).contains("configured"));
        let yaml = k.ok(&["get", "vc", "team-a", "-o", "yaml"]);
        assert!(yaml.contains("- node2"), "{yaml}");
        assert!(yaml.contains("generation: 2"), "{yaml}");

        // Server-side apply by another manager.
        let ssa = changed.replace("team-a", "team-b");
        assert!(
            k.apply_text(&ssa, &["--server-side"])
                .contains("serverside-applied")
        );
        assert!(
            k.apply_text(&ssa, &["--server-side"])
                .contains("serverside-applied")
        );
        let rv1 = k.ok(&[
            "get",
            "vc",
            "team-b",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        k.apply_text(&ssa, &["--server-side"]);
        let rv2 = k.ok(&[
            "get",
            "vc",
            "team-b",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        assert_eq!(rv1, rv2, "an unchanged server-side apply must not write");

        // Table output uses the printer columns.
        let table = k.ok(&["get", "vc"]);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(
            table.contains("PHASE") && table.contains("team-a") && table.contains("team-b"),
            "{table}"
        );

        k.ok(&["label", "vc", "team-a", "tier=gold"]);
        assert_eq!(
            k.ok(&["get", "vc", "-l", "tier=gold", "-o", "name"]).trim(),
            "virtualcluster.kosmos.io/team-a"
        );

        // wait --for=jsonpath sees a status written through the status subresource.
        // At -v=6 kubectl logs each request: once its watch is open, the change can only
        // reach it through that watch.
        let mut waiter = Running::start(k.command(&[
            "wait",
            "--for=jsonpath={.status.phase}=Completed",
            "vc/team-a",
            "--timeout=30s",
            "-v=6",
        ]));
        waiter.wait_for("kubectl wait to open its watch", false, |printed| {
            printed.contains("watch=true")
        });
        k.ok(&[
            "patch",
            "vc",
            "team-a",
            "--subresource=status",
            "--type=merge",
            "-p",
            "{\"status\":{\"phase\":\"Completed\"}}",
        ]);
        let status = waiter.child.wait().expect("kubectl wait ends");
        assert!(status.success(), "kubectl wait did not see phase Completed");

        // The status subresource validates its enum; the main resource ignores status.
        let err = k.fails(&[
            "patch",
            "vc",
            "team-a",
            "--subresource=status",
            "--type=merge",
            "-p",
            "{\"status\":{\"phase\":\"Exploded\"}}",
        ]);
        assert!(err.contains("Unsupported value: \"Exploded\""), "{err}");

        // get -w shows the changes as they happen.
        // It watches from the resourceVersion of the list it prints first, so once team-b
        // is printed every later change reaches it.
        let watch = Running::start(k.command(&["get", "vc", "-w"]));
        watch.wait_for("get -w to list team-b", true, |printed| {
            printed.contains("team-b")
        });
        k.ok(&["label", "vc", "team-b", "watched=yes"]);
        k.ok(&["delete", "vc", "team-b"]);
        watch.wait_for("get -w to show team-b changed", true, |printed| {
            printed.matches("team-b").count() >= 2
        });

        let out = k.ok(&["delete", "vc", "team-a"]);
        assert!(out.contains("deleted"), "{out}");
        let err = k.fails(&["get", "vc", "team-a"]);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{err}"
        );
    }

    #[test]
    fn kubectl_impersonation_and_auth_can_i_follow_stored_rbac() {
        if !kubectl_available() {
            return;
        }
        let options = TestApiServerOptions {
            enforce_rbac: true,
            ..TestApiServerOptions::default()
        };
        let server = TestApiServer::start(options).expect("server starts");
        let k = setup(&server);
        let sa = "--as=system:serviceaccount:kosmos-system:ctl";
        let out = k.run(&["auth", "can-i", "list", "secrets", "-n", "default", sa]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
        let err = k.fails(&["get", "secrets", "-n", "default", sa]);
        assert!(
            err.contains("User \"system:serviceaccount:kosmos-system:ctl\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""),
            "{err}"
        );
        let rbac = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: secret-reader}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: ctl-reads, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-reader}\nsubjects:\n- {kind: ServiceAccount, name: ctl, namespace: kosmos-system}\n";
        k.apply_text(rbac, &[]);
        assert_eq!(
            k.ok(&["auth", "can-i", "list", "secrets", "-n", "default", sa])
                .trim(),
            "yes"
        );
        let out = k.run(&["auth", "can-i", "list", "secrets", "-n", "kube-system", sa]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
        k.ok(&["get", "secrets", "-n", "default", sa]);
        // A user who may not impersonate is refused.
        let nobody = server.kubeconfig_for("nobody", &[]).expect("kubeconfig");
        let out = k
            .command(&["get", "secrets", "--as=admin"])
            .env("KUBECONFIG", &nobody)
            .output()
            .expect("kubectl runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cannot impersonate"),
            "{err}"
        );
    }

    #[test]
    fn kubectl_manages_nodes_namespaces_secrets_and_deployments() {
        if !kubectl_available() {
            return;
        }
        let server = TestApiServer::start(TestApiServerOptions::default()).expect("server starts");
        let k = setup(&server);
        let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {kubernetes.io/hostname: node1}\nstatus:\n  capacity: {cpu: \"8\", memory: 32Gi, pods: \"110\"}\n  conditions:\n  - {type: Ready, status: \"True\"}\n";
        assert!(k.apply_text(node, &[]).contains("node/node1 created"));
        k.ok(&["label", "node", "node1", "vc.kosmos.io/owner-name=team-a"]);
        k.ok(&[
            "taint",
            "node",
            "node1",
            "vc.kosmos.io/owner=team-a:NoSchedule",
        ]);
        let taints = k.ok(&[
            "get",
            "node",
            "node1",
            "-o",
            "jsonpath={.spec.taints[0].key}={.spec.taints[0].value}:{.spec.taints[0].effect}",
        ]);
        assert_eq!(taints, "vc.kosmos.io/owner=team-a:NoSchedule");
        let nodes = k.ok(&["get", "nodes"]);
        assert!(
            nodes.contains("node1") && nodes.contains("Ready"),
            "{nodes}"
        );

        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n";
        k.apply_text(ns, &[]);
        let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: team-a\nstringData:\n  token: hello\n";
        let path = k.dir.join("secret.yaml");
        std::fs::write(&path, secret).expect("secret manifest");
        k.ok(&["create", "-f", path.to_str().expect("utf-8")]);
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                "creds",
                "-n",
                "team-a",
                "-o",
                "jsonpath={.data.token}"
            ]),
            "aGVsbG8="
        );

        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team-a\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n";
        assert!(k.apply_text(deployment, &[]).contains("created"));
        assert!(
            k.apply_text(&deployment.replace("nginx:1", "nginx:2"), &[])
                .contains("configured")
        );
        let image = k.ok(&["get", "deploy", "web", "-n", "team-a", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation} {.spec.replicas}"]);
        assert_eq!(image, "nginx:2 2 1");

        // kubectl's generator commands send protobuf bodies.
        k.ok(&["create", "namespace", "team-b"]);
        k.ok(&[
            "create",
            "secret",
            "generic",
            "gen",
            "-n",
            "team-b",
            "--from-literal=user=admin",
        ]);
        k.ok(&[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team-b",
            "--from-literal=mode=fast",
        ]);
        k.ok(&["create", "serviceaccount", "robot", "-n", "team-b"]);
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                "gen",
                "-n",
                "team-b",
                "-o",
                "jsonpath={.data.user}"
            ]),
            "YWRtaW4="
        );
        assert_eq!(
            k.ok(&[
                "get",
                "configmap",
                "cfg",
                "-n",
                "team-b",
                "-o",
                "jsonpath={.data.mode}"
            ]),
            "fast"
        );
        let refused = k.fails(&[
            "create",
            "deployment",
            "gen",
            "-n",
            "team-b",
            "--image=nginx",
        ]);
        assert!(refused.contains("send it as JSON or YAML"), "{refused}");

        // Deleting the namespace removes its contents, then the namespace.
        k.ok(&["delete", "namespace", "team-a", "--timeout=30s"]);
        let err = k.fails(&["get", "namespace", "team-a"]);
        assert!(err.contains("not found"), "{err}");
        k.ok(&["delete", "node", "node1"]);
    }
}

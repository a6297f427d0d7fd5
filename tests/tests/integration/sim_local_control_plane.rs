//! The local control-plane simulator against what vc-controller renders: the process
//! plans of all four components point at laid-out files with the Secrets' contents and at
//! local addresses that serve what the flags name, a real etcd runs from the rendered
//! StatefulSet and takes the tenant apiserver's etcd client certificate, and (with
//! `KUBEBUILDER_ASSETS`) a real tenant kube-apiserver answers through the admin kubeconfig.

mod local_control_plane_tests {
    use crate::support::rendered_tenant::{
        NAMESPACE, TENANT, desired_state, secrets_of, tenant_objects,
    };
    use std::collections::BTreeMap;
    use std::net::{IpAddr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
    use kube::api::{Patch, PatchParams, PostParams};
    use kube::{Api, Client, Resource, ResourceExt as _};
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use serde_json::json;
    use vc_controller::resources::DesiredState;
    use vc_simulation::etcd_gateway;
    use vc_simulation::local_control_plane::{
        self, Component, ControlPlaneBinaries, LocalControlPlaneOptions, LocalControlPlanes,
        TenantPlanner,
    };
    use vc_simulation::local_pod::LocalPodPlan;
    use vc_test_apiserver::envtest::{self, SKIP_MESSAGE};
    use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

    /// The secret key behind a laid-out file, as the kubelet would have written it.
    fn secret_bytes(secrets: &BTreeMap<String, Secret>, secret: &str, key: &str) -> Vec<u8> {
        secrets[secret].data.as_ref().unwrap()[key].0.clone()
    }

    /// Every rendered path now points into the plan's root at a file or directory that exists.
    fn assert_paths_are_local(plan: &LocalPodPlan) {
        for arg in &plan.args {
            let Some((flag, value)) = arg.split_once('=') else {
                continue;
            };
            if !value.starts_with('/') {
                continue;
            }
            let path = Path::new(value);
            assert!(
                path.starts_with(&plan.root),
                "{}: {flag} still points outside the pod root: {value}",
                plan.container
            );
            // A path the program creates itself (etcd's --data-dir) needs its parent.
            assert!(
                path.exists() || path.parent().is_some_and(Path::is_dir),
                "{}: {flag}={value} was not laid out",
                plan.container
            );
        }
    }

    fn flag_path(plan: &LocalPodPlan, flag: &str) -> PathBuf {
        PathBuf::from(
            plan.flag(flag)
                .unwrap_or_else(|| panic!("{} has no --{flag}", plan.container)),
        )
    }

    fn url_port(url: &str, scheme: &str) -> u16 {
        let rest = url
            .strip_prefix(&format!("{scheme}://127.0.0.1:"))
            .unwrap_or_else(|| panic!("{url} is not {scheme}://127.0.0.1:PORT"));
        rest.parse().unwrap()
    }

    /// The apiserver's serving certificate, verified as a client of the cluster IP would.
    fn assert_serving_cert_verifies(plan: &LocalPodPlan, ca_pem: &[u8], ip: IpAddr) {
        let cert = std::fs::read(flag_path(plan, "tls-cert-file")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from_pem_slice(&cert).unwrap(),
                &[],
                &ServerName::IpAddress(ip.into()),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("the serving certificate does not verify for {ip}: {e}"));
    }

    /// The server of the kubeconfig `--kubeconfig` names.
    fn kubeconfig_server(plan: &LocalPodPlan) -> String {
        let text = std::fs::read(flag_path(plan, "kubeconfig")).unwrap();
        let document: serde_yaml::Value = serde_yaml::from_slice(&text).unwrap();
        document["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn plans_of_all_four_components_are_local_and_consistent() {
        let cluster_ip: IpAddr = "127.150.3.7".parse().unwrap();
        let desired = desired_state(cluster_ip, 1, 1);
        let objects = tenant_objects(&desired, cluster_ip, "127.150.3.8".parse().unwrap());
        let secrets = objects.sources.secrets.clone();
        let work = tempfile::tempdir().unwrap();
        let mut planner = TenantPlanner::new(work.path(), "cluster.local", NAMESPACE, TENANT);
        let mut plan = |component| {
            let plan = planner.plan(&objects, component, 0).unwrap();
            plan.materialise().unwrap();
            assert_paths_are_local(&plan);
            plan
        };
        let etcd = plan(Component::Etcd);
        let apiserver = plan(Component::ApiServer);
        let controller_manager = plan(Component::ControllerManager);
        let scheduler = plan(Component::Scheduler);

        // etcd: its own files, members on loopback ports, advertised where it listens.
        assert_eq!(etcd.program, "etcd");
        assert_eq!(etcd.flag("name"), Some("t1-etcd-0"));
        let client_port = url_port(etcd.flag("listen-client-urls").unwrap(), "https");
        let peer_port = url_port(etcd.flag("listen-peer-urls").unwrap(), "https");
        assert_eq!(
            etcd.flag("advertise-client-urls"),
            Some(format!("https://127.0.0.1:{client_port}").as_str())
        );
        assert_eq!(
            etcd.flag("initial-advertise-peer-urls"),
            Some(format!("https://127.0.0.1:{peer_port}").as_str())
        );
        assert_eq!(
            etcd.flag("initial-cluster"),
            Some(format!("t1-etcd-0=https://127.0.0.1:{peer_port}").as_str())
        );
        url_port(etcd.flag("listen-metrics-urls").unwrap(), "http");
        for (flag, secret, key) in [
            ("cert-file", "t1-etcd-server", "tls.crt"),
            ("key-file", "t1-etcd-server", "tls.key"),
            ("trusted-ca-file", "t1-etcd-server", "ca.crt"),
            ("peer-cert-file", "t1-etcd-peer", "tls.crt"),
            ("peer-key-file", "t1-etcd-peer", "tls.key"),
            ("peer-trusted-ca-file", "t1-etcd-server", "ca.crt"),
        ] {
            assert_eq!(
                std::fs::read(flag_path(&etcd, flag)).unwrap(),
                secret_bytes(&secrets, secret, key),
                "etcd --{flag}"
            );
        }

        // kube-apiserver: on the cluster IP and Service port, etcd at the local member.
        assert_eq!(apiserver.program, "kube-apiserver");
        let ip = cluster_ip.to_string();
        assert_eq!(apiserver.flag("bind-address"), Some(ip.as_str()));
        assert_eq!(apiserver.flag("advertise-address"), Some(ip.as_str()));
        assert_eq!(apiserver.flag("secure-port"), Some("6443"));
        assert_eq!(
            apiserver.flag("etcd-servers"),
            Some(format!("https://127.0.0.1:{client_port}").as_str())
        );
        assert_eq!(
            apiserver.flag("service-account-issuer"),
            Some("https://kubernetes.default.svc.cluster.local"),
            "a URL naming no tenant Service stays as rendered"
        );
        for (flag, secret, key) in [
            ("client-ca-file", "t1-admin-signer", "client-ca.crt"),
            ("tls-cert-file", "t1-apiserver-tls", "tls.crt"),
            ("tls-private-key-file", "t1-apiserver-tls", "tls.key"),
            ("etcd-cafile", "t1-apiserver-etcd-client", "ca.crt"),
            ("etcd-certfile", "t1-apiserver-etcd-client", "tls.crt"),
            ("etcd-keyfile", "t1-apiserver-etcd-client", "tls.key"),
            ("service-account-key-file", "t1-sa", "sa.pub"),
            ("service-account-signing-key-file", "t1-sa", "sa.key"),
            (
                "requestheader-client-ca-file",
                "t1-front-proxy-ca",
                "tls.crt",
            ),
            ("proxy-client-cert-file", "t1-front-proxy-client", "tls.crt"),
        ] {
            assert_eq!(
                std::fs::read(flag_path(&apiserver, flag)).unwrap(),
                secret_bytes(&secrets, secret, key),
                "kube-apiserver --{flag}"
            );
        }
        assert_serving_cert_verifies(
            &apiserver,
            &secret_bytes(&secrets, "t1-ca", "tls.crt"),
            cluster_ip,
        );
        assert_eq!(
            std::fs::read(flag_path(&apiserver, "etcd-cafile")).unwrap(),
            std::fs::read(flag_path(&etcd, "trusted-ca-file")).unwrap(),
            "the apiserver trusts the CA etcd's serving certificate comes from"
        );

        // controller-manager and scheduler: loopback, own ports, the apiserver at the cluster IP.
        let apiserver_url = format!("https://{cluster_ip}:6443");
        for plan in [&controller_manager, &scheduler] {
            assert_eq!(
                plan.flag("bind-address"),
                Some("127.0.0.1"),
                "{}",
                plan.container
            );
            let port: u16 = plan.flag("secure-port").unwrap().parse().unwrap();
            assert!(
                ![0, 10257, 10259].contains(&port),
                "{}: {port}",
                plan.container
            );
            assert_eq!(kubeconfig_server(plan), apiserver_url, "{}", plan.container);
            for flag in ["authentication-kubeconfig", "authorization-kubeconfig"] {
                assert_eq!(
                    plan.flag(flag),
                    plan.flag("kubeconfig"),
                    "{}",
                    plan.container
                );
            }
        }
        assert_ne!(
            controller_manager.flag("secure-port"),
            scheduler.flag("secure-port")
        );
        for (flag, secret, key) in [
            ("cluster-signing-cert-file", "t1-ca", "tls.crt"),
            ("cluster-signing-key-file", "t1-ca", "tls.key"),
            ("root-ca-file", "t1-ca", "tls.crt"),
            ("service-account-private-key-file", "t1-sa", "sa.key"),
        ] {
            assert_eq!(
                std::fs::read(flag_path(&controller_manager, flag)).unwrap(),
                secret_bytes(&secrets, secret, key),
                "kube-controller-manager --{flag}"
            );
        }

        // The same planner keeps the ports: a restarted etcd is where the apiserver looks.
        let again = planner.plan(&objects, Component::Etcd, 0).unwrap();
        assert_eq!(again.args, etcd.args);
    }

    /// The apiserver's etcd client, built from the files and URL of its plan.
    struct ApiserverEtcdClient {
        config: Arc<rustls::ClientConfig>,
        addr: SocketAddr,
    }

    impl ApiserverEtcdClient {
        fn of(plan: &LocalPodPlan) -> Self {
            let read = |flag: &str| std::fs::read(flag_path(plan, flag)).unwrap();
            let servers = plan.flag("etcd-servers").unwrap();
            let addr = servers
                .strip_prefix("https://")
                .and_then(|rest| rest.split(',').next())
                .and_then(|first| first.parse().ok())
                .unwrap_or_else(|| panic!("--etcd-servers={servers} is not https://IP:PORT"));
            ApiserverEtcdClient {
                config: etcd_gateway::client_config(
                    &read("etcd-cafile"),
                    &read("etcd-certfile"),
                    &read("etcd-keyfile"),
                )
                .unwrap(),
                addr,
            }
        }

        /// etcd's gateway verified as the IP the apiserver dials, as kube-apiserver does.
        async fn post(
            &self,
            path: &str,
            body: serde_json::Value,
        ) -> Result<(u16, serde_json::Value), String> {
            let server_name = self.addr.ip().to_string();
            etcd_gateway::post(&self.config, &server_name, self.addr, path, body)
                .await
                .map_err(|e| e.to_string())
        }

        async fn put(&self, key: &str, value: &str) -> Result<(), String> {
            let body = json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)});
            match self.post("/v3/kv/put", body).await? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("put answered {status}: {body}")),
            }
        }

        async fn get(&self, key: &str) -> Result<Option<String>, String> {
            Ok(self
                .get_raw(key)
                .await?
                .map(|value| String::from_utf8(value).unwrap()))
        }

        /// The value exactly as etcd stores it.
        async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            let body = json!({"key": STANDARD.encode(key)});
            let (status, body) = self.post("/v3/kv/range", body).await?;
            if status != 200 {
                return Err(format!("range answered {status}: {body}"));
            }
            Ok(body["kvs"][0]["value"]
                .as_str()
                .map(|v| STANDARD.decode(v).unwrap()))
        }
    }

    /// Polls `check` until it gives `Some`; panics with `what` and the diagnostics after
    /// `limit`.
    async fn eventually<T, F, Fut>(
        planes: &LocalControlPlanes,
        limit: Duration,
        what: &str,
        check: F,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match vc_tests::wait::until(what, limit, check).await {
            Ok(value) => value,
            Err(timed_out) => panic!("{timed_out}\n{}", planes.diagnostics()),
        }
    }

    fn without_owners<K: Resource>(mut object: K) -> K {
        // No VirtualCluster exists on this host: its garbage collector must not collect these.
        object.meta_mut().owner_references = None;
        object
    }

    /// Writes the tenant's objects to `host` as the controller would, and returns them.
    async fn write_tenant(host: &Client, etcd_replicas: i32) -> DesiredState {
        Api::<Namespace>::all(host.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
            )
            .await
            .unwrap();
        let services: Api<Service> = Api::namespaced(host.clone(), NAMESPACE);
        let provisional = desired_state("127.0.0.1".parse().unwrap(), 1, etcd_replicas);
        let apiserver_service = services
            .create(
                &PostParams::default(),
                &without_owners(provisional.apiserver_service.clone()),
            )
            .await
            .unwrap();
        let cluster_ip: IpAddr = apiserver_service
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap()
            .parse()
            .unwrap();
        let desired = desired_state(cluster_ip, 1, etcd_replicas);
        let post = PostParams::default();
        for secret in secrets_of(&desired).into_values() {
            Api::<Secret>::namespaced(host.clone(), NAMESPACE)
                .create(&post, &without_owners(secret))
                .await
                .unwrap();
        }
        for service in [&desired.etcd.peer_service, &desired.etcd.client_service] {
            services
                .create(&post, &without_owners(service.clone()))
                .await
                .unwrap();
        }
        Api::<StatefulSet>::namespaced(host.clone(), NAMESPACE)
            .create(&post, &without_owners(desired.etcd.stateful_set.clone()))
            .await
            .unwrap();
        for deployment in [
            &desired.apiserver_deployment,
            &desired.controller_manager,
            &desired.scheduler,
        ] {
            Api::<Deployment>::namespaced(host.clone(), NAMESPACE)
                .create(&post, &without_owners(deployment.clone()))
                .await
                .unwrap();
        }
        desired
    }

    /// The etcd binary, or `None` after saying why the test is skipped.
    fn etcd_or_skip() -> Option<PathBuf> {
        let etcd = etcd_gateway::etcd_binary();
        if etcd.is_none() {
            eprintln!(
                "skipped: no etcd binary at {} and ETCD_BIN is unset",
                etcd_gateway::ETCD_FALLBACKS.join(" or ")
            );
        }
        etcd
    }

    /// A host API server holding the tenant's objects; it stops when the server is dropped.
    async fn host_with_tenant(etcd_replicas: i32) -> (TestApiServer, Client) {
        let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
        let host = server.client().await.unwrap();
        write_tenant(&host, etcd_replicas).await;
        (server, host)
    }

    /// The simulator with `etcd` and `kube_apiserver`; controller-manager, scheduler and the
    /// simulators inside the tenant are off until a test sets them. It resyncs every
    /// 300 ms so that tests wait little for a change to be acted on.
    fn simulator_options(
        etcd: PathBuf,
        kube_apiserver: PathBuf,
        work_dir: &Path,
        namespace: Option<&str>,
    ) -> LocalControlPlaneOptions {
        LocalControlPlaneOptions {
            binaries: ControlPlaneBinaries {
                etcd,
                kube_apiserver,
                kube_controller_manager: None,
                kube_scheduler: None,
            },
            work_dir: work_dir.to_owned(),
            namespace: namespace.map(str::to_owned),
            cluster_domain: "cluster.local".to_owned(),
            tenant_workloads: None,
            tenant_services: None,
            resync: Duration::from_millis(300),
        }
    }

    fn etcd_pid(planes: &LocalControlPlanes) -> Option<u32> {
        member_pid(planes, 0)
    }

    fn member_pid(planes: &LocalControlPlanes, ordinal: i32) -> Option<u32> {
        planes
            .running()
            .into_iter()
            .find(|c| c.component == Component::Etcd && c.ordinal == ordinal)
            .map(|c| c.pid)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_runs_from_the_statefulset_and_takes_the_apiserver_client_certificate() {
        let Some(etcd) = etcd_or_skip() else {
            return;
        };
        let started = Instant::now();
        let (_host_server, host) = host_with_tenant(1).await;
        let work = tempfile::tempdir().unwrap();
        let missing_apiserver = work.path().join("absent").join("kube-apiserver");
        let planes = local_control_plane::spawn(
            host.clone(),
            simulator_options(
                etcd,
                missing_apiserver.clone(),
                work.path(),
                Some(NAMESPACE),
            ),
        );

        // etcd runs; the apiserver's files are laid out but it cannot start, and says why.
        let apiserver = eventually(
            &planes,
            Duration::from_secs(30),
            "etcd and the apiserver plan",
            || {
                let ready = etcd_pid(&planes).is_some();
                let plan = planes.plan(NAMESPACE, TENANT, Component::ApiServer, 0);
                async move { plan.filter(|_| ready) }
            },
        )
        .await;
        let diagnostics = planes.diagnostics();
        assert!(
            diagnostics.contains(&format!(
                "apiserver-0: not started: binary {} does not exist",
                missing_apiserver.display()
            )),
            "{diagnostics}"
        );
        assert!(
            diagnostics.contains("note: no kube-controller-manager binary")
                && diagnostics.contains("note: no kube-scheduler binary"),
            "{diagnostics}"
        );
        assert!(
            diagnostics.contains("etcd-0: running, pid"),
            "{diagnostics}"
        );

        // A kube-apiserver-shaped client: its --etcd-* files and its --etcd-servers.
        let client = ApiserverEtcdClient::of(&apiserver);
        eventually(
            &planes,
            Duration::from_secs(30),
            "etcd to accept a put over mTLS",
            || {
                let client = &client;
                async move {
                    client
                        .put("/registry/local/t1", "before the restart")
                        .await
                        .ok()
                }
            },
        )
        .await;
        assert_eq!(
            client.get("/registry/local/t1").await.unwrap().as_deref(),
            Some("before the restart")
        );
        let first_pid = etcd_pid(&planes).unwrap();

        // A new pod template (the controller's config hash) restarts the member on its
        // ports, with its data.
        let sets: Api<StatefulSet> = Api::namespaced(host.clone(), NAMESPACE);
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            vc_api::constants::CONFIG_HASH_ANNOTATION: "changed-by-the-test"
        }}}}});
        sets.patch("t1-etcd", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        eventually(&planes, Duration::from_secs(20), "etcd to restart", || {
            let pid = etcd_pid(&planes);
            async move { pid.filter(|pid| *pid != first_pid) }
        })
        .await;
        assert!(
            !Path::new(&format!("/proc/{first_pid}")).exists(),
            "the old etcd process is gone"
        );
        let value = eventually(
            &planes,
            Duration::from_secs(30),
            "the restarted etcd to answer",
            || {
                let client = &client;
                async move { client.get("/registry/local/t1").await.ok() }
            },
        )
        .await;
        assert_eq!(value.as_deref(), Some("before the restart"));

        eprintln!("{}", planes.diagnostics());

        // Scaled to 0: the member stops.
        let second_pid = etcd_pid(&planes).unwrap();
        sets.patch(
            "t1-etcd",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
        eventually(&planes, Duration::from_secs(20), "etcd to stop", || {
            let running = etcd_pid(&planes);
            async move { running.is_none().then_some(()) }
        })
        .await;
        assert!(!Path::new(&format!("/proc/{second_pid}")).exists());
        drop(planes);
        eprintln!(
            "local etcd from the rendered StatefulSet: started, restarted and stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exited_process_restarts_and_dropping_the_simulator_kills_it() {
        let Some(etcd) = etcd_or_skip() else {
            return;
        };
        let (_host_server, host) = host_with_tenant(1).await;
        let work = tempfile::tempdir().unwrap();
        let planes = local_control_plane::spawn(
            host,
            simulator_options(etcd, work.path().join("kube-apiserver"), work.path(), None),
        );
        let pid = eventually(&planes, Duration::from_secs(30), "etcd to start", || {
            let pid = etcd_pid(&planes);
            async move { pid }
        })
        .await;
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        // A crash (SIGKILL from outside) is seen and the member starts again.
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let pid = eventually(&planes, Duration::from_secs(30), "etcd to restart", || {
            let restarted = etcd_pid(&planes).filter(|new| *new != pid);
            async move { restarted }
        })
        .await;
        let diagnostics = planes.diagnostics();
        assert!(
            diagnostics.contains("etcd-0: running") && diagnostics.contains("(failures 1,"),
            "{diagnostics}"
        );
        drop(planes);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {pid} outlived the simulator"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_etcd_members_form_one_cluster_through_their_peer_names() {
        let Some(etcd) = etcd_or_skip() else {
            return;
        };
        let started = Instant::now();
        let (_host_server, host) = host_with_tenant(3).await;
        let work = tempfile::tempdir().unwrap();
        let planes = local_control_plane::spawn(
            host,
            simulator_options(
                etcd,
                work.path().join("kube-apiserver"),
                work.path(),
                Some(NAMESPACE),
            ),
        );
        let apiserver = eventually(
            &planes,
            Duration::from_secs(30),
            "three members and the apiserver plan",
            || {
                let all = (0..3).all(|ordinal| member_pid(&planes, ordinal).is_some());
                let plan = planes.plan(NAMESPACE, TENANT, Component::ApiServer, 0);
                async move { plan.filter(|_| all) }
            },
        )
        .await;
        let members: Vec<LocalPodPlan> = (0..3)
            .map(|ordinal| {
                planes
                    .plan(NAMESPACE, TENANT, Component::Etcd, ordinal)
                    .unwrap()
            })
            .collect();
        let peer_urls: Vec<String> = members
            .iter()
            .map(|m| m.flag("initial-advertise-peer-urls").unwrap().to_owned())
            .collect();
        let expected_cluster: Vec<String> = peer_urls
            .iter()
            .enumerate()
            .map(|(ordinal, url)| format!("t1-etcd-{ordinal}={url}"))
            .collect();
        for member in &members {
            assert_eq!(
                member.flag("initial-cluster"),
                Some(expected_cluster.join(",").as_str())
            );
        }
        // Written through the member the apiserver uses, read from the last one.
        let writer = ApiserverEtcdClient::of(&apiserver);
        eventually(
            &planes,
            Duration::from_secs(45),
            "the three-member cluster to accept a put",
            || {
                let writer = &writer;
                async move {
                    writer
                        .put("/registry/local/quorum", "replicated")
                        .await
                        .ok()
                }
            },
        )
        .await;
        let last_client_url = members[2].flag("advertise-client-urls").unwrap();
        let reader = ApiserverEtcdClient {
            config: writer.config.clone(),
            addr: last_client_url
                .strip_prefix("https://")
                .unwrap()
                .parse()
                .unwrap(),
        };
        assert_ne!(reader.addr, writer.addr);
        let value = eventually(
            &planes,
            Duration::from_secs(20),
            "member 2 to return the key",
            || {
                let reader = &reader;
                async move { reader.get("/registry/local/quorum").await.ok().flatten() }
            },
        )
        .await;
        assert_eq!(value, "replicated");
        eprintln!(
            "three local etcd members formed one cluster in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// A stand-in for kube-apiserver, kube-controller-manager and kube-scheduler (by the
    /// name it is run as) where the real binaries are absent: it uses exactly what the
    /// real one would take from its flags. kube-apiserver checks etcd's `/health` with its
    /// `--etcd-*` files at `--etcd-servers`, then serves `/readyz` with `--tls-*` on
    /// `--bind-address:--secure-port`; the others call `/readyz` with the server and
    /// credentials of `--kubeconfig`, then hold `--bind-address:--secure-port`.
    const STAND_IN: &str = r#"#!/usr/bin/env python3
import base64, http.server, os, re, socket, ssl, sys, tempfile, time, urllib.parse

role = os.path.basename(sys.argv[0])
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)

def log(message):
    print(f"stand-in {role}: {message}", flush=True)

def tls_get(url, ca, cert, key, path):
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=parts.hostname) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data.decode(errors="replace")

def retry(what, check):
    error = None
    for _ in range(150):
        try:
            if check():
                return
        except Exception as e:
            error = e
        time.sleep(0.2)
    log(f"{what} failed: {error}")
    sys.exit(1)

if role == "kube-apiserver":
    etcd = flags["etcd-servers"].split(",")[0]
    retry(f"etcd {etcd}", lambda: '"health":"true"' in tls_get(etcd, flags["etcd-cafile"], flags["etcd-certfile"], flags["etcd-keyfile"], "/health").replace(" ", ""))
    log(f"etcd {etcd} healthy over mTLS")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            ok = self.path.split("?")[0] in ("/readyz", "/livez", "/healthz")
            body = b"ok" if ok else b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}'
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain" if ok else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((flags["bind-address"], int(flags["secure-port"])), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(flags["tls-cert-file"], flags["tls-private-key-file"])
    context.load_verify_locations(flags["client-ca-file"])
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    log(f"serving on {flags['bind-address']}:{flags['secure-port']}")
    server.serve_forever()
else:
    text = open(flags["kubeconfig"]).read()
    server = re.search(r"server:\s*(\S+)", text).group(1)
    directory = tempfile.mkdtemp()
    files = {}
    for field in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
        files[field] = os.path.join(directory, field)
        with open(files[field], "wb") as out:
            out.write(base64.b64decode(re.search(field + r":\s*(\S+)", text).group(1)))
    retry(f"/readyz of {server}", lambda: tls_get(server, files["certificate-authority-data"], files["client-certificate-data"], files["client-key-data"], "/readyz").endswith("ok"))
    log(f"readyz ok via {server}")
    listener = socket.create_server((flags["bind-address"], int(flags["secure-port"])))
    log(f"holding {flags['bind-address']}:{flags['secure-port']}")
    while True:
        time.sleep(3600)
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_whole_control_plane_starts_from_the_rendered_flags_with_stand_ins() {
        use std::os::unix::fs::PermissionsExt as _;
        let Some(etcd) = etcd_or_skip() else {
            return;
        };
        if std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: python3 (the stand-in kube binaries) is not on PATH");
            return;
        }
        let started = Instant::now();
        let (_host_server, host) = host_with_tenant(1).await;
        let cluster_ip = Api::<Service>::namespaced(host.clone(), NAMESPACE)
            .get("t1-apiserver")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap();
        let work = tempfile::tempdir().unwrap();
        let bin = work.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stand_in = |name: &str| {
            let path = bin.join(name);
            std::fs::write(&path, STAND_IN).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let mut options = simulator_options(
            etcd,
            stand_in("kube-apiserver"),
            work.path(),
            Some(NAMESPACE),
        );
        options.binaries.kube_controller_manager = Some(stand_in("kube-controller-manager"));
        options.binaries.kube_scheduler = Some(stand_in("kube-scheduler"));
        options.tenant_workloads = Some(Default::default());
        options.tenant_services = Some(Default::default());
        let planes = local_control_plane::spawn(host.clone(), options);

        // /readyz through the admin kubeconfig's in-cluster server, made local.
        eventually(
            &planes,
            Duration::from_secs(40),
            "the simulators inside the tenant",
            || {
                let client = planes.client(NAMESPACE, TENANT);
                async move { client }
            },
        )
        .await;
        let tenant_dir = work.path().join(NAMESPACE).join(TENANT);
        let apiserver_url = format!("https://{cluster_ip}:6443");
        for (log, line) in [
            (
                "apiserver-0.log",
                "stand-in kube-apiserver: etcd https://127.0.0.1:".to_owned(),
            ),
            (
                "apiserver-0.log",
                format!("stand-in kube-apiserver: serving on {cluster_ip}:6443"),
            ),
            (
                "controller-manager-0.log",
                format!("stand-in kube-controller-manager: readyz ok via {apiserver_url}"),
            ),
            (
                "scheduler-0.log",
                format!("stand-in kube-scheduler: readyz ok via {apiserver_url}"),
            ),
        ] {
            let path = tenant_dir.join(log);
            eventually(&planes, Duration::from_secs(40), &line, || {
                let found = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains(&line);
                async move { found.then_some(()) }
            })
            .await;
        }
        let running = planes.running();
        for component in Component::ALL {
            assert!(
                running.iter().any(|c| c.component == component),
                "{component:?} is not running\n{}",
                planes.diagnostics()
            );
        }
        let diagnostics = planes.diagnostics();
        assert!(
            diagnostics.contains(
                "inside the tenant: simulated kubelets beside the real kube-controller-manager"
            ),
            "{diagnostics}"
        );

        // The operator's admin kubeconfig works unchanged against the process.
        let secret = Api::<Secret>::namespaced(host.clone(), NAMESPACE)
            .get("t1-admin-kubeconfig")
            .await
            .unwrap();
        let text = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone()).unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            kubeconfig.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .as_deref(),
            Some(apiserver_url.as_str())
        );
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = Client::try_from(config).unwrap();
        let answer = client
            .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer, "ok");

        let pids: Vec<u32> = running.iter().map(|c| c.pid).collect();
        drop(planes);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} outlived the simulator"
            );
        }
        eprintln!(
            "etcd and stand-in kube binaries started from the rendered flags in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// A tenant provisioned by the in-process controller on the test API server, its
    /// kube-apiserver (and etcd, controller-manager, scheduler) running as processes from
    /// what the controller rendered.
    struct RealTenant {
        harness: crate::controller_common::Harness,
        planes: LocalControlPlanes,
        _work: tempfile::TempDir,
        /// The host's Secrets in the VirtualCluster's namespace.
        secrets: Api<Secret>,
        /// The tenant, through the admin kubeconfig of Secret `NAME-admin-kubeconfig`.
        client: Client,
    }

    impl RealTenant {
        /// With `KUBEBUILDER_ASSETS`, `namespace/name` once its apiserver answers `/readyz`
        /// through the admin kubeconfig; `None` after printing why it cannot run.
        async fn start(namespace: &str, name: &str, simulators_inside: bool) -> Option<Self> {
            let Some(assets) = envtest::assets() else {
                assert!(
                    !envtest::must_run_real(),
                    "CI is set, so this real test must run, but KUBEBUILDER_ASSETS holds no kube-apiserver"
                );
                println!("{SKIP_MESSAGE}");
                return None;
            };
            let binaries = ControlPlaneBinaries::discover(&assets).unwrap();
            let harness = crate::controller_common::Harness::start(2, false).await;
            let work = tempfile::tempdir().unwrap();
            let planes = local_control_plane::spawn(
                harness.admin.clone(),
                LocalControlPlaneOptions {
                    binaries,
                    work_dir: work.path().to_owned(),
                    namespace: Some(namespace.to_owned()),
                    cluster_domain: "cluster.local".to_owned(),
                    tenant_workloads: simulators_inside.then(Default::default),
                    tenant_services: simulators_inside.then(Default::default),
                    resync: Duration::from_millis(500),
                },
            );
            harness.create_vc(namespace, name, &["node-0"]).await;
            let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), namespace);
            let client = eventually(
                &planes,
                Duration::from_secs(120),
                "the tenant kube-apiserver to answer /readyz through the admin kubeconfig",
                || {
                    let secrets = secrets.clone();
                    async move { admin_client(&secrets, name).await }
                },
            )
            .await;
            Some(Self {
                harness,
                planes,
                _work: work,
                secrets,
                client,
            })
        }

        async fn stop(self) {
            drop(self.planes);
            self.harness.shutdown().await;
        }
    }

    /// With `KUBEBUILDER_ASSETS`: the in-process controller provisions a tenant on the test
    /// API server, and its kube-apiserver runs as a process from the rendered Deployment.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tenant_kube_apiserver_process_answers_through_the_admin_kubeconfig() {
        let started = Instant::now();
        let Some(tenant) = RealTenant::start("team-l", "real", true).await else {
            return;
        };
        let planes = &tenant.planes;
        let namespaces = Api::<Namespace>::all(tenant.client.clone())
            .list(&Default::default())
            .await
            .unwrap();
        assert!(
            namespaces
                .items
                .iter()
                .any(|n| n.name_any() == "kube-system"),
            "a real tenant apiserver has kube-system"
        );
        let running = planes.running();
        assert!(
            running
                .iter()
                .any(|c| c.component == Component::ApiServer && c.name == "real"),
            "{}",
            planes.diagnostics()
        );
        eprintln!(
            "real tenant kube-apiserver from the rendered Deployment ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        tenant.stop().await;
    }

    /// The tenant's admin client from `NAME-admin-kubeconfig`, once the tenant apiserver
    /// answers `/readyz` with it.
    async fn admin_client(secrets: &Api<Secret>, name: &str) -> Option<Client> {
        let secret = secrets
            .get_opt(&format!("{name}-admin-kubeconfig"))
            .await
            .ok()??;
        let text = String::from_utf8(secret.data?.get("kubeconfig")?.0.clone()).ok()?;
        client_of_kubeconfig(&text).await
    }

    /// A client of `text`, once it gets `ok` from `/readyz`.
    async fn client_of_kubeconfig(text: &str) -> Option<Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(text).ok()?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .ok()?;
        let client = Client::try_from(config).ok()?;
        let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
        let answer = client.request_text(request).await.ok()?;
        (answer.trim() == "ok").then_some(client)
    }

    /// With `KUBEBUILDER_ASSETS`: a Secret created through the real tenant kube-apiserver
    /// is sealed with secretbox in the tenant's real etcd, its value nowhere in the bytes
    /// stored, and reads back in clear through the apiserver.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tenant_secrets_are_encrypted_at_rest() {
        let Some(tenant) = RealTenant::start("team-e", "sealed", false).await else {
            return;
        };
        let client = tenant.client.clone();
        let planes = &tenant.planes;

        let plaintext = "kosmos-plaintext-canary-6f1d2c";
        let tenant_secrets: Api<Secret> = Api::namespaced(client, "default");
        let created: Secret = serde_json::from_value(json!({
            "metadata": {"name": "canary"},
            "stringData": {"password": plaintext},
        }))
        .unwrap();
        tenant_secrets
            .create(&PostParams::default(), &created)
            .await
            .unwrap();
        let read = tenant_secrets.get("canary").await.unwrap();
        assert_eq!(read.data.unwrap()["password"].0, plaintext.as_bytes());

        let apiserver = planes
            .plan("team-e", "sealed", Component::ApiServer, 0)
            .unwrap();
        let etcd = ApiserverEtcdClient::of(&apiserver);
        let stored = etcd
            .get_raw("/registry/secrets/default/canary")
            .await
            .unwrap()
            .expect("the Secret is in the tenant's etcd under its registry key");
        let prefix = b"k8s:enc:secretbox:v1:";
        assert!(
            stored.starts_with(prefix),
            "stored unsealed: {:?}",
            String::from_utf8_lossy(&stored[..stored.len().min(64)])
        );
        let key_name = &stored[prefix.len()..];
        assert!(
            key_name.starts_with(b"key-"),
            "sealed with a key the controller named"
        );
        for clear in [
            plaintext.as_bytes(),
            b"canary".as_slice(),
            b"password".as_slice(),
        ] {
            assert!(
                !stored.windows(clear.len()).any(|window| window == clear),
                "{:?} is readable in etcd",
                String::from_utf8_lossy(clear)
            );
        }
        tenant.stop().await;
    }

    /// Who the tenant apiserver takes `client` for (a SelfSubjectReview), or the HTTP
    /// status it refused it with.
    async fn who_am_i(client: &Client) -> Result<String, u16> {
        let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("Content-Type", "application/json")
            .body(
                serde_json::to_vec(&json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "SelfSubjectReview",
                }))
                .unwrap(),
            )
            .unwrap();
        match client.request::<serde_json::Value>(request).await {
            Ok(review) => Ok(review["status"]["userInfo"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            Err(kube::Error::Api(status)) => Err(status.code),
            Err(error) => panic!("the tenant apiserver did not answer: {error}"),
        }
    }

    /// A client of `text`, without waiting for anything.
    async fn client_of(text: &str) -> Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(text).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        Client::try_from(config).unwrap()
    }

    /// With `KUBEBUILDER_ASSETS`: the operator's annotation replaces the admin CA; the
    /// real tenant kube-apiserver then refuses the admin kubeconfig handed out before
    /// (401), takes the new one (in the Secret and `spec.kubeconfig`), and still takes
    /// the controller-manager's, which the rotation left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotated_admin_kubeconfig_revokes_the_old_one() {
        use vc_api::VirtualCluster;
        let started = Instant::now();
        let Some(tenant) = RealTenant::start("team-r", "rot", false).await else {
            return;
        };
        let (planes, secrets, old_client) = (&tenant.planes, &tenant.secrets, &tenant.client);
        let tenant_up = started.elapsed();
        let kubeconfig_text = |secret: Secret, key: &str| {
            String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
        };
        let old_kubeconfig = kubeconfig_text(
            secrets.get("rot-admin-kubeconfig").await.unwrap(),
            "kubeconfig",
        );
        assert_eq!(
            who_am_i(old_client).await.as_deref(),
            Ok("kubernetes-admin")
        );
        // The controller-manager's kubeconfig names the in-cluster Service; on this
        // machine the apiserver answers at the cluster IP the admin kubeconfig names.
        let server = |text: &str| -> String {
            let document: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            document["clusters"][0]["cluster"]["server"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let controller_manager_kubeconfig = kubeconfig_text(
            secrets
                .get("rot-controller-manager-kubeconfig")
                .await
                .unwrap(),
            "kubeconfig",
        )
        .replace(
            &server(&kubeconfig_text(
                secrets
                    .get("rot-controller-manager-kubeconfig")
                    .await
                    .unwrap(),
                "kubeconfig",
            )),
            &server(&old_kubeconfig),
        );
        assert_eq!(
            who_am_i(&client_of(&controller_manager_kubeconfig).await)
                .await
                .as_deref(),
            Ok("system:kube-controller-manager")
        );

        let rotation_started = Instant::now();
        let vcs: Api<VirtualCluster> = Api::namespaced(tenant.harness.admin.clone(), "team-r");
        vcs.patch(
            "rot",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {
                vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION: "first"
            }}})),
        )
        .await
        .unwrap();
        let rotated = eventually(
            planes,
            Duration::from_secs(120),
            "status.adminKubeconfigRotation to record the rotation",
            || {
                let vcs = vcs.clone();
                async move {
                    let vc = vcs.get("rot").await.ok()?;
                    let done =
                        vc.status.as_ref()?.admin_kubeconfig_rotation.as_deref() == Some("first");
                    done.then_some(vc)
                }
            },
        )
        .await;
        let rotation_took = rotation_started.elapsed();
        let new_kubeconfig = kubeconfig_text(
            secrets.get("rot-admin-kubeconfig").await.unwrap(),
            "kubeconfig",
        );
        // Compared, never printed: both hold a private key.
        assert!(
            new_kubeconfig != old_kubeconfig,
            "the admin kubeconfig was not reissued"
        );
        assert_eq!(
            rotated.spec.kubeconfig.as_deref(),
            Some(STANDARD.encode(&new_kubeconfig).as_str()),
            "spec.kubeconfig serves the new admin kubeconfig"
        );
        let new_client = client_of(&new_kubeconfig).await;
        assert_eq!(
            who_am_i(&new_client).await.as_deref(),
            Ok("kubernetes-admin")
        );
        assert_eq!(
            who_am_i(&client_of(&old_kubeconfig).await).await,
            Err(401),
            "the admin kubeconfig handed out before the rotation still works"
        );
        assert_eq!(
            who_am_i(&client_of(&controller_manager_kubeconfig).await)
                .await
                .as_deref(),
            Ok("system:kube-controller-manager"),
            "the rotation cut off a component"
        );
        let admin_ca = secrets.get("rot-admin-signer").await.unwrap();
        assert_eq!(
            admin_ca.annotations()[vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION],
            "first"
        );
        eprintln!(
            "admin kubeconfig rotated and served {:.1} s after the annotation (tenant up in {:.1} s)",
            rotation_took.as_secs_f64(),
            tenant_up.as_secs_f64()
        );
        tenant.stop().await;
    }
}

//! API semantics every kosmos-vc part relies on, written once and run against the
//! in-process test API server and, when `KUBEBUILDER_ASSETS` is set, against a real
//! kube-apiserver + etcd (envtest) — so the two can be compared.

mod semantics {

    use std::collections::BTreeMap;
    use std::time::Duration;

    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use kube::runtime::watcher;
    use serde_json::json;
    use vc_test_apiserver::envtest::{EnvtestOptions, TestCluster};

    const NS: &str = "default";

    /// Generates an in-process and a real-apiserver variant of a scenario; the real one
    /// also runs kube-controller-manager when the scenario needs one of its controllers.
    macro_rules! both {
        ($scenario:ident, $inproc:ident, $real:ident) => {
            both!($scenario, $inproc, $real, EnvtestOptions::default());
        };
        ($scenario:ident, $inproc:ident, $real:ident, $options:expr) => {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $inproc() {
                let cluster = TestCluster::in_process().expect("server starts");
                $scenario(&cluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $real() {
                let Some(cluster) = TestCluster::real_or_skip_with($options)
                    .await
                    .expect("envtest starts")
                else {
                    return;
                };
                $scenario(&cluster).await;
            }
        };
    }

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
    }

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}", rand_suffix())
    }

    fn rand_suffix() -> String {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{n:x}")
    }

    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let check = || {
            let holds = check();
            async move { holds.await.then_some(()) }
        };
        vc_tests::wait::eventually(what, Duration::from_secs(15), check).await;
    }

    async fn watcher_sees_every_change_in_order(cluster: &TestCluster) {
        for streaming in [false, true] {
            let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
            let name = unique("watched");
            let config = if streaming {
                watcher::Config::default().streaming_lists()
            } else {
                watcher::Config::default()
            };
            let config = config.fields(&format!("metadata.name={name}"));
            let mut stream = watcher(api.clone(), config).boxed();
            // The initial (empty) list completes before we start writing.
            loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                    .await
                    .unwrap()
                    .unwrap()
                {
                    Some(watcher::Event::InitDone) => break,
                    Some(_) => {}
                    None => panic!("watch ended"),
                }
            }
            api.create(&PostParams::default(), &cm(&name, &[("step", "0")]))
                .await
                .unwrap();
            for step in 1..=3 {
                let patch = json!({"data": {"step": step.to_string()}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
            api.delete(&name, &DeleteParams::default()).await.unwrap();
            let mut seen = Vec::new();
            while seen.len() < 5 {
                let event = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                match event {
                    watcher::Event::Apply(o) => {
                        seen.push(format!("apply:{}", o.data.unwrap()["step"]))
                    }
                    watcher::Event::Delete(o) => {
                        seen.push(format!("delete:{}", o.data.unwrap()["step"]))
                    }
                    _ => {}
                }
            }
            assert_eq!(
                seen,
                ["apply:0", "apply:1", "apply:2", "apply:3", "delete:3"],
                "streaming={streaming}"
            );
        }
    }
    both!(
        watcher_sees_every_change_in_order,
        in_process_watcher_sees_every_change_in_order,
        real_watcher_sees_every_change_in_order
    );

    async fn server_side_apply_is_idempotent(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let name = unique("applied");
        let desired = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app": "x"}},
            "data": {"a": "1"},
        });
        let params = PatchParams::apply("semantics-test");
        let first = api
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .unwrap();
        let second = api
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .unwrap();
        assert_eq!(
            first.metadata.resource_version, second.metadata.resource_version,
            "a repeated apply must not write"
        );
        // An apply that drops a field it owned removes it.
        let trimmed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}});
        let third = api
            .patch(&name, &params, &Patch::Apply(&trimmed))
            .await
            .unwrap();
        assert_ne!(
            third.metadata.resource_version,
            second.metadata.resource_version
        );
        assert!(
            third
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key("app")
                .eq(&false)
        );
        // Another manager changing an owned field conflicts unless forced.
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "2"}});
        let err = api
            .patch(&name, &PatchParams::apply("other"), &Patch::Apply(&other))
            .await
            .unwrap_err();
        match err {
            kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
            other => panic!("expected a conflict, got {other}"),
        }
        let forced = api
            .patch(
                &name,
                &PatchParams::apply("other").force(),
                &Patch::Apply(&other),
            )
            .await
            .unwrap();
        assert_eq!(forced.data.unwrap()["a"], "2");
    }
    both!(
        server_side_apply_is_idempotent,
        in_process_server_side_apply_is_idempotent,
        real_server_side_apply_is_idempotent
    );

    async fn stale_update_gets_conflict_and_noop_keeps_version(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let name = unique("stale");
        let created = api
            .create(&PostParams::default(), &cm(&name, &[("a", "1")]))
            .await
            .unwrap();
        let mut fresh = created.clone();
        fresh.data = Some(BTreeMap::from([("a".to_string(), "2".to_string())]));
        let updated = api
            .replace(&name, &PostParams::default(), &fresh)
            .await
            .unwrap();
        assert_ne!(
            updated.metadata.resource_version,
            created.metadata.resource_version
        );
        let mut stale = created.clone();
        stale.data = Some(BTreeMap::from([("a".to_string(), "3".to_string())]));
        match api
            .replace(&name, &PostParams::default(), &stale)
            .await
            .unwrap_err()
        {
            kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
            other => panic!("expected a conflict, got {other}"),
        }
        // Writing the same content again changes nothing, not even the resourceVersion.
        let same = api
            .replace(&name, &PostParams::default(), &updated)
            .await
            .unwrap();
        assert_eq!(
            same.metadata.resource_version,
            updated.metadata.resource_version
        );
        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"data": {"a": "2"}})),
            )
            .await
            .unwrap();
        assert_eq!(
            patched.metadata.resource_version,
            updated.metadata.resource_version
        );
        match api
            .create(&PostParams::default(), &cm(&name, &[]))
            .await
            .unwrap_err()
        {
            kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
            other => panic!("expected AlreadyExists, got {other}"),
        }
    }
    both!(
        stale_update_gets_conflict_and_noop_keeps_version,
        in_process_stale_update_gets_conflict,
        real_stale_update_gets_conflict
    );

    async fn finalizer_holds_deletion(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let name = unique("final");
        let mut obj = cm(&name, &[]);
        obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&PostParams::default(), &obj).await.unwrap();
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        let held = api.get(&name).await.unwrap();
        assert!(held.metadata.deletion_timestamp.is_some());
        let err = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
                ),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref e) if e.code == 422),
            "{err}"
        );
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        match api.get(&name).await.unwrap_err() {
            kube::Error::Api(e) => assert_eq!(e.code, 404),
            other => panic!("expected NotFound, got {other}"),
        }
    }
    both!(
        finalizer_holds_deletion,
        in_process_finalizer_holds_deletion,
        real_finalizer_holds_deletion
    );

    async fn garbage_collection_removes_owned_objects(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        for policy in ["Background", "Foreground", "Orphan"] {
            let owner_name = unique(&format!("owner-{}", policy.to_lowercase()));
            let owner = api
                .create(&PostParams::default(), &cm(&owner_name, &[]))
                .await
                .unwrap();
            let dep_name = format!("{owner_name}-dep");
            let mut dep = cm(&dep_name, &[]);
            dep.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: owner_name.clone(),
                    uid: owner.metadata.uid.clone().unwrap(),
                    block_owner_deletion: Some(true),
                    controller: Some(true),
                },
            ]);
            dep.metadata.finalizers =
                (policy == "Foreground").then(|| vec!["example.com/slow".to_string()]);
            api.create(&PostParams::default(), &dep).await.unwrap();
            let params = match policy {
                "Background" => DeleteParams::background(),
                "Foreground" => DeleteParams::foreground(),
                _ => DeleteParams::orphan(),
            };
            api.delete(&owner_name, &params).await.unwrap();
            match policy {
                "Background" => {
                    eventually("dependent deleted", || async {
                        api.get_opt(&dep_name).await.unwrap().is_none()
                    })
                    .await;
                }
                "Foreground" => {
                    // The owner waits for its dependent, which waits for its own finalizer.
                    eventually("dependent marked for deletion", || async {
                        api.get(&dep_name)
                            .await
                            .unwrap()
                            .metadata
                            .deletion_timestamp
                            .is_some()
                    })
                    .await;
                    let owner_now = api.get(&owner_name).await.unwrap();
                    assert_eq!(
                        owner_now.metadata.finalizers,
                        Some(vec!["foregroundDeletion".to_string()])
                    );
                    api.patch(
                        &dep_name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
                    )
                    .await
                    .unwrap();
                    eventually("owner deleted", || async {
                        api.get_opt(&owner_name).await.unwrap().is_none()
                    })
                    .await;
                }
                _ => {
                    eventually("owner deleted", || async {
                        api.get_opt(&owner_name).await.unwrap().is_none()
                    })
                    .await;
                    let orphan = api.get(&dep_name).await.unwrap();
                    assert!(
                        orphan
                            .metadata
                            .owner_references
                            .unwrap_or_default()
                            .is_empty()
                    );
                }
            }
        }
    }
    both!(
        garbage_collection_removes_owned_objects,
        in_process_garbage_collection,
        real_garbage_collection,
        EnvtestOptions {
            controller_manager: true,
            ..EnvtestOptions::default()
        }
    );

    async fn list_pages_and_selectors(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let tag = unique("page");
        for i in 0..7 {
            let mut obj = cm(&format!("{tag}-{i}"), &[]);
            obj.metadata.labels = Some(BTreeMap::from([
                ("batch".to_string(), tag.clone()),
                ("odd".to_string(), (i % 2).to_string()),
            ]));
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
        let mut params = kube::api::ListParams::default()
            .labels(&format!("batch={tag}"))
            .limit(3);
        let mut names = Vec::new();
        loop {
            let page = api.list(&params).await.unwrap();
            names.extend(page.items.iter().map(|o| o.metadata.name.clone().unwrap()));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        assert_eq!(names.len(), 7);
        let odd = api
            .list(&kube::api::ListParams::default().labels(&format!("batch={tag},odd=1")))
            .await
            .unwrap();
        assert_eq!(odd.items.len(), 3);
        let one = api
            .list(&kube::api::ListParams::default().fields(&format!("metadata.name={tag}-4")))
            .await
            .unwrap();
        assert_eq!(one.items.len(), 1);
        let deleted = api
            .delete_collection(
                &DeleteParams::default(),
                &kube::api::ListParams::default().labels(&format!("batch={tag}")),
            )
            .await
            .unwrap();
        assert!(deleted.is_left());
        assert!(
            api.list(&kube::api::ListParams::default().labels(&format!("batch={tag}")))
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
    both!(
        list_pages_and_selectors,
        in_process_list_pages_and_selectors,
        real_list_pages_and_selectors
    );

    /// kube-apiserver refuses a pod mounting a volume it does not declare; the test API
    /// server once accepted it, and a simulator built such pods for months unnoticed.
    async fn pod_mounting_an_undeclared_volume_is_invalid(cluster: &TestCluster) {
        let client = cluster.client().await.unwrap();
        // ServiceAccount admission wants the pod's account to exist.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), NS);
        let account = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(other) => panic!("creating ServiceAccount default: {other}"),
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, NS);
        let name = unique("mounts");
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "example", "volumeMounts": [
                    {"name": "config", "mountPath": "/config"},
                    {"name": "data", "mountPath": "/data"}
                ]}],
                "volumes": [{"name": "config", "emptyDir": {}}]
            }
        }))
        .unwrap();
        let status = match pods.create(&PostParams::default(), &pod).await {
            Err(kube::Error::Api(status)) => status,
            other => panic!("expected 422, got {other:?}"),
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            status.message,
            format!(
                "Pod \"{name}\" is invalid: spec.containers[0].volumeMounts[1].name: Not found: \"data\""
            )
        );
    }
    both!(
        pod_mounting_an_undeclared_volume_is_invalid,
        in_process_pod_mounting_an_undeclared_volume_is_invalid,
        real_pod_mounting_an_undeclared_volume_is_invalid
    );

    async fn dry_run_writes_nothing(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let name = unique("dry");
        let created = api
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &cm(&name, &[]),
            )
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some());
        assert!(api.get_opt(&name).await.unwrap().is_none());
    }
    both!(
        dry_run_writes_nothing,
        in_process_dry_run_writes_nothing,
        real_dry_run_writes_nothing
    );

    async fn selector_watch_sees_objects_leave_and_enter(cluster: &TestCluster) {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let name = unique("selected");
        let mut obj = cm(&name, &[]);
        obj.metadata.labels = Some(BTreeMap::from([("tier".to_string(), "gold".to_string())]));
        let created = api.create(&PostParams::default(), &obj).await.unwrap();
        let rv = created.metadata.resource_version.unwrap();
        let params = kube::api::WatchParams::default()
            .labels("tier=gold")
            .timeout(3);
        let mut stream = api.watch(&params, &rv).await.unwrap().boxed();
        let relabel = |tier: &str| json!({"metadata": {"labels": {"tier": tier}}});
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&relabel("silver")),
        )
        .await
        .unwrap();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"x": "1"}})),
        )
        .await
        .unwrap();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&relabel("gold")),
        )
        .await
        .unwrap();
        let mut kinds = Vec::new();
        let started = std::time::Instant::now();
        // The server ends the watch after timeoutSeconds=3.
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            match event.unwrap() {
                kube::api::WatchEvent::Added(_) => kinds.push("ADDED"),
                kube::api::WatchEvent::Modified(_) => kinds.push("MODIFIED"),
                kube::api::WatchEvent::Deleted(_) => kinds.push("DELETED"),
                _ => {}
            }
        }
        assert_eq!(kinds, ["DELETED", "ADDED"]);
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "the watch must end at its timeout"
        );
    }
    both!(
        selector_watch_sees_objects_leave_and_enter,
        in_process_selector_watch_sees_objects_leave_and_enter,
        real_selector_watch_sees_objects_leave_and_enter
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_old_watch_resource_version_gets_410_gone() {
        let cluster = TestCluster::in_process().unwrap();
        let TestCluster::InProcess(server) = &cluster else {
            unreachable!()
        };
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        let first = api
            .create(&PostParams::default(), &cm("old", &[]))
            .await
            .unwrap();
        api.patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"x": "1"}})),
        )
        .await
        .unwrap();
        server.compact();
        let rv = first.metadata.resource_version.unwrap();
        let mut stream = api
            .watch(&kube::api::WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        match stream.next().await.unwrap() {
            Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            Ok(kube::api::WatchEvent::Error(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
            }
            other => panic!("expected 410 Gone, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn faults_fail_requests_and_cut_watches() {
        let cluster = TestCluster::in_process().unwrap();
        let TestCluster::InProcess(server) = &cluster else {
            unreachable!()
        };
        let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), NS);
        server.faults().fail_next(
            1,
            vc_test_apiserver::FaultMatch {
                verb: Some("create".into()),
                ..Default::default()
            },
        );
        assert_eq!(server.faults().remaining(), 1);
        match api
            .create(&PostParams::default(), &cm("f1", &[]))
            .await
            .unwrap_err()
        {
            kube::Error::Api(e) => assert_eq!(e.code, 500),
            other => panic!("expected 500, got {other}"),
        }
        assert_eq!(server.faults().remaining(), 0, "the fault was used up");
        api.create(&PostParams::default(), &cm("f1", &[]))
            .await
            .unwrap();
        // kube-rs retries 429s by default; a client without that retry sees the 429.
        let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.default_retry = false;
        let no_retry: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), NS);
        server.faults().throttle_next(
            1,
            2,
            vc_test_apiserver::FaultMatch {
                resource: Some("configmaps".into()),
                ..Default::default()
            },
        );
        match no_retry.get("f1").await.unwrap_err() {
            kube::Error::Api(e) => {
                assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"))
            }
            other => panic!("expected 429, got {other}"),
        }
        server.faults().clear();
        api.get("f1").await.unwrap();
        server.faults().delay_next(
            1,
            Duration::from_millis(300),
            vc_test_apiserver::FaultMatch {
                verb: Some("get".into()),
                ..Default::default()
            },
        );
        let started = std::time::Instant::now();
        api.get("f1").await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the delayed answer came early"
        );
        let mut stream = api
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        assert!(matches!(
            stream.next().await,
            Some(Ok(kube::api::WatchEvent::Added(_)))
        ));
        server.faults().cut_watches();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(item) = stream.next().await {
                let _ = item;
            }
        })
        .await;
        assert!(ended.is_ok(), "the watch should end after cut_watches");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_counts_see_only_effective_writes() {
        let cluster = TestCluster::in_process().unwrap();
        let TestCluster::InProcess(server) = &cluster else {
            unreachable!()
        };
        let path = server
            .kubeconfig_for(
                "system:serviceaccount:kosmos-system:ctl",
                &["system:serviceaccounts"],
            )
            .unwrap();
        let client = vc_test_apiserver::client_from_kubeconfig(&path)
            .await
            .unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client, NS);
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counted"}, "data": {"a": "1"}});
        let params = PatchParams::apply("ctl");
        api.patch("counted", &params, &Patch::Apply(&desired))
            .await
            .unwrap();
        server.reset_write_counts();
        for _ in 0..3 {
            api.patch("counted", &params, &Patch::Apply(&desired))
                .await
                .unwrap();
        }
        let counts = server.write_counts();
        let user = "system:serviceaccount:kosmos-system:ctl";
        assert_eq!(counts.requests_by(user), 3);
        assert_eq!(counts.writes_by(user), 0, "{counts:?}");
    }
}

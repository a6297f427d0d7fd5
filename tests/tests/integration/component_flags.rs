//! Every flag handed to kube-apiserver, kube-controller-manager and kube-scheduler is one
//! those binaries know. A misspelt or removed flag makes them exit at start-up
//! (`unknown flag: --x`), and none of the three binaries exists here, so the real
//! start-up path has never run: the flags are compared with the names the Kubernetes
//! reference pages list (`tests/fixtures/component-flags/`, headers say which page and
//! version). Checked: what vc-controller renders (1 and 3 replicas), what envtest starts
//! the host control plane with, and what the local control-plane simulator runs after
//! rewriting paths and addresses. etcd is checked against `etcd --help` when an etcd
//! binary exists.

mod component_flags_tests {
    use crate::support::rendered_tenant::{NAMESPACE, TENANT, desired_state, tenant_objects};
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use vc_controller::resources::DesiredState;
    use vc_simulation::etcd_gateway;
    use vc_simulation::local_control_plane::{Component, TenantPlanner};
    use vc_simulation::local_pod::container_words;
    use vc_test_apiserver::envtest::{
        self, CONTROLLER_MANAGER_CONTROLLERS, EnvtestOptions, EnvtestPaths, EnvtestPorts,
    };

    const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/component-flags");

    /// What one binary accepts, as its fixture lists it.
    #[derive(Debug, Default)]
    struct KnownFlags {
        binary: String,
        fixture: PathBuf,
        flags: BTreeSet<String>,
        controllers: BTreeSet<String>,
        disabled_by_default: BTreeSet<String>,
        /// Legacy controller name -> canonical name.
        aliases: BTreeMap<String, String>,
    }

    /// Reads a fixture: `#` comments and blank lines are skipped, `[section]` switches
    /// section (`flags` until the first header), every other line is one name (an alias
    /// line is `ALIAS CANONICAL`). Each section must be sorted and without duplicates,
    /// so a hand edit cannot hide a typo among near-identical names.
    fn parse_fixture(binary: &str, fixture: &Path, text: &str) -> Result<KnownFlags, String> {
        let mut known = KnownFlags {
            binary: binary.to_owned(),
            fixture: fixture.to_owned(),
            ..KnownFlags::default()
        };
        let mut section = "flags".to_owned();
        let mut previous: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let at = || format!("{}:{}", fixture.display(), index + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                previous = None;
                continue;
            }
            if let Some(before) = &previous
                && before.as_str() >= line
            {
                return Err(format!(
                    "{}: `{line}` is not after `{before}` (sections are sorted, no duplicates)",
                    at()
                ));
            }
            previous = Some(line.to_owned());
            let words: Vec<&str> = line.split_whitespace().collect();
            match (section.as_str(), words.as_slice()) {
                ("flags", [name]) => {
                    if name.starts_with('-') {
                        return Err(format!("{}: write `{name}` without dashes", at()));
                    }
                    known.flags.insert((*name).to_owned());
                }
                ("controllers", [name]) => {
                    known.controllers.insert((*name).to_owned());
                }
                ("disabled-by-default-controllers", [name]) => {
                    known.disabled_by_default.insert((*name).to_owned());
                }
                ("controller-aliases", [alias, canonical]) => {
                    known
                        .aliases
                        .insert((*alias).to_owned(), (*canonical).to_owned());
                }
                (section, _) => {
                    return Err(format!(
                        "{}: `{line}` does not fit section [{section}]",
                        at()
                    ));
                }
            }
        }
        if known.flags.is_empty() {
            return Err(format!("{}: lists no flags", fixture.display()));
        }
        for (alias, canonical) in &known.aliases {
            if !known.controllers.contains(canonical) {
                return Err(format!(
                    "{}: alias {alias} names {canonical}, which [controllers] does not list",
                    fixture.display()
                ));
            }
        }
        for name in &known.disabled_by_default {
            if !known.controllers.contains(name) {
                return Err(format!(
                    "{}: disabled-by-default {name} is not in [controllers]",
                    fixture.display()
                ));
            }
        }
        Ok(known)
    }

    fn load(binary: &str) -> KnownFlags {
        let fixture = Path::new(FIXTURE_DIR).join(format!("{binary}.txt"));
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        parse_fixture(binary, &fixture, &text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each flag of a command line with its value: `--a=1`, `--a 1` and a bare `--a`
    /// (pflag's two forms; a word not starting with `-` after a bare flag is its value).
    fn flags_of(args: &[String]) -> Vec<(String, Option<String>)> {
        let mut flags = Vec::new();
        let mut index = 0;
        while index < args.len() {
            let word = &args[index];
            index += 1;
            let Some(body) = word.strip_prefix('-') else {
                continue;
            };
            let body = body.strip_prefix('-').unwrap_or(body);
            match body.split_once('=') {
                Some((name, value)) => flags.push((name.to_owned(), Some(value.to_owned()))),
                None => {
                    let value = args
                        .get(index)
                        .filter(|next| !next.starts_with('-'))
                        .cloned();
                    if value.is_some() {
                        index += 1;
                    }
                    flags.push((body.to_owned(), value));
                }
            }
        }
        flags
    }

    /// Every flag of `args` the binary knows; `what` says whose command line it is. A
    /// single-dash word must be one of pflag's shorthands (`-h`, `-v`): the binaries read
    /// `-secure-port` as a bundle of shorthands and refuse it.
    fn check_flags(known: &KnownFlags, what: &str, args: &[String]) -> Result<(), String> {
        let mut problems = Vec::new();
        for word in args.iter().filter(|w| w.starts_with('-')) {
            let long = word.starts_with("--");
            let name = word
                .trim_start_matches('-')
                .split('=')
                .next()
                .unwrap_or_default();
            let known_name = if long {
                known.flags.contains(name)
            } else {
                matches!(name, "h" | "v")
            };
            if !known_name {
                problems.push(format!(
                    "{what}: {} gets `{}{name}`, which {} does not list",
                    known.binary,
                    if long { "--" } else { "-" },
                    known.fixture.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Every entry of a `--controllers` value names a controller or an alias the binary
    /// knows (`*` stands for the defaults, `-x` turns `x` off).
    fn check_controllers(known: &KnownFlags, what: &str, value: &str) -> Result<(), String> {
        let unknown: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|entry| *entry != "*")
            .map(|entry| entry.strip_prefix('-').unwrap_or(entry))
            .filter(|name| !known.controllers.contains(*name) && !known.aliases.contains_key(*name))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} --controllers names {}, which {} lists neither as a controller nor as an alias",
                known.binary,
                unknown.join(", "),
                known.fixture.display()
            ))
        }
    }

    /// The flags and, for kube-controller-manager, the `--controllers` entries.
    fn check_command_line(known: &KnownFlags, what: &str, args: &[String]) {
        let mut problems = Vec::new();
        if let Err(e) = check_flags(known, what, args) {
            problems.push(e);
        }
        for (name, value) in flags_of(args) {
            if name == "controllers" {
                let value = value.unwrap_or_default();
                if let Err(e) = check_controllers(known, what, &value) {
                    problems.push(e);
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    fn container<'a>(spec: Option<&'a PodSpec>, name: &str) -> &'a Container {
        spec.and_then(|s| s.containers.iter().find(|c| c.name == name))
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn deployment_container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
        let spec = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref());
        container(spec, name)
    }

    fn stateful_set_container<'a>(set: &'a StatefulSet, name: &str) -> &'a Container {
        let spec = set.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        container(spec, name)
    }

    fn kube_binaries() -> [(Component, KnownFlags); 3] {
        [
            (Component::ApiServer, load("kube-apiserver")),
            (
                Component::ControllerManager,
                load("kube-controller-manager"),
            ),
            (Component::Scheduler, load("kube-scheduler")),
        ]
    }

    fn rendered_container(desired: &DesiredState, component: Component) -> &Container {
        let deployment = match component {
            Component::ApiServer => &desired.apiserver_deployment,
            Component::ControllerManager => &desired.controller_manager,
            Component::Scheduler => &desired.scheduler,
            Component::Etcd => return stateful_set_container(&desired.etcd.stateful_set, "etcd"),
        };
        deployment_container(deployment, component.container())
    }

    #[test]
    fn rendered_control_plane_flags_are_known_to_their_binaries() {
        let cluster_ip: IpAddr = "127.150.4.7".parse().unwrap();
        for replicas in [1, 3] {
            let desired = desired_state(cluster_ip, replicas, replicas);
            for (component, known) in kube_binaries() {
                let container = rendered_container(&desired, component);
                assert_eq!(
                    container.command.as_deref(),
                    Some([known.binary.clone()].as_slice()),
                    "{} container runs another program",
                    known.binary
                );
                let what = format!("vc-controller's {} ({replicas} replicas)", known.binary);
                let args = container_words(container);
                assert!(!args.is_empty(), "{what}: no arguments");
                check_command_line(&known, &what, &args);
            }
        }
    }

    #[test]
    fn controller_manager_controllers_are_known_names_or_aliases() {
        let known = load("kube-controller-manager");
        let desired = desired_state("127.150.4.7".parse().unwrap(), 1, 1);
        let args = container_words(rendered_container(&desired, Component::ControllerManager));
        let controllers: Vec<String> = flags_of(&args)
            .into_iter()
            .filter(|(name, _)| name == "controllers")
            .filter_map(|(_, value)| value)
            .collect();
        assert_eq!(controllers.len(), 1, "one --controllers in {args:?}");
        check_controllers(&known, "vc-controller", &controllers[0]).unwrap();
        // What the value turns on beyond `*`: the two controllers kubeadm adds, which
        // are off by default and must therefore be named.
        let extra: BTreeSet<String> = controllers[0]
            .split(',')
            .filter(|entry| *entry != "*" && !entry.starts_with('-'))
            .map(|entry| {
                known
                    .aliases
                    .get(entry)
                    .cloned()
                    .unwrap_or(entry.to_owned())
            })
            .collect();
        assert_eq!(extra, known.disabled_by_default);
    }

    #[test]
    fn envtest_flags_are_known_to_their_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let paths = EnvtestPaths::under(dir.path());
        let ports = EnvtestPorts {
            apiserver_address: std::net::Ipv4Addr::LOCALHOST,
            etcd_client: 12379,
            etcd_peer: 12380,
            apiserver: 16443,
            controller_manager: 20257,
            scheduler: 20259,
        };
        let options = EnvtestOptions {
            service_cidr: envtest::private_service_cidr(),
            controller_manager: true,
            scheduler: true,
            ..EnvtestOptions::default()
        };
        let apiserver = load("kube-apiserver");
        check_command_line(
            &apiserver,
            "envtest",
            &envtest::apiserver_args(&options, &paths, &ports),
        );
        let controller_manager = load("kube-controller-manager");
        check_command_line(
            &controller_manager,
            "envtest",
            &envtest::controller_manager_args(&paths, &ports),
        );
        check_command_line(
            &load("kube-scheduler"),
            "envtest",
            &envtest::scheduler_args(&paths, &ports),
        );
        check_controllers(
            &controller_manager,
            "envtest CONTROLLER_MANAGER_CONTROLLERS",
            &CONTROLLER_MANAGER_CONTROLLERS.join(","),
        )
        .unwrap();
        // They are canonical names, not aliases: the comment beside them says so.
        for name in CONTROLLER_MANAGER_CONTROLLERS {
            assert!(
                controller_manager.controllers.contains(name),
                "{name} is not a canonical controller name"
            );
        }
    }

    #[test]
    fn local_control_plane_rewriting_keeps_flags_known() {
        let cluster_ip: IpAddr = "127.150.4.7".parse().unwrap();
        for replicas in [1, 3] {
            let desired = desired_state(cluster_ip, replicas, replicas);
            let objects = tenant_objects(&desired, cluster_ip, "127.150.4.8".parse().unwrap());
            let work = tempfile::tempdir().unwrap();
            let mut planner = TenantPlanner::new(work.path(), "cluster.local", NAMESPACE, TENANT);
            for (component, known) in kube_binaries() {
                for ordinal in 0..replicas {
                    let plan = planner.plan(&objects, component, ordinal).unwrap();
                    assert_eq!(plan.program, known.binary);
                    let what = format!(
                        "local_pod's {} ordinal {ordinal} of {replicas}",
                        known.binary
                    );
                    check_command_line(&known, &what, &plan.args);
                    // Rewriting changes values, never which flags are given, beyond the
                    // ones the planner sets on purpose (listed in the fixture too).
                    let rendered: BTreeSet<String> =
                        flags_of(&container_words(rendered_container(&desired, component)))
                            .into_iter()
                            .map(|(name, _)| name)
                            .collect();
                    let planned: BTreeSet<String> = flags_of(&plan.args)
                        .into_iter()
                        .map(|(name, _)| name)
                        .collect();
                    let dropped: Vec<&String> = rendered.difference(&planned).collect();
                    assert!(dropped.is_empty(), "{what}: rewriting dropped {dropped:?}");
                }
            }
        }
    }

    /// The flag names `etcd --help` prints, when an etcd binary exists.
    fn etcd_help() -> Option<(PathBuf, BTreeSet<String>)> {
        let binary = etcd_gateway::etcd_binary()?;
        let output = std::process::Command::new(&binary)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{} --help: {e}", binary.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let flag = regex::Regex::new(r"(?m)^\s*--([a-z0-9][a-z0-9-]*)").unwrap();
        let names: BTreeSet<String> = flag.captures_iter(&text).map(|c| c[1].to_owned()).collect();
        assert!(
            names.len() > 20,
            "{} --help listed only {names:?}",
            binary.display()
        );
        Some((binary, names))
    }

    #[test]
    fn etcd_flags_are_known_to_etcd() {
        let Some((binary, names)) = etcd_help() else {
            println!(
                "skipped: no etcd binary (ETCD_BIN unset and {:?} absent)",
                etcd_gateway::ETCD_FALLBACKS
            );
            return;
        };
        let known = KnownFlags {
            binary: "etcd".to_owned(),
            fixture: PathBuf::from(format!("`{} --help`", binary.display())),
            flags: names,
            ..KnownFlags::default()
        };
        let cluster_ip: IpAddr = "127.150.4.7".parse().unwrap();
        for replicas in [1, 3] {
            let desired = desired_state(cluster_ip, replicas, replicas);
            let rendered = container_words(rendered_container(&desired, Component::Etcd));
            check_command_line(
                &known,
                &format!("vc-controller's etcd ({replicas} members)"),
                &rendered,
            );
            let objects = tenant_objects(&desired, cluster_ip, "127.150.4.8".parse().unwrap());
            let work = tempfile::tempdir().unwrap();
            let mut planner = TenantPlanner::new(work.path(), "cluster.local", NAMESPACE, TENANT);
            for ordinal in 0..replicas {
                let plan = planner.plan(&objects, Component::Etcd, ordinal).unwrap();
                check_command_line(
                    &known,
                    &format!("local_pod's etcd member {ordinal} of {replicas}"),
                    &plan.args,
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let ports = EnvtestPorts {
            apiserver_address: std::net::Ipv4Addr::LOCALHOST,
            etcd_client: 12379,
            etcd_peer: 12380,
            apiserver: 16443,
            controller_manager: 20257,
            scheduler: 20259,
        };
        check_command_line(
            &known,
            "envtest",
            &envtest::etcd_args(&EnvtestPaths::under(dir.path()), &ports),
        );
    }

    #[test]
    fn fixture_parser_reads_sections_aliases_and_refuses_disorder() {
        let path = Path::new("example.txt");
        let known = parse_fixture(
            "kube-controller-manager",
            path,
            "# header\n\nbind-address\ncontrollers\n\n[controllers]\na-controller\nb-controller\n\n[disabled-by-default-controllers]\nb-controller\n\n[controller-aliases]\na a-controller\nbee b-controller\n",
        )
        .unwrap();
        assert_eq!(
            known.flags,
            BTreeSet::from(["bind-address".to_owned(), "controllers".to_owned()])
        );
        assert_eq!(known.controllers.len(), 2);
        assert_eq!(
            known.disabled_by_default,
            BTreeSet::from(["b-controller".to_owned()])
        );
        assert_eq!(known.aliases["bee"], "b-controller");

        let unsorted = parse_fixture("x", path, "secure-port\nbind-address\n").unwrap_err();
        assert!(unsorted.contains("example.txt:2"), "{unsorted}");
        let duplicate = parse_fixture("x", path, "a\na\n").unwrap_err();
        assert!(duplicate.contains("not after"), "{duplicate}");
        let dashes = parse_fixture("x", path, "--a\n").unwrap_err();
        assert!(dashes.contains("without dashes"), "{dashes}");
        let dangling = parse_fixture(
            "x",
            path,
            "a\n[controllers]\nc\n[controller-aliases]\nold missing\n",
        )
        .unwrap_err();
        assert!(dangling.contains("old names missing"), "{dangling}");
        let misplaced = parse_fixture("x", path, "a\n[controller-aliases]\nlonely\n").unwrap_err();
        assert!(misplaced.contains("does not fit"), "{misplaced}");
        assert!(parse_fixture("x", path, "# nothing\n").is_err());
    }

    #[test]
    fn real_fixtures_parse_and_list_the_flags_everyone_uses() {
        for (_, known) in kube_binaries() {
            for flag in ["help", "v", "bind-address", "secure-port", "tls-cert-file"] {
                assert!(
                    known.flags.contains(flag),
                    "{} lacks {flag}",
                    known.fixture.display()
                );
            }
        }
        let controller_manager = load("kube-controller-manager");
        assert!(controller_manager.controllers.len() > 40);
        assert!(controller_manager.aliases.len() > 40);
    }

    #[test]
    fn check_refuses_a_made_up_flag_and_names_the_fixture() {
        let known = load("kube-apiserver");
        let args = vec![
            "--secure-port=6443".to_owned(),
            "--no-such-flag=1".to_owned(),
            "-secure-port".to_owned(),
            "-v=2".to_owned(),
        ];
        let error = check_flags(&known, "a made-up command line", &args).unwrap_err();
        assert!(error.contains("a made-up command line"), "{error}");
        assert!(
            error.contains("kube-apiserver gets `--no-such-flag`"),
            "{error}"
        );
        assert!(error.contains("kube-apiserver.txt"), "{error}");
        // A long flag spelt with one dash is refused too; `-v` is a real shorthand.
        assert!(error.contains("`-secure-port`"), "{error}");
        assert!(!error.contains("`-v`"), "{error}");
        assert!(check_flags(&known, "ok", &args[..1]).is_ok());

        let controller_manager = load("kube-controller-manager");
        let error = check_controllers(
            &controller_manager,
            "a made-up list",
            "*,-garbagecollector,bootstrapsigner,no-such-controller",
        )
        .unwrap_err();
        assert!(error.contains("no-such-controller"), "{error}");
        assert!(!error.contains("garbagecollector"), "{error}");
        assert!(error.contains("kube-controller-manager.txt"), "{error}");
    }

    #[test]
    fn flags_of_reads_both_pflag_forms() {
        let args: Vec<String> = ["--a=1", "--b", "2", "--c", "--d=x=y", "value"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            flags_of(&args),
            vec![
                ("a".to_owned(), Some("1".to_owned())),
                ("b".to_owned(), Some("2".to_owned())),
                ("c".to_owned(), None),
                ("d".to_owned(), Some("x=y".to_owned())),
            ]
        );
    }
}

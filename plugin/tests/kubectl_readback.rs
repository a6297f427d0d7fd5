//! Whatever kubectl-vc writes into a kubeconfig, the real kubectl reads back unchanged.
//!
//! kubectl's YAML reader is YAML 1.1 (`y`, `off`, `~`, `0x1F`, `010`, `2001-12-14` are not
//! strings there); every check here asks `kubectl config view -o json --raw` what it
//! makes of a file, rather than trusting our own parser to agree with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kubectl_vc::kubeconfig::document::{self, NamedList};
use kubectl_vc::kubeconfig::{self, Origin, TenantCredentials, VirtualClusterRef};
use pretty_assertions::assert_eq;
use proptest::prelude::*;
use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};

/// Every scalar of the issue, plus the rest of the YAML 1.1 resolvers' families.
const YAML_11_SPECIALS: &[&str] = &[
    "y",
    "Y",
    "n",
    "N",
    "yes",
    "Yes",
    "NO",
    "on",
    "On",
    "off",
    "OFF",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "0x1F",
    "0o17",
    "0b101",
    "1e3",
    "1E-3",
    "010",
    "+12",
    "-7",
    "1_000",
    "190:20:30",
    "3.14",
    ".5",
    ".inf",
    "-.Inf",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "=",
    "<<",
];

/// The admin kubeconfig the controller writes for a tenant, as `kubectl vc` reads it.
const TENANT_KUBECONFIG: &str = include_str!("fixtures/tenant-admin-kubeconfig.yaml");

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kubeconfigs");

fn kubectl() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

macro_rules! require_kubectl {
    () => {
        match kubectl() {
            Some(kubectl) => kubectl,
            None => {
                eprintln!("skipped: kubectl is not on PATH");
                return;
            }
        }
    };
}

#[cfg(test)]
/// Runs `kubectl ARGS --kubeconfig FILE`; panics with kubectl's stderr when it fails.
fn run_kubectl(kubectl: &Path, file: &Path, args: &[&str]) -> String {
    let output = Command::new(kubectl)
        .args(args)
        .arg("--kubeconfig")
        .arg(file)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed on\n{}\n{}",
        fs::read_to_string(file).unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[cfg(test)]
/// The kubeconfig as kubectl understands it.
fn kubectl_view(kubectl: &Path, file: &Path) -> Json {
    serde_json::from_str(&run_kubectl(
        kubectl,
        file,
        &["config", "view", "-o", "json", "--raw"],
    ))
    .unwrap()
}

/// kubectl's view without the entries named `name` and without `current-context`.
fn view_without(view: &Json, name: &str) -> Json {
    let mut view = view.clone();
    for list in ["clusters", "users", "contexts"] {
        // kubectl shows a list it has no entry for as null.
        if view[list].is_null() {
            view[list] = Json::Array(Vec::new());
        }
        if let Some(entries) = view.get_mut(list).and_then(Json::as_array_mut) {
            entries.retain(|entry| entry["name"] != name);
        }
    }
    if let Some(object) = view.as_object_mut() {
        object.remove("current-context");
    }
    view
}

fn demo() -> VirtualClusterRef {
    VirtualClusterRef::new("default", "demo")
}

#[cfg(test)]
fn merge_demo(path: &Path) {
    let credentials = TenantCredentials::from_kubeconfig(TENANT_KUBECONFIG, None).unwrap();
    kubeconfig::write_tenant(
        path,
        &credentials,
        "vc-demo",
        &demo(),
        true,
        &Origin::default(),
    )
    .unwrap();
}

/// The reproduction: `kubectl config set-context other --cluster=x --user=y`, then
/// `use-context demo`. Before, the file came back with `user: y`, and every kubectl
/// command failed to load it.
#[test]
fn set_context_by_kubectl_survives_use_context_for_every_yaml_11_scalar() {
    let kubectl = require_kubectl!();
    for special in YAML_11_SPECIALS {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config");
        run_kubectl(
            &kubectl,
            &path,
            &[
                "config",
                "set-context",
                "other",
                "--cluster=x",
                &format!("--user={special}"),
                &format!("--namespace={special}"),
            ],
        );
        let before = kubectl_view(&kubectl, &path);

        merge_demo(&path);

        let listed = run_kubectl(&kubectl, &path, &["config", "get-contexts"]);
        let other = listed
            .lines()
            .find(|line| line.split_whitespace().any(|word| word == "other"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>();
        if !special.contains(' ') {
            assert_eq!(other, ["other", "x", special, special], "{listed}");
        }
        let after = kubectl_view(&kubectl, &path);
        let context = after["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == "other")
            .unwrap();
        assert_eq!(context["context"]["user"], *special);
        assert_eq!(after["current-context"], "vc-demo");
        assert_eq!(
            view_without(&after, "vc-demo"),
            view_without(&before, "vc-demo")
        );
    }
}

/// Kubeconfigs as kubectl, kind, minikube, EKS, GKE and AKS write them (exec plugins,
/// auth providers, extensions, proxy-url, quoted words): after a merge, kubectl reads
/// every entry that was there exactly as before.
#[test]
fn every_entry_tools_write_reads_back_the_same_after_a_merge() {
    let kubectl = require_kubectl!();
    let mut fixtures: Vec<PathBuf> = fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    fixtures.sort();
    assert_eq!(fixtures.len(), 6, "{fixtures:?}");
    for fixture in fixtures {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config");
        fs::copy(&fixture, &path).unwrap();
        let before = kubectl_view(&kubectl, &path);
        merge_demo(&path);
        let after = kubectl_view(&kubectl, &path);
        assert_eq!(
            view_without(&after, "vc-demo"),
            view_without(&before, "vc-demo"),
            "{}",
            fixture.display()
        );
        assert_eq!(after["current-context"], "vc-demo", "{}", fixture.display());
    }
}

/// Entries written by kubectl's own `config set-*` commands, with values chosen to be
/// YAML 1.1 words, read back the same after a merge.
#[test]
fn entries_kubectl_set_commands_write_read_back_the_same_after_a_merge() {
    let kubectl = require_kubectl!();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(directory.path().join("ca.crt"), "not really a CA\n").unwrap();
    let ca = directory.path().join("ca.crt").display().to_string();
    for args in [
        vec![
            "config",
            "set-cluster",
            "off",
            "--server=https://10.0.0.1:6443",
            "--proxy-url=http://proxy.example:3128",
            "--tls-server-name=yes",
        ],
        vec![
            "config",
            "set-cluster",
            "~",
            "--server=https://x",
            "--insecure-skip-tls-verify=true",
        ],
        vec![
            "config",
            "set-cluster",
            "010",
            "--server=https://y",
            &format!("--certificate-authority={ca}"),
            "--embed-certs=true",
        ],
        vec![
            "config",
            "set-credentials",
            "y",
            "--exec-command=aws",
            "--exec-api-version=client.authentication.k8s.io/v1beta1",
            "--exec-arg=eks",
            "--exec-arg=--cluster-name",
            "--exec-arg=yes",
            "--exec-env=AWS_PROFILE=off",
            "--exec-env=NULLISH=~",
        ],
        vec![
            "config",
            "set-credentials",
            "n",
            "--auth-provider=oidc",
            "--auth-provider-arg=client-id=0x1F",
            "--auth-provider-arg=refresh-token=2001-12-14",
        ],
        vec!["config", "set-credentials", "1e3", "--token=on"],
        vec![
            "config",
            "set-credentials",
            "true",
            "--username=true",
            "--password=null",
        ],
        vec![
            "config",
            "set-context",
            "no",
            "--cluster=off",
            "--user=y",
            "--namespace=1_000",
        ],
        vec!["config", "set", "preferences.colors", "true"],
        vec!["config", "use-context", "no"],
    ] {
        run_kubectl(&kubectl, &path, &args);
    }
    let before = kubectl_view(&kubectl, &path);
    merge_demo(&path);
    let after = kubectl_view(&kubectl, &path);
    assert_eq!(
        view_without(&after, "vc-demo"),
        view_without(&before, "vc-demo")
    );
}

/// Strings that stress a YAML writer: the YAML 1.1 words, indicator characters, spaces,
/// quotes, control characters, line separators and any Unicode.
fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(YAML_11_SPECIALS).prop_map(str::to_owned),
        3 => "[-:.#'\"!&*?|>%@`~,\\[\\]{} a-zA-Z0-9_+=/\\\\]{1,12}",
        2 => "[a-z]{1,3}[-:.#'\"!&*?|>%@`~,\\[\\]{} +=/]{1,3}[a-zA-Z0-9 ]{0,3}",
        2 => "[0-9.eE+_:xob-]{1,10}",
        1 => "\\PC{1,10}",
        1 => any::<String>().prop_filter("non-empty", |text| !text.is_empty()),
    ]
}

#[cfg(test)]
/// A document whose every name, reference and free-text field is one of `words`, written
/// the way the plugin writes: a context, cluster and user per word, plus an extension
/// and exec arguments and env values carrying the words.
fn document_of(words: &[String]) -> Mapping {
    let mut document = document::empty_kubeconfig();
    let yaml = |value: serde_json::Value| -> Value { serde_json::from_value(value).unwrap() };
    for word in words {
        document::entries_mut(&mut document, NamedList::Clusters)
            .unwrap()
            .push(yaml(serde_json::json!({
                "name": word,
                "cluster": {"server": "https://127.0.0.1:6443", "tls-server-name": word},
            })));
        document::entries_mut(&mut document, NamedList::Users)
            .unwrap()
            .push(yaml(serde_json::json!({
                "name": word,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": word,
                        "args": [word, word],
                        "env": [{"name": word, "value": word}],
                        "interactiveMode": "Never",
                    }
                },
            })));
        document::entries_mut(&mut document, NamedList::Contexts)
            .unwrap()
            .push(yaml(serde_json::json!({
                "name": word,
                "context": {
                    "cluster": word,
                    "user": word,
                    "namespace": word,
                    "extensions": [{"name": word, "extension": {"value": word, "list": [word]}}],
                },
            })));
    }
    if let Some(first) = words.first() {
        document.insert("current-context".into(), first.clone().into());
    }
    document
}

/// What kubectl must report for each word, keyed by name.
fn expected_entries(words: &[String]) -> BTreeMap<String, Json> {
    words
        .iter()
        .map(|word| {
            let entry = serde_json::json!({
                "cluster": {"server": "https://127.0.0.1:6443", "tls-server-name": word},
                "user": {
                    "command": word,
                    "args": [word, word],
                    "env": [{"name": word, "value": word}],
                },
                "context": {"cluster": word, "user": word, "namespace": word},
                "extension": {"value": word, "list": [word]},
            });
            (word.clone(), entry)
        })
        .collect()
}

fn reported_entries(view: &Json) -> BTreeMap<String, Json> {
    let by_name = |list: &str| -> BTreeMap<String, Json> {
        view[list]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                (
                    entry["name"].as_str().unwrap_or_default().to_owned(),
                    entry.clone(),
                )
            })
            .collect()
    };
    let (clusters, users, contexts) = (by_name("clusters"), by_name("users"), by_name("contexts"));
    contexts
        .iter()
        .map(|(name, context)| {
            let exec = &users.get(name).cloned().unwrap_or_default()["user"]["exec"];
            let body = &context["context"];
            let entry = serde_json::json!({
                "cluster": clusters.get(name).cloned().unwrap_or_default()["cluster"],
                "user": {"command": exec["command"], "args": exec["args"], "env": exec["env"]},
                "context": {"cluster": body["cluster"], "user": body["user"], "namespace": body["namespace"]},
                "extension": body["extensions"][0]["extension"],
            });
            (name.clone(), entry)
        })
        .collect()
}

const WORDS_PER_FILE: usize = 24;
const FILES: u32 = 96;

proptest! {
    #![proptest_config(ProptestConfig { cases: FILES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Generated names and values, written by the plugin's writer, are what kubectl reads.
    #[test]
    fn generated_strings_read_back_unchanged_by_kubectl(
        words in proptest::collection::btree_set(awkward_string(), 1..=WORDS_PER_FILE)
    ) {
        let Some(kubectl) = kubectl() else {
            eprintln!("skipped: kubectl is not on PATH");
            return Ok(());
        };
        let words: Vec<String> = words.into_iter().collect();
        let document = document_of(&words);
        let text = document::to_yaml(&document);
        // Our own reader agrees too.
        prop_assert_eq!(&document::parse(&text).unwrap(), &document);

        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config");
        kubeconfig::file::write_atomically(&path, text.as_bytes()).unwrap();
        let started = Instant::now();
        let view = kubectl_view(&kubectl, &path);
        let elapsed = started.elapsed();
        if std::env::var_os("KUBECTL_VC_REPORT_TIMING").is_some() {
            eprintln!("kubectl read {} words in {elapsed:?}", words.len());
        }
        prop_assert_eq!(view["current-context"].as_str(), Some(words[0].as_str()));
        prop_assert_eq!(reported_entries(&view), expected_entries(&words), "file:\n{}", text);
    }
}

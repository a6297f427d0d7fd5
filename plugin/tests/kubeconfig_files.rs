//! The `use-context` merge and the `delete` cleanup on real files in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kubectl_vc::kubeconfig::document::{self, NamedList};
use kubectl_vc::kubeconfig::{self, LoadingRules, Origin, TenantCredentials, VirtualClusterRef};
use pretty_assertions::assert_eq;
use serde_yaml::{Mapping, Value};

/// A kubeconfig as people have them: three contexts, a cloud exec plugin, extensions,
/// preferences and a field no Rust type knows, plus comments.
/// `use-context prod`: the tenant of [`tenant()`] written as `vc-prod` into `path`,
/// switched to when `switch`.
fn write_prod(
    path: &Path,
    switch: bool,
) -> Result<kubeconfig::MergeOutcome, kubeconfig::KubeconfigError> {
    kubeconfig::write_tenant(
        path,
        &tenant(),
        "vc-prod",
        &prod(),
        switch,
        &Origin::default(),
    )
}

const USER_KUBECONFIG: &str = r#"# my clusters, do not lose them
apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod-eu
  cluster:
    server: https://prod-eu.example.com
    certificate-authority-data: UFJPRC1DQQo=
    extensions:
    - name: client.authentication.k8s.io/exec
      extension:
        audience: prod
- name: staging
  cluster:
    server: https://staging.example.com:6443
    insecure-skip-tls-verify: false
    proxy-url: socks5://localhost:1080
- name: kind-dev
  cluster:
    server: https://127.0.0.1:41000
    certificate-authority: certs/kind-ca.crt
users:
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [eks, get-token, --cluster-name, prod]
      interactiveMode: IfAvailable
- name: staging-user
  user:
    token: c3RhZ2luZy10b2tlbg==
- name: kind-dev
  user:
    client-certificate-data: S0lORC1DRVJU
    client-key-data: S0lORC1LRVk=
contexts:
- name: prod
  context:
    cluster: prod-eu
    user: prod-admin
    namespace: payments
    extensions:
    - name: some-tool/last-used
      extension: {at: "2026-11-01"}
- name: staging
  context:
    cluster: staging
    user: staging-user
- name: kind-dev
  context:
    cluster: kind-dev
    user: kind-dev
current-context: prod
some-future-field:
  keep: me
"#;

/// The admin kubeconfig the controller writes for a tenant, as `kubectl vc` reads it.
const TENANT_KUBECONFIG: &str = include_str!("fixtures/tenant-admin-kubeconfig.yaml");

#[cfg(test)]
fn read(path: &Path) -> Mapping {
    document::parse(&fs::read_to_string(path).unwrap()).unwrap()
}

/// The document without the entries named `name`, and with `current-context` removed:
/// what must be identical before and after a merge.
fn without(document: &Mapping, name: &str) -> Mapping {
    let mut document = document.clone();
    for list in NamedList::ALL {
        if let Some(Value::Sequence(entries)) = document.get_mut(list.key()) {
            entries.retain(|entry| document::entry_name(entry) != Some(name));
        }
    }
    document.remove("current-context");
    document
}

#[cfg(test)]
fn tenant() -> TenantCredentials {
    TenantCredentials::from_kubeconfig(TENANT_KUBECONFIG, None).unwrap()
}

fn prod() -> VirtualClusterRef {
    VirtualClusterRef::new("default", "prod")
}

#[test]
fn use_context_keeps_every_existing_entry_and_field() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    let before = read(&path);

    let outcome = write_prod(&path, true).unwrap();
    assert!(outcome.switched);
    assert!(outcome.replaced.is_empty());

    let after = read(&path);
    assert_eq!(without(&after, "vc-prod"), without(&before, "vc-prod"));
    assert_eq!(document::current_context(&after), Some("vc-prod"));
    for list in NamedList::ALL {
        assert_eq!(
            document::entry_names(&after, list)
                .last()
                .map(String::as_str),
            Some("vc-prod")
        );
    }
    // Key order of untouched entries survives too, not only their content.
    let staging_before = serde_yaml::to_string(
        document::find_entry(&before, NamedList::Clusters, "staging").unwrap(),
    )
    .unwrap();
    let staging_after = serde_yaml::to_string(
        document::find_entry(&after, NamedList::Clusters, "staging").unwrap(),
    )
    .unwrap();
    assert_eq!(staging_after, staging_before);
}

#[test]
fn second_use_context_replaces_in_place_without_duplicates() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    write_prod(&path, true).unwrap();
    // The user adds a context after ours; the second merge must not move ours to the end.
    let mut document = read(&path);
    document::entries_mut(&mut document, NamedList::Contexts)
        .unwrap()
        .push(
            serde_yaml::from_str("{name: later, context: {cluster: staging, user: staging-user}}")
                .unwrap(),
        );
    document.insert("current-context".into(), "staging".into());
    fs::write(&path, document::to_yaml(&document)).unwrap();

    let moved =
        TenantCredentials::from_kubeconfig(TENANT_KUBECONFIG, Some("https://127.0.0.1:7443"))
            .unwrap();
    let outcome =
        kubeconfig::write_tenant(&path, &moved, "vc-prod", &prod(), true, &Origin::default())
            .unwrap();
    assert_eq!(outcome.replaced.len(), 3);
    assert_eq!(outcome.replaced_foreign().count(), 0);

    let after = read(&path);
    assert_eq!(
        document::entry_names(&after, NamedList::Contexts),
        ["prod", "staging", "kind-dev", "vc-prod", "later"]
    );
    assert_eq!(
        document::entry_names(&after, NamedList::Clusters),
        ["prod-eu", "staging", "kind-dev", "vc-prod"]
    );
    assert_eq!(
        document::entry_names(&after, NamedList::Users),
        ["prod-admin", "staging-user", "kind-dev", "vc-prod"]
    );
    assert_eq!(
        document::find_body(&after, NamedList::Clusters, "vc-prod").unwrap()["server"],
        "https://127.0.0.1:7443"
    );
    assert_eq!(document::current_context(&after), Some("vc-prod"));
}

#[test]
fn no_switch_keeps_current_context() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    write_prod(&path, false).unwrap();
    assert_eq!(document::current_context(&read(&path)), Some("prod"));
}

#[test]
fn written_file_is_private() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_prod(&path, true).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !directory.path().join("config.lock").exists(),
        "lock must be released"
    );
    let leftovers: Vec<_> = fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["config"], "no temporary file may stay behind");
}

#[test]
fn new_file_is_created_private_in_a_new_directory() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join(".kube").join("config");
    write_prod(&path, true).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written = read(&path);
    assert_eq!(written["apiVersion"], "v1");
    assert_eq!(document::current_context(&written), Some("vc-prod"));
}

#[test]
fn kubeconfig_variable_with_two_files_writes_to_the_first_existing_one() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing");
    let a = directory.path().join("a");
    let b = directory.path().join("b");
    fs::write(
        &a,
        "contexts: [{name: from-a, context: {cluster: x, user: y}}]\ncurrent-context: from-a\n",
    )
    .unwrap();
    fs::write(&b, USER_KUBECONFIG).unwrap();
    let b_before = fs::read(&b).unwrap();
    let variable = std::env::join_paths([&missing, &a, &b]).unwrap();
    let rules = LoadingRules::new(None, Some(&variable), Some(directory.path()));

    let destination = kubeconfig::destination(&rules).unwrap();
    assert_eq!(destination, a);
    write_prod(&destination, true).unwrap();

    assert_eq!(
        fs::read(&b).unwrap(),
        b_before,
        "the second file must not change"
    );
    assert!(!missing.exists(), "a missing file must not be created");
    // kubectl's merged view now selects the new context.
    let merged = kubeconfig::loading::merge_first_wins(&kubeconfig::load(&rules).unwrap());
    let selection = kubeconfig::loading::select(&merged, &Default::default()).unwrap();
    assert_eq!(
        (selection.context.as_str(), selection.cluster.as_str()),
        ("vc-prod", "vc-prod")
    );
}

#[test]
fn delete_removes_exactly_what_use_context_added() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    let original = read(&path);
    write_prod(&path, true).unwrap();
    let other = VirtualClusterRef::new("team-b", "prod");
    kubeconfig::write_tenant(
        &path,
        &tenant(),
        "vc-team-b-prod",
        &other,
        false,
        &Origin::default(),
    )
    .unwrap();

    let rules = LoadingRules::new(Some(path.clone()), None, None);
    let changed = kubeconfig::remove_tenant(&rules, &prod()).unwrap();
    assert_eq!(changed.len(), 1);
    assert!(changed[0].1.cleared_current_context);

    let after = read(&path);
    assert_eq!(
        without(&after, "vc-team-b-prod"),
        without(&original, "vc-team-b-prod")
    );
    assert_eq!(after["current-context"], "");
    assert_eq!(
        document::entry_names(&after, NamedList::Contexts),
        ["prod", "staging", "kind-dev", "vc-team-b-prod"]
    );

    // A second delete finds nothing and leaves the file alone.
    let bytes = fs::read(&path).unwrap();
    assert!(
        kubeconfig::remove_tenant(&rules, &prod())
            .unwrap()
            .is_empty()
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn delete_keeps_a_hand_made_context_of_the_same_name() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    let hand_made =
        USER_KUBECONFIG.replace("- name: staging\n  context:", "- name: vc-prod\n  context:");
    fs::write(&path, &hand_made).unwrap();
    let rules = LoadingRules::new(Some(path.clone()), None, None);
    assert!(
        kubeconfig::remove_tenant(&rules, &prod())
            .unwrap()
            .is_empty()
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), hand_made);
}

#[test]
fn broken_kubeconfig_is_named_and_left_unchanged() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    let broken = "apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: [unclosed\n";
    fs::write(&path, broken).unwrap();
    let error = write_prod(&path, true).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not valid YAML"), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    assert!(!directory.path().join("config.lock").exists());
}

#[test]
fn kubeconfig_whose_lists_are_not_lists_is_left_unchanged() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, "contexts: {a: b}\n").unwrap();
    let error = write_prod(&path, true).unwrap_err();
    assert!(
        error.to_string().contains("`contexts` field is not a list"),
        "{error}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "contexts: {a: b}\n");
}

#[test]
fn missing_explicit_kubeconfig_is_an_error_but_missing_variable_files_are_skipped() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing");
    let explicit = LoadingRules::new(Some(missing.clone()), None, None);
    let error = kubeconfig::load(&explicit).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("given with --kubeconfig does not exist"),
        "{error}"
    );

    let variable = std::env::join_paths([&missing]).unwrap();
    let from_variable = LoadingRules::new(None, Some(&variable), None);
    assert!(kubeconfig::load(&from_variable).unwrap().is_empty());
}

#[test]
fn kubectl_reads_the_merged_file() {
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped: kubectl is not on PATH");
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    write_prod(&path, true).unwrap();
    let output = std::process::Command::new(kubectl)
        .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "kind-dev\nprod\nstaging\nvc-prod\n"
    );
    let current = std::process::Command::new(kubectl_path())
        .args(["config", "current-context", "--kubeconfig"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&current.stdout), "vc-prod\n");
}

fn kubectl_path() -> std::path::PathBuf {
    kubectl().unwrap_or_else(|| "kubectl".into())
}

fn kubectl() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

#[test]
fn our_lock_is_the_one_kubectl_respects() {
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped: kubectl is not on PATH");
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config");
    fs::write(&path, USER_KUBECONFIG).unwrap();
    let before = fs::read(&path).unwrap();
    {
        let _lock = kubeconfig::file::FileLock::acquire(&path).unwrap();
        let output = std::process::Command::new(&kubectl)
            .args(["config", "set-context", "while-locked", "--kubeconfig"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "kubectl must not write while we hold the lock"
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("config.lock"));
        assert_eq!(fs::read(&path).unwrap(), before);
    }
    let output = std::process::Command::new(&kubectl)
        .args(["config", "set-context", "after-unlock", "--kubeconfig"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

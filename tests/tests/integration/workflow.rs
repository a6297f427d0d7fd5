//! `.github/workflows/e2e.yml` needs Docker and a kind cluster, so it never runs where the
//! project is developed: these tests make "right by reading" checkable.
//!
//! - `actionlint` (with shellcheck on every `run:` script, when shellcheck is on PATH) over
//!   every workflow, and `hadolint` over the root Dockerfile, when they are installed
//!   (`pip install -r .ci/requirements.txt`); otherwise `skipped: ...`.
//! - Static checks of what the workflow names against the repository: the harness's
//!   environment variables, the cargo packages and test target, the binaries the harness
//!   needs, the chart path and release, the kind node image against the chart's
//!   `kubeVersion`, the image that is built, loaded into kind and installed, and that the
//!   Dockerfile builds and installs every binary the chart's Deployments run.
//!
//! The harness's names are read from the text of `tests/src/harness.rs`, so that every
//! `*_ENV` variable it declares and every binary `binary_dir()` insists on is found without
//! a list kept by hand. A changed declaration makes these tests fail with a message saying
//! so, never pass by accident.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use vc_tests::find_on_path;

const WORKFLOW: &str = ".github/workflows/e2e.yml";
const HARNESS: &str = "tests/src/harness.rs";
const CHART_DIR: &str = "charts/kosmos-vc";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{relative}: cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The workflow, parsed.

/// One step of a job, with what the checks look at.
#[derive(Debug)]
struct Step {
    /// `jobs.JOB.steps[INDEX]` (and the step's name), for messages.
    at: String,
    uses: Option<String>,
    with: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    run: Option<String>,
    condition: Option<String>,
}

#[derive(Debug)]
struct Workflow {
    env: BTreeMap<String, String>,
    steps: Vec<Step>,
}

fn string_map(value: &Yaml) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Some(mapping) = value.as_mapping() {
        for (key, value) in mapping {
            let value = match value {
                Yaml::String(s) => s.clone(),
                Yaml::Number(n) => n.to_string(),
                Yaml::Bool(b) => b.to_string(),
                _ => continue,
            };
            if let Some(key) = key.as_str() {
                map.insert(key.to_owned(), value);
            }
        }
    }
    map
}

fn workflow() -> Workflow {
    let text = read(WORKFLOW);
    let doc: Yaml = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{WORKFLOW}: not YAML ({e}); fix the syntax"));
    let mut env = string_map(&doc["env"]);
    let mut steps = Vec::new();
    let jobs = doc["jobs"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{WORKFLOW}: `jobs` is missing or not a mapping"));
    for (job_name, job) in jobs {
        let job_name = job_name.as_str().unwrap_or("?");
        env.extend(string_map(&job["env"]));
        let Some(list) = job["steps"].as_sequence() else {
            continue;
        };
        for (index, step) in list.iter().enumerate() {
            let label = step["name"]
                .as_str()
                .or(step["uses"].as_str())
                .unwrap_or("");
            steps.push(Step {
                at: format!("jobs.{job_name}.steps[{index}] ({label})"),
                uses: step["uses"].as_str().map(str::to_owned),
                with: string_map(&step["with"]),
                env: string_map(&step["env"]),
                run: step["run"].as_str().map(str::to_owned),
                condition: step["if"].as_str().map(str::to_owned),
            });
        }
    }
    Workflow { env, steps }
}

impl Workflow {
    /// The one step that uses `action` (`owner/name`, any ref).
    fn uses(&self, action: &str) -> &Step {
        let found: Vec<&Step> = self
            .steps
            .iter()
            .filter(|s| {
                s.uses
                    .as_deref()
                    .is_some_and(|u| u.split('@').next() == Some(action))
            })
            .collect();
        match found.as_slice() {
            [one] => one,
            _ => panic!(
                "{WORKFLOW}: expected exactly one step with `uses: {action}@...`, found {}; the checks below read its inputs",
                found.len()
            ),
        }
    }

    /// Every shell command of every `run:` script, with the step it is in.
    fn commands(&self) -> Vec<(&Step, Vec<String>)> {
        self.steps
            .iter()
            .flat_map(|step| {
                step.run
                    .as_deref()
                    .map(shell_commands)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |command| (step, command))
            })
            .collect()
    }

    /// The commands whose words start with `prefix`.
    fn commands_starting(&self, prefix: &[&str]) -> Vec<(&Step, Vec<String>)> {
        self.commands()
            .into_iter()
            .filter(|(_, words)| {
                words.len() >= prefix.len() && words.iter().zip(prefix).all(|(w, p)| w == p)
            })
            .collect()
    }

    /// `word` with `$NAME`, `${NAME}` and `${{ env.NAME }}` of the workflow's `env:`
    /// replaced, so names built from variables compare as the runner would see them.
    fn expand(&self, word: &str) -> String {
        let mut out = word.to_owned();
        // Longest names first, so `$IMAGE` never eats the start of `$IMAGE_TAG`.
        let mut names: Vec<(&String, &String)> = self.env.iter().collect();
        names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        for (name, value) in names {
            for pattern in [
                format!("${{{{ env.{name} }}}}"),
                format!("${{{name}}}"),
                format!("${name}"),
            ] {
                out = out.replace(&pattern, value);
            }
        }
        out
    }
}

/// The simple commands of a shell script, as words: line continuations joined, comments
/// dropped, quotes removed (no expansion), split at `;`, `&&`, `||` and `|`. Enough for
/// the plain command lines of the workflow; heredoc bodies come out as harmless noise.
fn shell_commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in joined.lines() {
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut quote: Option<char> = None;
        let mut chars = line.chars().peekable();
        let flush = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
            if *in_word {
                words.push(std::mem::take(word));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, '#') if !in_word => break,
                (None, ' ' | '\t') => flush(&mut words, &mut word, &mut in_word),
                (None, ';' | '|' | '&') => {
                    flush(&mut words, &mut word, &mut in_word);
                    if matches!(chars.peek(), Some('|' | '&')) {
                        chars.next();
                    }
                    commands.push(std::mem::take(&mut words));
                }
                (None, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        flush(&mut words, &mut word, &mut in_word);
        commands.push(words);
    }
    commands.retain(|words| !words.is_empty());
    commands
}

/// The value of option `names` (`-p X`, `-pX`, `--package X`, `--package=X`), every time.
fn option_values(words: &[String], names: &[&str]) -> Vec<String> {
    let mut values = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        for name in names {
            if word == name {
                if let Some(value) = iter.next() {
                    values.push(value.clone());
                }
            } else if let Some(value) = word.strip_prefix(&format!("{name}=")) {
                values.push(value.to_owned());
            } else if name.len() == 2
                && !name.starts_with("--")
                && word.starts_with(name)
                && word.len() > 2
            {
                values.push(word[2..].to_owned());
            }
        }
    }
    values
}

// ---------------------------------------------------------------------------------------
// The repository, as the workflow must match it.

/// `cargo metadata` of the workspace: packages and their targets.
fn cargo_metadata() -> Json {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Target names of `kind` (`bin`, `test`) in package `name`; `None` when no such package.
fn targets(metadata: &Json, package: &str, kind: &str) -> Option<BTreeSet<String>> {
    let package = metadata["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == package)?;
    Some(
        package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == kind))
            })
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn package_names(metadata: &Json) -> BTreeSet<String> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// `const NAME: &str = "VALUE";` in the harness source.
fn harness_str_const(name: &str) -> String {
    let text = read(HARNESS);
    let pattern =
        regex::Regex::new(&format!(r#"const {name}: &str = "([^"]*)";"#)).expect("valid regex");
    pattern
        .captures(&text)
        .map(|c| c[1].to_owned())
        .unwrap_or_else(|| {
            panic!(
                "{HARNESS}: no `const {name}: &str = \"...\";` any more; update tests/tests/workflow.rs to where the value went"
            )
        })
}

/// The values of every `pub const *_ENV: &str` in the harness: the variables it reads.
fn harness_env_variables() -> BTreeSet<String> {
    let text = read(HARNESS);
    let pattern =
        regex::Regex::new(r#"pub const [A-Z_]+_ENV: &str = "([^"]*)";"#).expect("valid regex");
    pattern
        .captures_iter(&text)
        .map(|c| c[1].to_owned())
        .collect()
}

/// The binaries `binary_dir()` insists on (`const NAMES: [&str; N] = [...]`).
fn harness_binary_names() -> Vec<String> {
    let text = read(HARNESS);
    let pattern =
        regex::Regex::new(r#"const NAMES: \[&str; \d+\] = \[([^\]]*)\];"#).expect("valid regex");
    let names = pattern.captures(&text).unwrap_or_else(|| {
        panic!(
            "{HARNESS}: binary_dir() no longer declares `const NAMES: [&str; N] = [...]`; update tests/tests/workflow.rs"
        )
    });
    regex::Regex::new(r#""([^"]+)""#)
        .expect("valid regex")
        .captures_iter(&names[1])
        .map(|c| c[1].to_owned())
        .collect()
}

/// The executables the chart's Deployments run: every `command: ["PATH", ...]`.
fn chart_commands() -> BTreeMap<String, String> {
    let pattern = regex::Regex::new(r#"command:\s*\[\s*"([^"]+)""#).expect("valid regex");
    let mut commands = BTreeMap::new();
    let templates = root().join(CHART_DIR).join("templates");
    for entry in std::fs::read_dir(&templates).expect("reading the chart's templates") {
        let path = entry.expect("a template").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains("kind: Deployment") {
            continue;
        }
        for capture in pattern.captures_iter(&text) {
            let file = format!(
                "{CHART_DIR}/templates/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            commands.insert(capture[1].to_owned(), file);
        }
    }
    commands
}

// ---------------------------------------------------------------------------------------
// Kubernetes versions against a Helm `kubeVersion` constraint.

/// `vMAJOR.MINOR.PATCH` (a `-prerelease` is ignored: the constraints here use `-0` only to
/// admit pre-releases, and node images are releases).
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// Whether `version` satisfies `constraint` (Masterminds/semver syntax as Helm uses it:
/// `||` between alternatives, `,` or spaces between comparators of one alternative;
/// `>=`, `>`, `<=`, `<`, `=`, `!=`, `~`, `^`). `Err` for what this does not understand.
fn satisfies(version: (u64, u64, u64), constraint: &str) -> Result<bool, String> {
    // `>= 1.30` is one comparator: glue operators to their versions first.
    let constraint = regex::Regex::new(r"([<>=!~^]+)\s+")
        .expect("valid regex")
        .replace_all(constraint, "$1");
    let mut any = false;
    for alternative in constraint.split("||") {
        let mut all = true;
        for comparator in alternative
            .split([',', ' '])
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let split = comparator
                .find(|c: char| c.is_ascii_digit() || c == 'v')
                .ok_or_else(|| format!("no version in `{comparator}`"))?;
            let (operator, bound) = comparator.split_at(split);
            let bound =
                parse_version(bound).ok_or_else(|| format!("bad version in `{comparator}`"))?;
            let holds = match operator {
                ">=" => version >= bound,
                ">" => version > bound,
                "<=" => version <= bound,
                "<" => version < bound,
                "" | "=" => version == bound,
                "!=" => version != bound,
                "~" => version >= bound && (version.0, version.1) == (bound.0, bound.1),
                "^" => version >= bound && version.0 == bound.0,
                other => return Err(format!("operator `{other}` in `{comparator}`")),
            };
            all &= holds;
        }
        any |= all;
    }
    Ok(any)
}

#[test]
fn kube_version_constraints_are_read_as_helm_reads_them() {
    assert_eq!(satisfies((1, 33, 7), ">=1.33.0-0"), Ok(true));
    assert_eq!(satisfies((1, 32, 9), ">=1.33.0-0"), Ok(false));
    assert_eq!(satisfies((1, 34, 0), ">= 1.30.0, < 1.34.0"), Ok(false));
    assert_eq!(satisfies((1, 31, 2), "~1.30.0 || ~1.31.0"), Ok(true));
    assert_eq!(satisfies((2, 0, 0), "^1.29"), Ok(false));
    assert!(satisfies((1, 33, 0), "=~1.33").is_err());
}

// ---------------------------------------------------------------------------------------
// Linters.

/// Runs `tool args` in the workspace root; `None` (after printing `skipped:`) when the tool
/// is not installed.
fn run_linter(tool: &str, args: &[String]) -> Option<std::process::Output> {
    if find_on_path(tool).is_none() {
        eprintln!("skipped: {tool} is not on PATH (pip install -r .ci/requirements.txt)");
        return None;
    }
    let output = Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    // A pyenv shim left behind by another Python version answers 127.
    if output.status.code() == Some(127) {
        eprintln!(
            "skipped: {tool} is not on PATH (pip install -r .ci/requirements.txt): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    Some(output)
}

#[test]
fn actionlint_accepts_every_workflow() {
    let mut files: Vec<String> = std::fs::read_dir(root().join(".github/workflows"))
        .expect("reading .github/workflows")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml") || name.ends_with(".yaml"))
        .map(|name| format!(".github/workflows/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), ".github/workflows holds no workflow");
    if find_on_path("shellcheck").is_none() {
        eprintln!(
            "note: shellcheck is not on PATH, so actionlint does not check `run:` scripts (apt-get install shellcheck)"
        );
    }
    let Some(output) = run_linter("actionlint", &files) else {
        return;
    };
    assert!(
        output.status.success(),
        "actionlint {} found problems (fix them in the workflow):\n{}{}",
        files.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let Some(output) = run_linter("hadolint", &["Dockerfile".to_owned()]) else {
        return;
    };
    assert!(
        output.status.success(),
        "hadolint Dockerfile found problems (fix them, or justify an exception with a `# hadolint ignore=DLxxxx` comment):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// What the workflow names, against the repository.

#[test]
fn the_workflow_sets_the_variables_the_harness_reads() {
    let workflow = workflow();
    let known = harness_env_variables();
    let external = harness_str_const("EXTERNAL_KUBECONFIG_ENV");
    let bin_dir = harness_str_const("BIN_DIR_ENV");
    assert!(
        known.contains(&external) && known.contains(&bin_dir),
        "{HARNESS}: EXTERNAL_KUBECONFIG_ENV/BIN_DIR_ENV are not `pub const ..._ENV` any more; update tests/tests/workflow.rs"
    );
    // Every KOSMOS_VC_* the workflow sets: step `env:` maps and `export NAME=...`.
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    for name in workflow.env.keys() {
        set.insert(name.clone(), "env".to_owned());
    }
    for step in &workflow.steps {
        for name in step.env.keys() {
            set.insert(name.clone(), format!("{}.env", step.at));
        }
    }
    for (step, words) in workflow.commands_starting(&["export"]) {
        for word in &words[1..] {
            if let Some((name, _)) = word.split_once('=') {
                set.insert(name.to_owned(), format!("{}.run", step.at));
            }
        }
    }
    for (name, at) in &set {
        if name.starts_with("KOSMOS_VC_") {
            assert!(
                known.contains(name),
                "{WORKFLOW}: {at} sets {name}, which {HARNESS} never reads (it reads {known:?}); rename it to the harness's variable"
            );
        }
    }
    assert!(
        set.contains_key(&external),
        "{WORKFLOW}: no step sets {external} ({HARNESS} EXTERNAL_KUBECONFIG_ENV), so the scenarios would run against the in-process test API server instead of kind; export it before `cargo test`"
    );
}

#[test]
fn every_cargo_package_and_test_target_exists() {
    let workflow = workflow();
    let metadata = cargo_metadata();
    let packages = package_names(&metadata);
    let commands = workflow.commands_starting(&["cargo"]);
    assert!(
        !commands.is_empty(),
        "{WORKFLOW}: no `cargo` command in any `run:`"
    );
    for (step, words) in commands {
        let line = words.join(" ");
        let named = option_values(&words, &["-p", "--package"]);
        for package in &named {
            assert!(
                packages.contains(package),
                "{WORKFLOW}: {}.run: `{line}` names package {package}, which the workspace does not have (it has {packages:?}); use the package name from its Cargo.toml",
                step.at
            );
        }
        for test in option_values(&words, &["--test"]) {
            let found = named.iter().any(|package| {
                targets(&metadata, package, "test").is_some_and(|t| t.contains(&test))
            });
            assert!(
                found,
                "{WORKFLOW}: {}.run: `{line}` runs `--test {test}`, which none of {named:?} has; name a file of that package's tests/ directory",
                step.at
            );
        }
    }
}

#[test]
fn the_workflow_builds_every_binary_the_harness_needs() {
    let workflow = workflow();
    let metadata = cargo_metadata();
    let mut built: BTreeSet<String> = BTreeSet::new();
    for (_, words) in workflow.commands_starting(&["cargo", "build"]) {
        let all_bins = words.iter().any(|w| w == "--bins");
        let named_bins = option_values(&words, &["--bin"]);
        for package in option_values(&words, &["-p", "--package"]) {
            let bins = targets(&metadata, &package, "bin").unwrap_or_default();
            built.extend(
                bins.into_iter()
                    .filter(|bin| all_bins || named_bins.contains(bin) || named_bins.is_empty()),
            );
        }
    }
    for name in harness_binary_names() {
        assert!(
            built.contains(&name),
            "{WORKFLOW}: no `cargo build` step builds `{name}`, which binary_dir() in {HARNESS} requires before any scenario starts; add `-p <its package>` to the `cargo build ... --bins` line (built: {built:?})"
        );
    }
    // Where the harness looks for them, when the workflow says.
    let bin_dir = harness_str_const("BIN_DIR_ENV");
    for step in &workflow.steps {
        if let Some(dir) = step.env.get(&bin_dir) {
            assert!(
                dir.ends_with("/target/debug"),
                "{WORKFLOW}: {}.env.{bin_dir} is `{dir}`, but `cargo build` without --release puts the binaries in target/debug; point it there",
                step.at
            );
        }
    }
}

#[test]
fn the_chart_is_installed_from_the_repository_as_the_harness_expects() {
    let workflow = workflow();
    let installs = workflow.commands_starting(&["helm", "install"]);
    let [(step, words)] = installs.as_slice() else {
        panic!(
            "{WORKFLOW}: expected one `helm install` in the `run:` scripts, found {}",
            installs.len()
        );
    };
    // helm install RELEASE CHART [flags]: the words that are neither flags nor their values.
    const WITH_VALUE: [&str; 9] = [
        "--namespace",
        "-n",
        "--set",
        "--set-string",
        "--values",
        "-f",
        "--timeout",
        "--version",
        "--kubeconfig",
    ];
    let mut positional: Vec<&String> = Vec::new();
    let mut iter = words[2..].iter();
    while let Some(word) = iter.next() {
        if WITH_VALUE.contains(&word.as_str()) {
            iter.next();
        } else if !word.starts_with('-') {
            positional.push(word);
        }
    }
    let [release, chart, ..] = positional.as_slice() else {
        panic!(
            "{WORKFLOW}: {}.run: `helm install` without RELEASE and CHART",
            step.at
        );
    };
    assert_eq!(
        chart.trim_end_matches('/'),
        CHART_DIR,
        "{WORKFLOW}: {}.run installs chart `{chart}`; the chart of this repository is {CHART_DIR} (install it from the checkout, so the test runs what the commit holds)",
        step.at
    );
    assert!(
        root().join(chart.as_str()).join("Chart.yaml").is_file(),
        "{WORKFLOW}: {}.run: {chart}/Chart.yaml does not exist; fix the chart path",
        step.at
    );
    let namespace = option_values(words, &["--namespace", "-n"]);
    let expected_namespace = harness_str_const("RELEASE_NAMESPACE");
    assert_eq!(
        namespace,
        vec![expected_namespace.clone()],
        "{WORKFLOW}: {}.run: `helm install --namespace` must be {expected_namespace} ({HARNESS} RELEASE_NAMESPACE; the webhook's --controller-username and the scenarios' kubectl calls use it)",
        step.at
    );
    // The chart names objects after the release when it contains the chart name.
    for constant in ["WEBHOOK", "CONTROLLER"] {
        let object = harness_str_const(constant);
        let suffix = object.rsplit('-').next().unwrap_or_default();
        assert_eq!(
            format!("{release}-{suffix}"),
            object,
            "{WORKFLOW}: {}.run: release `{release}` names the Deployment {release}-{suffix}, but {HARNESS} {constant} is {object}; name the release kosmos-vc",
            step.at
        );
    }
}

#[test]
fn the_kind_node_image_satisfies_the_charts_kube_version() {
    let workflow = workflow();
    let kind = workflow.uses("helm/kind-action");
    let at = &kind.at;
    let image = kind.with.get("node_image").unwrap_or_else(|| {
        panic!("{WORKFLOW}: {at}: `with.node_image` is missing, so the Kubernetes version is whatever the kind release defaults to; set kindest/node:vX.Y.Z@sha256:...")
    });
    assert!(
        image.starts_with("kindest/node:v") && image.contains("@sha256:"),
        "{WORKFLOW}: {at}: `with.node_image` is `{image}`; pin `kindest/node:vX.Y.Z@sha256:DIGEST` with the digest the kind release notes list"
    );
    assert!(
        kind.with.contains_key("version"),
        "{WORKFLOW}: {at}: `with.version` (the kind release) is missing; node images are built for one kind release, pin the one whose notes list {image}"
    );
    let tag = image
        .trim_start_matches("kindest/node:")
        .split('@')
        .next()
        .unwrap_or_default();
    let node = parse_version(tag)
        .unwrap_or_else(|| panic!("{WORKFLOW}: {at}: `with.node_image` tag `{tag}` is not vX.Y.Z"));

    let chart: Yaml = serde_yaml::from_str(&read(&format!("{CHART_DIR}/Chart.yaml")))
        .expect("Chart.yaml is YAML");
    let constraint = chart["kubeVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("{CHART_DIR}/Chart.yaml: `kubeVersion` is missing"));
    let fits = satisfies(node, constraint).unwrap_or_else(|why| {
        panic!("{CHART_DIR}/Chart.yaml: `kubeVersion: {constraint}` is not understood by tests/tests/workflow.rs ({why}); extend satisfies()")
    });
    assert!(
        fits,
        "{WORKFLOW}: {at}: `with.node_image` runs Kubernetes {tag}, but {CHART_DIR}/Chart.yaml `kubeVersion: {constraint}` refuses it (helm install would fail); pick a kindest/node tag that satisfies it"
    );

    // kubectl is supported within one minor version of the apiserver.
    if let Some(kubectl) = kind.with.get("kubectl_version") {
        let client = parse_version(kubectl).unwrap_or_else(|| {
            panic!("{WORKFLOW}: {at}: `with.kubectl_version` `{kubectl}` is not vX.Y.Z")
        });
        assert!(
            client.0 == node.0 && client.1.abs_diff(node.1) <= 1,
            "{WORKFLOW}: {at}: `with.kubectl_version` {kubectl} is more than one minor version from the node image's {tag}; use kubectl {tag}"
        );
    }
}

/// The `docker build` step: its image tag and its context directory.
fn docker_build(workflow: &Workflow) -> (String, String, String) {
    let builds = workflow.commands_starting(&["docker", "build"]);
    let [(step, words)] = builds.as_slice() else {
        panic!(
            "{WORKFLOW}: expected one `docker build` in the `run:` scripts, found {}",
            builds.len()
        );
    };
    let tags = option_values(words, &["-t", "--tag"]);
    let [tag] = tags.as_slice() else {
        panic!(
            "{WORKFLOW}: {}.run: `docker build` needs exactly one `-t IMAGE:TAG`",
            step.at
        );
    };
    // The context is the one positional word (flags with values are -t/-f/--build-arg...).
    let mut context = None;
    let mut iter = words[2..].iter();
    while let Some(word) = iter.next() {
        if [
            "-t",
            "--tag",
            "-f",
            "--file",
            "--build-arg",
            "--target",
            "--platform",
        ]
        .contains(&word.as_str())
        {
            iter.next();
        } else if !word.starts_with('-') {
            context = Some(word.clone());
        }
    }
    let context = context
        .unwrap_or_else(|| panic!("{WORKFLOW}: {}.run: `docker build` has no context", step.at));
    (step.at.clone(), workflow.expand(tag), context)
}

#[test]
fn the_docker_build_context_builds_every_binary_the_chart_runs() {
    let workflow = workflow();
    let metadata = cargo_metadata();
    let (at, _, context) = docker_build(&workflow);
    let context_dir = root().join(&context);
    let dockerfile_path = context_dir.join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&dockerfile_path).unwrap_or_else(|e| {
        panic!("{WORKFLOW}: {at}.run builds context `{context}`, which has no Dockerfile ({e}); build from the repository root")
    });
    let relative = |p: &Path| {
        p.strip_prefix(root())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let file = relative(&dockerfile_path);

    // Binaries the Dockerfile's `cargo build` produces.
    let mut built: BTreeSet<String> = BTreeSet::new();
    let logical = dockerfile.replace("\\\n", " ");
    for line in logical.lines().filter(|l| l.contains("cargo build")) {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        for package in option_values(&words, &["-p", "--package"]) {
            let bins = targets(&metadata, &package, "bin").unwrap_or_else(|| {
                panic!("{file}: `cargo build -p {package}`: the workspace has no package {package}")
            });
            built.extend(bins);
        }
    }
    // Files the final stage copies in: `COPY --from=STAGE SRC... DEST`.
    let mut installed: BTreeSet<String> = BTreeSet::new();
    for line in logical.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY --from=") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().skip(1).collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        for source in sources {
            let name = source.rsplit('/').next().unwrap_or(source);
            if dest.ends_with('/') {
                installed.insert(format!("{dest}{name}"));
            } else if sources.len() == 1 {
                installed.insert((*dest).to_owned());
            }
        }
    }

    let mut commands = chart_commands();
    assert!(
        !commands.is_empty(),
        "{CHART_DIR}/templates: no Deployment with `command: [\"...\"]`; update tests/tests/workflow.rs"
    );
    // Each tenant's clustertree Deployment, rendered by the controller, runs the same image.
    commands.insert(
        vc_controller::resources::clustertree::CLUSTERTREE_COMMAND.to_owned(),
        "the clustertree Deployment of controller/src/resources/clustertree.rs".to_owned(),
    );
    for (path, template) in &commands {
        let name = path.rsplit('/').next().unwrap_or(path);
        assert!(
            built.contains(name),
            "{file}: {template} runs `{path}`, but the Dockerfile's `cargo build` builds only {built:?}; add `-p <the package of {name}>`"
        );
        assert!(
            installed.contains(path),
            "{file}: {template} runs `{path}`, but no `COPY --from=...` puts {name} there (installed: {installed:?}); copy it to {path}"
        );
    }

    // .dockerignore must keep what `cargo build --locked` reads.
    let ignore = std::fs::read_to_string(context_dir.join(".dockerignore")).unwrap_or_default();
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let members = metadata["workspace_members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if members.contains(&package["id"])
            && let Some(manifest) = package["manifest_path"].as_str()
        {
            let dir = Path::new(manifest).parent().unwrap_or(Path::new(""));
            needed.push(relative(dir));
        }
    }
    for path in needed {
        assert!(
            !ignored.contains(path.as_str()),
            "{context}/.dockerignore excludes `{path}`, which `cargo build --locked` in {file} needs; remove that line"
        );
    }
}

#[test]
fn the_image_loaded_into_kind_is_the_one_the_chart_runs() {
    let workflow = workflow();
    let (at, built, _) = docker_build(&workflow);
    let kind = workflow.uses("helm/kind-action");
    let cluster = workflow.expand(
        kind.with
            .get("cluster_name")
            .map_or("chart-testing", String::as_str),
    );

    let loads = workflow.commands_starting(&["kind", "load", "docker-image"]);
    let [(load_step, load)] = loads.as_slice() else {
        panic!(
            "{WORKFLOW}: expected one `kind load docker-image` (the image is never pushed to a registry), found {}",
            loads.len()
        );
    };
    let loaded: Vec<String> = load[3..]
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .map(|w| workflow.expand(w))
        .collect();
    assert!(
        loaded.contains(&built),
        "{WORKFLOW}: {}.run loads {loaded:?} into kind, but {at}.run builds {built}; load the built tag",
        load_step.at
    );
    let names: Vec<String> = option_values(load, &["--name", "-n"])
        .iter()
        .map(|n| workflow.expand(n))
        .collect();
    assert_eq!(
        names,
        vec![cluster.clone()],
        "{WORKFLOW}: {}.run loads into cluster {names:?}, but {}.with.cluster_name creates {cluster}; pass `--name` with the same name",
        load_step.at,
        kind.at
    );

    let installs = workflow.commands_starting(&["helm", "install"]);
    let Some((install_step, install)) = installs.first() else {
        panic!("{WORKFLOW}: no `helm install`");
    };
    let values: BTreeMap<String, String> = option_values(install, &["--set"])
        .iter()
        .flat_map(|set| set.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), workflow.expand(v)))
        })
        .collect();
    let image = format!(
        "{}:{}",
        values
            .get("image.repository")
            .map_or("<chart default>", String::as_str),
        values
            .get("image.tag")
            .map_or("<appVersion>", String::as_str)
    );
    assert_eq!(
        image, built,
        "{WORKFLOW}: {}.run installs the chart with image {image}, but {at}.run builds {built}; set image.repository and image.tag to the built image",
        install_step.at
    );
    let policy = values
        .get("image.pullPolicy")
        .map_or("IfNotPresent", String::as_str);
    assert!(
        ["Never", "IfNotPresent"].contains(&policy),
        "{WORKFLOW}: {}.run sets image.pullPolicy={policy}; the image exists only inside kind, so the kubelet must not pull it: use Never",
        install_step.at
    );
}

#[test]
fn the_tenant_images_are_read_from_flags_the_chart_sets() {
    let workflow = workflow();
    // `arg DEPLOYMENT FLAG` in the pre-pull step reads `--FLAG=VALUE` from the installed
    // Deployment; a renamed flag would make it pull an image named from an empty string.
    let call = regex::Regex::new(r"\barg ([a-z0-9-]+) ([a-z0-9-]+)\)").expect("valid regex");
    let deployments = [
        harness_str_const("WEBHOOK"),
        harness_str_const("CONTROLLER"),
    ];
    let mut seen = 0;
    for step in &workflow.steps {
        let Some(run) = &step.run else { continue };
        for capture in call.captures_iter(run) {
            seen += 1;
            let (deployment, flag) = (&capture[1], &capture[2]);
            assert!(
                deployments.iter().any(|d| d == deployment),
                "{WORKFLOW}: {}.run reads flags of Deployment {deployment}, which the chart does not install ({deployments:?} in {HARNESS}); use one of those",
                step.at
            );
            let component = deployment.rsplit('-').next().unwrap_or_default();
            let template = format!("{CHART_DIR}/templates/{component}-deployment.yaml");
            assert!(
                read(&template).contains(&format!("--{flag}=")),
                "{WORKFLOW}: {}.run reads `--{flag}=` of {deployment}, but {template} does not set that flag; use the flag's current name (docs/contracts.md, Flags)",
                step.at
            );
        }
    }
    assert!(
        seen >= 4,
        "{WORKFLOW}: the tenant images are no longer read from the installed Deployments' flags (found {seen} `arg DEPLOYMENT FLAG` calls); pre-pull them again so a missing image fails by name"
    );
}

#[test]
fn failure_diagnostics_show_the_tenants_and_keep_credentials_out() {
    let workflow = workflow();
    let tenant_namespace = harness_str_const("TENANT_NAMESPACE");
    let on_failure: Vec<&Step> = workflow
        .steps
        .iter()
        .filter(|s| {
            s.condition
                .as_deref()
                .is_some_and(|c| c.contains("failure()"))
                && s.run.is_some()
        })
        .collect();
    assert!(
        !on_failure.is_empty(),
        "{WORKFLOW}: no `if: failure()` step prints the cluster; add one (pods, events, logs)"
    );
    let script: String = on_failure
        .iter()
        .filter_map(|s| s.run.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for (needle, why) in [
        ("events", "the events (image pulls, scheduling, volumes)"),
        (
            tenant_namespace.as_str(),
            "the scenarios' namespace, where the tenant control planes run",
        ),
        ("vc-", "the tenants' workload namespaces vc-NS-NAME"),
        ("logs", "the webhook's and controller's logs"),
    ] {
        assert!(
            script.contains(needle),
            "{WORKFLOW}: the `if: failure()` steps never mention `{needle}`; print {why}"
        );
    }
    // spec.kubeconfig is a tenant admin credential; workflow logs are public.
    for words in shell_commands(&script) {
        let line = words.join(" ");
        if line.contains("get virtualclusters")
            && (line.contains("-o yaml") || line.contains("-o json"))
        {
            assert!(
                script.contains("del(.items[].spec.kubeconfig)"),
                "{WORKFLOW}: the failure step prints VirtualClusters in full (`{line}`), including spec.kubeconfig, the tenant admin credential; pipe them through `jq 'del(.items[].spec.kubeconfig)'`"
            );
        }
    }
}

#[test]
fn shell_commands_split_like_the_shell() {
    let commands = shell_commands(
        "kind get kubeconfig --name \"$CLUSTER\" > x\nexport A=\"b c\" && cargo test \\\n  -p vc-tests # comment\n",
    );
    assert_eq!(
        commands,
        vec![
            vec!["kind", "get", "kubeconfig", "--name", "$CLUSTER", ">", "x"],
            vec!["export", "A=b c"],
            vec!["cargo", "test", "-p", "vc-tests"],
        ]
    );
    let words: Vec<String> = ["cargo", "build", "-pa", "--package=b", "-p", "c"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(option_values(&words, &["-p", "--package"]), ["a", "b", "c"]);
}

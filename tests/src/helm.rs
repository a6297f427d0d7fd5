//! Renders and lints the kosmos-vc chart with Helm's own engine, through
//! `tests/chart/render.py` (PyPI `helm-python-sdk`, Helm v4 as a library, fully offline).
//!
//! Used by the chart tests and by the end-to-end [`crate::harness`], which installs what
//! this renders (CRD, RBAC, webhook configurations), so it runs the binaries with exactly the
//! rights the chart grants:
//!
//! ```ignore
//! let engine = match helm::HelmEngine::find() {
//!     Ok(engine) => engine,
//!     Err(why) => return eprintln!("skipped: {why}"),
//! };
//! let manifests = helm::Render::new().set("webhook.replicas=1").run(&engine)?;
//! for object in &manifests.objects {        // install order: CRD, SAs, RBAC, ..., webhooks
//!     server.install_yaml(&serde_json::to_string(object)?).await?;
//! }
//! let (user, groups) = manifests.service_account_identity("kosmos-vc-controller").unwrap();
//! let files = helm::Render::new().write_to(&engine, dir.path())?; // 000-...yaml, apply in order
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

/// Exit code of render.py when helm-python-sdk is not installed.
const EXIT_NO_HELM: i32 = 4;

/// The workspace root, where `charts/` and `tests/chart/render.py` live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts").join("kosmos-vc")
}

fn script() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("chart")
        .join("render.py")
}

/// A Python interpreter that can import helm-python-sdk.
#[derive(Debug, Clone)]
pub struct HelmEngine {
    python: PathBuf,
}

impl HelmEngine {
    /// Finds `python3` (or `$PYTHON`) with helm-python-sdk; `Err` says why not, for a
    /// `skipped:` line.
    pub fn find() -> Result<Self, String> {
        let python = PathBuf::from(std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()));
        let output = Command::new(&python)
            .arg(script())
            .arg("check")
            .output()
            .map_err(|error| format!("cannot run {}: {error}", python.display()))?;
        match output.status.code() {
            Some(0) => Ok(Self { python }),
            Some(EXIT_NO_HELM) => Err(format!(
                "the Python Helm engine is absent: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            _ => Err(format!(
                "`{} render.py check` failed: {}",
                python.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }

    fn run(&self, args: &[String]) -> Result<Output, Failure> {
        Command::new(&self.python)
            .arg(script())
            .args(args)
            .output()
            .map_err(|error| Failure {
                exit_code: None,
                message: format!("cannot run render.py: {error}"),
            })
    }

    /// Lints the chart (strict) with the given `--set` expressions.
    pub fn lint(&self, sets: &[&str]) -> Result<LintReport, Failure> {
        let mut args = vec!["lint".to_owned()];
        for set in sets {
            args.extend(["--set".to_owned(), (*set).to_owned()]);
        }
        let output = self.run(&args)?;
        let report: LintReport =
            serde_json::from_slice(&output.stdout).map_err(|error| Failure {
                exit_code: output.status.code(),
                message: format!(
                    "lint printed no report ({error}): {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
            })?;
        Ok(report)
    }
}

/// Helm's lint report as render.py prints it.
#[derive(Debug, Deserialize)]
pub struct LintReport {
    /// Charts linted (1 for us).
    pub total_charts_linted: u32,
    /// Findings; severity 1 info, 2 warning, 3 error.
    #[serde(default)]
    pub messages: Vec<LintMessage>,
    /// Errors that stopped the lint.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One lint finding.
#[derive(Debug, Deserialize)]
pub struct LintMessage {
    /// 1 info, 2 warning, 3 error.
    pub severity: u8,
    /// File the finding is about.
    pub path: String,
    /// What Helm says.
    pub error: String,
}

impl LintReport {
    /// Warnings and errors, one per line; empty when the chart is clean.
    pub fn problems(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|message| message.severity >= 2)
            .map(|message| format!("{}: {}", message.path, message.error))
            .chain(self.errors.iter().cloned())
            .collect()
    }
}

/// render.py did not render: the chart refused the values (exit 3) or something broke.
#[derive(Debug, Clone)]
pub struct Failure {
    /// render.py's exit code, when it ran.
    pub exit_code: Option<i32>,
    /// Its stderr, or why it could not run.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "render.py exited with {:?}: {}",
            self.exit_code, self.message
        )
    }
}

impl std::error::Error for Failure {}

/// One render of the chart; defaults to release `kosmos-vc` in `kosmos-system`, CRDs
/// included, like `helm install kosmos-vc charts/kosmos-vc -n kosmos-system`.
#[derive(Debug, Clone, Default)]
pub struct Render {
    sets: Vec<String>,
    values_files: Vec<PathBuf>,
    existing: Vec<PathBuf>,
    release: Option<String>,
    namespace: Option<String>,
}

impl Render {
    /// A render with the chart's default values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `--set` expression, such as `webhook.tls.mode=certManager`.
    pub fn set(mut self, expression: &str) -> Self {
        self.sets.push(expression.to_owned());
        self
    }

    /// Adds a values file (`-f`).
    pub fn values_file(mut self, path: &Path) -> Self {
        self.values_files.push(path.to_owned());
        self
    }

    /// Objects already in the cluster (multi-document YAML), for the chart's `lookup`:
    /// the render becomes an upgrade.
    pub fn existing(mut self, path: &Path) -> Self {
        self.existing.push(path.to_owned());
        self
    }

    /// Release name (default `kosmos-vc`).
    pub fn release(mut self, name: &str) -> Self {
        self.release = Some(name.to_owned());
        self
    }

    /// Release namespace (default `kosmos-system`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["render".to_owned()];
        for set in &self.sets {
            args.extend(["--set".to_owned(), set.clone()]);
        }
        for path in &self.values_files {
            args.extend(["--values".to_owned(), path.display().to_string()]);
        }
        for path in &self.existing {
            args.extend(["--existing".to_owned(), path.display().to_string()]);
        }
        if let Some(release) = &self.release {
            args.extend(["--release".to_owned(), release.clone()]);
        }
        if let Some(namespace) = &self.namespace {
            args.extend(["--namespace".to_owned(), namespace.clone()]);
        }
        args
    }

    /// Renders; the objects in the order `helm install` creates them, CRDs first.
    pub fn run(&self, engine: &HelmEngine) -> Result<Manifests, Failure> {
        let mut args = self.args();
        args.push("--json".to_owned());
        let output = engine.run(&args)?;
        if !output.status.success() {
            return Err(Failure {
                exit_code: output.status.code(),
                message: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let objects = serde_json::from_slice(&output.stdout).map_err(|error| Failure {
            exit_code: output.status.code(),
            message: format!("render.py printed no JSON array of objects: {error}"),
        })?;
        Ok(Manifests { objects })
    }

    /// Renders into `dir`, one numbered file per object (apply them in name order);
    /// returns the files in that order.
    pub fn write_to(&self, engine: &HelmEngine, dir: &Path) -> Result<Vec<PathBuf>, Failure> {
        let mut args = self.args();
        args.extend(["--output-dir".to_owned(), dir.display().to_string()]);
        let output = engine.run(&args)?;
        if !output.status.success() {
            return Err(Failure {
                exit_code: output.status.code(),
                message: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let unreadable = |error: std::io::Error| Failure {
            exit_code: output.status.code(),
            message: format!("cannot list {}: {error}", dir.display()),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "yaml")
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// What a render produced.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// Every object, as `helm template --include-crds` would print it.
    pub objects: Vec<Value>,
}

impl Manifests {
    /// Objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |object| object["kind"] == kind)
    }

    /// The one object of this kind and name.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
    }

    /// The user and groups the ServiceAccount of Deployment `name` authenticates as, so a
    /// test can run that binary with exactly the rights the chart grants it.
    pub fn service_account_identity(&self, deployment: &str) -> Option<(String, Vec<String>)> {
        let object = self.get("Deployment", deployment)?;
        let namespace = object["metadata"]["namespace"].as_str()?;
        let account = object["spec"]["template"]["spec"]["serviceAccountName"].as_str()?;
        Some((
            format!("system:serviceaccount:{namespace}:{account}"),
            vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ],
        ))
    }

    /// Kinds and names, for messages.
    pub fn summary(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|object| {
                format!(
                    "{}/{}",
                    object["kind"].as_str().unwrap_or("?"),
                    object["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }
}

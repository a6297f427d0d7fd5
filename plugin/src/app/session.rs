//! Connecting to the host cluster the way kubectl would.

use anyhow::{Context as _, Result, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubectl_vc::cli::GlobalArgs;
use kubectl_vc::kubeconfig::{self, LoadingRules, Overrides, loading};
use serde_yaml::Value;

/// A client for the host cluster and the namespace commands act in.
#[derive(Clone)]
pub struct Session {
    /// Client of the selected context.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// Where kubeconfig files come from, for commands that write them.
    pub rules: LoadingRules,
}

/// The merged kubeconfig and what it selects, before any network I/O.
pub struct Resolved {
    /// Merged documents of every file read.
    pub merged: serde_yaml::Mapping,
    /// The selected context and namespace.
    pub selection: kubeconfig::Selection,
}

/// Reads and merges the kubeconfig files and selects the context. `Ok(None)` when no file
/// exists at all (kubectl then falls back to the in-cluster configuration).
pub fn resolve(global: &GlobalArgs, rules: &LoadingRules) -> Result<Option<Resolved>> {
    let files = kubeconfig::load(rules)?;
    if files.is_empty() {
        return Ok(None);
    }
    let merged = loading::merge_first_wins(&files);
    let overrides = Overrides {
        context: global.context.clone(),
        namespace: global.namespace.clone(),
    };
    let selection = loading::select(&merged, &overrides)?;
    Ok(Some(Resolved { merged, selection }))
}

/// The namespace commands act in, without connecting: for `create --dry-run=client`.
pub fn namespace_offline(global: &GlobalArgs) -> String {
    let rules = LoadingRules::from_environment(global.kubeconfig.clone());
    match resolve(global, &rules) {
        Ok(Some(resolved)) => resolved.selection.namespace,
        _ => global
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    }
}

/// Connects to the host cluster selected by the kubeconfig rules and flags.
pub async fn connect(global: &GlobalArgs) -> Result<Session> {
    let rules = LoadingRules::from_environment(global.kubeconfig.clone());
    let (config, namespace) = match resolve(global, &rules)? {
        Some(resolved) => {
            let typed: Kubeconfig = serde_yaml::from_value(Value::Mapping(resolved.merged))
                .context("the merged kubeconfig has a field of the wrong type")?;
            let options = KubeConfigOptions {
                context: Some(resolved.selection.context.clone()),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(typed, &options)
                .await
                .with_context(|| {
                    format!("cannot use context \"{}\"", resolved.selection.context)
                })?;
            (config, resolved.selection.namespace)
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            let config = Config::incluster().context("cannot use the in-cluster configuration")?;
            let namespace = global
                .namespace
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone());
            (config, namespace)
        }
        None => {
            let looked_at: Vec<String> = rules
                .precedence()
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            return Err(anyhow!(
                "no kubeconfig found (looked at: {}); pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config",
                if looked_at.is_empty() {
                    "nothing, HOME is not set".to_owned()
                } else {
                    looked_at.join(", ")
                }
            ));
        }
    };
    let client = Client::try_from(config).context("cannot build a client for the API server")?;
    Ok(Session {
        client,
        namespace,
        rules,
    })
}

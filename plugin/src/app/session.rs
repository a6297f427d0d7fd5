//! Connecting to the host cluster the way kubectl would.

use anyhow::{Context as _, Result, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubectl_vc::cli::GlobalArgs;
use kubectl_vc::kubeconfig::{self, LoadingRules, Origin, Overrides, document, loading, merge};
use kubectl_vc::warnings::WarningLayer;
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
    /// The host context in use and the context to go back to, for `use-context` to record.
    pub origin: Origin,
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
    let mut overrides = Overrides {
        context: global.context.clone(),
        namespace: global.namespace.clone(),
    };
    if overrides.context.is_none()
        && let Some(current) = document::current_context(&merged)
        && let Some((owner, origin)) = merge::tenant_context(&merged, current)
        && let Some(host) = origin.host_context.filter(|host| {
            document::find_entry(&merged, document::NamedList::Contexts, host).is_some()
        })
    {
        // A tenant's API server does not serve VirtualClusters; the host it was read
        // through does.
        announce_host_context(current, &owner, &host);
        overrides.context = Some(host);
    }
    let selection = loading::select(&merged, &overrides)?;
    Ok(Some(Resolved { merged, selection }))
}

/// Set while answering shell completion, where anything on stderr lands in the middle of
/// the operator's command line.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps notes off stderr for the rest of the run.
pub fn quiet() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Says once per run on stderr that commands go to the host, not the current context, so
/// nobody wonders why `kubectl get` and `kubectl vc list` see different clusters.
fn announce_host_context(current: &str, owner: &merge::VirtualClusterRef, host: &str) {
    static ANNOUNCED: std::sync::Once = std::sync::Once::new();
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    ANNOUNCED.call_once(|| {
        eprintln!(
            "Current context \"{current}\" is VirtualCluster {}/{}; using its host context \"{host}\" (pass --context to choose another, `kubectl vc disconnect` to go back).",
            owner.namespace, owner.name
        );
    });
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
    let mut origin = Origin::default();
    let (config, namespace) = match resolve(global, &rules)? {
        Some(resolved) => {
            origin = Origin {
                host_context: Some(resolved.selection.context.clone()),
                previous_context: document::current_context(&resolved.merged)
                    .map(|current| merge::context_before_tenants(&resolved.merged, current)),
            };
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
    let client = kube::client::ClientBuilder::try_from(config)
        .context("cannot build a client for the API server")?
        .with_layer(&WarningLayer::to_stderr())
        .build();
    Ok(Session {
        client,
        namespace,
        rules,
        origin,
    })
}

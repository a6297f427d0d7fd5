//! `use-context` and `kubeconfig`: fetching a tenant's admin kubeconfig and merging it.

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubectl_vc::cli::GlobalArgs;
use kubectl_vc::kubeconfig::{
    self, LoadingRules, TenantCredentials, VirtualClusterRef, document, merge,
};
use vc_api::VirtualCluster;
use vc_api::constants::{
    KUBECONFIG_INTERNAL_SECRET_KEY, KUBECONFIG_SECRET_KEY, admin_kubeconfig_secret_name,
};

use super::errors;
use super::session::Session;

/// How `use-context` merges.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// `--context-name`.
    pub context_name: Option<String>,
    /// `--server`.
    pub server: Option<String>,
    /// `--print`.
    pub print: bool,
    /// `--no-switch`.
    pub no_switch: bool,
    /// `--internal`.
    pub internal: bool,
}

/// The tenant's admin kubeconfig text: from the controller's Secret, else from
/// `spec.kubeconfig` (base64). The Secret is read first because it also holds the
/// in-cluster variant and may be readable where the VirtualCluster's spec is trimmed.
pub async fn tenant_kubeconfig(session: &Session, name: &str, internal: bool) -> Result<String> {
    let clusters: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let cluster = clusters
        .get(name)
        .await
        .map_err(|error| errors::api(error, &session.namespace, Some(name)))?;
    let secrets: Api<Secret> = Api::namespaced(session.client.clone(), &session.namespace);
    let key = if internal {
        KUBECONFIG_INTERNAL_SECRET_KEY
    } else {
        KUBECONFIG_SECRET_KEY
    };
    let secret_name = admin_kubeconfig_secret_name(name);
    // A Secret we may not read (RBAC) or that is not there yet is not an error: fall back.
    if let Ok(Some(secret)) = secrets.get_opt(&secret_name).await
        && let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key))
    {
        return String::from_utf8(bytes.0.clone()).map_err(|_| {
            anyhow!(
                "key \"{key}\" of Secret {}/{secret_name} is not UTF-8 text",
                session.namespace
            )
        });
    }
    if internal {
        return Err(anyhow!(
            "Secret {}/{secret_name} with key \"{key}\" is not readable or does not exist yet; the in-cluster kubeconfig is only kept there",
            session.namespace
        ));
    }
    let encoded = cluster.spec.kubeconfig.as_deref().filter(|text| !text.is_empty()).ok_or_else(|| {
        let phase = cluster.status.as_ref().and_then(|status| status.phase).map_or("<none>", |phase| phase.as_str());
        anyhow!(
            "VirtualCluster \"{name}\" in namespace \"{}\" has no kubeconfig yet (phase {phase}); wait with \"kubectl vc create --wait\" or check \"kubectl vc describe {name}\"",
            session.namespace
        )
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| anyhow!("spec.kubeconfig of VirtualCluster \"{name}\" is not valid base64"))?;
    String::from_utf8(decoded)
        .map_err(|_| anyhow!("spec.kubeconfig of VirtualCluster \"{name}\" is not UTF-8 text"))
}

/// Merges the tenant's entries into the kubeconfig file kubectl would write (or prints them
/// with `--print`), and switches to them unless `--no-switch`.
pub async fn use_context(session: &Session, name: &str, options: &MergeOptions) -> Result<()> {
    let text = tenant_kubeconfig(session, name, options.internal).await?;
    let credentials = TenantCredentials::from_kubeconfig(&text, options.server.as_deref())
        .with_context(|| {
            format!(
                "refusing the admin kubeconfig of VirtualCluster \"{name}\" in namespace \"{}\" (Secret {} or spec.kubeconfig)",
                session.namespace,
                admin_kubeconfig_secret_name(name)
            )
        })?;
    let owner = VirtualClusterRef::new(session.namespace.clone(), name);
    let entry_name = options
        .context_name
        .clone()
        .unwrap_or_else(|| owner.default_entry_name());
    if options.print {
        let standalone = merge::standalone_kubeconfig(&credentials, &entry_name, &owner);
        print!("{}", document::to_yaml(&standalone));
        return Ok(());
    }
    let destination = kubeconfig::destination(&session.rules)?;
    let outcome = kubeconfig::write_tenant(
        &destination,
        &credentials,
        &entry_name,
        &owner,
        !options.no_switch,
        &session.origin,
    )
    .with_context(|| format!("cannot merge VirtualCluster \"{name}\" into the kubeconfig"))?;
    for replaced in outcome.replaced_foreign() {
        eprintln!(
            "warning: replaced {replaced} in {}, which kubectl-vc had not written",
            destination.display()
        );
    }
    if outcome.switched {
        println!("Switched to context \"{entry_name}\".");
    } else {
        println!(
            "Context \"{entry_name}\" merged into {}.",
            destination.display()
        );
    }
    Ok(())
}

/// Removes the entries `use-context` wrote for `namespace/name` from the kubeconfig files,
/// printing what went. A failure here is reported but does not fail the delete.
pub fn forget(session: &Session, name: &str) {
    let owner = VirtualClusterRef::new(session.namespace.clone(), name);
    match kubeconfig::remove_tenant(&session.rules, &owner) {
        Ok(changed) => {
            for (path, outcome) in changed {
                for context in &outcome.contexts {
                    println!("Removed context \"{context}\" from {}.", path.display());
                }
                if outcome.cleared_current_context {
                    println!("Unset current-context in {}.", path.display());
                }
            }
        }
        Err(error) => eprintln!(
            "warning: kubeconfig entries of VirtualCluster \"{name}\" were not removed: {error}"
        ),
    }
}

/// `use-context --host` and `disconnect`: switches from the current VirtualCluster context
/// back to the context `use-context` switched away from. Needs no cluster.
pub fn disconnect(global: &GlobalArgs) -> Result<()> {
    let rules = LoadingRules::from_environment(global.kubeconfig.clone());
    let files = kubeconfig::load(&rules)?;
    let merged = kubeconfig::loading::merge_first_wins(&files);
    let (current, back) = merge::way_back(&merged)?;
    let destination = kubeconfig::destination(&rules)?;
    kubeconfig::switch_context(&destination, &back)
        .with_context(|| format!("cannot switch from context \"{current}\" back to \"{back}\""))?;
    println!("Switched to context \"{back}\".");
    Ok(())
}

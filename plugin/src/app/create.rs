//! `create`.

use std::io::Read;

use anyhow::{Context as _, Result};
use kube::Api;
use kube::api::PostParams;
use kubectl_vc::build::{self, CreateFlags};
use kubectl_vc::cli::{CreateArgs, DryRun, GlobalArgs, ObjectOutput, WaitFor};
use kubectl_vc::output;
use vc_api::VirtualCluster;
use vc_api::constants::PLUGIN_FIELD_MANAGER;

use super::context::{self, MergeOptions};
use super::session::{self, Session};
use super::{errors, wait};

/// Builds the VirtualCluster, sends it (unless `--dry-run=client`), and optionally waits and
/// switches to it.
pub async fn create(global: &GlobalArgs, args: &CreateArgs) -> Result<()> {
    if args.dry_run == Some(DryRun::Client) {
        let cluster = desired(global, args, &session::namespace_offline(global))?;
        print_created(&cluster, args.output, " (dry run)");
        return Ok(());
    }
    let session = session::connect(global).await?;
    let cluster = desired(global, args, &session.namespace)?;
    let namespace = cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| session.namespace.clone());
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &namespace);
    let server_dry_run = args.dry_run == Some(DryRun::Server);
    let params = PostParams {
        dry_run: server_dry_run,
        field_manager: Some(PLUGIN_FIELD_MANAGER.to_owned()),
    };
    let created = api
        .create(&params, &cluster)
        .await
        .map_err(|error| errors::api(error, &namespace, None))?;
    print_created(
        &created,
        args.output,
        if server_dry_run {
            " (server dry run)"
        } else {
            ""
        },
    );
    if server_dry_run {
        return Ok(());
    }
    let wait_for = args
        .wait
        .or(args.use_context.then_some(WaitFor::Initialized));
    if let Some(target) = wait_for {
        wait::for_phase(&api, &name, target, args.timeout).await?;
    }
    if args.use_context {
        let session = Session {
            namespace: namespace.clone(),
            ..session
        };
        let options = MergeOptions {
            context_name: args.context_name.clone(),
            ..MergeOptions::default()
        };
        context::use_context(&session, &name, &options).await?;
    }
    Ok(())
}

fn desired(global: &GlobalArgs, args: &CreateArgs, namespace: &str) -> Result<VirtualCluster> {
    let cluster = match &args.filename {
        Some(path) => {
            let (text, source_name) = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the manifest from standard input")?;
                (text, "standard input".to_owned())
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read manifest {}", path.display()))?;
                (text, path.display().to_string())
            };
            build::from_manifest(
                &text,
                &source_name,
                args.name.as_deref(),
                global.namespace.as_deref(),
                namespace,
            )?
        }
        None => {
            let flags = CreateFlags {
                nodes: args.nodes.clone(),
                cpu: args.cpu.clone(),
                memory: args.memory.clone(),
                resources: args.resources.clone(),
                kubernetes_version: args.kubernetes_version.clone(),
            };
            build::from_flags(args.name.as_deref().unwrap_or_default(), namespace, &flags)?
        }
    };
    Ok(cluster)
}

fn print_created(cluster: &VirtualCluster, format: Option<ObjectOutput>, suffix: &str) {
    match format {
        Some(ObjectOutput::Yaml) => print!("{}", output::to_yaml(&output::printable(cluster))),
        Some(ObjectOutput::Json) => print!("{}", output::to_json(&output::printable(cluster))),
        Some(ObjectOutput::Name) => println!("{}", output::resource_name(cluster)),
        None => println!("{} created{suffix}", output::resource_name(cluster)),
    }
}

//! The I/O shell: each command talks to the host cluster through a [`session::Session`].

mod context;
mod create;
mod delete;
mod describe;
pub mod errors;
mod get;
mod nodes;
mod rotate;
mod session;
mod wait;

use anyhow::Result;
use kubectl_vc::cli::{Cli, Command};

/// Answers kubectl's completion request for `kubectl vc ARGS... WORD` in cobra's protocol;
/// VirtualCluster names come from one LIST, and any failure just offers nothing.
pub async fn complete(words: &[String]) -> String {
    use kubectl_vc::completion::{self, Candidates};
    session::quiet();
    let (word, before) = match words.split_last() {
        Some((word, before)) => (word.as_str(), before),
        None => ("", words),
    };
    let found =
        match completion::candidates(&<Cli as clap::CommandFactory>::command(), before, word) {
            Candidates::Words(words) => words,
            Candidates::VirtualClusterNames => {
                virtual_cluster_names(&completion::global_flags(before), word)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(name, _)| !before.contains(name))
                    .collect()
            }
        };
    completion::render(&found)
}

async fn virtual_cluster_names(
    global: &kubectl_vc::cli::GlobalArgs,
    prefix: &str,
) -> Result<Vec<(String, String)>> {
    let session = session::connect(global).await?;
    let api: kube::Api<vc_api::VirtualCluster> =
        kube::Api::namespaced(session.client, &session.namespace);
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|cluster| {
            let name = cluster.metadata.name?;
            let phase = cluster
                .status
                .and_then(|status| status.phase)
                .map(|phase| phase.to_string())
                .unwrap_or_default();
            name.starts_with(prefix).then_some((name, phase))
        })
        .collect())
}

/// Runs a command that needs the cluster.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Create(args) => create::create(global, args).await,
        Command::List(args) => get::list(&session::connect(global).await?, args).await,
        Command::Get(args) => get::get(&session::connect(global).await?, args).await,
        Command::Describe(args) => describe::describe(&session::connect(global).await?, args).await,
        Command::Delete(args) => delete::delete(&session::connect(global).await?, args).await,
        Command::UseContext(args) if args.host => context::disconnect(global),
        Command::Disconnect => context::disconnect(global),
        Command::UseContext(args) => {
            let name = args.name.as_deref().unwrap_or_default();
            let options = context::MergeOptions {
                context_name: args.context_name.clone(),
                server: args.server.clone(),
                print: args.print,
                no_switch: args.no_switch,
                internal: args.internal,
            };
            context::use_context(&session::connect(global).await?, name, &options).await
        }
        Command::Kubeconfig(args) => {
            let session = session::connect(global).await?;
            let text = context::tenant_kubeconfig(&session, &args.name, args.internal).await?;
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        Command::Nodes(args) => nodes::change(&session::connect(global).await?, &args.action).await,
        Command::RotateKubeconfig(args) => {
            rotate::rotate(&session::connect(global).await?, args).await
        }
        Command::Completion(_) | Command::Version => Ok(()),
    }
}

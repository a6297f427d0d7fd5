//! The I/O shell: each command talks to the host cluster through a [`session::Session`].

mod context;
mod create;
mod delete;
mod describe;
pub mod errors;
mod get;
mod nodes;
mod session;
mod wait;

use anyhow::Result;
use kubectl_vc::cli::{Cli, Command};

/// Runs a command that needs the cluster.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Create(args) => create::create(global, args).await,
        Command::List(args) => get::list(&session::connect(global).await?, args).await,
        Command::Get(args) => get::get(&session::connect(global).await?, args).await,
        Command::Describe(args) => describe::describe(&session::connect(global).await?, args).await,
        Command::Delete(args) => delete::delete(&session::connect(global).await?, args).await,
        Command::UseContext(args) => {
            let options = context::MergeOptions {
                context_name: args.context_name.clone(),
                server: args.server.clone(),
                print: args.print,
                no_switch: args.no_switch,
                internal: args.internal,
            };
            context::use_context(&session::connect(global).await?, &args.name, &options).await
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
        Command::Completion(_) | Command::Version => Ok(()),
    }
}

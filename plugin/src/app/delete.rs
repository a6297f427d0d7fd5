//! `delete`.

use anyhow::Result;
use kube::Api;
use kube::api::DeleteParams;
use kubectl_vc::cli::DeleteArgs;
use kubectl_vc::output;
use vc_api::VirtualCluster;

use super::errors::{self, AlreadyReported};
use super::session::Session;
use super::{context, wait};

/// Deletes each VirtualCluster, optionally waits for it to be gone, and removes its
/// kubeconfig entries. Every failure is printed; the exit code is 1 if any happened.
pub async fn delete(session: &Session, args: &DeleteArgs) -> Result<()> {
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let mut failed = false;
    for name in &args.names {
        let deleted = match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                println!("{} \"{name}\" deleted", output::resource_prefix());
                true
            }
            Err(error) if args.ignore_not_found && errors::is_not_found(&error) => false,
            Err(error) => {
                failed = true;
                eprintln!("{}", errors::api(error, &session.namespace, Some(name)));
                continue;
            }
        };
        if deleted
            && args.wait
            && let Err(error) = wait::for_deletion(&api, name, args.timeout).await
        {
            failed = true;
            eprintln!("error: {error:#}");
            continue;
        }
        if !args.keep_kubeconfig {
            context::forget(session, name);
        }
    }
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

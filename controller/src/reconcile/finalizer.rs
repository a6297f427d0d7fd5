//! The Controller's entry point: the chain under kube-runtime's finalizer helper, timed
//! and counted by the step that failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use vc_api::VirtualCluster;
use vc_api::constants::FINALIZER;

use super::events::object_key;
use super::failure::{report_foreign, report_invalid};
use crate::context::Context;
use crate::error::{Error, Result, Step, is_not_found};

/// How soon a reconcile that arrived before the caches synced runs again.
const CACHE_SYNC_RETRY: Duration = Duration::from_millis(500);

/// Entry point of the Controller: runs the finalizer-guarded chain and records metrics.
pub async fn reconcile(vc: Arc<VirtualCluster>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.caches_synced() {
        // Never wait inside a reconcile: the caches are fed by the same Controller whose
        // workers would be blocked, so waiting here could starve them for good.
        return Ok(Action::requeue(CACHE_SYNC_RETRY));
    }
    let started = Instant::now();
    let key = object_key(&vc);
    let namespace = vc.namespace().unwrap_or_default();
    let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = run_chain(&api, vc.clone(), &ctx).await;
    match &result {
        Ok(_) => ctx.reset_backoff(&key),
        Err(error) if !error.is_transient() => report_invalid(&vc, error, &ctx).await,
        // The clustertree step's errors come after the status was written with them
        // (the kubeconfig is out by then); writing again from `vc` would be stale.
        Err(error) if error.step() == Step::Clustertree => {}
        Err(error) => {
            if let Some(message) = error.foreign_object() {
                report_foreign(&vc, message, &ctx).await;
            }
        }
    }
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err().map(Error::step));
    result
}

/// The chain under kube-runtime's finalizer helper: it puts the finalizer in place before
/// any side effect (a JSON patch guarded by a `test` of the current finalizers), runs
/// Apply while the object lives, and Cleanup then finalizer removal once it is deleted.
async fn run_chain(
    api: &Api<VirtualCluster>,
    vc: Arc<VirtualCluster>,
    ctx: &Context,
) -> Result<Action> {
    let outcome = finalizer(api, FINALIZER, vc, |event| async {
        match event {
            Finalizer::Apply(vc) => super::apply(&vc, ctx).await,
            Finalizer::Cleanup(vc) => super::cleanup::cleanup(&vc, ctx).await.map_err(Error::from),
        }
    })
    .await;
    match outcome {
        // The object is already gone: someone else (or a previous attempt whose answer
        // was lost) removed the last finalizer. Nothing is left to do.
        Err(FinalizerError::RemoveFinalizer(error)) if is_not_found(&error) => {
            Ok(Action::await_change())
        }
        // The chain's own errors keep their step; only finalizer writes are "finalizer".
        Err(FinalizerError::ApplyFailed(error)) | Err(FinalizerError::CleanupFailed(error)) => {
            Err(error)
        }
        Err(FinalizerError::AddFinalizer(source)) => Err(Error::AddFinalizer { source }),
        Err(FinalizerError::RemoveFinalizer(source)) => Err(Error::RemoveFinalizer { source }),
        result => result.map_err(|error| Error::Finalizer {
            source: Box::new(error),
        }),
    }
}

//! What a failed reconcile leaves behind: a backoff or a wait for an edit, a Warning
//! Event, and a status saying why when the VirtualCluster itself is at fault or an
//! object it needs is someone else's.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use vc_api::condition_types::READY;
use vc_api::{Phase, VirtualCluster};

use super::events::{event, object_key, status_message};
use super::status::{FOREIGN_OBJECT_REASON, write_status};
use crate::context::Context;
use crate::error::Error;
use crate::status::{DesiredCondition, needs_write, set_condition};

/// What the Controller does after a failed reconcile: back off exponentially per object
/// on transient errors, wait for an edit on invalid objects.
pub fn error_policy(vc: Arc<VirtualCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&vc);
    if error.is_transient() {
        let delay = ctx.next_backoff(&key);
        // The error may quote a tenant apiserver: one escaped line in text logs too.
        let note = error.report();
        let logged = vc_api::text::sanitize(&note, vc_api::text::ERROR_CHARS);
        tracing::warn!(virtualcluster = %key, step = %error.step(), error = %logged, ?delay, "reconcile failed; retrying");
        let step = error.step();
        tokio::spawn(async move {
            let note = format!("step {step}: {note}");
            let warning = event(EventType::Warning, "ReconcileFailed", step, &note);
            ctx.publish(&vc, warning).await;
        });
        Action::requeue(delay)
    } else {
        let step = error.step();
        let error = error.report();
        tracing::warn!(virtualcluster = %key, %step, %error, "invalid VirtualCluster; waiting for a change");
        Action::await_change()
    }
}

/// Marks an object that cannot be provisioned as `Failed`, saying why, once.
pub(super) async fn report_invalid(vc: &VirtualCluster, error: &Error, ctx: &Context) {
    let Some(reason) = error.invalid_reason() else {
        return;
    };
    let generation = vc.metadata.generation;
    let mut status = vc.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    set_condition(
        &mut status.conditions,
        &DesiredCondition::new(READY, false, "InvalidSpec", reason.clone()),
        generation,
        now,
    );
    status.phase = Some(Phase::Failed);
    status.message = status_message(&reason);
    status.observed_generation = generation;
    if !needs_write(vc.status.as_ref(), &status) {
        return;
    }
    match write_status(vc, &status, ctx).await {
        Ok(()) => {
            let warning = event(EventType::Warning, "InvalidSpec", error.step(), &reason);
            ctx.publish(vc, warning).await;
        }
        Err(write_error) => {
            tracing::warn!(%write_error, "failed to record the Failed status");
        }
    }
}

/// Says in the status why the tenant is stuck on an object that is not ours. The phase
/// stays: nothing about the VirtualCluster is wrong, and it moves on once that object is
/// removed.
pub(super) async fn report_foreign(vc: &VirtualCluster, message: String, ctx: &Context) {
    let mut status = vc.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        &DesiredCondition::new(READY, false, FOREIGN_OBJECT_REASON, message.clone()),
        vc.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    status.phase = status.phase.or(Some(Phase::Pending));
    status.message = status_message(&message);
    if !needs_write(vc.status.as_ref(), &status) {
        return;
    }
    if let Err(write_error) = write_status(vc, &status, ctx).await {
        tracing::warn!(%write_error, "failed to record the object that blocks the tenant");
    }
}

//! The integration tests' name for [`vc_tests::wait::eventually`], in the argument order
//! they were written with (bound first).

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, failing with `what` after `wait`.
pub async fn eventually<T, F, Fut>(wait: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    vc_tests::wait::eventually(what, wait, check).await
}

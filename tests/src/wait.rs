//! Waiting on a condition: what the tests, the e2e harness and the benchmarks do instead of
//! sleeping a guessed time. Simulators, controllers and real components all work
//! level-triggered in the background, so the caller says what state it expects and how long
//! it may take, and the failure names that state and the last thing the check saw.
//!
//! One contract for every wait:
//! - a bound (`limit`): the check runs at least once, and again until the bound passes;
//! - a description (`what`) that the failure message starts with;
//! - a check whose outcome is an [`Outcome`]: `Option<T>` (`None` = not yet) or
//!   `Result<T, E>` (`Err` = not yet, and its text is the "last seen" of the failure).
//!
//! The check is polled at a short interval that grows to [`MAX_POLL`]: a state that appears
//! at once is seen within milliseconds, and a slow check (a kubectl process, a real
//! apiserver) is not run back to back on the shared cores.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The first pause between two checks.
const FIRST_POLL: Duration = Duration::from_millis(20);

/// The longest pause between two checks: a wait ends at most this long after its state
/// appears.
pub const MAX_POLL: Duration = Duration::from_millis(200);

/// What a check gives: the value waited for, or a description of what it saw instead.
pub trait Outcome {
    /// The value the wait returns once the condition holds.
    type Value;
    /// `Ok` ends the wait; `Err` carries what the check saw, for the failure message.
    fn into_outcome(self) -> Result<Self::Value, String>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "the condition did not hold".to_owned())
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|error| error.to_string())
    }
}

/// The bound passed before the condition held.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {limit:?} waiting for {what}; last seen: {last}")]
pub struct TimedOut {
    /// The state waited for.
    pub what: String,
    /// The bound that passed.
    pub limit: Duration,
    /// What the last check saw.
    pub last: String,
}

/// Runs `check` until its outcome is a value, for at most `limit`; the error names `what`
/// and what the last check saw.
pub async fn until<O, F, Fut>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> Result<O::Value, TimedOut>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut poll = FIRST_POLL;
    loop {
        let last = match check().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
                last,
            });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
        poll = (poll * 2).min(MAX_POLL);
    }
}

/// [`until`] for tests: the value, or a panic with the [`TimedOut`] message.
pub async fn eventually<O, F, Fut>(what: &str, limit: Duration, check: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    match until(what, limit, check).await {
        Ok(value) => value,
        Err(timed_out) => panic!("{timed_out}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_check_gives_one() {
        let calls = AtomicU32::new(0);
        let value = until("the third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn the_failure_names_the_state_and_the_last_error_seen() {
        let calls = AtomicU32::new(0);
        let error = until("a ready pod", Duration::from_millis(100), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(format!("phase Pending on call {n}"))
        })
        .await
        .unwrap_err();
        let n = calls.load(Ordering::SeqCst);
        assert!(n >= 2, "the check runs until the bound: {n} calls");
        assert_eq!(
            error.to_string(),
            format!(
                "timed out after 100ms waiting for a ready pod; last seen: phase Pending on call {}",
                n - 1
            )
        );
    }

    #[tokio::test]
    async fn a_zero_bound_still_checks_once() {
        assert_eq!(
            until("anything", Duration::ZERO, || async { Some(7) })
                .await
                .unwrap(),
            7
        );
    }

    #[tokio::test]
    #[should_panic(
        expected = "timed out after 50ms waiting for nothing; last seen: the condition did not hold"
    )]
    async fn eventually_panics_with_the_message() {
        eventually("nothing", Duration::from_millis(50), || async {
            None::<()>
        })
        .await;
    }
}

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
#[expect(
    clippy::panic,
    reason = "a test fails by panicking, and this is the tests' form of `until`"
)]
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

/// A condition stopped holding inside the window it had to hold for.
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped holding after {after:?} of {window:?}: {seen}")]
pub struct Broken {
    /// The state that had to hold.
    pub what: String,
    /// The window it had to hold for.
    pub window: Duration,
    /// When it was first seen broken.
    pub after: Duration,
    /// What the check saw.
    pub seen: String,
}

/// Checks that `check` holds for the whole of `window`, from now; the error says when it
/// first did not and what the check saw. This is for what must *not* happen (a write, a
/// deletion, a revived node): an absence has no moment to wait for, so the window is the
/// assertion, and checking all through it fails at the first break instead of at its end.
pub async fn throughout<O, F, Fut>(what: &str, window: Duration, mut check: F) -> Result<(), Broken>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let started = tokio::time::Instant::now();
    let end = started + window;
    loop {
        if let Err(seen) = check().await.into_outcome() {
            return Err(Broken {
                what: what.to_owned(),
                window,
                after: started.elapsed(),
                seen,
            });
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep(MAX_POLL.min(end - now)).await;
    }
}

/// Samples until two samples `quiet` apart (and every one between) are equal, for at most
/// `limit`, and returns the settled value: "stops changing" as a condition, for state that
/// a background loop may still be writing when the test reaches it.
pub async fn settled<T, F, Fut>(
    what: &str,
    limit: Duration,
    quiet: Duration,
    mut sample: F,
) -> Result<T, TimedOut>
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut stable = (sample().await, tokio::time::Instant::now());
    loop {
        let now = tokio::time::Instant::now();
        if now.duration_since(stable.1) >= quiet {
            return Ok(stable.0);
        }
        if now >= deadline {
            return Err(TimedOut {
                what: format!("{what} to stay unchanged for {quiet:?}"),
                limit,
                last: format!("{:?}", stable.0),
            });
        }
        tokio::time::sleep(MAX_POLL.min(deadline - now)).await;
        let next = sample().await;
        if next != stable.0 {
            stable = (next, tokio::time::Instant::now());
        }
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
    #[tokio::test]
    async fn throughout_fails_at_the_first_break() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let error = throughout(
            "the node to stay NotReady",
            Duration::from_secs(30),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Ok(()) } else { Err("Ready=True") }
            },
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it must not wait out the window"
        );
        assert!(
            error
                .to_string()
                .starts_with("the node to stay NotReady stopped holding after "),
            "{error}"
        );
        assert!(error.to_string().ends_with("of 30s: Ready=True"), "{error}");
    }

    #[tokio::test]
    async fn throughout_checks_until_the_window_ends() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        throughout("quiet", Duration::from_millis(300), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Some(())
        })
        .await
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn settled_waits_for_the_value_to_stop_changing() {
        let calls = AtomicU32::new(0);
        let value = settled(
            "a counter",
            Duration::from_secs(10),
            Duration::from_millis(300),
            || async { calls.fetch_add(1, Ordering::SeqCst).min(5) },
        )
        .await
        .unwrap();
        assert_eq!(value, 5);
    }

    #[tokio::test]
    async fn settled_times_out_on_a_value_that_keeps_changing() {
        let calls = AtomicU32::new(0);
        let error = settled(
            "a counter",
            Duration::from_millis(400),
            Duration::from_millis(300),
            || async { calls.fetch_add(1, Ordering::SeqCst) },
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().starts_with("timed out after 400ms waiting for a counter to stay unchanged for 300ms; last seen: "),
            "{error}"
        );
    }
}

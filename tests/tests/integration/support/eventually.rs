//! Polling for the simulator tests: a simulator works level-triggered in the background,
//! so a test waits for the state it expects instead of sleeping a guessed time.

use std::future::Future;
use std::time::Duration;

/// How often `check` runs: often enough that a wait ends soon after the state appears.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, failing with `what` after `wait`.
pub async fn eventually<T, F, Fut>(wait: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {wait:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

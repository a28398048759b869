//! Answers that may be reused for a moment: a flood of `/metrics` or `/readyz` requests
//! costs one computation per moment, not one per request. Requests that arrive while one is
//! computed wait for it and share its answer.

use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The last answer and when it was made.
#[derive(Debug)]
pub struct Recent<T> {
    fresh_for: Duration,
    last: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(fresh_for: Duration) -> Self {
        Recent {
            fresh_for,
            last: Mutex::new(None),
        }
    }

    /// The last answer if it is fresh enough, else `make`'s (kept for the next callers).
    pub async fn get_or<F, Fut>(&self, make: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < self.fresh_for {
                return answer.clone();
            }
        }
        let answer = make().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_is_reused_while_fresh_and_made_again_after() {
        let recent = Recent::new(Duration::from_millis(50));
        assert_eq!(recent.get_or(|| async { 1 }).await, 1);
        assert_eq!(recent.get_or(|| async { 2 }).await, 1, "fresh: reused");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(recent.get_or(|| async { 3 }).await, 3, "stale: made again");
    }
}

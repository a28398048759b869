//! A byte bound on what an `AppendStream` holds unanswered. openraft reads up to 64 requests
//! of a stream ahead of its answers, and each may be as large as a gRPC message may be; a
//! replica that sends fast (or a certificate in the wrong hands) could make a follower hold
//! gigabytes. A request is taken from the stream only once its bytes fit in the budget;
//! its answer frees them. While the budget is spent the stream is not read, so HTTP/2's flow
//! control holds the sender back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of requests one stream may hold unanswered.
pub const APPEND_READ_AHEAD_BYTES: usize = 64 << 20;

/// The budget counts in KiB, so that a request's share fits a semaphore's `u32` permits.
const UNIT: usize = 1024;

pub struct ReadAhead {
    budget: Arc<Semaphore>,
    units: u32,
    /// One permit per admitted request not yet answered, oldest first.
    held: Mutex<VecDeque<OwnedSemaphorePermit>>,
}

impl ReadAhead {
    pub fn new(max_bytes: usize) -> ReadAhead {
        let units = u32::try_from(max_bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        ReadAhead {
            budget: Arc::new(Semaphore::new(units as usize)),
            units,
            held: Mutex::new(VecDeque::new()),
        }
    }

    /// Wait until a request of `bytes` fits; one larger than the whole budget waits until
    /// nothing else is held. False once the answers have ended (`close`): the request is
    /// not to be taken, and the stream is over.
    pub async fn admit(&self, bytes: usize) -> bool {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.units);
        match self.budget.clone().acquire_many_owned(units).await {
            Ok(permit) => {
                self.lock().push_back(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// No more answers will come (the stream ended or its reader went away): wake and refuse
    /// whoever waits for room, so the reading side ends too instead of waiting forever.
    pub fn close(&self) {
        self.budget.close();
    }

    /// The oldest admitted request was answered: its bytes fit again.
    pub fn answered(&self) {
        self.lock().pop_front();
    }

    /// Bytes held now (rounded up to KiB per request).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        (self.units as usize - self.budget.available_permits()) * UNIT
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<OwnedSemaphorePermit>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes a `ReadAhead` when dropped: held by the answer stream, so that its end, however it
/// comes, lets the reading side go.
pub struct CloseOnDrop(pub Arc<ReadAhead>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::poll;
    use std::task::Poll;

    #[tokio::test]
    async fn a_request_waits_until_an_answer_frees_room_for_it() {
        let read_ahead = ReadAhead::new(10 * UNIT);
        read_ahead.admit(4 * UNIT).await;
        read_ahead.admit(5 * UNIT).await;
        assert_eq!(read_ahead.held_bytes(), 9 * UNIT);
        // 3 KiB more do not fit beside the 9 held ...
        let mut waiting = Box::pin(read_ahead.admit(3 * UNIT));
        assert_eq!(poll!(&mut waiting), Poll::Pending);
        // ... and do once the oldest (4 KiB) is answered.
        read_ahead.answered();
        assert_eq!(poll!(&mut waiting), Poll::Ready(true));
        assert_eq!(read_ahead.held_bytes(), 8 * UNIT);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_waits_until_nothing_else_is_held() {
        let read_ahead = ReadAhead::new(10 * UNIT);
        read_ahead.admit(UNIT).await;
        let mut huge = Box::pin(read_ahead.admit(100 * UNIT));
        assert_eq!(poll!(&mut huge), Poll::Pending);
        read_ahead.answered();
        assert_eq!(poll!(&mut huge), Poll::Ready(true));
        assert_eq!(read_ahead.held_bytes(), 10 * UNIT);
        read_ahead.answered();
        assert_eq!(read_ahead.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_reader_waiting_for_room_is_let_go_when_the_answers_end() {
        let read_ahead = ReadAhead::new(10 * UNIT);
        read_ahead.admit(10 * UNIT).await;
        let mut waiting = Box::pin(read_ahead.admit(UNIT));
        assert_eq!(poll!(&mut waiting), Poll::Pending);
        read_ahead.close();
        assert_eq!(poll!(&mut waiting), Poll::Ready(false));
        assert!(!read_ahead.admit(UNIT).await);
    }
}

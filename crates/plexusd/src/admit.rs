//! Back-pressure: at most `max_inflight` engine runs at once, at most `queue` requests waiting
//! for one. A request that finds the queue full, or that waits until its work deadline, is
//! answered "try again later" (CNI code 11) at once: the runtime retries, and the daemon never
//! grows without bound under a burst (Multus's daemon takes every request and can be OOM-killed).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `queue` requests were already waiting.
    QueueFull { inflight: usize, queue: usize },
    /// The request waited until its deadline.
    Deadline,
}

/// The admission gate (see the module docs).
#[derive(Debug)]
pub struct Admission {
    sem: Arc<Semaphore>,
    max_inflight: usize,
    queue: usize,
    waiting: AtomicUsize,
}

impl Admission {
    pub fn new(max_inflight: usize, queue: usize) -> Self {
        let max_inflight = max_inflight.max(1);
        Self {
            sem: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A permit to run the engine; hold it until the engine returns.
    pub async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::QueueFull {
                inflight: self.max_inflight,
                queue: self.queue,
            });
        }
        let got = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.sem.clone().acquire_owned(),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like a deadline all the same.
            Ok(Err(_)) | Err(_) => Err(Refused::Deadline),
        }
    }

    /// Requests waiting for a permit.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Engine runs in progress.
    pub fn inflight(&self) -> usize {
        self.max_inflight - self.sem.available_permits()
    }

    /// Waits until no engine run is in progress (graceful shutdown), or until `deadline`.
    pub async fn drain(&self, deadline: Instant) -> bool {
        let all = u32::try_from(self.max_inflight).unwrap_or(u32::MAX);
        tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.sem.acquire_many(all),
        )
        .await
        .is_ok_and(|p| p.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn full_queue_is_refused_at_once_and_a_freed_permit_admits_the_waiter() {
        let a = Arc::new(Admission::new(1, 1));
        let far = Instant::now() + Duration::from_secs(60);
        let first = a.admit(far).await.expect("first runs");
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.admit(far).await.map(drop) });
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.admit(far).await.map(drop),
            Err(Refused::QueueFull {
                inflight: 1,
                queue: 1
            })
        );
        assert_eq!(a.inflight(), 1);
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline() {
        let a = Admission::new(1, 4);
        let _held = a
            .admit(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(a.admit(soon).await.map(drop), Err(Refused::Deadline));
        assert_eq!(a.queued(), 0);
    }
}

//! Graceful shutdown: the drain's phases, and the stream tasks it waits for.
//!
//! A stream's answer is produced by a task of its own, after the handler
//! has returned, so dropshot's own shutdown (which waits for handlers and
//! connections) does not know of it: a task that outlived its client, or
//! one still settling, would be cut by the process exit and its reservation
//! left to crash recovery at the worst case. Every such task is spawned
//! through [`Drain::spawn`], and the shutdown waits until none is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// No new connections; what is in flight may finish.
    Draining,
    /// The drain deadline passed: streams end now, settled at what was seen.
    Cut,
}

pub struct Drain {
    phase: watch::Sender<Phase>,
    active: AtomicUsize,
    idle: Notify,
    /// Streams ended by the deadline (reported in the last log line).
    cut_streams: AtomicUsize,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            phase: watch::Sender::new(Phase::Serving),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            cut_streams: AtomicUsize::new(0),
        }
    }
}

impl Drain {
    /// Whether a shutdown has begun (`/health` answers 503 from then on).
    pub fn draining(&self) -> bool {
        *self.phase.borrow() != Phase::Serving
    }

    pub fn begin(&self) {
        self.phase.send_if_modified(|p| {
            let was = *p == Phase::Serving;
            if was {
                *p = Phase::Draining;
            }
            was
        });
    }

    /// The deadline has passed: every stream still running ends now.
    pub fn cut(&self) {
        self.phase.send_replace(Phase::Cut);
    }

    /// Resolves once the drain deadline has passed (never while serving).
    pub async fn cut_off(&self) {
        let mut rx = self.phase.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|p| *p == Phase::Cut).await;
    }

    /// Counts one stream ended by the deadline.
    pub fn stream_cut(&self) {
        self.cut_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cut_streams(&self) -> usize {
        self.cut_streams.load(Ordering::Relaxed)
    }

    /// Spawns a task the shutdown waits for (a stream's producer, which
    /// settles its request when it ends).
    pub fn spawn(self: &Arc<Drain>, task: impl Future<Output = ()> + Send + 'static) {
        struct Active(Arc<Drain>);
        impl Drop for Active {
            fn drop(&mut self) {
                if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.idle.notify_waiters();
                }
            }
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        let active = Active(self.clone());
        tokio::spawn(async move {
            let _active = active;
            task.await;
        });
    }

    /// Resolves once no task spawned through [`Drain::spawn`] is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks_and_cuts_them_at_the_deadline() {
        let drain = Arc::new(Drain::default());
        assert!(!drain.draining());
        let d = drain.clone();
        drain.spawn(async move { d.cut_off().await });
        drain.begin();
        assert!(drain.draining());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), drain.idle()).await;
        assert!(waited.is_err(), "the task was still running");
        drain.cut();
        tokio::time::timeout(std::time::Duration::from_secs(5), drain.idle())
            .await
            .expect("the task ended at the cut");
    }
}

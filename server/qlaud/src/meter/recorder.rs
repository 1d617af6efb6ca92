//! Settles finished requests. Every model endpoint ends here, JSON and
//! streams alike.
//!
//! One task writes records in batches of up to 64 per transaction: under
//! load that is one write where there would be dozens, and the request path
//! never waits for the disk. Until its batch is written a request's
//! reservation keeps holding its budget, so the delay can only make the cap
//! stricter, never looser. A record still queued when the process is killed
//! is settled by crash recovery instead (at its reserved amount).

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{RequestRecord, SpendHook};
use crate::store::{MAX_BATCH, Store};

// Records are nearly every message; boxing them would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(RequestRecord),
    /// Answered once every record queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    store: Store,
    shutdown: Arc<Notify>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Recorder {
    /// `hook` hears of every settled batch (spend alerts).
    pub fn start(store: Store, hook: Arc<dyn SpendHook>) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Msg>(16 * 1024);
        let (done_tx, done_rx) = oneshot::channel();
        let shutdown = Arc::new(Notify::new());
        let (writer, stop) = (store.clone(), shutdown.clone());
        let hook = Some(hook);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Records the store refused even after retries: kept, never
            // dropped, and tried again every second until it answers.
            let mut unsettled: Vec<RequestRecord> = Vec::new();
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, MAX_BATCH) => {
                        if n == 0 {
                            break;
                        }
                        batch.extend(unsettled.drain(..).map(Msg::Record));
                        unsettled = write(&writer, &mut batch, hook.as_deref()).await;
                    }
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)), if !unsettled.is_empty() => {
                        let mut retry: Vec<Msg> = unsettled.drain(..).map(Msg::Record).collect();
                        unsettled = write(&writer, &mut retry, hook.as_deref()).await;
                    }
                    () = stop.notified() => {
                        // Refuse new records (they are written directly),
                        // then write what is queued.
                        rx.close();
                        batch.extend(unsettled.drain(..).map(Msg::Record));
                        while !batch.is_empty() || rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                            let failed = write(&writer, &mut batch, hook.as_deref()).await;
                            if !failed.is_empty() {
                                // Shutting down with the store away: crash
                                // recovery settles these (at the reserved
                                // amount) once this process is gone.
                                tracing::error!(rows = failed.len(), "left unsettled at shutdown");
                            }
                        }
                        break;
                    }
                }
            }
            let _ = done_tx.send(());
        });
        Recorder { tx, store, shutdown, done: Mutex::new(Some(done_rx)) }
    }

    /// Queues a record (waiting if the queue is full, so a stalled store
    /// slows requests down instead of dropping records).
    pub async fn record(&self, r: RequestRecord) {
        if let Err(mpsc::error::SendError(Msg::Record(r))) = self.tx.send(Msg::Record(r)).await {
            // After close: write it directly.
            let _ = write(&self.store, &mut vec![Msg::Record(r)], None).await;
        }
    }

    /// Queues a record without waiting (for drop guards); written directly
    /// in the background if the queue is full or closed.
    pub fn record_now(&self, r: RequestRecord) {
        if let Err(e) = self.tx.try_send(Msg::Record(r)) {
            let msg = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = write(&store, &mut vec![msg], None).await;
            });
        }
    }

    /// Returns once every record queued before the call is settled.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes every queued record and returns; later ones go directly.
    pub async fn close(&self) {
        let done = self.done.lock().expect("not poisoned").take();
        if let Some(done) = done {
            self.shutdown.notify_one();
            let _ = done.await;
        }
    }
}

/// Settles a batch; returns the records the store still refused after
/// retries.
async fn write(
    store: &Store,
    batch: &mut Vec<Msg>,
    hook: Option<&dyn SpendHook>,
) -> Vec<RequestRecord> {
    let mut records = Vec::with_capacity(batch.len());
    let mut flushes = Vec::new();
    for m in batch.drain(..) {
        match m {
            Msg::Record(r) => records.push(r),
            Msg::Flush(tx) => flushes.push(tx),
        }
    }
    // A failed write is retried: a record must not be lost to a passing
    // store error (its reservation would be recovered at the full amount).
    let mut delay = std::time::Duration::from_millis(50);
    let mut settled = false;
    for attempt in 0..5 {
        match store.settle(&records).await {
            Ok(_) => {
                settled = true;
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = records.len(), attempt, "settling requests");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    for tx in flushes {
        let _ = tx.send(());
    }
    if !settled {
        return records;
    }
    if let Some(hook) = hook {
        hook.settled(&records);
    }
    Vec::new()
}

//! Metering: what a request used and what it costs, and the one place every
//! model endpoint hands its usage to.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::{Model, Prices};
use crate::store::{MAX_BATCH, Store};

/// Tokens of one request, split the way prices are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the input price (cache reads and writes not
    /// included).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// The cost of `usage` at `prices`, in micro-dollars, rounded up: prices are
/// per million tokens, so a request is charged at least what it used and
/// per-request costs add up to exactly the totals reported.
pub fn cost_micros(prices: &Prices, usage: &Usage) -> i64 {
    let pico = |tokens: u64, price: i64| i128::from(tokens) * i128::from(price);
    let total = pico(usage.input_tokens, prices.input)
        + pico(usage.output_tokens, prices.output)
        + pico(usage.cache_read_tokens, prices.cache_read)
        + pico(usage.cache_write_tokens, prices.cache_write);
    let micros = (total + 999_999) / 1_000_000;
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// One finished model request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub tenant_id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub endpoint: &'static str,
    pub streamed: bool,
    /// The HTTP status the client got (for a stream: 200, or 499 when the
    /// client went away first).
    pub status: u16,
    pub usage: Usage,
    pub cost_micros: i64,
    pub latency_ms: i64,
}

impl RequestRecord {
    pub fn cost_for(model: &Model, usage: &Usage) -> i64 {
        model.prices.as_ref().map_or(0, |p| cost_micros(p, usage))
    }
}

/// Writes finished requests to the store. Every model endpoint ends here,
/// JSON and streams alike.
///
/// Records are written by one task in batches of up to 64 rows per
/// statement: under load that is one write where there would be dozens, and
/// the request path never waits for the disk. A record still queued when the
/// process is killed is lost; `close` flushes the queue on a clean shutdown.
pub struct Recorder {
    tx: mpsc::Sender<RequestRecord>,
    store: Store,
    shutdown: Arc<Notify>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Recorder {
    pub fn start(store: Store) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<RequestRecord>(16 * 1024);
        let (done_tx, done_rx) = oneshot::channel();
        let shutdown = Arc::new(Notify::new());
        let (writer, stop) = (store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, MAX_BATCH) => {
                        if n == 0 {
                            break;
                        }
                        write(&writer, &mut batch).await;
                    }
                    () = stop.notified() => {
                        // Refuse new records (they are written directly),
                        // then write what is queued.
                        rx.close();
                        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                            write(&writer, &mut batch).await;
                        }
                        break;
                    }
                }
            }
            let _ = done_tx.send(());
        });
        Recorder {
            tx,
            store,
            shutdown,
            done: Mutex::new(Some(done_rx)),
        }
    }

    /// Queues a record (waiting if the queue is full, so a stalled store
    /// slows requests down instead of dropping records).
    pub async fn record(&self, r: RequestRecord) {
        if let Err(mpsc::error::SendError(r)) = self.tx.send(r).await {
            // After close: write it directly.
            write(&self.store, &mut vec![r]).await;
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

async fn write(store: &Store, batch: &mut Vec<RequestRecord>) {
    if let Err(e) = store.insert_requests(batch).await {
        tracing::error!(error = %e, rows = batch.len(), "writing the request log");
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_to_the_micro() {
        let prices = Prices {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: 300_000,
            cache_write: 3_750_000,
        };
        // 1 input token at $3/Mtok = 3 micro-dollars exactly.
        assert_eq!(
            cost_micros(
                &prices,
                &Usage {
                    input_tokens: 1,
                    ..Default::default()
                }
            ),
            3
        );
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_read_tokens: 1,
            cache_write_tokens: 0,
        };
        // 3000 + 7500 + 0.3 → 10501 (rounded up).
        assert_eq!(cost_micros(&prices, &u), 10_501);
        assert_eq!(cost_micros(&prices, &Usage::default()), 0);
    }
}

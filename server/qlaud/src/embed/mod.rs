//! The in-process embedding model: all-MiniLM-L6-v2 run with candle on the
//! CPU. It embeds thread turns for search and serves `POST /v1/embeddings`
//! as the catalog's local model.
//!
//! The model runs on one thread of its own, never on the async runtime:
//! requests queue on a channel and are answered in order. Its files are
//! fetched in the background on first start, so the server answers at once
//! and search says "embedding model loading" until they are ready.

pub mod fetch;
pub mod model;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

pub use model::{DIMENSIONS, MAX_TOKENS};

/// The local model's name in the catalog and in its answers.
pub const MODEL_NAME: &str = "all-minilm-l6-v2";

/// Texts per forward pass: bounds the padded batch's memory.
const BATCH: usize = 32;

/// Where the embedder stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No model configured (`ServeConfig::embed_model_dir` unset).
    Off,
    /// Fetching or loading the files.
    Loading,
    Ready,
    /// Fetching or loading failed; the message says why.
    Failed(String),
}

/// Unit vectors with the tokens each text used.
pub type Embeddings = Vec<(Vec<f32>, usize)>;

enum Job {
    Embed(Vec<String>, oneshot::Sender<anyhow::Result<Embeddings>>),
    Count(Vec<String>, oneshot::Sender<anyhow::Result<Vec<usize>>>),
}

/// A handle on the model; cheap to share.
pub struct Embedder {
    status: watch::Receiver<Status>,
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Embedder {
    /// An embedder with no model: every call answers that search is off.
    pub fn off() -> Arc<Embedder> {
        let (_tx, status) = watch::channel(Status::Off);
        let (jobs, _) = std::sync::mpsc::sync_channel(1);
        Arc::new(Embedder { status, jobs })
    }

    /// Starts fetching (if needed) and loading the model in `dir` in the
    /// background. Must be called inside a tokio runtime.
    pub fn start(dir: PathBuf) -> Arc<Embedder> {
        let (status_tx, status) = watch::channel(Status::Loading);
        // Bounded: a flood of requests waits for the model instead of
        // piling up in memory.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(64);
        tokio::spawn(async move {
            if let Err(e) = fetch::ensure(&dir).await {
                let message = format!("fetching the embedding model into {}: {e:#}", dir.display());
                tracing::error!("{message}; search stays unavailable");
                let _ = status_tx.send(Status::Failed(message));
                return;
            }
            let spawned = std::thread::Builder::new()
                .name("qlaud-embedder".into())
                .spawn(move || run(&dir, rx, status_tx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting the embedding thread");
            }
        });
        Arc::new(Embedder { status, jobs })
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the model is ready; false if it never will be.
    pub async fn ready(&self) -> bool {
        let mut rx = self.status.clone();
        matches!(rx.wait_for(|s| !matches!(s, Status::Loading)).await.as_deref(), Ok(Status::Ready))
    }

    /// Unit vectors for `texts`, in order, or why not.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Embed(texts, tx), rx).await
    }

    /// How many tokens the model reads of each text (what the local
    /// model's embeddings are billed by).
    pub async fn count_tokens(&self, texts: Vec<String>) -> Result<Vec<usize>, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Count(texts, tx), rx).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<anyhow::Result<T>>,
    ) -> Result<T, Unavailable> {
        self.check()?;
        let jobs = self.jobs.clone();
        // A full channel blocks: wait for room off the runtime.
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|e| Unavailable::Failed(e.to_string()))?
            .map_err(|_| Unavailable::Failed("the embedding thread stopped".into()))?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Unavailable::Failed(format!("{e:#}"))),
            Err(_) => Err(Unavailable::Failed("the embedding thread stopped".into())),
        }
    }

    fn check(&self) -> Result<(), Unavailable> {
        match self.status() {
            Status::Ready => Ok(()),
            Status::Off => Err(Unavailable::Off),
            Status::Loading => Err(Unavailable::Loading),
            Status::Failed(m) => Err(Unavailable::Failed(m)),
        }
    }
}

/// Why the model cannot answer now.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no embedding model is configured on this server")]
    Off,
    #[error("embedding model loading: try again shortly")]
    Loading,
    #[error("embedding model failed: {0}")]
    Failed(String),
}

impl From<Unavailable> for crate::error::Error {
    fn from(u: Unavailable) -> crate::error::Error {
        crate::error::Error::Unavailable(u.to_string())
    }
}

/// The model's thread: load, then answer jobs until every handle is gone.
fn run(dir: &std::path::Path, rx: std::sync::mpsc::Receiver<Job>, status: watch::Sender<Status>) {
    let started = std::time::Instant::now();
    let model = match model::Model::load(dir) {
        Ok(m) => m,
        Err(e) => {
            let message = format!("loading the embedding model from {}: {e:#}", dir.display());
            tracing::error!("{message}; search stays unavailable");
            let _ = status.send(Status::Failed(message));
            return;
        }
    };
    tracing::info!(
        dir = %dir.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "embedding model ready (all-MiniLM-L6-v2, 384 dimensions)"
    );
    let _ = status.send(Status::Ready);
    while let Ok(job) = rx.recv() {
        match job {
            Job::Embed(texts, reply) => {
                let mut out = Vec::with_capacity(texts.len());
                let result = texts
                    .chunks(BATCH)
                    .try_for_each(|chunk| model.embed(chunk).map(|v| out.extend(v)))
                    .map(|()| out);
                let _ = reply.send(result);
            }
            Job::Count(texts, reply) => {
                let _ = reply.send(texts.iter().map(|t| model.count_tokens(t)).collect());
            }
        }
    }
}

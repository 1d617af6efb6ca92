//! One tokio runtime per process for every client, blocking and async.
//!
//! A forked child inherits the parent's runtime without its threads, so the
//! first call in a new process (a new `getpid()`) builds a fresh runtime;
//! the inherited one is leaked, as dropping it would wait for threads that
//! no longer exist. Clients rebuild their HTTP connection pools the same
//! way (`client::Core::sdk`).

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime as GenericRuntime};
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime.
pub fn get() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    match *slot {
        Some((owner, rt)) if owner == pid => rt,
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                // An SDK waits on sockets; two threads carry plenty.
                .worker_threads(2)
                .thread_name("qlaud-io")
                .enable_all()
                .build()
                .expect("the OS lets us start threads");
            let rt: &'static Runtime = Box::leak(Box::new(rt));
            *slot = Some((pid, rt));
            rt
        }
    }
}

/// Awaitables whose task (or the blocking call that hands its result to
/// asyncio) has not finished on the runtime yet. Such work still takes the
/// GIL after the awaiting coroutine may already have moved on; if the interpreter is finalizing by then, taking or releasing the GIL
/// on that thread aborts the process. [`drain`] runs at exit to wait for
/// them.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits (at most `limit`) until every awaitable's task has finished; called
/// from `atexit` with the GIL released, before the interpreter finalizes.
pub fn drain(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `pyo3_async_runtimes`' view of [`get`], for awaitables on asyncio.
pub struct QlaudRuntime;

/// Wraps tokio's join error for `pyo3_async_runtimes` (orphan rules).
pub struct TaskFailed(tokio::task::JoinError);

impl JoinError for TaskFailed {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

/// A join handle whose error is [`TaskFailed`].
pub struct Handle(tokio::task::JoinHandle<()>);

impl Future for Handle {
    type Output = Result<(), TaskFailed>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(TaskFailed)
    }
}

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

impl GenericRuntime for QlaudRuntime {
    type JoinError = TaskFailed;
    type JoinHandle = Handle;

    fn spawn<F>(fut: F) -> Handle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Handle(get().spawn(async move {
            let _done = InFlight;
            fut.await
        }))
    }

    fn spawn_blocking<F>(f: F) -> Handle
    where
        F: FnOnce() + Send + 'static,
    {
        // pyo3_async_runtimes hands each result to asyncio from a blocking
        // thread that takes the GIL after the awaitable's task has ended:
        // counted too, or `drain` could return while one is about to take
        // it (the task counts it before it ends, so the count never dips).
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Handle(get().spawn_blocking(move || {
            let _done = InFlight;
            f()
        }))
    }
}

impl ContextExt for QlaudRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}

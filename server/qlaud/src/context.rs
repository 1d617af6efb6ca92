//! State shared by every request handler.

use std::sync::Arc;

use http::HeaderMap;

use crate::auth::{self, AuthCache, Caller};
use crate::billing::alerts::Alerts;
use crate::clock::Clock;
use crate::error::Result;
use crate::gateway::Gateway;
use crate::meter::{Meter, Recorder};
use crate::metrics::Metrics;
use crate::outbound::{Outbound, Policy};
use crate::shutdown::Drain;
use crate::store::Store;

/// Cheap to clone: a streamed thread turn takes one into its task.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub gateway: Arc<Gateway>,
    /// Admission and settlement of every metered call.
    pub meter: Arc<Meter>,
    pub auth_cache: Arc<AuthCache>,
    /// The time billing goes by.
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// Every call to a URL a tenant gave qlaud (spend alerts).
    pub outbound: Arc<Outbound>,
    /// Wakes this process's job runner when a job is submitted here.
    pub jobs: Arc<tokio::sync::Notify>,
    /// The shutdown's state, and the stream tasks it waits for.
    pub drain: Arc<Drain>,
    /// Who may read `/metrics`.
    pub metrics_access: crate::metrics::Access,
    /// The embedding model and the vector index.
    pub search: Arc<crate::search::Search>,
}

impl Context {
    pub fn new(store: Store, gateway: Gateway, clock: Arc<Clock>, outbound: Policy) -> Context {
        let outbound = Arc::new(Outbound::new(outbound));
        let hook = Arc::new(Alerts { store: store.clone(), outbound: outbound.clone() });
        let metrics = Arc::<Metrics>::default();
        let auth_cache = Arc::<AuthCache>::default();
        let meter = Arc::new(Meter {
            store: store.clone(),
            recorder: Arc::new(Recorder::start(store.clone(), hook.clone())),
            clock: clock.clone(),
            metrics: metrics.clone(),
            instance_id: crate::store::new_id("inst"),
            auth_cache: auth_cache.clone(),
            hook,
            rate_limits: gateway.catalog.rate_limits.clone(),
            leases: Default::default(),
        });
        let gateway = Arc::new(gateway);
        Context {
            meter,
            auth_cache,
            metrics,
            outbound,
            clock,
            store,
            gateway,
            jobs: Arc::default(),
            drain: Arc::default(),
            metrics_access: Default::default(),
            search: Arc::new(crate::search::Search::off()),
        }
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller> {
        auth::authenticate(&self.store, &self.auth_cache, headers).await
    }

    /// Authenticates and requires an admin key.
    pub async fn authenticate_admin(&self, headers: &HeaderMap) -> Result<Caller> {
        let caller = self.authenticate(headers).await?;
        caller.require_admin()?;
        Ok(caller)
    }
}

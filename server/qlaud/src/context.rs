//! State shared by every request handler.

use std::sync::Arc;

use http::HeaderMap;

use crate::auth::{self, AuthCache, Caller};
use crate::clock::Clock;
use crate::error::Result;
use crate::gateway::Gateway;
use crate::meter::Recorder;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Context {
    pub store: Store,
    pub gateway: Gateway,
    pub recorder: Arc<Recorder>,
    pub auth_cache: AuthCache,
    /// The time billing goes by.
    pub clock: Arc<Clock>,
    /// This process, in the ledger's reservations and heartbeats.
    pub instance_id: String,
    pub metrics: Arc<Metrics>,
    /// For outgoing webhooks (spend alerts).
    pub webhook_http: reqwest::Client,
}

impl Context {
    pub fn new(store: Store, gateway: Gateway, clock: Arc<Clock>) -> Context {
        // Outgoing webhooks are bounded: a slow receiver never holds qlaud.
        let webhook_http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("the TLS backend initialises");
        Context {
            recorder: Arc::new(Recorder::start(store.clone(), webhook_http.clone())),
            auth_cache: AuthCache::default(),
            instance_id: crate::store::new_id("inst"),
            metrics: Arc::default(),
            webhook_http,
            clock,
            store,
            gateway,
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

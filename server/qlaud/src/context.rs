//! State shared by every request handler.

use http::HeaderMap;

use crate::auth::{self, Caller};
use crate::error::Result;
use crate::store::Store;

pub struct Context {
    pub store: Store,
}

impl Context {
    pub fn new(store: Store) -> Context {
        Context { store }
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller> {
        auth::authenticate(&self.store, headers).await
    }

    /// Authenticates and requires an admin key.
    pub async fn authenticate_admin(&self, headers: &HeaderMap) -> Result<Caller> {
        let caller = self.authenticate(headers).await?;
        caller.require_admin()?;
        Ok(caller)
    }
}

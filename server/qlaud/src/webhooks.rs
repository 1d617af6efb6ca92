//! The tenant's side of outgoing webhooks: its signing secret.

use qlaud_api::WebhookSigningSecret;

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::outbound::WebhookSecret;
use crate::store::now_ms;

/// Replaces the tenant's signing secret and returns the new one, the only
/// time it is shown. Nothing caches it, so every process signs with the new
/// secret from its next delivery on.
pub async fn rotate_secret(ctx: &Context, caller: &Caller) -> Result<WebhookSigningSecret> {
    let secret = WebhookSecret::generate();
    let now = now_ms();
    ctx.store.replace_webhook_secret(&caller.tenant_id, &secret, now).await?;
    tracing::info!(tenant_id = %caller.tenant_id, "webhook signing secret rotated");
    let created_at = chrono::DateTime::from_timestamp_millis(now)
        .ok_or_else(|| Error::Internal("the clock is out of range".into()))?;
    Ok(WebhookSigningSecret { secret, created_at })
}

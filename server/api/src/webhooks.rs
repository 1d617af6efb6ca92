//! Wire types of outgoing webhooks: the tenant's signing secret.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tenant's outgoing webhook signing secret, shown once.
///
/// Every call qlaud makes to a URL the tenant gave it (spend alerts, tool
/// and job webhooks) carries the Standard Webhooks headers `webhook-id`,
/// `webhook-timestamp` and `webhook-signature: v1,<base64>`, the
/// HMAC-SHA256 of `"{webhook-id}.{webhook-timestamp}.{body}"` keyed with
/// the base64-decoded part of this secret after `whsec_`. Any Standard
/// Webhooks library verifies it given the secret as is. Not to be confused
/// with `webhook_secret` in the billing settings, which verifies what
/// Stripe sends to qlaud.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct WebhookSigningSecret {
    /// `whsec_` followed by the base64 of 32 random bytes. Store it now:
    /// qlaud never shows it again.
    pub secret: String,
    /// When this secret was made; deliveries are signed with it from then on.
    pub created_at: DateTime<Utc>,
}

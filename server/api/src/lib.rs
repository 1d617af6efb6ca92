//! qlaud's public HTTP API as one dropshot trait.
//!
//! The trait is the contract: the server implements it, and the OpenAPI
//! document (and through it the SDKs) is generated from its stub description
//! without building the implementation. operationIds are the method names.

pub mod billing;
pub mod body;
pub mod conversations;
pub mod dropin;
pub mod errors;
pub mod jobs;
pub mod keys;
pub mod media;
pub mod models;
pub mod money;
pub mod requests;
pub mod responses;
pub mod search;
pub mod text;
pub mod threads;
pub mod tools;
pub mod usage;
pub mod webhooks;

use serde_json::Value;

use dropshot::{
    HttpError, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted, HttpResponseHeaders,
    HttpResponseOk, PaginationParams, Path, Query, RequestContext, ResultsPage,
};

pub use billing::*;
pub use body::{BytesBody, JsonBody, ModelBody};
pub use conversations::*;
pub use dropin::*;
pub use errors::{AnthropicError, OpenAiError};
pub use jobs::*;
pub use keys::*;
pub use media::*;
pub use models::*;
pub use money::Usd;
pub use requests::*;
pub use responses::*;
pub use search::*;
pub use threads::*;
pub use tools::*;
pub use usage::*;
pub use webhooks::*;

/// Body limit of qlaud's own JSON endpoints (keys, usage, …). Generous for
/// metadata, small enough that a runaway client cannot tie up memory.
pub const ADMIN_BODY_MAX_BYTES: usize = 64 * 1024;

/// The API. Every operation authenticates with a qlaud key sent as
/// `x-api-key: <secret>` or `Authorization: Bearer <secret>`.
#[dropshot::api_description]
pub trait QlaudApi {
    /// Server state shared by the handlers.
    type Context: Send + Sync + 'static;

    /// Mint a key.
    ///
    /// Creates a key for one end user (or, with `scope: admin`, another admin
    /// key). The answer carries the secret, which is never shown again.
    /// Requires an admin key.
    #[endpoint {
        method = POST,
        path = "/v1/keys",
        tags = ["keys"],
        request_body_max_bytes = ADMIN_BODY_MAX_BYTES,
    }]
    async fn mint_key(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<MintKeyRequest>,
    ) -> Result<HttpResponseCreated<KeyWithSecret>, HttpError>;

    /// List keys.
    ///
    /// The tenant's keys, a page at a time: oldest first, or by name, last
    /// use or spend (`sort`, `direction`), optionally only those matching
    /// `search`; revoked keys only with `include_revoked=true`. Requires an
    /// admin key.
    #[endpoint {
        method = GET,
        path = "/v1/keys",
        tags = ["keys"],
    }]
    async fn list_keys(
        rqctx: RequestContext<Self::Context>,
        query: Query<PaginationParams<KeyListFilter, KeyPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Key>>, HttpError>;

    /// Fetch a key.
    ///
    /// Revoked keys can still be fetched, for their history. Requires an
    /// admin key.
    #[endpoint {
        method = GET,
        path = "/v1/keys/{key_id}",
        tags = ["keys"],
    }]
    async fn get_key(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<Key>, HttpError>;

    /// Change a key.
    ///
    /// Changes its name, cap, period, metadata or disabled flag; fields left
    /// out stay as they are. A new cap applies at once. Requires an admin key.
    #[endpoint {
        method = PATCH,
        path = "/v1/keys/{key_id}",
        tags = ["keys"],
        request_body_max_bytes = ADMIN_BODY_MAX_BYTES,
    }]
    async fn update_key(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
        body: JsonBody<UpdateKeyRequest>,
    ) -> Result<HttpResponseOk<Key>, HttpError>;

    /// Revoke a key.
    ///
    /// The key stops authenticating at once and for good; its usage history
    /// stays. With `purge=true` its data goes too, as `delete_key_data`
    /// deletes it. A key cannot revoke itself. Requires an admin key.
    #[endpoint {
        method = DELETE,
        path = "/v1/keys/{key_id}",
        tags = ["keys"],
    }]
    async fn revoke_key(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
        query: Query<RevokeKeyQuery>,
    ) -> Result<HttpResponseDeleted, HttpError>;

    /// Delete a key's data.
    ///
    /// For an end user's deletion request (GDPR and the like): deletes the
    /// key's threads with their messages, stored responses and search
    /// vectors, and its jobs with their results, for good. Usage and the
    /// request log (what billing needs: counts and costs, never content)
    /// stay; so does the key itself (revoke it with `purge=true` to do
    /// both). Another tenant's key answers 404. Requires an admin key.
    #[endpoint {
        method = DELETE,
        path = "/v1/keys/{key_id}/data",
        tags = ["keys"],
    }]
    async fn delete_key_data(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<KeyDataDeleted>, HttpError>;

    /// Rotate a key's secret.
    ///
    /// Issues a new secret for the same key id; the old secret stops working
    /// at once. Cap, spend and history are kept. Requires an admin key.
    #[endpoint {
        method = POST,
        path = "/v1/keys/{key_id}/rotate",
        tags = ["keys"],
    }]
    async fn rotate_key(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<KeyWithSecret>, HttpError>;

    /// Report usage.
    ///
    /// Spend and tokens per key, per model and per UTC day over a window
    /// (default: the current calendar month), ready to bill. An admin key
    /// sees all of its tenant's keys; a standard key sees only itself.
    #[endpoint {
        method = GET,
        path = "/v1/usage",
        tags = ["usage"],
    }]
    async fn get_usage(
        rqctx: RequestContext<Self::Context>,
        query: Query<UsageQuery>,
    ) -> Result<HttpResponseOk<UsageReport>, HttpError>;

    /// List requests.
    ///
    /// The request log, newest first, a page at a time: per model request
    /// its key, model, tokens, cost, status, latency and time. Filter by
    /// key, model, status and time. An admin key sees every key of its
    /// tenant; a standard key sees only its own requests.
    #[endpoint {
        method = GET,
        path = "/v1/requests",
        tags = ["usage"],
    }]
    async fn list_requests(
        rqctx: RequestContext<Self::Context>,
        query: Query<PaginationParams<RequestLogFilter, RequestLogPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<RequestLogEntry>>, HttpError>;

    /// Update billing settings.
    ///
    /// Sets the tenant's Stripe secret key, webhook signing secret, meter
    /// event name and alert URL. Secrets are write-only. Requires an admin
    /// key.
    #[endpoint {
        method = PATCH,
        path = "/v1/billing/settings",
        tags = ["billing"],
        request_body_max_bytes = ADMIN_BODY_MAX_BYTES,
    }]
    async fn update_billing_settings(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<BillingSettingsUpdate>,
    ) -> Result<HttpResponseOk<BillingSettings>, HttpError>;

    /// Fetch billing settings.
    ///
    /// Secrets show only as set or not; `stripe_push` says what was pushed
    /// to Stripe and how the last push run went. Requires an admin key.
    #[endpoint {
        method = GET,
        path = "/v1/billing/settings",
        tags = ["billing"],
    }]
    async fn get_billing_settings(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<BillingSettings>, HttpError>;

    /// Receive a Stripe webhook.
    ///
    /// Stripe posts here (no qlaud key: the `Stripe-Signature` header is
    /// verified against the tenant's webhook secret, with a 300 s
    /// tolerance). `invoice.payment_failed`, `customer.subscription.deleted`
    /// and subscriptions turning `unpaid` or `canceled` suspend every key of
    /// the customer (`metadata.stripe_customer_id`); `invoice.paid`
    /// reinstates them. Events are deduplicated on their id, and an older
    /// event never undoes a newer one.
    #[endpoint {
        method = POST,
        path = "/v1/billing/stripe/webhook/{tenant_id}",
        tags = ["billing"],
        request_body_max_bytes = 1024 * 1024,
    }]
    async fn stripe_webhook(
        rqctx: RequestContext<Self::Context>,
        path: Path<TenantPath>,
        body: BytesBody,
    ) -> Result<HttpResponseOk<StripeWebhookResult>, HttpError>;

    /// Export meter events.
    ///
    /// A month's spend per key as Stripe Billing Meter events, for keys
    /// whose metadata has a `stripe_customer_id`. Requires an admin key.
    #[endpoint {
        method = GET,
        path = "/v1/billing/meter_events",
        tags = ["billing"],
    }]
    async fn export_meter_events(
        rqctx: RequestContext<Self::Context>,
        query: Query<MeterExportQuery>,
    ) -> Result<HttpResponseOk<MeterExport>, HttpError>;

    /// Preview a key's invoice.
    ///
    /// A month's spend as line items (model, unit, quantity, unit price,
    /// amount) whose total equals `get_usage` for the key and month to the
    /// micro-dollar. Requires an admin key.
    #[endpoint {
        method = GET,
        path = "/v1/billing/invoice_preview",
        tags = ["billing"],
    }]
    async fn get_invoice_preview(
        rqctx: RequestContext<Self::Context>,
        query: Query<InvoicePreviewQuery>,
    ) -> Result<HttpResponseOk<InvoicePreview>, HttpError>;

    /// List a key's billing events.
    ///
    /// Every suspension and reinstatement of the key by a Stripe event,
    /// oldest first. Requires an admin key.
    #[endpoint {
        method = GET,
        path = "/v1/keys/{key_id}/billing_events",
        tags = ["keys"],
    }]
    async fn list_key_billing_events(
        rqctx: RequestContext<Self::Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<Vec<KeyBillingEvent>>, HttpError>;

    /// Create a thread.
    ///
    /// A conversation qlaud keeps server-side, with its metadata, optional
    /// system prompt, default model and default truncation. It belongs to
    /// the key that creates it (an admin key may name another key of its
    /// tenant as `key_id`); that key pays for its turns. Any key may call
    /// it.
    #[endpoint {
        method = POST,
        path = "/v1/threads",
        tags = ["threads"],
        request_body_max_bytes = THREAD_BODY_MAX_BYTES,
    }]
    async fn create_thread(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<CreateThreadRequest>,
    ) -> Result<HttpResponseCreated<Thread>, HttpError>;

    /// List threads.
    ///
    /// Newest first by default (`order=asc` for oldest first), a page at a
    /// time (`limit` 1 to 100, default 20); `after` and `before` bound the
    /// listing by thread ids. A standard key sees its own threads; an admin
    /// key sees all of its tenant's, or one key's with `key_id`.
    #[endpoint {
        method = GET,
        path = "/v1/threads",
        tags = ["threads"],
    }]
    async fn list_threads(
        rqctx: RequestContext<Self::Context>,
        query: Query<PaginationParams<ThreadListFilter, ThreadPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Thread>>, HttpError>;

    /// Fetch a thread.
    ///
    /// A standard key may fetch only its own threads; any other id answers
    /// 404, exactly as an id that never existed. An admin key may fetch any
    /// thread of its tenant.
    #[endpoint {
        method = GET,
        path = "/v1/threads/{thread_id}",
        tags = ["threads"],
    }]
    async fn get_thread(
        rqctx: RequestContext<Self::Context>,
        path: Path<ThreadPath>,
    ) -> Result<HttpResponseOk<Thread>, HttpError>;

    /// Change a thread.
    ///
    /// Changes its metadata, system prompt, default model or default
    /// truncation; fields left out stay as they are, and an empty `system`
    /// or `model` removes it. The owner key or an admin key of its tenant
    /// may change it.
    #[endpoint {
        method = PATCH,
        path = "/v1/threads/{thread_id}",
        tags = ["threads"],
        request_body_max_bytes = THREAD_BODY_MAX_BYTES,
    }]
    async fn update_thread(
        rqctx: RequestContext<Self::Context>,
        path: Path<ThreadPath>,
        body: JsonBody<UpdateThreadRequest>,
    ) -> Result<HttpResponseOk<Thread>, HttpError>;

    /// Delete a thread.
    ///
    /// Deletes the thread with all of its messages, for good. Usage and
    /// the request log keep what its turns cost. The owner key or an admin
    /// key of its tenant may delete it.
    #[endpoint {
        method = DELETE,
        path = "/v1/threads/{thread_id}",
        tags = ["threads"],
    }]
    async fn delete_thread(
        rqctx: RequestContext<Self::Context>,
        path: Path<ThreadPath>,
    ) -> Result<HttpResponseOk<ThreadDeleted>, HttpError>;

    /// Add a turn to a thread.
    ///
    /// Send only the user's new message: qlaud loads the thread's history,
    /// calls the model (any provider: one thread may switch between Claude
    /// and GPT), runs the registered tools the model calls (calling each
    /// tool's webhook, signed, and calling the model again with the
    /// results, up to `max_tool_rounds`), stores the user's message and
    /// every message of the turn, and answers with the assistant's final
    /// message. Each model round is metered to the key that owns the
    /// thread, also when an admin key posts. When the owner's cap runs out
    /// between rounds, the turn ends with `stop_reason: "spend_cap_reached"`
    /// and what was spent; when it leaves no room for the first round, 402
    /// and nothing is stored. An `Idempotency-Key` header makes a retried
    /// request answer with the first one's message, run and billed once.
    /// The answer's `qlaud-cost-micros` header is the whole turn's cost.
    #[endpoint {
        method = POST,
        path = "/v1/threads/{thread_id}/messages",
        tags = ["threads"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_thread_message(
        rqctx: RequestContext<Self::Context>,
        path: Path<ThreadPath>,
        body: ModelBody<CreateThreadMessageRequest>,
    ) -> Result<ModelResponse<ThreadMessage>, HttpError>;

    /// List a thread's messages.
    ///
    /// Newest first by default (`order=asc` for oldest first), a page at a
    /// time (`limit` 1 to 100, default 20); `after` and `before` bound the
    /// listing by message ids (`after` with `order=asc` reads what was
    /// added since a message). Who may read them: as for `get_thread`.
    #[endpoint {
        method = GET,
        path = "/v1/threads/{thread_id}/messages",
        tags = ["threads"],
    }]
    async fn list_thread_messages(
        rqctx: RequestContext<Self::Context>,
        path: Path<ThreadPath>,
        query: Query<PaginationParams<ThreadMessageListFilter, ThreadMessagePageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<ThreadMessage>>, HttpError>;
    /// Search thread turns by meaning.
    ///
    /// Every stored turn (the text of user and assistant messages) is
    /// embedded in the background by the server's embedding model, and
    /// this answers the turns closest in meaning to `query`, best first,
    /// with their cosine similarity (-1 to 1). A standard key searches only
    /// its own threads (naming another `key_id` is 403); an admin key
    /// searches its tenant's, optionally one key's. No parameter reaches
    /// another tenant's turns: a `thread_id` outside the caller's reach is
    /// 404. A turn is found once it is embedded, usually within a second
    /// of being stored. Each search is metered to the caller as one call of
    /// the local embedding model `all-minilm-l6-v2` for its query's tokens
    /// ($0 unless the operator prices that model); a key whose cap cannot
    /// cover it gets 402. Answers 503 while the embedding model is still
    /// loading (fetched on first start), and on a PostgreSQL store without
    /// the pgvector extension.
    #[endpoint {
        method = POST,
        path = "/v1/search",
        tags = ["search"],
        request_body_max_bytes = SEARCH_BODY_MAX_BYTES,
    }]
    async fn search(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<SearchRequest>,
    ) -> Result<HttpResponseOk<SearchResults>, HttpError>;

    /// Rotate the webhook signing secret.
    ///
    /// Makes a new outgoing signing secret (`whsec_…`) for the tenant and
    /// returns it, once. Every call qlaud makes to the tenant's URLs (spend
    /// alerts, tool and job webhooks) is signed with it from this moment:
    /// the old secret signs nothing more, on every qlaud process. A tenant
    /// created before this operation existed has a secret nobody has seen:
    /// call this to learn one. Requires an admin key; a standard key gets
    /// 403 (`Forbidden`), a missing or unknown key 401.
    #[endpoint {
        method = POST,
        path = "/v1/webhooks/secret/rotate",
        tags = ["webhooks"],
    }]
    async fn rotate_webhook_secret(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<WebhookSigningSecret>, HttpError>;

    /// Register a tool.
    ///
    /// Registers a webhook tool for the tenant: thread turns may name it,
    /// and when the model calls it qlaud posts the call to `webhook_url`
    /// and hands the answer back to the model. The name must be unused in
    /// the tenant: a taken name answers 409 and changes nothing. A bad
    /// name, description, schema, URL or timeout, or an unknown field,
    /// answers 400 and stores nothing. Requires an admin key (403
    /// otherwise).
    #[endpoint {
        method = POST,
        path = "/v1/tools",
        tags = ["tools"],
        request_body_max_bytes = TOOL_BODY_MAX_BYTES,
    }]
    async fn create_tool(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<CreateToolRequest>,
    ) -> Result<HttpResponseCreated<Tool>, HttpError>;

    /// List tools.
    ///
    /// The tenant's tools, newest first by default (`order=asc` for oldest
    /// first), a page at a time (`limit` 1 to 100, default 20); `after`
    /// and `before` bound the listing by tool ids (an unknown id answers
    /// 400). Requires an admin key (403 otherwise).
    #[endpoint {
        method = GET,
        path = "/v1/tools",
        tags = ["tools"],
    }]
    async fn list_tools(
        rqctx: RequestContext<Self::Context>,
        query: Query<PaginationParams<ToolListFilter, ToolPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Tool>>, HttpError>;

    /// Fetch a tool.
    ///
    /// Another tenant's tool answers 404, exactly as an id that never
    /// existed. Requires an admin key (403 otherwise).
    #[endpoint {
        method = GET,
        path = "/v1/tools/{tool_id}",
        tags = ["tools"],
    }]
    async fn get_tool(
        rqctx: RequestContext<Self::Context>,
        path: Path<ToolPath>,
    ) -> Result<HttpResponseOk<Tool>, HttpError>;

    /// Delete a tool.
    ///
    /// Deletes the tool for good; its name is free again at once. Turns
    /// that name it afterwards no longer find it. Another tenant's tool
    /// answers 404, as a missing one. Requires an admin key (403
    /// otherwise).
    #[endpoint {
        method = DELETE,
        path = "/v1/tools/{tool_id}",
        tags = ["tools"],
    }]
    async fn delete_tool(
        rqctx: RequestContext<Self::Context>,
        path: Path<ToolPath>,
    ) -> Result<HttpResponseOk<ToolDeleted>, HttpError>;

    /// Submit a job.
    ///
    /// Runs one call of a synchronous JSON endpoint in the background:
    /// `endpoint` is its path (`/v1/messages`, `/v1/chat/completions`,
    /// `/v1/responses`, `/v1/embeddings` or
    /// `/v1/threads/{thread_id}/messages`) and `body` exactly its request
    /// body. The body is checked now: an unknown endpoint, a body the
    /// endpoint would refuse as malformed, an unknown model, `"stream":
    /// true`, or a `webhook_url` the outgoing webhook policy refuses answer
    /// 400 and create nothing. The call's worst case (as the synchronous
    /// call would reserve it) is held against the key's spend cap from now
    /// until the job runs or is cancelled, so a queue of jobs can never
    /// commit more than the cap: a job the budget cannot hold is refused
    /// with 402 (`spend_cap_reached`), as is a suspended key. Answers 202
    /// with the job (`status: queued`). The call is made with the
    /// submitting key's identity and metered exactly like the synchronous
    /// call, on the budget held for it. An `Idempotency-Key` header makes a retried
    /// submission answer with the first one's job (a different request
    /// with the same key is 400). Any key may call it; the job belongs to
    /// that key.
    #[endpoint {
        method = POST,
        path = "/v1/jobs",
        tags = ["jobs"],
        request_body_max_bytes = JOB_BODY_MAX_BYTES,
    }]
    async fn create_job(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<CreateJobRequest>,
    ) -> Result<HttpResponseAccepted<Job>, HttpError>;

    /// List jobs.
    ///
    /// Newest first, a page at a time (`limit` 1 to 100, default 20),
    /// optionally only those in one `status`. A standard key sees its own
    /// jobs; an admin key all of its tenant's, or one key's with `key_id`.
    #[endpoint {
        method = GET,
        path = "/v1/jobs",
        tags = ["jobs"],
    }]
    async fn list_jobs(
        rqctx: RequestContext<Self::Context>,
        query: Query<PaginationParams<JobListFilter, JobPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Job>>, HttpError>;

    /// Fetch a job.
    ///
    /// Its status, timestamps and, once it ended, the endpoint's answer
    /// (or error body, in that endpoint's shape), usage and cost. While it
    /// is queued or in progress, `poll_after_ms` and the
    /// `qlaud-poll-after-ms` header say how long to wait before asking
    /// again. A standard key may fetch only its own jobs; any other id
    /// answers 404, exactly as an id that never existed. An admin key may
    /// fetch any job of its tenant.
    #[endpoint {
        method = GET,
        path = "/v1/jobs/{job_id}",
        tags = ["jobs"],
    }]
    async fn get_job(
        rqctx: RequestContext<Self::Context>,
        path: Path<JobPath>,
    ) -> Result<HttpResponseHeaders<HttpResponseOk<Job>, JobPollHeaders>, HttpError>;

    /// Cancel a job.
    ///
    /// A queued job is cancelled at once: its call is never sent, costs
    /// nothing, and the budget held for it is given back. Cancelling a job in progress is best effort: if its call
    /// was not sent yet it never is; if it was, the call runs to its end
    /// (the provider bills it whatever qlaud does) and is billed for what
    /// it used, and the job ends `cancelled` with that answer kept.
    /// Cancelling a job that already ended changes nothing and answers it
    /// as it is. Who may cancel: as for `get_job`.
    #[endpoint {
        method = POST,
        path = "/v1/jobs/{job_id}/cancel",
        tags = ["jobs"],
    }]
    async fn cancel_job(
        rqctx: RequestContext<Self::Context>,
        path: Path<JobPath>,
    ) -> Result<HttpResponseOk<Job>, HttpError>;

    /// Liveness and store reachability (operational; not in the published spec).
    #[endpoint {
        method = GET,
        path = "/health",
        unpublished = true,
    }]
    async fn health(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError>;

    /// Prometheus metrics (operational; not in the published spec).
    #[endpoint {
        method = GET,
        path = "/metrics",
        unpublished = true,
    }]
    async fn metrics(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError>;

    /// Create a message (Anthropic Messages API).
    ///
    /// Anthropic's `POST /v1/messages`, for any model qlaud serves: Claude
    /// models pass through; other models are translated. With
    /// `"stream": true` the answer is `text/event-stream` with Anthropic's
    /// events. Fields qlaud does not know pass to the provider unchanged.
    /// Errors use Anthropic's error shape. Any key may call it.
    #[endpoint {
        method = POST,
        path = "/v1/messages",
        tags = ["models"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_message(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<MessagesRequest>,
    ) -> Result<ModelResponse<Message>, AnthropicError>;

    /// Count a message's input tokens (Anthropic's count_tokens).
    ///
    /// Anthropic's `POST /v1/messages/count_tokens` (also called as
    /// `?beta=true`, as Claude Code does; query parameters are ignored), for
    /// any model qlaud serves, answering `{"input_tokens": N}`. Claude
    /// models: the request is forwarded to the provider's own count_tokens
    /// (model renamed to the provider's id, `anthropic-version` and
    /// `anthropic-beta` passed on, every other field unchanged) and its
    /// count is returned. Other models: an estimate counted locally with
    /// the model family's tokenizer (o200k_base for GPT-5.x, GPT-4o and
    /// unknown families) over the text of `system`, each message's text
    /// blocks, `tool_use` blocks (name and input as JSON), `tool_result`
    /// content, text documents and thinking, and each tool definition as
    /// JSON; plus 3 tokens per message, 1 per tool call and 3 for the
    /// reply's priming; each image counts 765 tokens (a 1024×1024 image
    /// at high detail). The offline `echo` model counts by its own billing
    /// rule. Counting is free: it is not metered and not capped, so a key
    /// whose spend cap is reached can still count; a suspended, revoked or
    /// disabled key cannot. Authenticates like `POST /v1/messages`, and
    /// errors use Anthropic's error shape (404 `not_found_error` with code
    /// `model_not_found` for an unknown model). Any key may call it.
    #[endpoint {
        method = POST,
        path = "/v1/messages/count_tokens",
        tags = ["models"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn count_message_tokens(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<MessageTokensRequest>,
    ) -> Result<HttpResponseOk<MessageTokensCount>, AnthropicError>;

    /// Create a chat completion (OpenAI Chat Completions API).
    ///
    /// OpenAI's `POST /v1/chat/completions`, for any model qlaud serves. With
    /// `"stream": true` the answer is `text/event-stream` with OpenAI's
    /// chunks and a final `data: [DONE]`. Fields qlaud does not know pass to
    /// the provider unchanged. Errors use OpenAI's error shape. Any key may
    /// call it.
    #[endpoint {
        method = POST,
        path = "/v1/chat/completions",
        tags = ["models"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_chat_completion(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<ChatCompletionRequest>,
    ) -> Result<ModelResponse<ChatCompletion>, OpenAiError>;

    /// Create embeddings.
    ///
    /// OpenAI's Embeddings API for the embedding models in the catalog
    /// (`kind = "embedding"`), metered and capped like every model call:
    /// the input's worst case is reserved before the provider is called,
    /// and the call is settled from the provider's `usage`. Errors use
    /// OpenAI's error body; a spent cap is 402.
    #[endpoint {
        method = POST,
        path = "/v1/embeddings",
        tags = ["models"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_embedding(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<EmbeddingRequest>,
    ) -> Result<ModelResponse<EmbeddingList>, OpenAiError>;

    /// Create a response (OpenAI Responses API).
    ///
    /// OpenAI's `POST /v1/responses`, for any model qlaud serves: GPT models
    /// pass through to the provider's own Responses endpoint (always with
    /// `store: false`); other models are translated. With `"stream": true`
    /// the answer is `text/event-stream` with the typed events
    /// (`response.created`, `response.output_text.delta`, …,
    /// `response.completed` whose usage carries `cost_micros`).
    /// Response state is qlaud's, for every model (the provider is always
    /// called with `store: false`): with `store` (the default) the input
    /// and output items are kept in a thread under the response's id;
    /// `previous_response_id` sends a stored response's conversation before
    /// `input` (404 `previous_response_not_found` for a response the key
    /// does not reach); `conversation` sends a conversation's items first
    /// and adds the new ones to it (404 `conversation_not_found`); the two
    /// together are 400. The loaded history is part of the prompt: it is
    /// reserved against the key's cap and billed like any input. A streamed
    /// response is kept once its last event has been sent, before the
    /// stream closes. Fields qlaud does not know pass to GPT models
    /// unchanged. Errors use OpenAI's error shape. Any key may call it.
    #[endpoint {
        method = POST,
        path = "/v1/responses",
        tags = ["models"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_response(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<ResponsesRequest>,
    ) -> Result<ModelResponse<ResponseObject>, OpenAiError>;

    /// Fetch a stored response.
    ///
    /// The response object exactly as it was returned (output, usage with
    /// `cost_micros`, `store`, `previous_response_id`), from qlaud's store.
    /// A standard key reaches only its own responses, an admin key its
    /// tenant's; any other id is 404, as one never stored (`store: false`)
    /// or deleted. Errors use OpenAI's error shape.
    #[endpoint {
        method = GET,
        path = "/v1/responses/{response_id}",
        tags = ["models"],
    }]
    async fn get_response(
        rqctx: RequestContext<Self::Context>,
        path: Path<ResponsePath>,
    ) -> Result<HttpResponseOk<ResponseObject>, OpenAiError>;

    /// Delete a stored response.
    ///
    /// Forgets the response: it can no longer be fetched or chained from.
    /// Its input and output items go too, unless it was made in a
    /// conversation (they are the conversation's items; delete them with
    /// `delete_conversation_item`); responses already chained from it lose
    /// that turn from their history. Who may delete: as for `get_response`.
    /// Answers `{id, object: "response.deleted", deleted: true}`.
    #[endpoint {
        method = DELETE,
        path = "/v1/responses/{response_id}",
        tags = ["models"],
    }]
    async fn delete_response(
        rqctx: RequestContext<Self::Context>,
        path: Path<ResponsePath>,
    ) -> Result<HttpResponseOk<ResponseDeleted>, OpenAiError>;

    /// Create a conversation (OpenAI Conversations API).
    ///
    /// A conversation is a thread seen through OpenAI's Conversations API:
    /// this creates a thread (owned by the calling key, visible under
    /// `/v1/threads` with the same id) holding `items` and `metadata`. Pass
    /// its id as `conversation` to `create_response` to answer from its
    /// items and add to them. Errors use OpenAI's error shape. Any key may
    /// call it.
    #[endpoint {
        method = POST,
        path = "/v1/conversations",
        tags = ["conversations"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_conversation(
        rqctx: RequestContext<Self::Context>,
        body: JsonBody<CreateConversationRequest>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError>;

    /// Fetch a conversation.
    ///
    /// Any thread can be fetched as a conversation. A standard key reaches
    /// only its own, an admin key its tenant's; any other id is 404.
    #[endpoint {
        method = GET,
        path = "/v1/conversations/{conversation_id}",
        tags = ["conversations"],
    }]
    async fn get_conversation(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationPath>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError>;

    /// Change a conversation's metadata.
    ///
    /// Replaces the metadata of the conversation (its thread). Who may:
    /// as for `get_conversation`.
    #[endpoint {
        method = POST,
        path = "/v1/conversations/{conversation_id}",
        tags = ["conversations"],
        request_body_max_bytes = ADMIN_BODY_MAX_BYTES,
    }]
    async fn update_conversation(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationPath>,
        body: JsonBody<UpdateConversationRequest>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError>;

    /// Delete a conversation.
    ///
    /// Deletes the conversation's thread with all of its items and the
    /// responses kept in it, as `delete_thread` does. Answers
    /// `{id, object: "conversation.deleted", deleted: true}`.
    #[endpoint {
        method = DELETE,
        path = "/v1/conversations/{conversation_id}",
        tags = ["conversations"],
    }]
    async fn delete_conversation(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationPath>,
    ) -> Result<HttpResponseOk<ConversationDeleted>, OpenAiError>;

    /// List a conversation's items.
    ///
    /// The thread's messages as Responses items (`message`,
    /// `function_call`, `function_call_output`), newest first by default
    /// (`order=asc` for oldest first), `limit` messages a page (1 to 100,
    /// default 20), continuing `after` an item id; OpenAI's list shape
    /// `{object: "list", data, first_id, last_id, has_more}`. A thread
    /// message holding several items (a thread turn's text and tool call)
    /// lists them together, in the message's order.
    #[endpoint {
        method = GET,
        path = "/v1/conversations/{conversation_id}/items",
        tags = ["conversations"],
    }]
    async fn list_conversation_items(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationPath>,
        query: Query<ConversationItemsQuery>,
    ) -> Result<HttpResponseOk<ConversationItemList>, OpenAiError>;

    /// Add items to a conversation.
    ///
    /// Appends `items` (1 to 20) to the conversation's thread, one message
    /// each, in order, and answers them in OpenAI's list shape. No model is
    /// called and nothing is billed. System and developer messages and
    /// reasoning items are not kept (400).
    #[endpoint {
        method = POST,
        path = "/v1/conversations/{conversation_id}/items",
        tags = ["conversations"],
        request_body_max_bytes = MODEL_BODY_MAX_BYTES,
    }]
    async fn create_conversation_items(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationPath>,
        body: JsonBody<CreateConversationItemsRequest>,
    ) -> Result<HttpResponseOk<ConversationItemList>, OpenAiError>;

    /// Fetch one item of a conversation.
    ///
    /// 404 for an item not in the conversation.
    #[endpoint {
        method = GET,
        path = "/v1/conversations/{conversation_id}/items/{item_id}",
        tags = ["conversations"],
    }]
    async fn get_conversation_item(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationItemPath>,
    ) -> Result<HttpResponseOk<ConversationItem>, OpenAiError>;

    /// Delete one item of a conversation.
    ///
    /// Deletes the thread message the item belongs to (with the other items
    /// of that message, when it holds several) and answers the
    /// conversation, as OpenAI does.
    #[endpoint {
        method = DELETE,
        path = "/v1/conversations/{conversation_id}/items/{item_id}",
        tags = ["conversations"],
    }]
    async fn delete_conversation_item(
        rqctx: RequestContext<Self::Context>,
        path: Path<ConversationItemPath>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError>;
    /// Transcribe audio (OpenAI Audio API).
    ///
    /// OpenAI's `POST /v1/audio/transcriptions`: a `multipart/form-data`
    /// upload (`file`, `model`, and any other part, passed through). The
    /// file's duration is read from its container before the provider is
    /// called: an unreadable file, one longer than the configured maximum
    /// (2 hours), or one whose header claims more than it holds is a 400,
    /// an upload over the configured limit (25 MB) a 413, with nothing
    /// billed or sent. `whisper-1` is billed in audio seconds (the
    /// provider's `usage.seconds`), the `gpt-4o-*-transcribe` models in
    /// tokens as the provider reports them; the worst case is reserved
    /// first, and 402 refuses a call it does not fit. The answer is the
    /// provider's (JSON, or text for `text`, `srt` and `vtt`), with
    /// `qlaud-cost-micros`. Errors use OpenAI's error shape.
    #[endpoint {
        method = POST,
        path = "/v1/audio/transcriptions",
        tags = ["media"],
        content_type = "multipart/form-data",
        request_body_max_bytes = MEDIA_BODY_MAX_BYTES,
    }]
    async fn create_transcription(
        rqctx: RequestContext<Self::Context>,
        body: RawBody<TranscriptionForm>,
    ) -> Result<ModelResponse<Value>, OpenAiError>;

    /// Translate audio into English (OpenAI Audio API).
    ///
    /// OpenAI's `POST /v1/audio/translations`, metered like
    /// `create_transcription`.
    #[endpoint {
        method = POST,
        path = "/v1/audio/translations",
        tags = ["media"],
        content_type = "multipart/form-data",
        request_body_max_bytes = MEDIA_BODY_MAX_BYTES,
    }]
    async fn create_translation(
        rqctx: RequestContext<Self::Context>,
        body: RawBody<TranscriptionForm>,
    ) -> Result<ModelResponse<Value>, OpenAiError>;

    /// Generate speech (OpenAI Audio API).
    ///
    /// OpenAI's `POST /v1/audio/speech`: the audio is streamed back as the
    /// provider produces it, never buffered whole. `tts-1` and `tts-1-hd`
    /// are billed per character of `input` (exact, known before the call);
    /// `gpt-4o-mini-tts` in tokens (input bounded by the text, audio
    /// output by the model's output limit). The cost is in the
    /// `qlaud-cost-micros` header. Errors use OpenAI's error shape; a spent
    /// cap is 402.
    #[endpoint {
        method = POST,
        path = "/v1/audio/speech",
        tags = ["media"],
        request_body_max_bytes = SPEECH_BODY_MAX_BYTES,
    }]
    async fn create_speech(
        rqctx: RequestContext<Self::Context>,
        body: ModelBody<SpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError>;

    /// Transcribe audio (Deepgram).
    ///
    /// Deepgram's `POST /v1/listen`: raw audio in the body (any audio
    /// content type), or JSON `{"url": …}` for audio Deepgram fetches;
    /// `model` and every other query parameter pass through. Authenticates
    /// also with Deepgram's `Authorization: Token <qlaud key>`. Billed in
    /// audio seconds × channels as the provider reports them
    /// (`metadata.duration`, `metadata.channels`); an upload's worst case
    /// is its own duration, a URL's the configured maximum.
    #[endpoint {
        method = POST,
        path = "/v1/listen",
        tags = ["media"],
        request_body_max_bytes = MEDIA_BODY_MAX_BYTES,
    }]
    async fn transcribe_deepgram(
        rqctx: RequestContext<Self::Context>,
        query: Query<ListenQuery>,
        body: RawBody<ListenUrl>,
    ) -> Result<ModelResponse<Value>, OpenAiError>;

    /// Generate speech (ElevenLabs).
    ///
    /// ElevenLabs' `POST /v1/text-to-speech/{voice_id}`; authenticates also
    /// with ElevenLabs' `xi-api-key: <qlaud key>`. Billed in characters
    /// (ElevenLabs' credits: the provider's `character-cost` header),
    /// reserved as the text's length × the model's credits per character.
    /// The audio is streamed back as it arrives.
    #[endpoint {
        method = POST,
        path = "/v1/text-to-speech/{voice_id}",
        tags = ["media"],
        request_body_max_bytes = SPEECH_BODY_MAX_BYTES,
    }]
    async fn create_elevenlabs_speech(
        rqctx: RequestContext<Self::Context>,
        path: Path<VoicePath>,
        query: Query<ElevenLabsQuery>,
        body: ModelBody<ElevenLabsSpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError>;

    /// Stream generated speech (ElevenLabs).
    ///
    /// ElevenLabs' `POST /v1/text-to-speech/{voice_id}/stream`, metered like
    /// `create_elevenlabs_speech`.
    #[endpoint {
        method = POST,
        path = "/v1/text-to-speech/{voice_id}/stream",
        tags = ["media"],
        request_body_max_bytes = SPEECH_BODY_MAX_BYTES,
    }]
    async fn stream_elevenlabs_speech(
        rqctx: RequestContext<Self::Context>,
        path: Path<VoicePath>,
        query: Query<ElevenLabsQuery>,
        body: ModelBody<ElevenLabsSpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError>;

    /// Create a video (OpenAI Videos API).
    ///
    /// OpenAI's `POST /v1/videos`: a `multipart/form-data` form (`prompt`,
    /// `model`, `seconds`, `size`, `input_reference`, and any other part,
    /// passed through), answered with the provider's video object (`id`,
    /// `status: "queued"`, …) to poll with `get_video`. Billed per second
    /// of video at the price of the size's tier (`video_seconds_720p`,
    /// `video_seconds_1024p`): `seconds` × that price is reserved first
    /// (402 when it does not fit, before the provider is called) and held
    /// until a `get_video` sees the outcome: `completed` settles at that
    /// price, `failed` at nothing. The reservation is in
    /// `qlaud-reserved-micros`. The provider is configurable (OpenAI
    /// retired its own Sora endpoint). Errors use OpenAI's error shape.
    #[endpoint {
        method = POST,
        path = "/v1/videos",
        tags = ["media"],
        content_type = "multipart/form-data",
        request_body_max_bytes = MEDIA_BODY_MAX_BYTES,
    }]
    async fn create_video(
        rqctx: RequestContext<Self::Context>,
        body: RawBody<VideoForm>,
    ) -> Result<ModelResponse<Value>, OpenAiError>;

    /// Fetch a video (OpenAI Videos API).
    ///
    /// OpenAI's `GET /v1/videos/{video_id}`: the provider's video object
    /// (`status`: `queued`, `in_progress`, `completed`, `failed`;
    /// `progress`). The first poll that sees `completed` or `failed`
    /// settles the video (its cost then in `qlaud-cost-micros`). A
    /// standard key sees only its own videos.
    #[endpoint {
        method = GET,
        path = "/v1/videos/{video_id}",
        tags = ["media"],
    }]
    async fn get_video(
        rqctx: RequestContext<Self::Context>,
        path: Path<VideoPath>,
    ) -> Result<ModelResponse<Value>, OpenAiError>;

    /// Download a video (OpenAI Videos API).
    ///
    /// OpenAI's `GET /v1/videos/{video_id}/content`: the MP4 (or the
    /// `thumbnail` / `spritesheet` image) streamed as the provider sends
    /// it. Not billed again.
    #[endpoint {
        method = GET,
        path = "/v1/videos/{video_id}/content",
        tags = ["media"],
    }]
    async fn get_video_content(
        rqctx: RequestContext<Self::Context>,
        path: Path<VideoPath>,
        query: Query<VideoContentQuery>,
    ) -> Result<BinaryResponse, OpenAiError>;

    /// List models.
    ///
    /// Every model qlaud serves, with its prices, in a shape that both the
    /// OpenAI and the Anthropic clients read. Any key may call it.
    #[endpoint {
        method = GET,
        path = "/v1/models",
        tags = ["models"],
    }]
    async fn list_models(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<ModelList>, HttpError>;

    /// Fetch a model.
    ///
    /// One model qlaud serves, as `GET /v1/models` lists it (OpenAI's and
    /// Anthropic's fields both), so `client.models.retrieve(…)` works on
    /// both official clients. An unknown model is a 404 whose body both
    /// clients read: Anthropic's error shape (`type: error`, `error.type:
    /// not_found_error`) whose `error` object also carries OpenAI's `code`
    /// (`model_not_found`), so each raises its own `NotFoundError`. Any key
    /// may call it.
    #[endpoint {
        method = GET,
        path = "/v1/models/{model_id}",
        tags = ["models"],
    }]
    async fn get_model(
        rqctx: RequestContext<Self::Context>,
        path: Path<ModelPath>,
    ) -> Result<HttpResponseOk<ModelInfo>, AnthropicError>;
}

/// The OpenAPI document of [`QlaudApi`], as published under `openapi/`.
pub fn openapi_document() -> serde_json::Value {
    let description =
        qlaud_api_mod::stub_api_description().expect("the API trait describes a valid API");
    let mut openapi = description.openapi(
        "qlaud",
        semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("crate version is semver"),
    );
    openapi
        .description(
            "qlaud is a billing gateway for AI apps: mint a key per end user, meter every \
             model request against it, enforce a hard spend cap and report spend per user. \
             Authenticate with a qlaud key as `x-api-key: <secret>` or \
             `Authorization: Bearer <secret>`. Errors of qlaud's own endpoints are JSON \
             objects with `message`, `error_code` and `request_id`.",
        )
        .license_name("Apache-2.0");
    let mut spec = openapi.json().expect("the OpenAPI document serializes");
    media::describe(&mut spec);
    spec
}

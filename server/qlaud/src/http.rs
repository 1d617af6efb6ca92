//! The HTTP entry points: `QlaudApi` implemented over the context. Handlers
//! stay short: authenticate, call the domain module, convert errors.

use dropshot::{
    Body, HttpError, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted,
    HttpResponseHeaders, HttpResponseOk, PaginationParams, Path, Query, RequestContext,
    ResultsPage,
};
use qlaud_api::{
    AnthropicError, BillingSettings, BillingSettingsUpdate, ChatCompletion, ChatCompletionRequest,
    EmbeddingList, EmbeddingRequest, InvoicePreview, InvoicePreviewQuery, Key, KeyBillingEvent,
    KeyListFilter, KeyPageSelector, KeyPath, KeyWithSecret, Message, MessageTokensCount,
    MessageTokensRequest, MessagesRequest, MeterExport, MeterExportQuery, MeterSlice,
    MintKeyRequest, ModelInfo, ModelList, ModelPath, ModelResponse, OpenAiError, QlaudApi,
    RequestLogEntry, RequestLogFilter, RequestLogPageSelector, ResponseObject, ResponsesRequest,
    StripeWebhookResult, TenantPath, UpdateKeyRequest, UsageQuery, UsageReport,
    WebhookSigningSecret,
};
use qlaud_api::{
    BinaryResponse, ElevenLabsQuery, ElevenLabsSpeechRequest, ListenQuery, ListenUrl, RawBody,
    SpeechRequest, TranscriptionForm, VideoContentQuery, VideoForm, VideoPath, VoicePath,
};
use qlaud_api::{BytesBody, JsonBody, ModelBody};
use qlaud_api::{
    Conversation, ConversationDeleted, ConversationItem, ConversationItemList,
    ConversationItemPath, ConversationItemsQuery, ConversationPath, CreateConversationItemsRequest,
    CreateConversationRequest, ResponseDeleted, ResponsePath, UpdateConversationRequest,
};
use qlaud_api::{CreateJobRequest, Job, JobListFilter, JobPageSelector, JobPath, JobPollHeaders};
use qlaud_api::{
    CreateThreadMessageRequest, CreateThreadRequest, Thread, ThreadDeleted, ThreadListFilter,
    ThreadMessage, ThreadMessageListFilter, ThreadMessagePageSelector, ThreadPageSelector,
    ThreadPath, UpdateThreadRequest,
};
use qlaud_api::{CreateToolRequest, Tool, ToolDeleted, ToolListFilter, ToolPageSelector, ToolPath};
use qlaud_api::{KeyDataDeleted, RevokeKeyQuery, SearchRequest, SearchResults};

use crate::billing;
use crate::context::Context;
use crate::error::Error;
use crate::gateway;
use crate::gateway::error::GatewayError;
use crate::jobs;
use crate::keys::{self, secret::Secret};
use crate::store::KeyActivity;
use crate::threads;
use crate::tools;
use crate::webhooks;

/// The server's implementation of the API trait.
pub enum QlaudImpl {}

impl QlaudApi for QlaudImpl {
    type Context = Context;

    async fn mint_key(
        rqctx: RequestContext<Context>,
        body: JsonBody<MintKeyRequest>,
    ) -> Result<HttpResponseCreated<KeyWithSecret>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let new = keys::new_key(&caller.tenant_id, body.into_inner())?;
        let secret = Secret::generate();
        let row = ctx.store.insert_key(&new, &secret).await?;
        Ok(HttpResponseCreated(keys::with_secret(row, KeyActivity::default(), &secret)?))
    }

    async fn list_keys(
        rqctx: RequestContext<Context>,
        query: Query<PaginationParams<KeyListFilter, KeyPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Key>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let params = query.into_inner();
        let limit = rqctx.page_limit(&params)?.get();
        Ok(HttpResponseOk(keys::list::page(ctx, &caller, &params, limit).await?))
    }

    async fn get_key(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<Key>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let row = ctx.store.get_key(&caller.tenant_id, &path.into_inner().key_id).await?;
        let activity = keys::list::activity(ctx, &caller.tenant_id, &row.id).await?;
        Ok(HttpResponseOk(keys::to_wire(row, activity)?))
    }

    async fn update_key(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
        body: JsonBody<UpdateKeyRequest>,
    ) -> Result<HttpResponseOk<Key>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let key_id = path.into_inner().key_id;
        let changes = keys::key_changes(body.into_inner())?;
        if key_id == caller.key_id && changes.disabled == Some(true) {
            return Err(Error::Conflict("a key cannot disable itself".to_string()).into());
        }
        let row = ctx.store.update_key(&caller.tenant_id, &key_id, &changes).await?;
        ctx.auth_cache.clear();
        let activity = keys::list::activity(ctx, &caller.tenant_id, &row.id).await?;
        Ok(HttpResponseOk(keys::to_wire(row, activity)?))
    }

    async fn revoke_key(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
        query: Query<RevokeKeyQuery>,
    ) -> Result<HttpResponseDeleted, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let key_id = path.into_inner().key_id;
        if key_id == caller.key_id {
            return Err(Error::Conflict(
                "a key cannot revoke itself; use another admin key".to_string(),
            )
            .into());
        }
        ctx.store.revoke_key(&caller.tenant_id, &key_id).await?;
        ctx.auth_cache.clear();
        if query.into_inner().purge == Some(true) {
            ctx.store.delete_key_data(&caller.tenant_id, &key_id).await?;
        }
        Ok(HttpResponseDeleted())
    }

    async fn delete_key_data(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<KeyDataDeleted>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let key_id = path.into_inner().key_id;
        Ok(HttpResponseOk(ctx.store.delete_key_data(&caller.tenant_id, &key_id).await?))
    }

    async fn search(
        rqctx: RequestContext<Context>,
        body: JsonBody<SearchRequest>,
    ) -> Result<HttpResponseOk<SearchResults>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(crate::search::search(ctx, &caller, body.into_inner()).await?))
    }

    async fn rotate_key(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<KeyWithSecret>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let secret = Secret::generate();
        let row =
            ctx.store.rotate_key(&caller.tenant_id, &path.into_inner().key_id, &secret).await?;
        ctx.auth_cache.clear();
        let activity = keys::list::activity(ctx, &caller.tenant_id, &row.id).await?;
        Ok(HttpResponseOk(keys::with_secret(row, activity, &secret)?))
    }

    async fn get_usage(
        rqctx: RequestContext<Context>,
        query: Query<UsageQuery>,
    ) -> Result<HttpResponseOk<UsageReport>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(crate::usage::report(ctx, &caller, query.into_inner()).await?))
    }

    async fn list_requests(
        rqctx: RequestContext<Context>,
        query: Query<PaginationParams<RequestLogFilter, RequestLogPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<RequestLogEntry>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let params = query.into_inner();
        let limit = rqctx.page_limit(&params)?.get();
        Ok(HttpResponseOk(crate::request_log::page(ctx, &caller, &params, limit).await?))
    }

    async fn update_billing_settings(
        rqctx: RequestContext<Context>,
        body: JsonBody<BillingSettingsUpdate>,
    ) -> Result<HttpResponseOk<BillingSettings>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(billing::update_settings(ctx, &caller, body.into_inner()).await?))
    }

    async fn get_billing_settings(
        rqctx: RequestContext<Context>,
    ) -> Result<HttpResponseOk<BillingSettings>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(billing::get_settings(ctx, &caller).await?))
    }

    async fn stripe_webhook(
        rqctx: RequestContext<Context>,
        path: Path<TenantPath>,
        body: BytesBody,
    ) -> Result<HttpResponseOk<StripeWebhookResult>, HttpError> {
        let ctx = rqctx.context();
        let signature =
            rqctx.request.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
        let tenant = path.into_inner().tenant_id;
        Ok(HttpResponseOk(billing::webhook(ctx, &tenant, signature, body.as_bytes()).await?))
    }

    async fn export_meter_events(
        rqctx: RequestContext<Context>,
        query: Query<MeterExportQuery>,
    ) -> Result<HttpResponseOk<MeterExport>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let q = query.into_inner();
        ctx.meter.recorder.flush().await;
        let slice = q.slice.unwrap_or(MeterSlice::Month);
        Ok(HttpResponseOk(billing::export(&ctx.store, &caller.tenant_id, &q.period, slice).await?))
    }

    async fn get_invoice_preview(
        rqctx: RequestContext<Context>,
        query: Query<InvoicePreviewQuery>,
    ) -> Result<HttpResponseOk<InvoicePreview>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let q = query.into_inner();
        ctx.meter.recorder.flush().await;
        let preview =
            billing::invoice_preview(ctx, &caller, &q.key_id, q.period.as_deref()).await?;
        Ok(HttpResponseOk(preview))
    }

    async fn list_key_billing_events(
        rqctx: RequestContext<Context>,
        path: Path<KeyPath>,
    ) -> Result<HttpResponseOk<Vec<KeyBillingEvent>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(billing::key_events(ctx, &caller, &path.into_inner().key_id).await?))
    }

    async fn create_thread(
        rqctx: RequestContext<Context>,
        body: JsonBody<CreateThreadRequest>,
    ) -> Result<HttpResponseCreated<Thread>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let new = threads::new_thread(ctx, &caller, body.into_inner()).await?;
        let row = ctx.store.insert_thread(&new).await?;
        Ok(HttpResponseCreated(threads::to_wire(row)?))
    }

    async fn list_threads(
        rqctx: RequestContext<Context>,
        query: Query<PaginationParams<ThreadListFilter, ThreadPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Thread>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let params = query.into_inner();
        let limit = threads::list::page_limit(&rqctx, &params)?;
        Ok(HttpResponseOk(threads::list::threads(ctx, &caller, &params, limit).await?))
    }

    async fn get_thread(
        rqctx: RequestContext<Context>,
        path: Path<ThreadPath>,
    ) -> Result<HttpResponseOk<Thread>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let thread_id = path.into_inner().thread_id;
        let row = ctx.store.get_thread(threads::access(&caller), &thread_id).await?;
        Ok(HttpResponseOk(threads::to_wire(row)?))
    }

    async fn update_thread(
        rqctx: RequestContext<Context>,
        path: Path<ThreadPath>,
        body: JsonBody<UpdateThreadRequest>,
    ) -> Result<HttpResponseOk<Thread>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let thread_id = path.into_inner().thread_id;
        let access = threads::access(&caller);
        // Another key's thread is 404 even when the body is also wrong, so
        // the answer never tells whether the id exists.
        ctx.store.get_thread(access, &thread_id).await?;
        let changes = threads::thread_changes(ctx, body.into_inner())?;
        let row = ctx.store.update_thread(access, &thread_id, &changes).await?;
        Ok(HttpResponseOk(threads::to_wire(row)?))
    }

    async fn delete_thread(
        rqctx: RequestContext<Context>,
        path: Path<ThreadPath>,
    ) -> Result<HttpResponseOk<ThreadDeleted>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let thread_id = path.into_inner().thread_id;
        ctx.store.delete_thread(threads::access(&caller), &thread_id).await?;
        Ok(HttpResponseOk(ThreadDeleted {
            id: thread_id,
            object: "thread.deleted".into(),
            deleted: true,
        }))
    }

    async fn create_thread_message(
        rqctx: RequestContext<Context>,
        path: Path<ThreadPath>,
        body: ModelBody<CreateThreadMessageRequest>,
    ) -> Result<ModelResponse<ThreadMessage>, HttpError> {
        let thread_id = path.into_inner().thread_id;
        threads::turn::create(rqctx.context(), rqctx.request.headers(), &thread_id, body)
            .await
            .map(ModelResponse::new)
            .map_err(gateway::error::GatewayError::into_http)
    }

    async fn list_thread_messages(
        rqctx: RequestContext<Context>,
        path: Path<ThreadPath>,
        query: Query<PaginationParams<ThreadMessageListFilter, ThreadMessagePageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<ThreadMessage>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let thread_id = path.into_inner().thread_id;
        let params = query.into_inner();
        let limit = threads::list::page_limit(&rqctx, &params)?;
        Ok(HttpResponseOk(threads::list::messages(ctx, &caller, &thread_id, &params, limit).await?))
    }

    async fn rotate_webhook_secret(
        rqctx: RequestContext<Context>,
    ) -> Result<HttpResponseOk<WebhookSigningSecret>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(webhooks::rotate_secret(ctx, &caller).await?))
    }

    async fn create_tool(
        rqctx: RequestContext<Context>,
        body: JsonBody<CreateToolRequest>,
    ) -> Result<HttpResponseCreated<Tool>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let new = tools::new_tool(ctx, &caller.tenant_id, body.into_inner())?;
        let row = ctx.store.insert_tool(&new).await?;
        Ok(HttpResponseCreated(tools::to_wire(row)?))
    }

    async fn list_tools(
        rqctx: RequestContext<Context>,
        query: Query<PaginationParams<ToolListFilter, ToolPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Tool>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let params = query.into_inner();
        let limit = threads::list::page_limit(&rqctx, &params)?;
        Ok(HttpResponseOk(tools::list(ctx, &caller, &params, limit).await?))
    }

    async fn get_tool(
        rqctx: RequestContext<Context>,
        path: Path<ToolPath>,
    ) -> Result<HttpResponseOk<Tool>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let row = ctx.store.get_tool(&caller.tenant_id, &path.into_inner().tool_id).await?;
        Ok(HttpResponseOk(tools::to_wire(row)?))
    }

    async fn delete_tool(
        rqctx: RequestContext<Context>,
        path: Path<ToolPath>,
    ) -> Result<HttpResponseOk<ToolDeleted>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate_admin(rqctx.request.headers()).await?;
        let tool_id = path.into_inner().tool_id;
        ctx.store.delete_tool(&caller.tenant_id, &tool_id).await?;
        Ok(HttpResponseOk(ToolDeleted {
            id: tool_id,
            object: "tool.deleted".into(),
            deleted: true,
        }))
    }

    async fn create_job(
        rqctx: RequestContext<Context>,
        body: JsonBody<CreateJobRequest>,
    ) -> Result<HttpResponseAccepted<Job>, HttpError> {
        let ctx = rqctx.context();
        let headers = rqctx.request.headers();
        let caller = ctx.authenticate(headers).await?;
        Ok(HttpResponseAccepted(jobs::create(ctx, &caller, headers, body.into_inner()).await?))
    }

    async fn list_jobs(
        rqctx: RequestContext<Context>,
        query: Query<PaginationParams<JobListFilter, JobPageSelector>>,
    ) -> Result<HttpResponseOk<ResultsPage<Job>>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let params = query.into_inner();
        let limit = threads::list::page_limit(&rqctx, &params)?;
        jobs::list(ctx, &caller, &params, limit).await.map(HttpResponseOk)
    }

    async fn get_job(
        rqctx: RequestContext<Context>,
        path: Path<JobPath>,
    ) -> Result<HttpResponseHeaders<HttpResponseOk<Job>, JobPollHeaders>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        let job_id = path.into_inner().job_id;
        let job = jobs::to_wire(ctx.store.get_job(jobs::access(&caller), &job_id).await?)?;
        let headers = JobPollHeaders { poll_after_ms: job.poll_after_ms.map(|ms| ms.to_string()) };
        Ok(HttpResponseHeaders::new(HttpResponseOk(job), headers))
    }

    async fn cancel_job(
        rqctx: RequestContext<Context>,
        path: Path<JobPath>,
    ) -> Result<HttpResponseOk<Job>, HttpError> {
        let ctx = rqctx.context();
        let caller = ctx.authenticate(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(jobs::cancel(ctx, &caller, &path.into_inner().job_id).await?))
    }

    async fn health(rqctx: RequestContext<Context>) -> Result<http::Response<Body>, HttpError> {
        let ctx = rqctx.context();
        // Unready while draining, so a load balancer stops sending traffic.
        let (status, body) = if ctx.drain.draining() {
            (http::StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
        } else if ctx.store.ping().await.is_ok() {
            (http::StatusCode::OK, r#"{"status":"ok"}"#)
        } else {
            (http::StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"store unreachable"}"#)
        };
        Ok(http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a valid response"))
    }

    async fn metrics(rqctx: RequestContext<Context>) -> Result<http::Response<Body>, HttpError> {
        Ok(crate::metrics::respond(rqctx.context(), rqctx.request.headers(), true).await)
    }

    async fn create_message(
        rqctx: RequestContext<Context>,
        body: ModelBody<MessagesRequest>,
    ) -> Result<ModelResponse<Message>, AnthropicError> {
        anthropic_model(gateway::messages(rqctx.context(), rqctx.request.headers(), body).await)
    }

    async fn count_message_tokens(
        rqctx: RequestContext<Context>,
        body: ModelBody<MessageTokensRequest>,
    ) -> Result<HttpResponseOk<MessageTokensCount>, AnthropicError> {
        gateway::count_tokens::count(rqctx.context(), rqctx.request.headers(), body)
            .await
            .map(HttpResponseOk)
            .map_err(gateway::error::GatewayError::into_anthropic)
    }

    async fn create_chat_completion(
        rqctx: RequestContext<Context>,
        body: ModelBody<ChatCompletionRequest>,
    ) -> Result<ModelResponse<ChatCompletion>, OpenAiError> {
        openai_model(
            gateway::chat_completions(rqctx.context(), rqctx.request.headers(), body).await,
        )
    }

    async fn create_transcription(
        rqctx: RequestContext<Context>,
        body: RawBody<TranscriptionForm>,
    ) -> Result<ModelResponse<serde_json::Value>, OpenAiError> {
        openai_model(
            gateway::transcription(rqctx.context(), rqctx.request.headers(), body.body, false)
                .await,
        )
    }

    async fn create_translation(
        rqctx: RequestContext<Context>,
        body: RawBody<TranscriptionForm>,
    ) -> Result<ModelResponse<serde_json::Value>, OpenAiError> {
        openai_model(
            gateway::transcription(rqctx.context(), rqctx.request.headers(), body.body, true).await,
        )
    }

    async fn create_video(
        rqctx: RequestContext<Context>,
        body: RawBody<VideoForm>,
    ) -> Result<ModelResponse<serde_json::Value>, OpenAiError> {
        gateway::create_video(rqctx.context(), rqctx.request.headers(), body.body)
            .await
            .map(ModelResponse::new)
            .map_err(gateway::error::GatewayError::into_openai)
    }

    async fn get_video(
        rqctx: RequestContext<Context>,
        path: Path<VideoPath>,
    ) -> Result<ModelResponse<serde_json::Value>, OpenAiError> {
        let id = path.into_inner().video_id;
        gateway::get_video(rqctx.context(), rqctx.request.headers(), &id)
            .await
            .map(ModelResponse::new)
            .map_err(gateway::error::GatewayError::into_openai)
    }

    async fn get_video_content(
        rqctx: RequestContext<Context>,
        path: Path<VideoPath>,
        _query: Query<VideoContentQuery>,
    ) -> Result<BinaryResponse, OpenAiError> {
        let id = path.into_inner().video_id;
        let query = rqctx.request.uri().query();
        gateway::get_video_content(rqctx.context(), rqctx.request.headers(), &id, query)
            .await
            .map(BinaryResponse)
            .map_err(gateway::error::GatewayError::into_openai)
    }

    async fn create_speech(
        rqctx: RequestContext<Context>,
        body: ModelBody<SpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError> {
        openai_binary(gateway::speech(rqctx.context(), rqctx.request.headers(), body).await)
    }

    async fn transcribe_deepgram(
        rqctx: RequestContext<Context>,
        _query: Query<ListenQuery>,
        body: RawBody<ListenUrl>,
    ) -> Result<ModelResponse<serde_json::Value>, OpenAiError> {
        let query = rqctx.request.uri().query();
        openai_model(
            gateway::listen(rqctx.context(), rqctx.request.headers(), query, body.body).await,
        )
    }

    async fn create_elevenlabs_speech(
        rqctx: RequestContext<Context>,
        path: Path<VoicePath>,
        _query: Query<ElevenLabsQuery>,
        body: ModelBody<ElevenLabsSpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError> {
        let (headers, query) = (rqctx.request.headers(), rqctx.request.uri().query());
        let voice = path.into_inner().voice_id;
        openai_binary(
            gateway::elevenlabs_speech(rqctx.context(), headers, &voice, query, body, false).await,
        )
    }

    async fn stream_elevenlabs_speech(
        rqctx: RequestContext<Context>,
        path: Path<VoicePath>,
        _query: Query<ElevenLabsQuery>,
        body: ModelBody<ElevenLabsSpeechRequest>,
    ) -> Result<BinaryResponse, OpenAiError> {
        let (headers, query) = (rqctx.request.headers(), rqctx.request.uri().query());
        let voice = path.into_inner().voice_id;
        openai_binary(
            gateway::elevenlabs_speech(rqctx.context(), headers, &voice, query, body, true).await,
        )
    }

    async fn create_embedding(
        rqctx: RequestContext<Context>,
        body: ModelBody<EmbeddingRequest>,
    ) -> Result<ModelResponse<EmbeddingList>, OpenAiError> {
        openai_model(gateway::embeddings(rqctx.context(), rqctx.request.headers(), body).await)
    }

    async fn create_response(
        rqctx: RequestContext<Context>,
        body: ModelBody<ResponsesRequest>,
    ) -> Result<ModelResponse<ResponseObject>, OpenAiError> {
        openai_model(gateway::responses(rqctx.context(), rqctx.request.headers(), body).await)
    }

    async fn get_response(
        rqctx: RequestContext<Context>,
        path: Path<ResponsePath>,
    ) -> Result<HttpResponseOk<ResponseObject>, OpenAiError> {
        let id = path.into_inner().response_id;
        gateway::responses::get(rqctx.context(), rqctx.request.headers(), &id)
            .await
            .map(HttpResponseOk)
            .map_err(GatewayError::into_openai)
    }

    async fn delete_response(
        rqctx: RequestContext<Context>,
        path: Path<ResponsePath>,
    ) -> Result<HttpResponseOk<ResponseDeleted>, OpenAiError> {
        let id = path.into_inner().response_id;
        gateway::responses::delete(rqctx.context(), rqctx.request.headers(), &id)
            .await
            .map(HttpResponseOk)
            .map_err(GatewayError::into_openai)
    }

    async fn create_conversation(
        rqctx: RequestContext<Context>,
        body: JsonBody<CreateConversationRequest>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            threads::conversations::create(ctx, &caller, body.into_inner()).await
        })
        .await
        .map(HttpResponseOk)
    }

    async fn get_conversation(
        rqctx: RequestContext<Context>,
        path: Path<ConversationPath>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let id = path.into_inner().conversation_id;
            threads::conversations::to_wire(
                &threads::conversations::thread(ctx, &caller, &id).await?,
            )
        })
        .await
        .map(HttpResponseOk)
    }

    async fn update_conversation(
        rqctx: RequestContext<Context>,
        path: Path<ConversationPath>,
        body: JsonBody<UpdateConversationRequest>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let id = path.into_inner().conversation_id;
            let thread = threads::conversations::thread(ctx, &caller, &id).await?;
            let metadata = body.into_inner().metadata;
            keys::validate_metadata(&metadata)?;
            let changes =
                crate::store::ThreadChanges { metadata: Some(metadata), ..Default::default() };
            let row =
                ctx.store.update_thread(threads::access(&caller), &thread.id, &changes).await?;
            threads::conversations::to_wire(&row)
        })
        .await
        .map(HttpResponseOk)
    }

    async fn delete_conversation(
        rqctx: RequestContext<Context>,
        path: Path<ConversationPath>,
    ) -> Result<HttpResponseOk<ConversationDeleted>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let id = path.into_inner().conversation_id;
            let thread = threads::conversations::thread(ctx, &caller, &id).await?;
            ctx.store.delete_thread(threads::access(&caller), &thread.id).await?;
            Ok(ConversationDeleted { id, object: "conversation.deleted".into(), deleted: true })
        })
        .await
        .map(HttpResponseOk)
    }

    async fn list_conversation_items(
        rqctx: RequestContext<Context>,
        path: Path<ConversationPath>,
        query: Query<ConversationItemsQuery>,
    ) -> Result<HttpResponseOk<ConversationItemList>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let id = path.into_inner().conversation_id;
            let thread = threads::conversations::thread(ctx, &caller, &id).await?;
            threads::conversations::list_items(ctx, &thread, query.into_inner()).await
        })
        .await
        .map(HttpResponseOk)
    }

    async fn create_conversation_items(
        rqctx: RequestContext<Context>,
        path: Path<ConversationPath>,
        body: JsonBody<CreateConversationItemsRequest>,
    ) -> Result<HttpResponseOk<ConversationItemList>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let id = path.into_inner().conversation_id;
            let thread = threads::conversations::thread(ctx, &caller, &id).await?;
            threads::conversations::add_items(ctx, &thread, &body.into_inner().items).await
        })
        .await
        .map(HttpResponseOk)
    }

    async fn get_conversation_item(
        rqctx: RequestContext<Context>,
        path: Path<ConversationItemPath>,
    ) -> Result<HttpResponseOk<ConversationItem>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let p = path.into_inner();
            let thread = threads::conversations::thread(ctx, &caller, &p.conversation_id).await?;
            threads::conversations::get_item(ctx, &thread, &p.item_id).await
        })
        .await
        .map(HttpResponseOk)
    }

    async fn delete_conversation_item(
        rqctx: RequestContext<Context>,
        path: Path<ConversationItemPath>,
    ) -> Result<HttpResponseOk<Conversation>, OpenAiError> {
        let ctx = rqctx.context();
        openai(async {
            let caller = ctx.authenticate(rqctx.request.headers()).await?;
            let p = path.into_inner();
            let thread = threads::conversations::thread(ctx, &caller, &p.conversation_id).await?;
            threads::conversations::delete_item(ctx, &thread, &p.item_id).await?;
            threads::conversations::to_wire(&thread)
        })
        .await
        .map(HttpResponseOk)
    }

    async fn list_models(
        rqctx: RequestContext<Context>,
    ) -> Result<HttpResponseOk<ModelList>, HttpError> {
        let ctx = rqctx.context();
        ctx.authenticate(rqctx.request.headers()).await?;
        Ok(HttpResponseOk(ctx.gateway.list()))
    }

    async fn get_model(
        rqctx: RequestContext<Context>,
        path: Path<ModelPath>,
    ) -> Result<HttpResponseOk<ModelInfo>, AnthropicError> {
        let ctx = rqctx.context();
        let id = path.into_inner().model_id;
        let lookup = async {
            ctx.authenticate(rqctx.request.headers()).await?;
            // Exactly the entry the list shows, so the two never disagree.
            let found = ctx.gateway.list().data.into_iter().find(|m| m.id == id);
            found.ok_or_else(|| gateway::error::GatewayError::model_not_found(&id))
        };
        lookup.await.map(HttpResponseOk).map_err(gateway::error::GatewayError::into_anthropic)
    }
}

/// A handler of OpenAI's API shape over a domain result: its errors in
/// OpenAI's error body.
async fn openai<T>(
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, OpenAiError> {
    f.await.map_err(|e| GatewayError::from(e).into_openai())
}

/// A model endpoint's answer in Anthropic's shape. An error that carries
/// headers (a rate limit's `retry-after`) is answered whole, since a typed
/// error body cannot carry them.
fn anthropic_model<T>(
    r: Result<http::Response<Body>, GatewayError>,
) -> Result<ModelResponse<T>, AnthropicError> {
    match r {
        Ok(r) => Ok(ModelResponse::new(r)),
        Err(e) if !e.headers.is_empty() => Ok(ModelResponse::new(e.anthropic_response())),
        Err(e) => Err(e.into_anthropic()),
    }
}

/// The same in OpenAI's shape.
fn openai_model<T>(
    r: Result<http::Response<Body>, GatewayError>,
) -> Result<ModelResponse<T>, OpenAiError> {
    match r {
        Ok(r) => Ok(ModelResponse::new(r)),
        Err(e) if !e.headers.is_empty() => Ok(ModelResponse::new(e.openai_response())),
        Err(e) => Err(e.into_openai()),
    }
}

/// A binary answer, its errors in OpenAI's shape.
fn openai_binary(
    r: Result<http::Response<Body>, GatewayError>,
) -> Result<BinaryResponse, OpenAiError> {
    match r {
        Ok(r) => Ok(BinaryResponse(r)),
        Err(e) if !e.headers.is_empty() => Ok(BinaryResponse(e.openai_response())),
        Err(e) => Err(e.into_openai()),
    }
}

//! Video in OpenAI's Videos API shape: `POST /v1/videos` (multipart),
//! `GET /v1/videos/{id}` (polled) and `GET /v1/videos/{id}/content`
//! (binary), for any provider that speaks it.
//!
//! Billing: `seconds` × the price of the size's tier (`video_seconds_720p`
//! for 720x1280 and 1280x720, `video_seconds_1024p` for 1024x1792 and
//! 1792x1024) is the exact price, known from the request and reserved
//! before the provider is called (402 when it does not fit). A video
//! renders after its create call returns, so the reservation is held (see
//! migration 0014) until a `get_video` sees the provider's outcome:
//! `completed` settles at that price, `failed` at nothing. A video no
//! client polls to its end is polled by the server itself ([`spawn_sweep`]),
//! and one with no outcome after `--video-max-age-secs` is settled at its
//! price, so no reservation is held forever.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dropshot::Body;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode};
use serde_json::Value;

use super::Call;
use super::error::GatewayError;
use crate::auth::Caller;
use crate::config::{Model, ModelKind, ProviderKind};
use crate::context::Context;
use crate::media::upload;
use crate::meter::estimate::Estimate;
use crate::meter::{Endpoint, RequestRecord};
use crate::store::VideoRow;
use crate::units::{Quantities, Unit};

/// OpenAI's defaults when the form leaves them out.
const DEFAULT_MODEL: &str = "sora-2";
const DEFAULT_SECONDS: &str = "4";
const DEFAULT_SIZE: &str = "720x1280";
/// The longest video accepted (OpenAI offers 4, 8 and 12 seconds).
const MAX_SECONDS: u64 = 60;

/// The priced unit of a `WIDTHxHEIGHT` size: its tier is its short side.
fn tier_unit(size: &str) -> Option<Unit> {
    let (w, h) = size.split_once('x')?;
    let (w, h): (u32, u32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0).then(|| Unit::named(&format!("video_seconds_{}p", w.min(h))))
}

fn openai_model(ctx: &Context, name: &str) -> Result<std::sync::Arc<Model>, GatewayError> {
    let model = ctx.gateway.model(name, ModelKind::Video)?;
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        return Err(GatewayError::bad_request(format!(
            "model {name:?} is served by a provider that does not speak the Videos API"
        )));
    }
    Ok(model)
}

fn bearer(model: &Model) -> Result<&str, GatewayError> {
    model.provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(
            502,
            format!("provider {} has no API key configured", model.provider.name),
        )
    })
}

fn json(status: StatusCode, v: &Value, headers: &[(&str, String)]) -> Response<Body> {
    let mut b =
        Response::builder().status(status).header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        b = b.header(*name, value);
    }
    b.body(Body::with_content(serde_json::to_vec(v).expect("JSON serializes"))).expect("a response")
}

pub async fn create_video(
    ctx: &Context,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    // The key first: nothing of the body is read for a caller without one.
    let caller = ctx.authenticate(headers).await?;
    let limits = ctx.gateway.catalog.media;
    let bytes = upload::read(body, headers, limits.max_upload_bytes).await?;
    let parts = upload::multipart(headers, bytes).await?;
    let text = |name: &str| {
        parts.iter().find(|p| p.name == name && p.file_name.is_none()).and_then(|p| p.text())
    };
    let model = openai_model(ctx, text("model").map_or(DEFAULT_MODEL, str::trim))?;
    if text("prompt").is_none_or(|p| p.trim().is_empty()) {
        return Err(GatewayError::bad_request("prompt is required"));
    }
    let seconds_text = text("seconds").map_or(DEFAULT_SECONDS, str::trim).to_string();
    let seconds =
        seconds_text.parse::<u64>().ok().filter(|s| (1..=MAX_SECONDS).contains(s)).ok_or_else(
            || {
                GatewayError::bad_request(format!(
                    "seconds must be a whole number from 1 to {MAX_SECONDS}, not {seconds_text:?}"
                ))
            },
        )?;
    let size = text("size").map_or(DEFAULT_SIZE, str::trim).to_string();
    let unit = tier_unit(&size)
        .filter(|u| model.prices.is_some_and(|p| p.get(*u).is_some()))
        .ok_or_else(|| {
            GatewayError::bad_request(format!(
                "model {:?} has no price for size {size:?} (priced: {})",
                model.name,
                model
                    .prices
                    .map(|p| p.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ))
        })?;
    let mut worst = Quantities::default();
    let _ = worst.set(unit, seconds);
    let estimate =
        Estimate { prompt_tokens: 0, max_output: 0, choices: 1, extra_output: 0, units: worst };
    let mut call =
        Call::admit_media(ctx, caller.clone(), model.clone(), Endpoint::Videos, started, &estimate)
            .await?;

    // The provider renders exactly what was priced: `seconds` and `size`
    // are sent even when the client left them to the defaults.
    let mut form = reqwest::multipart::Form::new()
        .text("model", model.upstream.clone())
        .text("seconds", seconds.to_string())
        .text("size", size.clone());
    for p in parts.iter().filter(|p| !matches!(p.name.as_str(), "model" | "seconds" | "size")) {
        let mut part = reqwest::multipart::Part::bytes(p.data.to_vec());
        if let Some(f) = &p.file_name {
            part = part.file_name(f.clone());
        }
        if let Some(ct) = &p.content_type {
            part = part.mime_str(ct).map_err(|e| GatewayError::bad_request(e.to_string()))?;
        }
        form = form.part(p.name.clone(), part);
    }
    let http = crate::providers::openai::audio_form_request(
        ctx.gateway.client(&model),
        &model,
        "videos",
        form,
    )?;
    let upstream = super::send(&mut call, http).await?;
    // An answer without a video id cannot be followed: dropping the call
    // settles it at the reservation, as for any call whose usage is unknown.
    let answer = super::audio::read_body(&call, upstream).await?;
    let video: Value = serde_json::from_slice(&answer).map_err(|e| {
        GatewayError::new(502, format!("provider {} answered no video: {e}", model.provider.name))
    })?;
    let Some(id) = video["id"].as_str().map(str::to_string) else {
        return Err(GatewayError::new(502, "the provider's video has no id"));
    };
    let reserved = call.metered.admission.reserved_micros;
    match video["status"].as_str() {
        Some("completed") => {
            call.metered.settle_units(200, worst).await;
        }
        Some("failed") => {
            call.metered.settle_units(200, Quantities::default()).await;
        }
        status => {
            let row = VideoRow {
                id,
                tenant_id: caller.tenant_id.clone(),
                key_id: caller.key_id.clone(),
                model: model.name.clone(),
                provider: model.provider.name.clone(),
                reservation_id: call.metered.admission.reservation_id.clone(),
                period_start_ms: call.metered.admission.period_start_ms,
                reserved_micros: reserved,
                unit: unit.as_str().to_string(),
                seconds: seconds as i64,
                status: status.unwrap_or("queued").to_string(),
                settled_ms: None,
                created_ms: ctx.meter.clock.now_ms(),
            };
            match ctx.store.insert_video(&row).await {
                Ok(()) => call.metered.hold(),
                Err(e) => {
                    // Untracked, it could never be settled by a poll: bill
                    // the known price now rather than lose it.
                    tracing::error!(error = %e, "storing a video; settled at its price");
                    call.metered.settle_units(200, worst).await;
                }
            }
        }
    }
    Ok(json(StatusCode::OK, &video, &[("qlaud-reserved-micros", reserved.to_string())]))
}

/// The caller's video `id`, or 404 in OpenAI's shape.
async fn find(ctx: &Context, caller: &Caller, id: &str) -> Result<VideoRow, GatewayError> {
    let owner = match caller.scope {
        qlaud_api::KeyScope::Admin => None,
        qlaud_api::KeyScope::Standard => Some(caller.key_id.as_str()),
    };
    ctx.store
        .get_video(&caller.tenant_id, owner, id)
        .await
        .map_err(|e| GatewayError::new(500, format!("reading the video: {e}")))?
        .ok_or_else(|| GatewayError::new(404, format!("no video with id {id:?}")))
}

/// Calls the provider's `GET /videos/{id}{suffix}`; its error as its own.
async fn provider_get(
    ctx: &Context,
    model: &Model,
    id: &str,
    suffix: &str,
) -> Result<reqwest::Response, GatewayError> {
    let provider = &model.provider;
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let req = ctx
        .gateway
        .client(model)
        .get(format!("{}/videos/{id}{suffix}", provider.base_url))
        .bearer_auth(bearer(model)?);
    match tokio::time::timeout(provider.timeout, req.send()).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(resp),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap_or_default();
            Err(GatewayError::from_upstream(&provider.name, true, status, &body))
        }
        Ok(Err(e)) => {
            Err(GatewayError::new(502, format!("could not reach provider {}: {e}", provider.name)))
        }
        Err(_) => Err(GatewayError::new(504, format!("provider {} did not answer", provider.name))),
    }
}

pub async fn get_video(
    ctx: &Context,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let row = find(ctx, &caller, id).await?;
    let model = openai_model(ctx, &row.model)?;
    let resp = provider_get(ctx, &model, id, "").await?;
    let body: Bytes = resp
        .bytes()
        .await
        .map_err(|e| GatewayError::new(502, format!("reading provider {}: {e}", row.provider)))?;
    let video: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::new(502, format!("the provider's video is not JSON: {e}")))?;
    let status = video["status"].as_str().unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(cost) = outcome(ctx, &model, &row, status, started).await? {
        extra.push(("qlaud-cost-micros", cost.to_string()));
    }
    Ok(json(StatusCode::OK, &video, &extra))
}

/// Records a video's outcome when `status` is one (`completed`, `failed`,
/// or `expired` from the sweep) and settles it; the cost when this call was
/// the one that settled it.
async fn outcome(
    ctx: &Context,
    model: &Model,
    row: &VideoRow,
    status: &str,
    started: Instant,
) -> Result<Option<i64>, GatewayError> {
    if !matches!(status, "completed" | "failed" | "expired") {
        return Ok(None);
    }
    let now = ctx.meter.clock.now_ms();
    let first = ctx
        .store
        .finish_video(&row.id, status, now)
        .await
        .map_err(|e| GatewayError::new(500, format!("recording the video: {e}")))?;
    if !first {
        return Ok(None);
    }
    // An expired video may have rendered: billed at its price, like any
    // call whose outcome is unknown.
    let billed = status != "failed";
    Ok(Some(settle(ctx, model, row, billed, started, now).await))
}

/// When and for how long the server polls videos itself.
#[derive(Clone, Copy, Debug)]
pub struct Sweep {
    /// How often; also how old a video must be before the server polls it
    /// (a client polling its own video settles it first).
    pub every: Duration,
    /// A video with no outcome after this long is settled at its price and
    /// marked `expired`.
    pub max_age: Duration,
}

/// Polls, in every process, the videos no client polled to their end, so
/// no reservation is held forever: each settles when the provider reports
/// its outcome, or at its price once `max_age` has passed without one (the
/// provider may have rendered it; it gone missing upstream counts the
/// same). Claims are the store's `finish_video`, so a video is settled once
/// however many processes poll it.
pub fn spawn_sweep(ctx: Context, sweep: Sweep) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if ctx.drain.draining() {
                return;
            }
            if let Err(e) = sweep_once(&ctx, sweep).await {
                tracing::warn!(error = %e.message, "polling unsettled videos");
            }
        }
    });
}

async fn sweep_once(ctx: &Context, sweep: Sweep) -> Result<(), GatewayError> {
    let now = ctx.meter.clock.now_ms();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let videos = ctx
        .store
        .unsettled_videos(now.saturating_sub(ms(sweep.every)), 50)
        .await
        .map_err(|e| GatewayError::new(500, format!("listing videos: {e}")))?;
    for row in videos {
        let started = Instant::now();
        let expired = now.saturating_sub(row.created_ms) >= ms(sweep.max_age);
        let polled = match openai_model(ctx, &row.model) {
            Ok(model) => match provider_get(ctx, &model, &row.id, "").await {
                Ok(resp) => resp.json::<Value>().await.ok(),
                Err(e) => {
                    tracing::debug!(video = %row.id, error = %e.message, "polling a video");
                    None
                }
            },
            Err(_) => None,
        };
        let status = polled.as_ref().and_then(|v| v["status"].as_str()).unwrap_or_default();
        let status = match status {
            "completed" | "failed" => status,
            _ if expired => "expired",
            _ => continue,
        };
        // A model removed from the catalog since: priced as it was stored.
        let Ok(model) = ctx.gateway.model(&row.model, ModelKind::Video) else {
            expire_unpriced(ctx, &row, now).await;
            continue;
        };
        if let Some(cost) = outcome(ctx, &model, &row, status, started).await? {
            tracing::info!(video = %row.id, status, cost_micros = cost, "settled a video no \
                           client polled to its end");
        }
    }
    Ok(())
}

/// Settles a video whose model is gone at its reservation (its price when
/// it was created).
async fn expire_unpriced(ctx: &Context, row: &VideoRow, now: i64) {
    if ctx.store.finish_video(&row.id, "expired", now).await.unwrap_or(false) {
        let mut q = Quantities::default();
        let _ = q.set(Unit::REQUESTS, 1);
        let _ = q.set(Unit::named(&row.unit), row.seconds.max(0) as u64);
        ctx.meter.recorder.record(record(row, q, row.reserved_micros, 0, now)).await;
    }
}

/// Settles a held video's reservation: its price when completed, nothing
/// when failed. Called once per video (see `finish_video`).
async fn settle(
    ctx: &Context,
    model: &Model,
    row: &VideoRow,
    completed: bool,
    started: Instant,
    now: i64,
) -> i64 {
    let mut q = Quantities::default();
    let _ = q.set(Unit::REQUESTS, 1);
    if completed {
        let _ = q.set(Unit::named(&row.unit), row.seconds.max(0) as u64);
    }
    let cost = RequestRecord::cost_for(model, &q).min(row.reserved_micros);
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    ctx.meter.metrics.settled(Endpoint::Videos.as_str(), 200, cost);
    ctx.meter.recorder.record(record(row, q, cost, latency_ms, now)).await;
    // Usage reads see it as soon as the poll that settled it returns.
    ctx.meter.recorder.flush().await;
    cost
}

/// The record settling a video's held reservation.
fn record(row: &VideoRow, q: Quantities, cost: i64, latency_ms: i64, now: i64) -> RequestRecord {
    RequestRecord {
        reservation_id: row.reservation_id.clone(),
        lease_id: None,
        tenant_id: row.tenant_id.clone(),
        key_id: row.key_id.clone(),
        model: row.model.clone(),
        provider: row.provider.clone(),
        endpoint: Endpoint::Videos,
        streamed: false,
        status: 200,
        usage: Default::default(),
        quantities: q,
        cost_micros: cost,
        reserved_micros: row.reserved_micros,
        period_start_ms: row.period_start_ms,
        // A video counts no tokens against a rate window, so settling gives
        // none back.
        rate_window_ms: 0,
        reserved_tokens: 0,
        latency_ms,
        created_ms: now,
        recovered: false,
    }
}

pub async fn get_video_content(
    ctx: &Context,
    headers: &HeaderMap,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let row = find(ctx, &caller, id).await?;
    let model = openai_model(ctx, &row.model)?;
    let suffix = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("/content?{q}"),
        None => "/content".to_string(),
    };
    let upstream = provider_get(ctx, &model, id, &suffix).await?;
    let content_type = upstream
        .headers()
        .get(http::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("application/octet-stream"));
    // Streamed as it arrives, never buffered whole.
    let timeout = model.provider.timeout;
    let (tx, body) = super::sse::channel();
    tokio::spawn(async move {
        let mut chunks = upstream.bytes_stream();
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(timeout, chunks.next()).await {
            if !super::sse::send(&tx, chunk).await {
                return;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("a valid response"))
}

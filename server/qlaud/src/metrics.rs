//! Counters for `/metrics`, in Prometheus' text format. Process-local (each
//! qlaud process reports its own); the open-reservations gauge reads the
//! shared store.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::Context;
use crate::store::Store;

/// Who may read `/metrics` (it shows spend across every tenant).
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `--metrics-token`: a bearer token required wherever it is served.
    pub token: Option<String>,
    /// Served on the main address: `false` when `--metrics-bind` gives it an
    /// address of its own, or when neither that nor a token is set and the
    /// main address is not loopback.
    pub on_main: bool,
}

impl Access {
    /// The choice for a server on `bind`.
    pub fn new(bind: std::net::SocketAddr, token: Option<String>, separate: bool) -> Access {
        let on_main = !separate && (token.is_some() || bind.ip().is_loopback());
        Access { token: token.filter(|t| !t.is_empty()), on_main }
    }

    /// Whether a request with `headers` may read the metrics.
    fn allows(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or_default();
        use subtle::ConstantTimeEq;
        bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The `/metrics` answer: the text, a 401 without the token, or a 404 on an
/// address that does not serve it.
pub async fn respond(
    ctx: &Context,
    headers: &http::HeaderMap,
    on_main: bool,
) -> http::Response<dropshot::Body> {
    let text = |status: http::StatusCode, body: String, kind: &str| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, kind)
            .body(dropshot::Body::from(body))
            .expect("a valid response")
    };
    let access = &ctx.metrics_access;
    if on_main && !access.on_main {
        let body = r#"{"message":"Not Found"}"#.to_string();
        return text(http::StatusCode::NOT_FOUND, body, "application/json");
    }
    if !access.allows(headers) {
        let body = r#"{"message":"/metrics needs `Authorization: Bearer <metrics token>`"}"#;
        let mut r = text(http::StatusCode::UNAUTHORIZED, body.to_string(), "application/json");
        r.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return r;
    }
    let body = ctx.metrics.render(&ctx.store).await;
    text(http::StatusCode::OK, body, "text/plain; version=0.0.4")
}

/// `/metrics` on its own address (`--metrics-bind`).
#[dropshot::endpoint { method = GET, path = "/metrics", unpublished = true }]
async fn metrics_only(
    rqctx: dropshot::RequestContext<Context>,
) -> Result<http::Response<dropshot::Body>, dropshot::HttpError> {
    Ok(respond(rqctx.context(), rqctx.request.headers(), false).await)
}

/// Starts the metrics-only server on `bind`.
pub fn serve_separately(
    bind: std::net::SocketAddr,
    ctx: Context,
    log: slog::Logger,
) -> anyhow::Result<dropshot::HttpServer<Context>> {
    let mut api = dropshot::ApiDescription::new();
    api.register(metrics_only).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = dropshot::ConfigDropshot { bind_address: bind, ..Default::default() };
    dropshot::ServerBuilder::new(api, ctx, log)
        .config(config)
        .start()
        .map_err(|e| anyhow::anyhow!("starting the metrics server on {bind}: {e}"))
}

/// The endpoints requests are counted by; any other counts as `other`.
const ENDPOINTS: [&str; 12] = [
    "messages",
    "chat_completions",
    "responses",
    "embeddings",
    "threads",
    "audio_transcriptions",
    "audio_translations",
    "audio_speech",
    "listen",
    "text_to_speech",
    "turn_embeddings",
    "other",
];

#[derive(Default)]
pub struct Metrics {
    /// Model requests by endpoint, in `ENDPOINTS` order.
    requests: [AtomicU64; ENDPOINTS.len()],
    upstream_errors: AtomicU64,
    cost_micros: AtomicU64,
    cap_refusals: AtomicU64,
    rate_limited: AtomicU64,
    clamped: AtomicU64,
    overruns: AtomicU64,
    overrun_micros: AtomicU64,
    lease_admissions: AtomicU64,
}

impl Metrics {
    /// A settled model request.
    pub fn settled(&self, endpoint: &str, status: u16, cost_micros: i64) {
        let i = ENDPOINTS.iter().position(|e| *e == endpoint).unwrap_or(ENDPOINTS.len() - 1);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        if status >= 500 || status == 429 {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.cost_micros.fetch_add(u64::try_from(cost_micros).unwrap_or(0), Ordering::Relaxed);
    }

    pub fn cap_refusal(&self) {
        self.cap_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A request admitted under a budget lease (no write before its call).
    pub fn lease_admission(&self) {
        self.lease_admissions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn clamp(&self) {
        self.clamped.fetch_add(1, Ordering::Relaxed);
    }

    /// A provider reported more than the request's reserved worst case.
    pub fn overrun(&self, micros: i64) {
        self.overruns.fetch_add(1, Ordering::Relaxed);
        self.overrun_micros.fetch_add(u64::try_from(micros).unwrap_or(0), Ordering::Relaxed);
    }

    pub async fn render(&self, store: &Store) -> String {
        let open = store.open_reservations().await.unwrap_or(-1);
        let (leases, leased) = store.open_leases().await.unwrap_or((0, 0));
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "qlaud_model_requests_total",
            "counter",
            "Model requests settled by this process.",
            &ENDPOINTS
                .iter()
                .zip(&self.requests)
                .map(|(e, c)| (format!("{{endpoint=\"{e}\"}}"), load(c)))
                .collect::<Vec<_>>()
                .iter()
                .map(|(l, v)| (l.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        metric(
            "qlaud_upstream_errors_total",
            "counter",
            "Provider answers of 429 or 5xx, timeouts and refused connections.",
            &[("", load(&self.upstream_errors))],
        );
        metric(
            "qlaud_cost_micros_total",
            "counter",
            "Spend settled by this process, in micro-dollars.",
            &[("", load(&self.cost_micros))],
        );
        metric(
            "qlaud_cap_refusals_total",
            "counter",
            "Requests refused with 402 because the key's cap was reached.",
            &[("", load(&self.cap_refusals))],
        );
        metric(
            "qlaud_rate_limited_requests_total",
            "counter",
            "Requests refused with 429 by a key's rate limit.",
            &[("", load(&self.rate_limited))],
        );
        metric(
            "qlaud_clamped_requests_total",
            "counter",
            "Requests whose output limit was lowered to fit the key's budget.",
            &[("", load(&self.clamped))],
        );
        metric(
            "qlaud_reservation_overruns_total",
            "counter",
            "Requests whose provider-reported cost exceeded their reserved worst case; each \
             was settled at its reservation so the cap held. Non-zero means the estimate \
             missed something the provider bills.",
            &[("", load(&self.overruns))],
        );
        metric(
            "qlaud_reservation_overrun_micros_total",
            "counter",
            "What those requests cost beyond their reservations, unbilled, in micro-dollars.",
            &[("", load(&self.overrun_micros))],
        );
        metric(
            "qlaud_reservations_open",
            "gauge",
            "Requests admitted and not yet settled, across all processes.",
            &[("", u64::try_from(open).unwrap_or(0))],
        );
        metric(
            "qlaud_lease_admissions_total",
            "counter",
            "Requests this process admitted under a budget lease, with no write before the call.",
            &[("", load(&self.lease_admissions))],
        );
        metric(
            "qlaud_leases_open",
            "gauge",
            "Budget leases held, across all processes.",
            &[("", u64::try_from(leases).unwrap_or(0))],
        );
        metric(
            "qlaud_leased_micros",
            "gauge",
            "Micro-dollars of the keys' budgets held by budget leases, across all processes.",
            &[("", u64::try_from(leased).unwrap_or(0))],
        );
        out
    }
}

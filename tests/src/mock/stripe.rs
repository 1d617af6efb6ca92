//! A mock of the one Stripe endpoint qlaud calls:
//! `POST /v1/billing/meter_events` (form-encoded, `Authorization: Bearer
//! sk_…`). It records accepted events, refuses a repeated `identifier` as
//! Stripe does, and can answer 429 a given number of times first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

/// One meter event Stripe accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMeterEvent {
    pub secret_key: String,
    pub event_name: String,
    pub customer: String,
    pub value: String,
    pub identifier: String,
    pub timestamp: i64,
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<RecordedMeterEvent>>,
    fail_next: AtomicU32,
    attempts: AtomicU32,
}

pub struct MockStripe {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockStripe {
    pub async fn start() -> MockStripe {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/billing/meter_events", post(meter_event))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockStripe { addr, shared, task }
    }

    /// What to pass as the Stripe API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn events(&self) -> Vec<RecordedMeterEvent> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Requests received, refused ones included.
    pub fn attempts(&self) -> u32 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    /// Answers the next `n` requests with 429.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::Relaxed);
    }
}

impl Drop for MockStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": kind, "code": code, "message": message}})))
        .into_response()
}

async fn meter_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    shared.attempts.fetch_add(1, Ordering::Relaxed);
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| k.starts_with("sk_") || k.starts_with("rk_"));
    let Some(key) = key else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided",
        );
    };
    if shared.fail_next.load(Ordering::Relaxed) > 0 {
        shared.fail_next.fetch_sub(1, Ordering::Relaxed);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit",
            "Too many requests",
        );
    }
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let event = RecordedMeterEvent {
        secret_key: key.to_string(),
        event_name: field("event_name"),
        customer: field("payload[stripe_customer_id]"),
        value: field("payload[value]"),
        identifier: field("identifier"),
        timestamp: field("timestamp").parse().unwrap_or(0),
    };
    if event.event_name.is_empty()
        || event.customer.is_empty()
        || event.value.parse::<i64>().is_err()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_missing",
            "Missing required param",
        );
    }
    let mut events = shared.events.lock().unwrap();
    if !event.identifier.is_empty() && events.iter().any(|e| e.identifier == event.identifier) {
        let message = format!("An event with identifier {} already exists.", event.identifier);
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "resource_already_exists",
            &message,
        );
    }
    let body = json!({"object": "billing.meter_event", "event_name": event.event_name,
                      "identifier": event.identifier, "timestamp": event.timestamp,
                      "payload": {"stripe_customer_id": event.customer, "value": event.value}});
    events.push(event);
    (StatusCode::OK, axum::Json(body)).into_response()
}

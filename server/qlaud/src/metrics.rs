//! Counters for `/metrics`, in Prometheus' text format. Process-local (each
//! qlaud process reports its own); the open-reservations gauge reads the
//! shared store.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Store;

/// The endpoints requests are counted by; any other counts as `other`.
const ENDPOINTS: [&str; 11] = [
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
    "other",
];

#[derive(Default)]
pub struct Metrics {
    /// Model requests by endpoint, in `ENDPOINTS` order.
    requests: [AtomicU64; ENDPOINTS.len()],
    upstream_errors: AtomicU64,
    cost_micros: AtomicU64,
    cap_refusals: AtomicU64,
    clamped: AtomicU64,
    overruns: AtomicU64,
    overrun_micros: AtomicU64,
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
        out
    }
}

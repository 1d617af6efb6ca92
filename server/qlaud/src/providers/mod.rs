//! Provider adapters. Each owns its wire details: how to call it and how to
//! read usage from its answers and streams.

pub mod anthropic;
pub mod echo;
pub mod ir;
pub mod openai;

use std::time::Duration;

use crate::config::Provider;

/// The pooled HTTP client for one provider. Connections are kept alive and
/// reused across requests; there is no total timeout (streams may run long),
/// only a bound on each wait for the provider.
pub fn http_client(provider: &Provider) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(provider.timeout)
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .expect("the TLS backend initialises")
}

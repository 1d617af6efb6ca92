//! `mock-upstream [--bind ADDR]`: serves the mock Anthropic and OpenAI APIs
//! (see `qlaud_tests::mock`) until killed, after printing one JSON line with
//! its address and base URLs on stdout.

use std::io::Write;
use std::net::SocketAddr;

use qlaud_tests::mock::MockUpstream;

const USAGE: &str = "usage: mock-upstream [--bind ADDR]   (default 127.0.0.1:0)";

fn parse_args() -> Result<SocketAddr, String> {
    let mut bind = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().ok_or("--bind needs an address")?,
            "-h" | "--help" => return Err(String::new()),
            _ => match arg.strip_prefix("--bind=") {
                Some(addr) => bind = addr.to_owned(),
                None => return Err(format!("unknown argument {arg:?}")),
            },
        }
    }
    bind.parse().map_err(|e| format!("bad --bind {bind:?}: {e}"))
}

#[tokio::main]
async fn main() {
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("mock-upstream: {msg}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if msg.is_empty() { 0 } else { 2 });
        }
    };
    let mock = match MockUpstream::bind(addr).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-upstream: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    // Listen before announcing, so a signal sent right after the line is seen.
    let stop = stop_signal();
    let line = serde_json::json!({
        "addr": mock.addr().to_string(),
        "anthropic_base_url": mock.anthropic_base_url(),
        "openai_base_url": mock.openai_base_url(),
    });
    // Flushed at once: the parent reads this line to learn the port.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).ok();
    drop(out);
    // Serve until killed; SIGINT and SIGTERM stop cleanly.
    stop.await;
    mock.stop().await;
}

#[cfg(unix)]
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn stop_signal() -> impl Future<Output = ()> {
    async {
        tokio::signal::ctrl_c().await.ok();
    }
}

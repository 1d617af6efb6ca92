//! TCP_NODELAY on the accepted connections, and closing the listener for a
//! graceful shutdown.
//!
//! dropshot binds its listener itself and offers no hook for socket options.
//! Without TCP_NODELAY, Nagle's algorithm holds each small stream event until
//! the client acknowledges the previous one, and clients delay those
//! acknowledgements by up to 40 ms: every streamed token would wait. Linux
//! copies TCP_NODELAY from a listening socket to the connections it accepts,
//! so it is set once, on the listener, found among the process's descriptors
//! by its address right after the server starts.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

/// Sets TCP_NODELAY on the listening socket bound to `addr`; `false` when no
/// such socket was found (other systems, or no /proc).
pub fn set_nodelay_on_listener(addr: SocketAddr) -> bool {
    with_listener(addr, |sock| sock.set_tcp_nodelay(true).is_ok())
}

/// Stops the listening socket bound to `addr` from taking connections: new
/// ones are refused at once. dropshot's shutdown stops accepting but keeps
/// the socket open until every connection has ended, so without this the
/// kernel would go on completing handshakes that nobody serves, and a load
/// balancer's new connections would hang for the whole drain instead of
/// failing over. (On Linux, `shutdown` of a listening socket stops it.)
pub fn stop_listening(addr: SocketAddr) -> bool {
    with_listener(addr, |sock| sock.shutdown(std::net::Shutdown::Read).is_ok())
}

fn with_listener(addr: SocketAddr, f: impl FnOnce(&socket2::SockRef<'_>) -> bool) -> bool {
    let mut f = Some(f);
    let mut found = false;
    each_socket(|sock| {
        let bound = sock.local_addr().ok().and_then(|a| a.as_socket());
        if bound == Some(addr) && sock.is_listener().unwrap_or(false) {
            if let Some(f) = f.take() {
                found = f(sock);
            }
            return false;
        }
        true
    });
    found
}

/// Calls `f` with each of the process's sockets until it returns `false`.
fn each_socket(mut f: impl FnMut(&socket2::SockRef<'_>) -> bool) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if !std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        {
            continue;
        }
        // SAFETY: `fd` is one of this process's open descriptors, a socket
        // it holds; it is only borrowed for the calls below, never closed.
        // Should it be closed and its number reused meanwhile, the calls
        // act on whatever socket has the number, and each caller checks
        // what the socket is (its address, its state) before acting.
        #[allow(unsafe_code)]
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if !f(&socket2::SockRef::from(&fd)) {
            return;
        }
    }
}

/// Closes, every so often, the connections to `addr` that have sent no
/// byte at all for `timeout`. hyper's own header timeout (30 s, which also
/// ends idle keep-alive connections) only starts once a connection has sent
/// its first bytes: one that sends nothing would otherwise stay open for
/// good, a file descriptor each. Stops when `drain` begins.
pub fn spawn_silent_reaper(
    addr: SocketAddr,
    timeout: Duration,
    drain: std::sync::Arc<crate::shutdown::Drain>,
) {
    let every = (timeout / 4).max(Duration::from_millis(250));
    let limit_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if drain.draining() {
                return;
            }
            let closed = tokio::task::spawn_blocking(move || close_silent(addr, limit_ms))
                .await
                .unwrap_or(0);
            if closed > 0 {
                tracing::debug!(closed, "closed connections that sent nothing");
            }
        }
    });
}

fn close_silent(addr: SocketAddr, limit_ms: u32) -> usize {
    let mut closed = 0;
    each_socket(|sock| {
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let ours = local.is_some_and(|l| {
            l.port() == addr.port() && (addr.ip().is_unspecified() || l.ip() == addr.ip())
        });
        if ours
            && !sock.is_listener().unwrap_or(true)
            && let Some(info) = tcp_info(sock)
            // Never a byte received, for longer than the limit (for such a
            // connection the kernel counts its age as the time since data).
            && info.tcpi_bytes_received == 0
            && info.tcpi_last_data_recv >= limit_ms
            && sock.shutdown(std::net::Shutdown::Both).is_ok()
        {
            closed += 1;
        }
        true
    });
    closed
}

fn tcp_info(sock: &socket2::SockRef<'_>) -> Option<libc::tcp_info> {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large and zeroed (a kernel that knows fewer fields leaves the rest
    // zero, which reads as "received nothing": the age check still holds).
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // SAFETY: zero-initialised, and filled in by the kernel on success.
    #[allow(unsafe_code)]
    (rc == 0).then(|| unsafe { info.assume_init() })
}

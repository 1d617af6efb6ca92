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
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
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
        // held by the running dropshot server for as long as the process
        // serves; it is only borrowed for the calls below, never closed.
        #[allow(unsafe_code)]
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let bound = sock.local_addr().ok().and_then(|a| a.as_socket());
        if bound == Some(addr) && sock.is_listener().unwrap_or(false) {
            return f(&sock);
        }
    }
    false
}

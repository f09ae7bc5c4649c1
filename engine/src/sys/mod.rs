//! Platform calls: the only place that talks to the OS directly.
//!
//! Every system call goes through [`syscall!`], which turns `-1` into the thread's `errno` as an
//! `io::Error`; the binding converts that into the matching `OSError` subclass
//! (`src/errors.rs`, `os_error`). Linux first: epoll for polling, eventfd for the cross-thread
//! waker; a kqueue backend for macOS would sit beside `epoll` with the same shape.

/// Calls `libc::$fn(args...)` and maps a `-1` return to `io::Error::last_os_error()`.
///
/// The macro itself is safe to invoke only with arguments that satisfy the called function's
/// contract; each call site states why its arguments do.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the call site guarantees the arguments meet the libc function's contract
        // (valid fds, pointers to live buffers of the stated length).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod clock;
pub mod epoll;
pub mod waker;

/// Whether `fd` is an open descriptor of this process (`fcntl(F_GETFD)`: EBADF if not).
pub fn check_fd(fd: i32) -> std::io::Result<()> {
    // F_GETFD takes no argument and reads nothing; any fd number is safe to ask about.
    syscall!(fcntl(fd, libc::F_GETFD)).map(|_| ())
}

/// `close(2)` of a descriptor this process owns and nothing else refers to; an error is not
/// reported (Linux releases the fd even then: close(2), "Dealing with error returns").
pub fn close(fd: i32) {
    // Any fd number is safe to pass; the caller owns `fd`.
    let _ = syscall!(close(fd));
}

/// `recv(2)` into `len` bytes at `buf`; returns the byte count (0 at end of stream).
///
/// Contract (not expressed as `unsafe fn` so the binding's fast paths keep their shape): `buf`
/// points to `len` writable bytes. Only the binding calls it, with a fresh bytes object or a
/// writable Py_buffer.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn recv(fd: i32, buf: *mut std::ffi::c_void, len: usize) -> std::io::Result<usize> {
    // recv on a bad fd is an EBADF error, not UB; `buf` points to `len` writable bytes (the
    // callers' contract: a fresh bytes object or a writable Py_buffer).
    syscall!(recv(fd, buf, len, 0)).map(|n| n as usize)
}

/// `send(2)` of `len` bytes at `buf`. MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE
/// (CPython ignores SIGPIPE at startup; an embedding application may not).
///
/// Contract (as for [`recv`]): `buf` points to `len` readable bytes the caller keeps alive.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn send(fd: i32, buf: *const std::ffi::c_void, len: usize) -> std::io::Result<usize> {
    // `buf` points to `len` readable bytes (the caller holds the object alive).
    syscall!(send(fd, buf, len, libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// How many bytes can be read from the stream socket `fd` now (`ioctl(FIONREAD)`, i.e.
/// SIOCINQ: tcp(7), unix(7)).
pub fn bytes_queued(fd: i32) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // `n` is a live, writable c_int, FIONREAD's argument; a bad fd is an EBADF error.
    syscall!(ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The number of connections waiting in the accept queue of the listening TCP socket `fd`, or
/// None when `fd` is not a TCP socket in the LISTEN state.
///
/// tcp(7) `TCP_INFO`: for a listener, Linux aliases `tcpi_unacked` to the number of
/// connections ready for accept() and `tcpi_sacked` to the backlog (net/ipv4/tcp.c
/// `tcp_get_info`, "listeners aliased fields"). One getsockopt costs a fraction of an accept(2)
/// that fails with EAGAIN (which allocates and frees a file first: 1.2 vs 7.9 us here).
pub fn listen_queue_len(fd: i32) -> std::io::Result<Option<u32>> {
    // SAFETY: tcp_info is plain old data (integers only); all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // `info` is a live, writable tcp_info of `len` bytes; a bad fd or a non-TCP socket is an
    // error (EBADF, EOPNOTSUPP / ENOPROTOOPT), not UB.
    syscall!(getsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        &mut info as *mut libc::tcp_info as *mut std::ffi::c_void,
        &mut len as *mut libc::socklen_t,
    ))?;
    // tcpi_state is the first byte; tcpi_unacked ends at byte 28 (8 u8 fields, 5 u32).
    const TCP_LISTEN: u8 = 10; // include/net/tcp_states.h
    if (len as usize) < 28 || info.tcpi_state != TCP_LISTEN {
        return Ok(None);
    }
    Ok(Some(info.tcpi_unacked))
}

/// `accept4(2)` on the IPv4 listener `fd` with `SOCK_CLOEXEC`, as CPython's `sock._accept()`
/// calls it (Modules/socketmodule.c `sock_accept_impl`): the new fd and the peer's address
/// (its four bytes in network order, and the port; None when the kernel gave no address, as
/// CPython's `makesockaddr` returns None for a length of 0). `nonblocking` adds
/// `SOCK_NONBLOCK`: the new fd is non-blocking from the start (accept4(2)), which saves the
/// `ioctl(FIONBIO)` of asyncio's `conn.setblocking(False)`.
#[allow(clippy::type_complexity)]
pub fn accept4_inet(fd: i32, nonblocking: bool) -> std::io::Result<(i32, Option<([u8; 4], u16)>)> {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // `addr` is a live, writable sockaddr_in of `len` bytes; a bad fd or a listener of
    // another family is an error (EBADF, EINVAL), or an address that does not fit, which
    // `len` then shows.
    let new = syscall!(accept4(
        fd,
        &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr,
        &mut len as *mut libc::socklen_t,
        if nonblocking {
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        } else {
            libc::SOCK_CLOEXEC
        },
    ))?;
    let peer = (len != 0).then(|| {
        (
            addr.sin_addr.s_addr.to_ne_bytes(),
            u16::from_be(addr.sin_port),
        )
    });
    Ok((new, peer))
}

/// `getsockname(2)` of the IPv4 socket `fd`: its address's four bytes (network order) and
/// port; None when the kernel gave no address (length 0) or one of another family.
pub fn getsockname_inet(fd: i32) -> std::io::Result<Option<([u8; 4], u16)>> {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // `addr` is a live, writable sockaddr_in of `len` bytes; a bad fd is an EBADF error.
    syscall!(getsockname(
        fd,
        &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr,
        &mut len as *mut libc::socklen_t,
    ))?;
    if len == 0 || addr.sin_family != libc::AF_INET as libc::sa_family_t {
        return Ok(None);
    }
    Ok(Some((
        addr.sin_addr.s_addr.to_ne_bytes(),
        u16::from_be(addr.sin_port),
    )))
}

/// `setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)`: what asyncio's `_set_nodelay` asks of every
/// TCP socket it makes a transport of (tcp(7)).
pub fn set_tcp_nodelay(fd: i32) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // `on` is a live c_int of the length given; a bad fd is an EBADF error.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &on as *const libc::c_int as *const std::ffi::c_void,
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn accept4_inet_gives_the_peer_and_a_close_on_exec_fd() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (fd, peer) = super::accept4_inet(listener.as_raw_fd(), false).unwrap();
        let std::net::SocketAddr::V4(local) = client.local_addr().unwrap() else {
            panic!("not IPv4");
        };
        assert_eq!(peer, Some((local.ip().octets(), local.port())));
        // SAFETY: fd is the descriptor just accepted; F_GETFD reads its flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // SAFETY: as above, F_GETFL reads the file's status flags.
        let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(status & libc::O_NONBLOCK, 0);
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        // With SOCK_NONBLOCK, the new fd is non-blocking.
        let _client2 = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (fd, _) = super::accept4_inet(listener.as_raw_fd(), true).unwrap();
        // SAFETY: fd is the descriptor just accepted; F_GETFL reads its status flags.
        let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(status & libc::O_NONBLOCK, libc::O_NONBLOCK);
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        // A listener with nothing queued, made non-blocking: EAGAIN.
        listener.set_nonblocking(true).unwrap();
        let err = super::accept4_inet(listener.as_raw_fd(), false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn listen_queue_len_counts_connections_not_yet_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(super::listen_queue_len(fd).unwrap(), Some(0));
        // The kernel completes each handshake and queues the connection before any accept.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(super::listen_queue_len(fd).unwrap(), Some(3));
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(super::listen_queue_len(fd).unwrap(), Some(2));
        // A connected socket is not a listener: no count.
        assert_eq!(
            super::listen_queue_len(clients[0].as_raw_fd()).unwrap(),
            None
        );
        assert_eq!(super::listen_queue_len(accepted.as_raw_fd()).unwrap(), None);
        // A Unix socket has no TCP_INFO.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(super::listen_queue_len(a.as_raw_fd()).is_err());
    }
}

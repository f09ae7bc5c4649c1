//! The TLS floor: the echo server of server.rs, over TLS, with OpenSSL and no Python.
//!
//! It is the floor of benches/net.py's TLS table (issue 18): the same echo, the same certificate
//! and key, the same OpenSSL library as the Python servers (openssl.rs), so what a Python loop
//! spends above it is the loop's own. The SSL object runs over two memory BIOs, as CPython's
//! `ssl.SSLObject` under every asyncio TLS transport does, and the server moves the ciphertext
//! between them and the non-blocking socket itself; one thread, one mio poll.
//!
//! Invariants (as server.rs): mio is edge-triggered, so a connection is driven until a socket
//! read or write returns `WouldBlock` or moves fewer bytes than asked (`Conn::pump`); each read
//! (up to READ_CHUNK of ciphertext) is decrypted whole and echoed in one `SSL_write` (several
//! records when large, one write(2) when the socket takes them); reading stops while ciphertext
//! is queued (back-pressure).
//!
//! Control (the protocol of benches/tls_echo.py's Python servers): after `ready ADDR` on stdout,
//! each `cpu` line on stdin is answered with this process's CPU time in seconds, and `quit` or
//! the end of stdin exits.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::path::Path;

use mio::{Events, Interest, Poll, Token};

use crate::net::{Addr, Listener, Stream};
use crate::openssl::{Io, SslConn, Tls};
use crate::server::{flush, State};

const LISTENER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 256 * 1024;

struct Conn<'a> {
    ssl: SslConn<'a>,
    stream: Stream,
    handshaken: bool,
    /// Ciphertext not yet accepted by the socket, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
}

impl Conn<'_> {
    /// Drives the connection until the socket would block or the peer is gone.
    ///
    /// As server.rs: a read that returns less than asked has drained the socket, so the next
    /// edge is as good as `WouldBlock` and saves a syscall (epoll(7)).
    fn pump(&mut self, bufs: &mut Buffers) -> State {
        let mut drained = false;
        loop {
            // Flush queued ciphertext first; while any remains, do not read (back-pressure).
            if let Some(state) = flush(&mut self.stream, &mut self.out, &mut self.out_pos) {
                return state;
            }
            if drained {
                return State::Open;
            }
            let n = match self.stream.read(&mut bufs.cipher) {
                Ok(0) => return self.close(),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return State::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return State::Closed,
            };
            drained = n < bufs.cipher.len();
            self.ssl.feed(&bufs.cipher[..n]);
            if !self.handshaken {
                match self.ssl.handshake() {
                    Io::Done(_) => self.handshaken = true,
                    Io::WantRead | Io::WantWrite => {}
                    Io::Closed => return State::Closed,
                }
            }
            if self.handshaken {
                // Decrypt all that arrived (one record per SSL_read), echo it in one SSL_write.
                let mut m = 0;
                let mut peer_closed = false;
                loop {
                    if m == bufs.plain.len() {
                        self.echo(&bufs.plain[..m]);
                        m = 0;
                    }
                    match self.ssl.read(&mut bufs.plain[m..]) {
                        Io::Done(k) => m += k,
                        Io::WantRead | Io::WantWrite => break,
                        Io::Closed => {
                            peer_closed = true;
                            break;
                        }
                    }
                }
                if m > 0 {
                    self.echo(&bufs.plain[..m]);
                }
                if peer_closed {
                    return self.close();
                }
            }
            // The handshake's flights, the echoed records: out to the socket (loop top).
            self.ssl.take_output(&mut self.out);
        }
    }

    fn echo(&mut self, data: &[u8]) {
        // A memory BIO takes every record, so SSL_write takes all of `data`.
        let _ = self.ssl.write(data);
    }

    /// The peer closed: answer with close_notify (best effort: one write, no waiting).
    fn close(&mut self) -> State {
        if self.handshaken {
            self.ssl.shutdown();
            self.ssl.take_output(&mut self.out);
            let _ = self.stream.write(&self.out[self.out_pos..]);
        }
        State::Closed
    }
}

/// The two scratch buffers every connection shares (one thread).
struct Buffers {
    cipher: Vec<u8>,
    plain: Vec<u8>,
}

/// Binds `addr`, prints `ready ADDR`, and echoes over TLS until told to quit (module doc).
pub fn serve(addr: &Addr, libssl: &Path, pem: &Path) -> Result<(), String> {
    let tls = Tls::server(libssl, Some(pem)).map_err(|e| format!("{}: {e}", libssl.display()))?;
    let io_err = |e: io::Error| e.to_string();
    let mut listener = Listener::bind(addr).map_err(io_err)?;
    let mut poll = Poll::new().map_err(io_err)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(io_err)?;
    let bound = listener.local_addr(addr).map_err(io_err)?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready {bound}")
            .and_then(|()| out.flush())
            .map_err(io_err)?;
    }
    std::thread::spawn(control);

    let mut conns: Vec<Option<Conn<'_>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut bufs = Buffers {
        cipher: vec![0u8; READ_CHUNK],
        plain: vec![0u8; READ_CHUNK],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&tls, &listener, &poll, &mut conns, &mut free, &mut bufs)?;
                continue;
            }
            let slot = event.token().0;
            let closed = match conns.get_mut(slot).and_then(Option::as_mut) {
                Some(conn) => matches!(conn.pump(&mut bufs), State::Closed),
                None => false, // closed earlier in this batch
            };
            if closed {
                if let Some(mut conn) = conns[slot].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
                free.push(slot);
            }
        }
    }
}

fn accept_all<'a>(
    tls: &'a Tls,
    listener: &Listener,
    poll: &Poll,
    conns: &mut Vec<Option<Conn<'a>>>,
    free: &mut Vec<usize>,
    bufs: &mut Buffers,
) -> Result<(), String> {
    loop {
        let mut stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("netfloor: accept failed: {e}");
                return Ok(());
            }
        };
        let ssl = tls.accept()?;
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        poll.registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            ssl,
            stream,
            handshaken: false,
            out: Vec::new(),
            out_pos: 0,
        };
        // The ClientHello may already be waiting (its edge may have come before registration).
        match conn.pump(bufs) {
            State::Open => conns[slot] = Some(conn),
            State::Closed => {
                let _ = poll.registry().deregister(&mut conn.stream);
                free.push(slot);
            }
        }
    }
}

/// Loads `libssl` and makes a context: whether `tls-echo-server` can run with it.
pub fn probe(libssl: &Path) -> Result<(), String> {
    Tls::server(libssl, None)
        .map(drop)
        .map_err(|e| format!("{}: {e}", libssl.display()))
}

/// Answers `cpu` lines on stdin with the process's CPU time; exits on `quit` or end of input.
fn control() {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("cpu") => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{:.9}", cpu_seconds()).and_then(|()| out.flush());
            }
            Ok("quit") | Err(_) => break,
            Ok(_) => {}
        }
    }
    std::process::exit(0);
}

/// This process's CPU time (all threads), clock_gettime(2) CLOCK_PROCESS_CPUTIME_ID.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `ts`, which is valid for it.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

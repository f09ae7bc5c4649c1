//! The floor servers: one thread, one mio poll, no Python.
//!
//! Two services share the same event loop:
//! - `Echo` writes back every byte it reads, straight from the read buffer (no copy unless the
//!   socket's send buffer is full, when the unsent rest is queued);
//! - `Http` answers every complete HTTP/1.1 request head (`\r\n\r\n`) in its input with the same
//!   fixed keep-alive hello-world response the Python HTTP servers of benches/net.py send,
//!   so pipelined requests get one response each, in order.
//!
//! Invariants: mio is edge-triggered, so a connection is always driven until a read or a write
//! returns `WouldBlock` or moves fewer bytes than asked (which epoll(7) allows as the same
//! signal for stream sockets) (`Conn::pump`); reading stops while output is queued (back-pressure,
//! like asyncio's pause_reading), and resumes when a writable event drains the queue. Memory per
//! connection is bounded by one read's worth of queued output (echo) or by the responses to one
//! read's worth of requests (HTTP).

use std::io::{self, ErrorKind, Read, Write};

use mio::{Events, Interest, Poll, Token};

use crate::net::{Addr, Listener, Stream};

/// What the server does with the bytes it reads.
#[derive(Clone, Copy, Debug)]
pub enum Service {
    Echo,
    Http,
}

/// The response of every HTTP server in benches/net.py, byte for byte.
pub const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

const LISTENER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 256 * 1024;

struct Conn {
    stream: Stream,
    /// Output not yet accepted by the socket, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// HTTP only: the start of a request head whose end has not arrived yet.
    partial: Vec<u8>,
}

pub(crate) enum State {
    Open,
    Closed,
}

/// Writes `out[*pos..]` until it is all sent (then empties `out` and returns None) or the
/// socket stops taking it: `Some(state)` is what `pump` returns then. A short write means the
/// send buffer is full, so a writable edge follows (epoll(7)). tls.rs flushes ciphertext with it.
pub(crate) fn flush(stream: &mut Stream, out: &mut Vec<u8>, pos: &mut usize) -> Option<State> {
    while *pos < out.len() {
        let asked = out.len() - *pos;
        match stream.write(&out[*pos..]) {
            Ok(0) => return Some(State::Closed),
            Ok(n) if n < asked => {
                *pos += n;
                return Some(State::Open);
            }
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(State::Open),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(State::Closed),
        }
    }
    out.clear();
    *pos = 0;
    None
}

impl Conn {
    /// Drives the connection until the socket would block or the peer is gone.
    ///
    /// A read or write that moves fewer bytes than asked for has emptied the receive buffer or
    /// filled the send buffer, so the next edge is as good as `WouldBlock` and saves a syscall
    /// (epoll(7), "for stream-oriented files ... returns a lower number of bytes").
    fn pump(&mut self, service: Service, scratch: &mut [u8]) -> State {
        let mut drained = false;
        loop {
            // Flush queued output first; while any remains, do not read (back-pressure).
            if let Some(state) = flush(&mut self.stream, &mut self.out, &mut self.out_pos) {
                return state;
            }
            if drained {
                return State::Open;
            }
            let n = match self.stream.read(scratch) {
                Ok(0) => return State::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return State::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return State::Closed,
            };
            drained = n < scratch.len();
            match service {
                Service::Echo => match self.write_or_queue(&scratch[..n]) {
                    Ok(true) => {}
                    Ok(false) => return State::Open, // rest queued; a writable edge follows
                    Err(state) => return state,
                },
                Service::Http => self.answer_requests(&scratch[..n]),
            }
        }
    }

    /// Writes `data` directly; whatever the socket does not take is queued in `out`.
    /// Returns whether all of it went out (false: the send buffer is full).
    fn write_or_queue(&mut self, data: &[u8]) -> Result<bool, State> {
        let mut done = 0;
        while done < data.len() {
            match self.stream.write(&data[done..]) {
                Ok(0) => return Err(State::Closed),
                Ok(k) if done + k < data.len() => {
                    self.out.extend_from_slice(&data[done + k..]);
                    return Ok(false);
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.out.extend_from_slice(&data[done..]);
                    return Ok(false);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(State::Closed),
            }
        }
        Ok(true)
    }

    /// Queues one response per complete request head in `partial + data`; keeps the tail.
    fn answer_requests(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        let mut start = 0;
        // A head ends at the first "\r\n\r\n"; benchmark requests (wrk's GETs) have no body.
        while let Some(end) = find(&self.partial[start..], b"\r\n\r\n") {
            self.out.extend_from_slice(HTTP_RESPONSE);
            start += end + 4;
        }
        self.partial.drain(..start);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Binds `addr`, prints `ready ADDR` (the bound address) on stdout, and serves until killed.
pub fn serve(addr: &Addr, service: Service) -> io::Result<()> {
    let mut listener = Listener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let bound = listener.local_addr(addr)?;
    {
        // The parent waits for this line before it starts the client.
        let mut out = io::stdout().lock();
        writeln!(out, "ready {bound}")?;
        out.flush()?;
    }

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(
                    &listener,
                    &poll,
                    &mut conns,
                    &mut free,
                    service,
                    &mut scratch,
                )?;
                continue;
            }
            let slot = event.token().0;
            let closed = match conns.get_mut(slot).and_then(Option::as_mut) {
                Some(conn) => matches!(conn.pump(service, &mut scratch), State::Closed),
                None => false, // an event for a connection closed earlier in this batch
            };
            if closed {
                if let Some(mut conn) = conns[slot].take() {
                    // Dropping the stream closes it; deregistering first keeps epoll tidy.
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
                free.push(slot);
            }
        }
    }
}

fn accept_all(
    listener: &Listener,
    poll: &Poll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    service: Service,
    scratch: &mut [u8],
) -> io::Result<()> {
    loop {
        let mut stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EMFILE, ECONNABORTED...: drop this one, keep serving the others.
            Err(e) => {
                eprintln!("netfloor: accept failed: {e}");
                return Ok(());
            }
        };
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut conn = Conn {
            stream,
            out: Vec::new(),
            out_pos: 0,
            partial: Vec::new(),
        };
        // Data may already be waiting (the peer wrote right after connect): drive it now,
        // since the edge that announced it may have come before the registration.
        match conn.pump(service, scratch) {
            State::Open => conns[slot] = Some(conn),
            State::Closed => {
                let _ = poll.registry().deregister(&mut conn.stream);
                free.push(slot);
            }
        }
    }
}

//! The echo load client: N connections doing ping-pong against any echo server.
//!
//! Each connection sends one message of S bytes, reads until the whole message has come back,
//! checks every echoed byte against what it sent, and only then sends the next one. All
//! connections run on one thread and one mio poll, so the client needs one core at most and
//! leaves the other to the server.
//!
//! Protocol with the parent (benches/net.py), one JSON object per stdout line:
//! 1. connect every connection, run the warm-up (`--warmup` seconds), let every connection
//!    finish its message in flight, print `{"event":"warm"}` and wait for one line on stdin:
//!    the parent samples the server's CPU time while the server is idle;
//! 2. run the measured phase (`--duration` seconds, or `--messages` messages over all
//!    connections), let the in-flight messages finish, print the result line
//!    `{"status":"ok","messages":..,"seconds":..,"msgs_per_s":..,"bytes_per_s":..}`;
//! 3. wait for stdin to close (the parent samples the server's CPU again first), then exit,
//!    which closes the connections outside both samples.
//!
//! `--churn`: connection churn instead of ping-pong. Each of the N workers connects, sends one
//! message, reads its whole echo back (checked as above), closes, and connects again; the count
//! reported as `messages` is then the connections completed, each one accept, one echo and one
//! close on the server. The phases start with no connection open and end when every worker has
//! closed its last one, so the server's accepts and closes fall inside the measured phase.
//!
//! Invariants: message k of connection c is the window of a fixed pseudo-random pattern that
//! starts at `(c * 7919 + k * 31) % 256`, so a server that echoes stale, shifted or mixed-up
//! data is caught at the first wrong byte (`{"status":"FAIL",...}`, exit status 1), and one that
//! echoes too little or nothing when a connection makes no progress for `--stall-timeout`
//! seconds, which fails the run too.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::net::{Addr, Stream};

/// Client settings, from the command line.
pub struct Config {
    pub addr: Addr,
    pub conns: usize,
    pub size: usize,
    pub duration: Option<Duration>,
    pub messages: Option<u64>,
    pub warmup: Duration,
    pub stall_timeout: Duration,
    /// One message per connection, then close and reconnect (see the module's doc).
    pub churn: bool,
}

struct Conn {
    /// None between two connections of a churn worker (and before its first).
    stream: Option<Stream>,
    /// Number of the message in flight (also counts the finished ones).
    seq: u64,
    sent: usize,
    received: usize,
    /// A message is in flight: sent or being sent, not fully echoed yet.
    busy: bool,
}

/// Run state shared by the phases.
struct Client {
    poll: Poll,
    conns: Vec<Conn>,
    pattern: Vec<u8>,
    size: usize,
    scratch: Vec<u8>,
    addr: Addr,
    churn: bool,
}

/// When a phase stops starting new messages.
enum Stop {
    At(Instant),
    After(u64),
}

fn window(pattern: &[u8], size: usize, conn: usize, seq: u64) -> &[u8] {
    // The multipliers spread consecutive messages and connections over different offsets.
    let start = ((conn as u64)
        .wrapping_mul(7919)
        .wrapping_add(seq.wrapping_mul(31))
        % 256) as usize;
    &pattern[start..start + size]
}

impl Client {
    fn new(cfg: &Config) -> Result<Client, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut conns = Vec::with_capacity(cfg.conns);
        for i in 0..cfg.conns {
            // Churn workers connect when they start a message, inside the phase.
            let stream = if cfg.churn {
                None
            } else {
                Some(connect(&poll, &cfg.addr, i)?)
            };
            conns.push(Conn {
                stream,
                seq: 0,
                sent: 0,
                received: 0,
                busy: false,
            });
        }
        // xorshift64: any fixed, non-repeating-looking bytes will do; no need for a crate.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let pattern = (0..cfg.size + 256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Ok(Client {
            poll,
            conns,
            pattern,
            size: cfg.size,
            scratch: vec![0u8; 256 * 1024],
            addr: cfg.addr.clone(),
            churn: cfg.churn,
        })
    }

    /// Sends and receives on connection `i` until it would block; returns the number of
    /// messages it completed. `may_start` says whether it may begin a new message.
    fn drive(&mut self, i: usize, may_start: &mut dyn FnMut() -> bool) -> Result<u64, String> {
        let size = self.size;
        let conn = &mut self.conns[i];
        let mut completed = 0;
        loop {
            if !conn.busy {
                if !may_start() {
                    return Ok(completed);
                }
                conn.busy = true;
                conn.sent = 0;
                conn.received = 0;
                if conn.stream.is_none() {
                    conn.stream = Some(connect(&self.poll, &self.addr, i)?);
                }
            }
            let Some(stream) = conn.stream.as_mut() else {
                return Err(format!("connection {i}: no stream"));
            };
            let expected = window(&self.pattern, size, i, conn.seq);
            // A short read or write means the socket's buffer is empty or full: the next edge
            // is as good as WouldBlock (epoll(7)), one syscall cheaper.
            while conn.sent < size {
                match stream.write(&expected[conn.sent..]) {
                    Ok(0) => return Err(format!("connection {i}: write returned 0")),
                    Ok(n) if conn.sent + n < size => {
                        conn.sent += n;
                        break;
                    }
                    Ok(n) => conn.sent += n,
                    // The next writable edge resumes it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("connection {i}: write: {e}")),
                }
            }
            // Read whatever has come back; never more than was sent (ping-pong).
            while conn.received < conn.sent {
                let want = (conn.sent - conn.received).min(self.scratch.len());
                match stream.read(&mut self.scratch[..want]) {
                    Ok(0) => {
                        return Err(format!(
                            "connection {i}: server closed after {} of {size} bytes of message {}",
                            conn.received, conn.seq
                        ))
                    }
                    Ok(n) => {
                        let start = conn.received;
                        if self.scratch[..n] != expected[start..start + n] {
                            let at = (0..n)
                                .find(|&k| self.scratch[k] != expected[start + k])
                                .unwrap_or(0);
                            return Err(format!(
                                "connection {i}: echo differs from what was sent at byte {} of \
                                 message {} ({size} bytes)",
                                start + at,
                                conn.seq
                            ));
                        }
                        conn.received += n;
                        if n < want {
                            break;
                        }
                    }
                    // The next readable edge resumes it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("connection {i}: read: {e}")),
                }
            }
            if conn.received < size {
                // The write loop stopped at WouldBlock or at the end of the message, and the
                // read loop at WouldBlock or at all that was sent: a readiness edge comes next.
                return Ok(completed);
            }
            conn.busy = false;
            conn.seq += 1;
            completed += 1;
            if self.churn {
                if let Some(mut old) = conn.stream.take() {
                    // Dropping it closes it (FIN, as a client's close() sends); deregistering
                    // first keeps epoll tidy. The next message connects again.
                    let _ = self.poll.registry().deregister(&mut old);
                }
            }
        }
    }

    /// Runs until `stop`, then lets every in-flight message finish. Returns the messages
    /// completed and the time from the phase's start to the last completion.
    fn phase(&mut self, stop: Stop, stall: Duration) -> Result<(u64, Duration), String> {
        let t0 = Instant::now();
        let mut done: u64 = 0;
        let mut started: u64 = 0;
        let mut last_progress = Instant::now();
        let mut events = Events::with_capacity(1024);
        // Kick every connection once; after that, readiness events drive them.
        let mut pending: Vec<usize> = (0..self.conns.len()).collect();
        loop {
            for i in pending.drain(..) {
                let was_busy = self.conns[i].busy;
                let mut may_start = || match stop {
                    Stop::At(deadline) => Instant::now() < deadline,
                    Stop::After(limit) => {
                        if started < limit {
                            started += 1;
                            true
                        } else {
                            false
                        }
                    }
                };
                let n = self.drive(i, &mut may_start)?;
                if n > 0 || was_busy != self.conns[i].busy {
                    last_progress = Instant::now();
                }
                done += n;
            }
            let stopping = match stop {
                Stop::At(deadline) => Instant::now() >= deadline,
                Stop::After(limit) => started >= limit,
            };
            if stopping && self.conns.iter().all(|c| !c.busy) {
                return Ok((done, t0.elapsed()));
            }
            if last_progress.elapsed() > stall {
                return Err(format!(
                    "no echo for {:.0} s: the server is stuck",
                    stall.as_secs_f64()
                ));
            }
            // Wake at least every 100 ms to notice the deadline and stalls.
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            // A connection never idles before the stop: it starts its next message as soon as
            // one completes, so events are all that drive it.
            pending.extend(events.iter().map(|e| e.token().0));
        }
    }
}

/// Connects to `addr` and registers the stream under `Token(i)`.
fn connect(poll: &Poll, addr: &Addr, i: usize) -> Result<Stream, String> {
    let mut stream = Stream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    poll.registry()
        .register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| format!("register: {e}"))?;
    Ok(stream)
}

fn wait_for_parent(what: &str) -> Result<(), String> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading stdin ({what}): {e}"))?;
    Ok(())
}

fn emit(line: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// Runs the three phases; an error becomes the FAIL line printed by `main`.
pub fn run(cfg: &Config) -> Result<(), String> {
    let mut client = Client::new(cfg)?;
    if !cfg.warmup.is_zero() {
        client.phase(Stop::At(Instant::now() + cfg.warmup), cfg.stall_timeout)?;
    }
    emit(r#"{"event":"warm"}"#)?;
    wait_for_parent("go")?;
    let stop = match (cfg.messages, cfg.duration) {
        (Some(m), _) => Stop::After(m),
        (None, Some(d)) => Stop::At(Instant::now() + d),
        (None, None) => return Err("give --duration or --messages".into()),
    };
    let (messages, elapsed) = client.phase(stop, cfg.stall_timeout)?;
    let secs = elapsed.as_secs_f64().max(1e-9);
    emit(&format!(
        "{{\"status\":\"ok\",\"messages\":{messages},\"size\":{},\"conns\":{},\
         \"seconds\":{secs:.6},\"msgs_per_s\":{:.3},\"bytes_per_s\":{:.1}}}",
        cfg.size,
        cfg.conns,
        messages as f64 / secs,
        (messages as f64) * (cfg.size as f64) / secs,
    ))?;
    // Keep the connections open until the parent has read the server's CPU time.
    let mut rest = String::new();
    let _ = io::stdin().lock().read_to_string(&mut rest);
    Ok(())
}

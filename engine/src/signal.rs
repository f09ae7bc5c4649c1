//! The signal wake-up: the socket pair whose write end is handed to `signal.set_wakeup_fd`.
//!
//! CPython's C signal handler writes each signal's number as one byte to the wake-up fd
//! (Modules/signalmodule.c, `trip_signal`); the loop polls the read end, and on readiness reads
//! every byte, runs the Python-level handlers (`PyErr_CheckSignals`) and hands the numbers to
//! `add_signal_handler`'s callbacks (`_process_signals`, as asyncio's
//! `unix_events._UnixSelectorEventLoop._process_self_data`). Both ends are non-blocking: a full
//! socket drops a byte rather than block a signal handler (CPython warns), and a read stops at
//! EAGAIN.
//!
//! Invariants: both ends are close-on-exec (std's `UnixStream::pair`) and non-blocking; the
//! read end is registered in the loop's poller under `io::SIGNAL_TOKEN`.
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

pub struct SignalWakeup {
    read: UnixStream,
    write: UnixStream,
}

impl SignalWakeup {
    pub fn new() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Self { read, write })
    }

    /// The end the loop polls.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The end for `signal.set_wakeup_fd`.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Appends every signal number waiting in the socket to `out`.
    pub fn drain(&self, out: &mut Vec<u8>) -> io::Result<()> {
        read_available(self.read_fd(), out)
    }
}

/// Reads everything available from a non-blocking fd into `out`.
pub fn read_available(fd: RawFd, out: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let ptr: *mut libc::c_void = buf.as_mut_ptr().cast();
        // `ptr` points at `buf.len()` writable bytes.
        match syscall!(read(fd, ptr, buf.len())) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n as usize]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_byte(fd: RawFd, b: u8) {
        let ptr: *const libc::c_void = (&b as *const u8).cast();
        // `ptr` points at one readable byte.
        syscall!(write(fd, ptr, 1)).expect("write");
    }

    #[test]
    fn drains_signal_numbers_in_order() {
        let s = SignalWakeup::new().expect("pair");
        let mut out = Vec::new();
        s.drain(&mut out).expect("empty drain");
        assert!(out.is_empty());
        for b in [2u8, 15, 10] {
            write_byte(s.write_fd(), b);
        }
        s.drain(&mut out).expect("drain");
        assert_eq!(out, vec![2, 15, 10]);
        out.clear();
        s.drain(&mut out).expect("drained");
        assert!(out.is_empty());
    }

    #[test]
    fn wakes_the_poller() {
        use crate::sys::epoll::{empty_event, Epoll, READABLE};
        let s = SignalWakeup::new().expect("pair");
        let ep = Epoll::new().expect("epoll");
        ep.add(s.read_fd(), READABLE, 7).expect("add");
        let mut ev = vec![empty_event(); 4];
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
        write_byte(s.write_fd(), 2);
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 1000).expect("wait"), 1);
        let token = ev[0].u64;
        assert_eq!(token, 7);
        let mut out = Vec::new();
        s.drain(&mut out).expect("drain");
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
    }
}

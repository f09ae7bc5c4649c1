//! The cross-thread waker: an eventfd registered in the loop's epoll set.
//!
//! Invariant: `wake()` never blocks and may be called from any thread (the binding calls it
//! with the GIL held, only while the loop thread polls);
//! `drain()` resets the counter so the next `wake()` makes the fd readable again.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: eventfd just returned this fd and nothing else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        let ptr: *const libc::c_void = (&one as *const u64).cast();
        // `ptr` points at 8 readable bytes. EAGAIN means the counter is saturated, which
        // still leaves the fd readable, so the error is irrelevant.
        let _ = syscall!(write(self.fd.as_raw_fd(), ptr, 8));
    }

    pub fn drain(&self) {
        let mut buf: u64 = 0;
        let ptr: *mut libc::c_void = (&mut buf as *mut u64).cast();
        // `ptr` points at 8 writable bytes; EAGAIN (already drained) is fine.
        let _ = syscall!(read(self.fd.as_raw_fd(), ptr, 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::epoll::{empty_event, Epoll, READABLE};

    #[test]
    fn wake_makes_readable_and_drain_resets() {
        let w = Waker::new().expect("eventfd");
        let ep = Epoll::new().expect("epoll");
        ep.add(w.raw(), READABLE, 1).expect("add");
        let mut ev = vec![empty_event(); 2];
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
        w.wake();
        w.wake();
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
        w.drain();
        w.drain(); // a second drain is EAGAIN, ignored
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
    }
}

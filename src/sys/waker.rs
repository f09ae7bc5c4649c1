//! The cross-thread waker: an eventfd registered in the loop's epoll set.
//!
//! Invariant: `wake()` never blocks and may be called from any thread that holds the GIL;
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

/// Reads everything available from a non-blocking fd into `out` (used for the signal
/// wakeup socket, whose bytes are signal numbers).
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

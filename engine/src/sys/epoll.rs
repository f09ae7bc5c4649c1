//! A thin level-triggered epoll wrapper.
//!
//! Why not mio: asyncio's `add_reader`/`add_writer` are level-triggered (a reader that does not
//! drain its fd is called again on the next iteration, as `selectors.EpollSelector` behaves),
//! while mio registers edge-triggered and would need an `epoll_ctl` per event to re-arm.
//! Invariant: the registration's `data` is the caller's token, returned unchanged in events.
//! Registrations belong to the open file description, not to the fd number: closing one fd of a
//! file that stays open elsewhere (a dup, a forked child) leaves its registration in the set
//! (see the io module, engine/src/io/mod.rs, for how the loop copes).
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;

pub struct Epoll {
    fd: OwnedFd,
}

pub type Event = libc::epoll_event;

pub fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // EPOLL_CLOEXEC: child processes must not inherit the loop's poller.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 just returned this fd and nothing else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        let ptr: *mut libc::epoll_event = &mut ev;
        // `ptr` points at a live epoll_event for the duration of the call.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, ptr)).map(|_| ())
    }

    /// Registers `fd`; one the set already holds (EEXIST) gets its mask and token set instead.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_ADD, fd, events, token) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
            }
            other => other,
        }
    }

    /// Changes the interest set; an fd that epoll dropped because it was closed and whose
    /// number was reused (ENOENT) is registered afresh, which is what the caller meant.
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_MOD, fd, events, token) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.add(fd, events, token),
            other => other,
        }
    }

    /// Removes `fd`'s registration. ENOENT or EBADF: the fd number no longer refers to the
    /// registered file (closed, maybe reused), whose registration, if the file is still open
    /// elsewhere, stays in the set.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events; `timeout_ms < 0` blocks. Returns how many entries of `buf` are set.
    /// EINTR is returned as an error so the caller can run Python's signal handlers.
    /// Takes the raw epoll fd so the loop can wait with the GIL released without borrowing
    /// loop state; the caller guarantees the fd stays open meanwhile (close refuses while the
    /// loop polls).
    pub fn wait_raw(epfd: RawFd, buf: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let cap = buf.len().min(i32::MAX as usize) as libc::c_int;
        // `buf` is a live, writable slice of `cap` epoll_events.
        let n = syscall!(epoll_wait(epfd, buf.as_mut_ptr(), cap, timeout_ms))?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn level_triggered_with_tokens_and_fallbacks() {
        let ep = Epoll::new().expect("epoll");
        let (a, b) = UnixStream::pair().expect("pair");
        let mut ev = vec![empty_event(); 4];
        // MOD of an unregistered fd falls back to ADD; ADD of a registered one to MOD.
        ep.modify(a.as_raw_fd(), READABLE, 11).expect("modify->add");
        ep.add(a.as_raw_fd(), READABLE | WRITABLE, 12)
            .expect("add->modify");
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
        let (token, events) = (ev[0].u64, ev[0].events);
        assert_eq!((token, events), (12, WRITABLE));
        ep.modify(a.as_raw_fd(), READABLE, 13).expect("modify");
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
        (&b).write_all(b"x").expect("write");
        // Level-triggered: reported again until drained.
        for _ in 0..2 {
            assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
            let token = ev[0].u64;
            assert_eq!(token, 13);
        }
        ep.delete(a.as_raw_fd()).expect("delete");
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
        let e = ep.delete(a.as_raw_fd()).expect_err("not registered");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}

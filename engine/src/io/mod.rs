//! The fd registry behind add_reader / add_writer: which handle to schedule when an fd is
//! ready, and what the poller holds for it.
//!
//! Removing the last interest of an fd does not delete its epoll registration at once: the
//! entry is *parked* (no handle, the kernel mask remembered), so that the next add on that fd
//! re-arms it with one `EPOLL_CTL_MOD` instead of an `EPOLL_CTL_DEL` now and an `EPOLL_CTL_ADD`
//! then (the sock_* API registers and unregisters around every wait), or with no syscall at all
//! when the same live socket object re-adds it (see [`FdEntry::owner`]). A readiness event for a
//! parked fd (nobody wants it) deletes the registration, so a level-triggered fd cannot keep
//! the loop spinning.
//!
//! That deletion is itself deferred: the event *dooms* the entry ([`FdTable::doom`]) and the
//! loop deletes the doomed registrations just before its next poll ([`FdTable::take_doomed`]),
//! as libuv applies its watcher changes at the poll. A stream paused past its limit on every
//! read (a `StreamReader` more than twice its limit behind: every read of a bulk transfer)
//! parks its fd, which is still readable, so the next poll reports it; the read that follows
//! resumes it in that same iteration, which then re-arms the kept registration with one MOD
//! (or none, for the same live socket) where an eager delete cost a DEL and an ADD. The rule
//! is safe because a re-arm never trusts a kept registration more than it trusts a parked
//! one: the kernel keys a registration by fd number *and* open file description (epoll(7),
//! Q0), so the MOD by number reaches the registration only if the number still names the same
//! file (ENOENT otherwise, and the fd is registered afresh), and the no-syscall re-arm is made
//! only for the same live socket object, whose fd cannot have been closed. A doomed fd closed
//! before the deferred delete is dropped from the set by the kernel when its last file
//! reference closes (epoll(7), Q6); if a dup keeps the file open, the delete by number fails
//! and the registration is an orphan, which the loop meets as any other: its next event
//! carries a token the table no longer has, and the loop rebuilds its set then.
//!
//! The danger parking adds: epoll registrations belong to the open file description, not to the
//! fd number. A parked fd that is closed while its file stays open elsewhere (`os.dup`,
//! `socket.dup`, a forked child) keeps its registration, which can no longer be deleted by fd
//! number and can report events under the old token, maybe once the number is reused by a new
//! socket. So the token carries a generation: the fd in the low 32 bits and, in the high 32
//! bits, a number taken afresh each time the registration's token is set (ADD or MOD). An event
//! whose generation is not the entry's current one, or that the loop cannot delete, comes from
//! such an orphan; the loop then rebuilds its epoll set (`LoopCore::rebuild_poller`).
//!
//! Invariants:
//! - an fd has an entry iff it has a reader or a writer (it is *active*; `len()` counts these and
//!   `fds()` lists them) or the kernel holds a registration for it (`kmask != 0`: parked);
//! - an active entry's `kmask` is exactly its interest set (READABLE if a reader is set,
//!   WRITABLE if a writer is), or 0 if the kernel lost the fd (it was closed under its
//!   registration and the epoll set was rebuilt); a parked entry's `kmask` is what it was when
//!   it was parked;
//! - `gen` is the generation in the token the kernel holds for the entry's registration;
//! - a doomed entry (`doomed`) is parked and listed in the table's doomed list (which may also
//!   hold numbers whose entries have since gone or been re-armed: the list is filtered when
//!   taken);
//! - `H` is whatever the binding stores per fd (a Python handle); the table never looks into it.
//! - tokens of the loop's own fds (the waker, the signal socket) have all high bits set, which
//!   no user token has (a user fd is below 2^31).
use crate::sys::epoll::{READABLE, WRITABLE};

/// Poller tokens of the loop's own fds; user fds use [`token`].
pub const WAKER_TOKEN: u64 = u64::MAX;
pub const SIGNAL_TOKEN: u64 = u64::MAX - 1;

/// The epoll token of a user fd's registration of generation `gen`.
#[inline]
pub fn token(fd: i32, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(fd as u32)
}

/// `(fd, gen)` of a user token.
#[inline]
pub fn split_token(token: u64) -> (i32, u32) {
    ((token & 0xFFFF_FFFF) as u32 as i32, (token >> 32) as u32)
}

pub struct FdEntry<H> {
    pub reader: Option<H>,
    pub writer: Option<H>,
    /// The interest set the kernel's registration has (0: no registration).
    pub kmask: u32,
    /// The generation in the registration's token.
    pub gen: u32,
    /// A weak reference to the socket object the registration was last armed for by the sock_*
    /// API. While that same socket is alive and its `fileno()` is still this fd, the fd refers
    /// to the same open file as when it was registered, so a parked registration is still
    /// valid and re-adding needs no syscall. A weak reference leaves the socket's lifetime (and
    /// so its fd's) unchanged.
    pub owner: Option<H>,
    /// The object (not an int) `add_reader` / `add_writer` registered the fd with, held while
    /// the entry is active: selectors' `SelectorKey.fileobj`, set by the `register` that made
    /// the key and kept by `modify`. selectors' `_fileobj_lookup` finds a registration by this
    /// object when its `fileno()` no longer gives the fd (a closed socket's is -1); so does
    /// [`FdTable::find_fileobj`].
    pub fileobj: Option<H>,
    /// Parked and reported ready since: its registration is deleted before the next poll
    /// unless it is armed again first (see the module comment).
    pub doomed: bool,
}

impl<H> Default for FdEntry<H> {
    fn default() -> Self {
        Self {
            reader: None,
            writer: None,
            kmask: 0,
            gen: 0,
            owner: None,
            fileobj: None,
            doomed: false,
        }
    }
}

impl<H> FdEntry<H> {
    /// The interest set: READABLE if a reader is set, WRITABLE if a writer is.
    #[inline]
    pub fn mask(&self) -> u32 {
        let mut m = 0;
        if self.reader.is_some() {
            m |= READABLE;
        }
        if self.writer.is_some() {
            m |= WRITABLE;
        }
        m
    }

    #[inline]
    pub fn is_active(&self) -> bool {
        self.reader.is_some() || self.writer.is_some()
    }

    /// Records the kernel's registration after an `epoll_ctl` ADD or MOD (`kmask` 0: the
    /// registration is lost). Either way a doomed entry is no longer doomed: its registration
    /// was just set, or there is none to delete.
    #[inline]
    pub fn set_registration(&mut self, kmask: u32, gen: u32) {
        self.kmask = kmask;
        self.gen = gen;
        self.doomed = false;
    }
}

pub struct FdTable<H> {
    entries: Vec<Option<FdEntry<H>>>,
    /// Active entries.
    active: usize,
    /// The last generation handed out.
    gen: u32,
    /// The fds [`FdTable::doom`] listed since the last [`FdTable::take_doomed`].
    doomed: Vec<i32>,
}

impl<H> Default for FdTable<H> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            active: 0,
            gen: 0,
            doomed: Vec::new(),
        }
    }
}

impl<H> FdTable<H> {
    /// The entry of `fd`, active or parked.
    #[inline]
    pub fn get(&self, fd: i32) -> Option<&FdEntry<H>> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get(i))
            .and_then(|e| e.as_ref())
    }

    /// The entry of `fd` when it is active (what asyncio's selector would hold).
    pub fn get_active(&self, fd: i32) -> Option<&FdEntry<H>> {
        self.get(fd).filter(|e| e.is_active())
    }

    #[inline]
    pub fn get_mut(&mut self, fd: i32) -> Option<&mut FdEntry<H>> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .and_then(|e| e.as_mut())
    }

    /// Whether `fd` falls inside the table as it is (creating its entry allocates nothing).
    pub fn covers(&self, fd: i32) -> bool {
        usize::try_from(fd).is_ok_and(|i| i < self.entries.len())
    }

    /// The entry for `fd`, created empty if absent; `fd` must be non-negative.
    pub fn entry(&mut self, fd: i32) -> &mut FdEntry<H> {
        let i = usize::try_from(fd).unwrap_or(0);
        if i >= self.entries.len() {
            self.entries.resize_with(i + 1, || None);
        }
        self.entries[i].get_or_insert_with(FdEntry::default)
    }

    /// A fresh generation for a registration's token.
    pub fn next_gen(&mut self) -> u32 {
        self.gen = self.gen.wrapping_add(1);
        self.gen
    }

    /// Sets the reader (`mask` READABLE) or the writer of `fd`'s entry (which must exist);
    /// returns the handle it replaces.
    pub fn set_handler(&mut self, fd: i32, mask: u32, handle: H) -> Option<H> {
        let Some(e) = self.get_mut(fd) else {
            return Some(handle); // no entry: nothing stored, the handle goes back
        };
        let was_active = e.is_active();
        let slot = if mask == READABLE {
            &mut e.reader
        } else {
            &mut e.writer
        };
        let old = slot.replace(handle);
        if !was_active {
            // Active again: the registration is wanted (a doomed one was re-armed, by a MOD or,
            // for the same live socket, as it stands).
            e.doomed = false;
            self.active += 1;
        }
        old
    }

    /// A parked entry's fd reported readiness: its registration is to be deleted before the
    /// next poll, unless the fd is armed again first. Does nothing for an fd without a parked
    /// registration.
    pub fn doom(&mut self, fd: i32) {
        if let Some(e) = self.get_mut(fd) {
            if !e.is_active() && e.kmask != 0 && !e.doomed {
                e.doomed = true;
                self.doomed.push(fd);
            }
        }
    }

    /// Whether some entry may be doomed (cheap: the list is filtered by `take_doomed`).
    #[inline]
    pub fn has_doomed(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// The fds whose entries are still doomed (parked, not re-armed since [`FdTable::doom`]),
    /// each once; empties the list. The caller deletes their registrations and removes them.
    pub fn take_doomed(&mut self) -> Vec<i32> {
        let mut list = std::mem::take(&mut self.doomed);
        list.retain(|&fd| match self.get_mut(fd) {
            Some(e) if e.doomed => {
                e.doomed = false;
                !e.is_active() && e.kmask != 0
            }
            _ => false,
        });
        list
    }

    /// Takes the reader (`mask` READABLE) or the writer of `fd`, if any, and the entry's
    /// `fileobj` when that was its last interest (selectors' `unregister` drops the key).
    pub fn take_handler(&mut self, fd: i32, mask: u32) -> Option<(H, Option<H>)> {
        let e = self.get_mut(fd)?;
        let was_active = e.is_active();
        let old = if mask == READABLE {
            e.reader.take()
        } else {
            e.writer.take()
        }?;
        let mut fileobj = None;
        if was_active && !e.is_active() {
            fileobj = e.fileobj.take();
            self.active -= 1;
        }
        Some((old, fileobj))
    }

    /// The fd of the active entry whose `fileobj` satisfies `matches` (the binding: is this very
    /// object), as selectors' `_fileobj_lookup` searches its keys when `_fileobj_to_fd` fails. A
    /// linear scan, made only on that error path.
    pub fn find_fileobj(&self, matches: impl Fn(&H) -> bool) -> Option<i32> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            let e = e.as_ref().filter(|e| e.is_active())?;
            let f = e.fileobj.as_ref()?;
            if matches(f) {
                i32::try_from(i).ok()
            } else {
                None
            }
        })
    }

    /// Drops `fd`'s entry (its handlers and owner go to the caller, to drop unborrowed).
    pub fn remove(&mut self, fd: i32) -> Option<FdEntry<H>> {
        let e = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .and_then(|e| e.take());
        if e.as_ref().is_some_and(FdEntry::is_active) {
            self.active -= 1;
        }
        e
    }

    /// Active entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.active
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    pub fn drain(&mut self) -> Vec<FdEntry<H>> {
        self.active = 0;
        self.doomed.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .flatten()
            .collect()
    }

    /// The active fd numbers, ascending.
    pub fn fds(&self) -> Vec<i32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.as_ref().is_some_and(FdEntry::is_active))
            .filter_map(|(i, _)| i32::try_from(i).ok())
            .collect()
    }

    /// Every entry, active or parked.
    pub fn iter(&self) -> impl Iterator<Item = &FdEntry<H>> {
        self.entries.iter().flatten()
    }

    /// Every entry with its fd, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut FdEntry<H>)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| Some((i32::try_from(i).ok()?, e.as_mut()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::epoll::{empty_event, Epoll};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn tokens_round_trip_and_never_collide_with_the_loops_own() {
        for (fd, gen) in [(0, 0), (3, 1), (i32::MAX, u32::MAX), (1023, 7)] {
            let t = token(fd, gen);
            assert_eq!(split_token(t), (fd, gen));
            assert_ne!(t, WAKER_TOKEN);
            assert_ne!(t, SIGNAL_TOKEN);
        }
    }

    #[test]
    fn active_count_follows_interests() {
        let mut t: FdTable<&str> = FdTable::default();
        assert!(!t.covers(5));
        assert_eq!(
            t.set_handler(5, READABLE, "r"),
            Some("r"),
            "no entry: handle returned"
        );
        t.entry(5);
        assert!(t.covers(5) && t.covers(0) && !t.covers(6) && !t.covers(-1));
        assert_eq!(t.len(), 0);
        assert_eq!(t.set_handler(5, READABLE, "r1"), None);
        assert_eq!(t.set_handler(5, WRITABLE, "w1"), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(5).map(FdEntry::mask), Some(READABLE | WRITABLE));
        assert_eq!(t.set_handler(5, READABLE, "r2"), Some("r1"));
        t.get_mut(5).expect("entry").fileobj = Some("sock");
        assert_eq!(t.find_fileobj(|f| *f == "sock"), Some(5));
        assert_eq!(t.take_handler(5, READABLE), Some(("r2", None)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_handler(5, READABLE), None);
        assert_eq!(t.take_handler(5, WRITABLE), Some(("w1", Some("sock"))));
        assert_eq!(t.len(), 0);
        assert!(t.get(5).is_some(), "parked: the entry stays");
        assert!(t.get_active(5).is_none());
        assert_eq!(t.find_fileobj(|_| true), None);
        assert!(t.remove(5).is_some());
        assert!(t.get(5).is_none());
        assert_eq!(t.fds(), Vec::<i32>::new());
    }

    /// The deferred delete with the kernel: a doomed registration re-armed as it stands (the
    /// same live socket) keeps reporting under its token; one whose fd is closed before the
    /// delete fails to delete by number, and its file's next event, when a dup keeps the file
    /// open, carries a token the table no longer has (an orphan: the loop rebuilds its set).
    #[test]
    fn doomed_registrations_are_kept_or_reaped_before_the_next_poll() {
        use crate::iteration::{dispatch, Dispatch};
        use std::io::Write;
        let ep = Epoll::new().expect("epoll");
        let mut table: FdTable<u8> = FdTable::default();
        let mut ev = vec![empty_event(); 8];
        let (a, a_peer) = UnixStream::pair().expect("pair");
        let fd = a.as_raw_fd();
        let gen = table.next_gen();
        table.entry(fd).set_registration(READABLE, gen);
        ep.add(fd, READABLE, token(fd, gen)).expect("add");
        table.set_handler(fd, READABLE, 1);
        (&a_peer).write_all(b"x").expect("write");
        // Paused: parked; the poll reports it anyway, which dooms it.
        table.take_handler(fd, READABLE);
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
        let t = ev[0].u64;
        assert!(matches!(dispatch(&table, t, READABLE), Dispatch::Parked(f) if f == fd));
        table.doom(fd);
        table.doom(fd);
        assert!(table.get(fd).is_some_and(|e| e.doomed));
        // Resumed before the next poll, as it stands: nothing to delete, and the kept
        // registration reports under the entry's token.
        table.set_handler(fd, READABLE, 2);
        assert!(table.take_doomed().is_empty());
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
        let t = ev[0].u64;
        assert!(matches!(dispatch(&table, t, READABLE), Dispatch::Io { fd: f, .. } if f == fd));
        // Parked and doomed again, then closed while a dup keeps the file open.
        table.take_handler(fd, READABLE);
        table.doom(fd);
        let dup = a.try_clone().expect("dup");
        drop(a);
        assert_eq!(table.take_doomed(), vec![fd]);
        assert!(
            ep.delete(fd).is_err(),
            "the number no longer names the file"
        );
        table.remove(fd);
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
        let t = ev[0].u64;
        assert!(matches!(dispatch(&table, t, READABLE), Dispatch::Orphan));
        // With the last reference closed, the kernel drops the registration (epoll(7), Q6).
        drop(dup);
        assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
    }

    /// The protocol `loop_core` follows with the kernel, end to end: an fd parked, closed while
    /// a dup keeps its file open, and its number reused, leaves an orphan registration whose
    /// events carry a generation the table no longer has.
    #[test]
    fn generation_tokens_expose_orphans_after_fd_reuse() {
        let ep = Epoll::new().expect("epoll");
        let mut table: FdTable<u8> = FdTable::default();
        let (a, a_peer) = UnixStream::pair().expect("pair");
        let fd = a.as_raw_fd();
        // Register for reading (ADD), then park (interest dropped, registration kept).
        let gen1 = table.next_gen();
        table.entry(fd);
        ep.add(fd, READABLE, token(fd, gen1)).expect("add");
        let e = table.get_mut(fd).expect("entry");
        e.kmask = READABLE;
        e.gen = gen1;
        table.set_handler(fd, READABLE, 1);
        table.take_handler(fd, READABLE);
        assert!(table
            .get(fd)
            .is_some_and(|e| !e.is_active() && e.kmask != 0));
        // Close the fd while a dup keeps the file open; the registration survives.
        let dup = a.try_clone().expect("dup");
        drop(a);
        table.remove(fd);
        // A new socket gets the same number and a fresh generation.
        let (b, _b_peer) = UnixStream::pair().expect("pair");
        let reused = b.as_raw_fd() == fd;
        let fd2 = b.as_raw_fd();
        let gen2 = table.next_gen();
        assert_ne!(gen1, gen2);
        table.entry(fd2);
        ep.add(fd2, READABLE, token(fd2, gen2)).expect("add new");
        let e = table.get_mut(fd2).expect("entry");
        e.kmask = READABLE;
        e.gen = gen2;
        table.set_handler(fd2, READABLE, 2);
        // The old file becomes readable: its event comes under the old token.
        use std::io::Write;
        (&a_peer).write_all(b"x").expect("write");
        let mut ev = vec![empty_event(); 8];
        let n = Epoll::wait_raw(ep.raw(), &mut ev, 1000).expect("wait");
        assert_eq!(n, 1);
        let (efd, egen) = split_token(ev[0].u64);
        assert_eq!((efd, egen), (fd, gen1));
        let current = table.get(efd).filter(|e| e.gen == egen && e.kmask != 0);
        assert!(
            current.is_none(),
            "an orphan's event must not match the live entry"
        );
        if reused {
            assert_eq!(table.get(efd).map(|e| e.gen), Some(gen2));
        }
        drop(dup);
    }
}

//! The fd registry behind add_reader / add_writer: which handle to schedule when an fd is
//! ready, and the interest mask the poller holds for it.
//!
//! Invariants: an fd has an entry iff it is registered with the poller, and its `mask` is
//! exactly the interest set given to the poller (READABLE if a reader is set, WRITABLE if a
//! writer is). Entries are indexed by fd number; tokens for internal fds (the waker, the
//! signal socket) are outside the fd range.
use pyo3::prelude::*;

use crate::sys::epoll::{READABLE, WRITABLE};

/// Poller tokens of the loop's own fds; user fds use their fd number as token.
pub const WAKER_TOKEN: u64 = u64::MAX;
pub const SIGNAL_TOKEN: u64 = u64::MAX - 1;

#[derive(Default)]
pub struct FdEntry {
    pub reader: Option<Py<PyAny>>,
    pub writer: Option<Py<PyAny>>,
}

impl FdEntry {
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
}

#[derive(Default)]
pub struct FdTable {
    entries: Vec<Option<FdEntry>>,
    count: usize,
}

impl FdTable {
    pub fn get(&self, fd: i32) -> Option<&FdEntry> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get(i))
            .and_then(|e| e.as_ref())
    }

    pub fn get_mut(&mut self, fd: i32) -> Option<&mut FdEntry> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .and_then(|e| e.as_mut())
    }

    /// The entry for `fd`, created empty if absent; `fd` must be non-negative.
    pub fn entry(&mut self, fd: i32) -> &mut FdEntry {
        let i = usize::try_from(fd).unwrap_or(0);
        if i >= self.entries.len() {
            self.entries.resize_with(i + 1, || None);
        }
        let slot = &mut self.entries[i];
        if slot.is_none() {
            self.count += 1;
        }
        slot.get_or_insert_with(FdEntry::default)
    }

    pub fn remove(&mut self, fd: i32) -> Option<FdEntry> {
        let e = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .and_then(|e| e.take());
        if e.is_some() {
            self.count -= 1;
        }
        e
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn drain(&mut self) -> Vec<FdEntry> {
        self.count = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .flatten()
            .collect()
    }

    /// The registered fd numbers, ascending.
    pub fn fds(&self) -> Vec<i32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .filter_map(|(i, _)| i32::try_from(i).ok())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FdEntry> {
        self.entries.iter().flatten()
    }
}

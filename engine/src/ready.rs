//! The ready queue: the callbacks to run, in the order they became ready.
//!
//! CPython's `BaseEventLoop._ready` is a `collections.deque`; `_run_once` runs exactly the
//! callbacks queued when its step 5 begins (`ntodo = len(self._ready)`), so anything a callback
//! queues waits for the next iteration. This is that deque, generic over the entry the binding
//! stores (its `Queued` handle).
//!
//! Invariant: strictly FIFO: `pop_front` returns entries in `push_back` order.
use std::collections::VecDeque;

pub struct ReadyQueue<T> {
    q: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self { q: VecDeque::new() }
    }
}

impl<T> ReadyQueue<T> {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            q: VecDeque::with_capacity(n),
        }
    }

    #[inline]
    pub fn push_back(&mut self, entry: T) {
        self.q.push_back(entry);
    }

    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        self.q.pop_front()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.q.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.q.iter()
    }

    /// Every entry, in order; the queue is left empty.
    pub fn drain(&mut self) -> Vec<T> {
        self.q.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo() {
        let mut q = ReadyQueue::with_capacity(2);
        assert!(q.is_empty());
        for i in 0..5 {
            q.push_back(i);
        }
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop_front(), Some(0));
        q.push_back(5);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(q.drain(), vec![1, 2, 3, 4, 5]);
        assert!(q.is_empty());
        assert_eq!(q.pop_front(), None);
    }
}

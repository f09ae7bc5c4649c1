//! oxloop's engine: the parts of the event loop that need no Python, in plain Rust.
//!
//! The binding (the `oxloop` crate, `src/`) holds the Python objects and calls into CPython;
//! everything here is generic over what it stores (a handle, a reader) or stores plain numbers,
//! so `cargo test -p oxloop-engine` builds and links no libpython and the sanitizers can run it.
//!
//! | module        | role                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | [`sys`]       | the OS contract: `syscall!`, the clock, epoll, the eventfd waker     |
//! | [`ready`]     | the ready queue (FIFO of callbacks to run)                            |
//! | [`time`]      | the clock seam (real, virtual) and the timer heap                     |
//! | [`io`]        | the fd table with its generation tokens, and the poller tokens        |
//! | [`iteration`] | one iteration of CPython's `_run_once`, as its named steps            |
//! | [`signal`]    | the signal wake-up socket pair (`signal.set_wakeup_fd`)               |
//! | [`pacing`]    | pacing of cross-thread `call_soon_threadsafe` floods                  |
//! | [`counters`]  | the metrics seqlock and the watchdog's activity word                  |
//!
//! Invariants every module keeps: no Python, no global state except the per-thread token of
//! [`pacing`]; what crosses threads is atomics (or a mutex in the cold paths) and is tested
//! under a multi-thread stress test and ThreadSanitizer (`make sanitize`).
#[macro_use]
pub mod sys;
pub mod counters;
pub mod io;
pub mod iteration;
pub mod pacing;
pub mod ready;
pub mod signal;
pub mod time;

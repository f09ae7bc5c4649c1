//! The monotonic clock, read the way CPython's `time.monotonic()` reads it.
//!
//! Invariant: `monotonic()` returns exactly what `time.monotonic()` would at the same instant:
//! `CLOCK_MONOTONIC` as integer nanoseconds, converted to seconds as a double by one division
//! (CPython's `_PyTime_AsSecondsDouble`), so `loop.time()` and `time.monotonic()` compare
//! meaningfully at full precision.

fn read(clock: libc::clockid_t, getres: bool) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ptr: *mut libc::timespec = &mut ts;
    // Both calls only write into `ts`; CLOCK_MONOTONIC always exists on Linux, so an error
    // is impossible and we fall back to zero rather than panic.
    let res = if getres {
        syscall!(clock_getres(clock, ptr))
    } else {
        syscall!(clock_gettime(clock, ptr))
    };
    if res.is_err() {
        return 0;
    }
    // time_t and c_long are i64 on the 64-bit Linux targets we build for.
    #[allow(clippy::useless_conversion)]
    let (sec, nsec) = (i64::from(ts.tv_sec), i64::from(ts.tv_nsec));
    sec * 1_000_000_000 + nsec
}

/// Nanoseconds on the monotonic clock.
#[inline]
pub fn monotonic_ns() -> i64 {
    read(libc::CLOCK_MONOTONIC, false)
}

/// Seconds on the monotonic clock, bit-for-bit what `time.monotonic()` gives.
#[inline]
pub fn monotonic() -> f64 {
    ns_to_secs(monotonic_ns())
}

/// The clock's resolution in seconds (`time.get_clock_info('monotonic').resolution`).
pub fn resolution() -> f64 {
    ns_to_secs(read(libc::CLOCK_MONOTONIC, true).max(1))
}

/// Monotonic nanoseconds as `time.monotonic()` would report them in seconds.
#[inline]
pub fn ns_to_secs(ns: i64) -> f64 {
    // CPython divides the double by 1e9 (Python/pytime.c, _PyTime_AsSecondsDouble); doing the
    // same keeps loop.time() and time.monotonic() equal to the last bit.
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000) as f64
    } else {
        ns as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_as_cpython_converts_them() {
        assert_eq!(ns_to_secs(3_000_000_000), 3.0);
        assert_eq!(ns_to_secs(1_500_000_001), 1_500_000_001f64 / 1e9);
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
        let r = resolution();
        assert!(r > 0.0 && r < 1.0);
    }
}

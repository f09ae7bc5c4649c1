//! Handles: oxloop schedules asyncio's own `Handle` and `TimerHandle` objects.
//!
//! `call_soon` returns a genuine `asyncio.Handle` (so `isinstance`, `repr`, `cancel`,
//! `cancelled`, `get_context`, ordering and pickling-by-reference all are CPython's), but builds
//! it without running `Handle.__init__` in Python: the object is allocated with the class's own
//! `tp_alloc` and its `__slots__` are written directly at the offsets the slot descriptors
//! report. The result is field-for-field what `Handle.__init__` produces with debug off.
//! Debug mode goes through the real constructor (it captures `_source_traceback`).
//!
//! Handles built here are untracked by the cyclic GC while the loop owns them : a million queued handles otherwise cost a dozen full
//! collections that walk every one of them (measured: 1.2 s of 1.3 s for 1M `call_soon`).
//! An untracked object only hides its own references, which makes the GC keep, never free,
//! what it points to; a queued handle is reachable from the loop anyway. The loop's traverse
//! visits the contents of the handles only it owns, and a GC hook re-tracks shared ones before
//! each full collection, so garbage cycles through queued handles are still found. A handle
//! leaving the loop's queues is re-tracked (`release`), except one only the loop holds, which
//! stays untracked through its run (`release_for_run`) and is then reused or tracked by
//! `recycle`; so a cycle through a handle the user kept (say
//! `self._timer = loop.call_later(60, self._expire)`) is collected as with asyncio.
//!
//! Invariants: every slot of a handle built here is set (never NULL); readers still treat a
//! NULL slot (a user `del h._callback`) as "take the slow path", never as a crash.
//!
//! Both devices are entries of the CPython contract (`crate::cpython`): without
//! `handle_slots` handles are made by calling their class and read through their attributes
//! (no free list), without `gc_untrack` they stay tracked, as asyncio's are.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyTuple, PyType};

use crate::cpython::members::{read as get, slot_offset, write as set};
use crate::cpython::{self, gc, Entry};
use crate::guard::ClassGuard;

/// A handle owned by the loop's ready queue or timer heap. `hidden_ctx` holds the context copy
/// the loop made for it and hid from the GC with it; the entry keeps it alive until `release`.
pub struct Queued {
    pub handle: Py<PyAny>,
    pub hidden_ctx: Option<Py<PyAny>>,
    /// A handle-less entry (a C Task's step or wakeup, a C Future's done callback,
    /// `LoopCore::schedule_soon`) holds its arguments here, `handle` is the callback itself
    /// and `hidden_ctx` its context, all tracked by the GC as usual. `None` for an entry that
    /// is a Handle. The arguments are an exact tuple (`call_soon`'s `*args`: empty for a
    /// step), or else the one argument itself (a future), which saves building a 1-tuple per
    /// wakeup and done callback; a single argument that is itself an exact tuple is kept as
    /// its 1-tuple (see [`BareArgs`]). (The object in place of a flag keeps an entry at 24
    /// bytes.)
    pub bare: Option<Py<PyAny>>,
}

/// A handle-less entry's arguments, as `Queued::bare` keeps them.
pub enum BareArgs<'a, 'py> {
    /// `*args` as a tuple.
    Tuple(&'a Bound<'py, PyTuple>),
    /// One argument, not an exact tuple.
    One(&'a Bound<'py, PyAny>),
}

impl<'a, 'py> BareArgs<'a, 'py> {
    /// Reads `Queued::bare`'s object.
    #[inline(always)]
    pub fn of(a: &'a Bound<'py, PyAny>) -> Self {
        match a.cast_exact::<PyTuple>() {
            Ok(t) => Self::Tuple(t),
            Err(_) => Self::One(a),
        }
    }

    /// The `*args` tuple (made for a single argument: for the cold paths that build the
    /// Handle asyncio would have run).
    pub fn tuple(&self) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            Self::Tuple(t) => Ok((*t).clone()),
            Self::One(a) => PyTuple::new(a.py(), [*a]),
        }
    }
}

impl Queued {
    pub fn plain(handle: Py<PyAny>) -> Self {
        Self {
            handle,
            hidden_ctx: None,
            bare: None,
        }
    }

    /// Whether this entry is handle-less (see `bare`).
    #[inline(always)]
    pub fn is_bare(&self) -> bool {
        self.bare.is_some()
    }
}

/// Untracks `args` when none of its items can be part of a cycle, which is exactly what
/// CPython's collector does to such a tuple the first time it examines it
/// (`_PyTuple_MaybeUntrack`); doing it at scheduling time saves that gen-0 traversal for the
/// typical `call_soon(cb, some_int)`. A tuple is immutable, so the decision never goes stale.
fn untrack_atomic_tuple(args: &Bound<'_, PyTuple>) {
    let t = args.as_ptr();
    // SAFETY: t is a live tuple; its items are live objects we only inspect.
    unsafe {
        if !gc::is_tracked(t) {
            return;
        }
        let n = ffi::PyTuple_GET_SIZE(t);
        for i in 0..n {
            let item = ffi::PyTuple_GET_ITEM(t, i);
            // CPython's _PyObject_GC_MAY_BE_TRACKED: any GC object but an untracked exact
            // tuple may be tracked later (an untracked dict is re-tracked when it gains a
            // container), so only those block nothing.
            if ffi::PyObject_IS_GC(item) != 0
                && (ffi::PyTuple_CheckExact(item) == 0 || gc::is_tracked(item))
            {
                return;
            }
        }
        ffi::PyObject_GC_UnTrack(t.cast());
    }
}

/// Tracks a GC object if it is not tracked (tracking twice aborts the interpreter). Only
/// called where the `gc_untrack` contract holds (`Layout::untrack_ok`): without it nothing
/// was hidden.
#[inline(always)]
fn track(obj: *mut ffi::PyObject) {
    // SAFETY: obj is a live GC object (a handle, a context or a tuple) owned by a queue entry
    // or the free list, and the contract holds (gc::is_tracked's requirements).
    unsafe {
        if !gc::is_tracked(obj) {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
}

/// 3.14+: `asyncio.events._ThreadSafeHandle` (gh-128340), the handle `call_soon_threadsafe`
/// returns: a `Handle` with an `RLock` in its `_lock` slot, taken by `cancel`, `cancelled` and
/// `_run`, so that another thread's `cancel()` waits for a callback that has started.
pub struct ThreadSafe {
    pub tp: Py<PyType>,
    /// The `_lock` slot's offset, or `None` when the class does not have the expected layout:
    /// then handles are built by calling the class and run by their own `_run`.
    lock: Option<isize>,
    /// `threading.RLock`, what `_ThreadSafeHandle.__init__` calls.
    rlock: Py<PyAny>,
}

pub struct Layout {
    pub handle_type: Py<PyType>,
    pub timer_type: Py<PyType>,
    /// `None` before 3.14 (no `_ThreadSafeHandle`): `call_soon_threadsafe` builds a `Handle`.
    pub threadsafe: Option<ThreadSafe>,
    /// The `handle_slots` contract holds: the offsets below are the slots'. Otherwise they are
    /// 0 and never used: handles are made by calling the class and read by attribute.
    fast: bool,
    /// `fast` and the `gc_untrack` contract holds: queued handles may be hidden from the GC.
    untrack_ok: bool,
    callback: isize,
    args: isize,
    cancelled: isize,
    loop_: isize,
    source_tb: isize,
    repr: isize,
    context: isize,
    scheduled: isize,
    when: isize,
}

static LAYOUT: PyOnceLock<Layout> = PyOnceLock::new();

/// Whether `events.Handle.cancel` is still the function `python/oxloop/_transports.py` verified
/// (its bytecode is that of the events.py code [`Layout::cancel`] stands for); until it is set,
/// or once the class holds another `cancel` (patched), every cancel calls the handle's own.
static CANCEL_GUARD: PyOnceLock<Py<ClassGuard>> = PyOnceLock::new();

/// `_set_verified_handle_cancel(guard)`: see [`CANCEL_GUARD`].
#[pyfunction]
pub fn _set_verified_handle_cancel(guard: Bound<'_, ClassGuard>) {
    let py = guard.py();
    // Imported again (importlib.reload, say): the first one stays.
    drop(CANCEL_GUARD.set(py, guard.unbind()));
}

/// Whether `Handle.cancel` is now the verified function.
fn cancel_verified(py: Python<'_>) -> bool {
    CANCEL_GUARD.get(py).is_some_and(|g| g.get().holds(py))
}

/// The offsets of `names` in `tp`, checked on one probe instance (`None` when any is not
/// the slot the `handle_slots` contract expects).
fn offsets<const N: usize>(
    tp: &Bound<'_, PyType>,
    names: [&str; N],
) -> PyResult<Option<[isize; N]>> {
    // object.__new__: an instance with the class's layout and no __init__ run.
    let probe = tp.call_method1("__new__", (tp,))?;
    let mut out = [0isize; N];
    for (slot, name) in out.iter_mut().zip(names) {
        match slot_offset(tp, &probe, name)? {
            Some(off) => *slot = off,
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The layout once `layout` has run (always, before any loop exists); for contexts without a
/// Python token, such as the garbage collector's traverse.
pub fn layout_if_ready() -> Option<&'static Layout> {
    // SAFETY: only reads the once-cell, which is initialized before any loop is created.
    LAYOUT.get(unsafe { Python::assume_attached() })
}

pub fn layout(py: Python<'_>) -> PyResult<&Layout> {
    LAYOUT.get_or_try_init(py, || {
        let events = py.import("asyncio.events")?;
        let handle = events.getattr("Handle")?.cast_into::<PyType>()?;
        let timer = events.getattr("TimerHandle")?.cast_into::<PyType>()?;
        let names = [
            "_callback",
            "_args",
            "_cancelled",
            "_loop",
            "_source_traceback",
            "_repr",
            "_context",
        ];
        let found = if cpython::forced(Entry::HandleSlots) {
            None
        } else {
            match (
                offsets(&handle, names)?,
                offsets(&timer, ["_scheduled", "_when"])?,
            ) {
                (Some(h), Some(t)) => Some((h, t)),
                _ => None,
            }
        };
        let fast = cpython::settle(
            Entry::HandleSlots,
            found.is_some()
                && cpython::members::weaklist_probe(&handle)?
                && cpython::members::weaklist_probe(&timer)?,
        );
        // Hiding handles needs their slots too (the loop's traverse visits them by offset).
        let untrack_ok = cpython::check(Entry::GcUntrack, || {
            fast && timer
                .call_method1("__new__", (&timer,))
                .is_ok_and(|h| cpython::gc::probe(&h))
        });
        let ([callback, args, cancelled, loop_, source_tb, repr, context], [scheduled, when]) =
            found.unwrap_or_default();
        let threadsafe = probe_threadsafe(&events, &handle, fast)?;
        Ok(Layout {
            threadsafe,
            fast,
            untrack_ok,
            callback,
            args,
            cancelled,
            loop_,
            source_tb,
            repr,
            context,
            scheduled,
            when,
            handle_type: handle.unbind(),
            timer_type: timer.unbind(),
        })
    })
}

/// `events._ThreadSafeHandle` where it exists (3.14+). Built by offset only when it is a
/// subclass of `Handle` adding the one `_lock` slot (events.py: `__slots__ = ('_lock',)`);
/// otherwise by calling the class, which is always right.
fn probe_threadsafe(
    events: &Bound<'_, PyModule>,
    handle: &Bound<'_, PyType>,
    fast: bool,
) -> PyResult<Option<ThreadSafe>> {
    let py = events.py();
    let Ok(tp) = events.getattr("_ThreadSafeHandle") else {
        return Ok(None);
    };
    let Ok(tp) = tp.cast_into::<PyType>() else {
        return Ok(None);
    };
    if !tp.is_subclass(handle)? {
        return Ok(None);
    }
    let rlock = py.import("threading")?.getattr("RLock")?.unbind();
    // SAFETY: both are live type objects; only their sizes are read.
    let (size, base) = unsafe {
        (
            (*tp.as_type_ptr()).tp_basicsize,
            (*handle.as_type_ptr()).tp_basicsize,
        )
    };
    let lock = match offsets(&tp, ["_lock"])? {
        Some([off])
            if fast && off >= base && size == base + std::mem::size_of::<usize>() as isize =>
        {
            Some(off)
        }
        _ => None,
    };
    Ok(Some(ThreadSafe {
        tp: tp.unbind(),
        lock,
        rlock,
    }))
}

/// How the loop runs a handle (`Layout::run_kind`).
pub enum RunKind<'py> {
    /// Any handle but a `_ThreadSafeHandle`: the callback runs directly.
    Plain,
    /// A `_ThreadSafeHandle`: its `_lock` is held while `_cancelled` is checked again and the
    /// callback runs, as `_ThreadSafeHandle._run` does.
    Locked(Bound<'py, PyAny>),
    /// A `_ThreadSafeHandle` whose lock cannot be read by offset: its own `_run`.
    OwnRun,
}

fn new_ref(o: &Bound<'_, PyAny>) -> *mut ffi::PyObject {
    o.clone().into_ptr()
}

/// A new strong reference to `True`, `False` or `None`.
fn singleton(p: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: p is one of the interpreter's singletons, alive for the whole process.
    unsafe { ffi::Py_INCREF(p) };
    p
}

fn py_bool(on: bool) -> *mut ffi::PyObject {
    // SAFETY: reading the addresses of the interpreter's bool singletons.
    singleton(unsafe {
        if on {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        }
    })
}

fn is_true(v: *mut ffi::PyObject) -> bool {
    // SAFETY: reading the address of the True singleton.
    v == unsafe { ffi::Py_True() }
}

impl Layout {
    /// Builds `Handle(callback, args, loop, context)` (or a `TimerHandle` when `when` is set)
    /// exactly as `__init__` would with debug off. `untrack`: the handle goes into the ready
    /// queue or the timer heap, whose every exit calls `release`.
    #[allow(clippy::too_many_arguments)]
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        recycled: Option<Py<PyAny>>,
        untrack: bool,
        when: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        loop_: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Py<PyAny>>)> {
        let tp = if when.is_some() {
            &self.timer_type
        } else {
            &self.handle_type
        };
        self.build_as(
            py, tp, recycled, untrack, when, callback, args, loop_, context,
        )
    }

    /// `call_soon_threadsafe`'s handle: a `_ThreadSafeHandle` where the running asyncio has
    /// one (3.14+), built as its `__init__` would (`Handle.__init__`, then
    /// `self._lock = threading.RLock()`); a `Handle` before. `untrack` as for `build`.
    pub fn build_threadsafe<'py>(
        &self,
        py: Python<'py>,
        untrack: bool,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        loop_: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Py<PyAny>>)> {
        let Some(ts) = &self.threadsafe else {
            return self.build(py, None, untrack, None, callback, args, loop_, context);
        };
        let Some(lock_off) = ts.lock else {
            // Unexpected layout: the class's own constructor.
            let ctx = match context {
                Some(c) => c.clone(),
                None => py.None().into_bound(py),
            };
            let h = ts.tp.bind(py).call1((callback, args, loop_, ctx))?;
            return Ok((h, None));
        };
        let lock = ts.rlock.bind(py).call0()?;
        let (h, hidden_ctx) = self.build_as(
            py, &ts.tp, None, untrack, None, callback, args, loop_, context,
        )?;
        // SAFETY: h is a fresh _ThreadSafeHandle whose `_lock` slot is at lock_off (probed);
        // the store passes a new strong reference to the slot.
        unsafe { set(h.as_ptr(), lock_off, lock.into_ptr()) };
        Ok((h, hidden_ctx))
    }

    /// How to run `h` with respect to `_ThreadSafeHandle`'s lock.
    #[inline]
    pub fn run_kind<'py>(&self, py: Python<'py>, h: &Bound<'py, PyAny>) -> RunKind<'py> {
        let Some(ts) = &self.threadsafe else {
            return RunKind::Plain;
        };
        // SAFETY: reading the type of a live object.
        if unsafe { ffi::Py_TYPE(h.as_ptr()) } != ts.tp.as_ptr() as *mut ffi::PyTypeObject {
            return RunKind::Plain;
        }
        let Some(off) = ts.lock else {
            return RunKind::OwnRun;
        };
        // SAFETY: h is exactly _ThreadSafeHandle, whose `_lock` slot is at off (probed); a
        // NULL slot (a user `del h._lock`) takes the handle's own `_run`.
        let lock = unsafe { get(h.as_ptr(), off) };
        if lock.is_null() {
            return RunKind::OwnRun;
        }
        // SAFETY: lock is a live object held by the slot; this takes a new strong reference,
        // so the callback may replace the slot while the lock is held.
        RunKind::Locked(unsafe { Bound::from_borrowed_ptr(py, lock) })
    }

    #[allow(clippy::too_many_arguments)]
    fn build_as<'py>(
        &self,
        py: Python<'py>,
        tp: &Py<PyType>,
        recycled: Option<Py<PyAny>>,
        untrack: bool,
        when: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        loop_: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Py<PyAny>>)> {
        if !self.fast {
            // Without the `handle_slots` contract: the class's own constructor, which is what
            // the offsets below reproduce (debug off).
            let ctx = match context {
                Some(c) => c.clone(),
                None => py.None().into_bound(py),
            };
            let tp = tp.bind(py);
            let h = match when {
                Some(w) => tp.call1((w, callback, args, loop_, ctx))?,
                None => tp.call1((callback, args, loop_, ctx))?,
            };
            return Ok((h, None));
        }
        let untrack = untrack && self.untrack_ok;
        let tp = tp.as_ptr() as *mut ffi::PyTypeObject;
        let obj = match recycled {
            // A handle from the loop's free list: exactly this type, owned by nobody else,
            // every slot set (see `recycle`).
            Some(h) => h.into_ptr(),
            // SAFETY: tp is a live heap type; tp_alloc is always set for Python classes and
            // returns a zeroed, GC-tracked instance (or NULL with an exception set).
            None => unsafe {
                match (*tp).tp_alloc {
                    Some(alloc) => alloc(tp, 0),
                    None => std::ptr::null_mut(),
                }
            },
        };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: obj is a fresh strong reference; wrapping it transfers that reference.
        let handle = unsafe { Bound::from_owned_ptr(py, obj) };
        let (ctx, own_ctx) = match context {
            Some(c) if !c.is_none() => (new_ref(c), false),
            // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an error set.
            _ => (unsafe { ffi::PyContext_CopyCurrent() }, true),
        };
        if ctx.is_null() {
            return Err(PyErr::fetch(py));
        }
        if self.untrack_ok {
            untrack_atomic_tuple(args);
        }
        let mut hidden_ctx = None;
        if untrack {
            // SAFETY: obj and ctx are live GC objects we just created; `Queued::release`
            // re-tracks them when they leave the loop. The context copy is hidden only with a
            // strong reference kept in the queue entry: context_tp_dealloc unlinks from the GC
            // list unconditionally, so an untracked context must never be freed, even if user
            // code replaces the handle's `_context` meanwhile.
            unsafe {
                ffi::PyObject_GC_UnTrack(obj.cast());
                if own_ctx {
                    ffi::PyObject_GC_UnTrack(ctx.cast());
                    hidden_ctx = Some(Bound::from_borrowed_ptr(py, ctx).unbind());
                }
            }
        }
        // SAFETY: obj is an instance of Handle/TimerHandle whose slots we located at init;
        // every value stored is a new strong reference.
        unsafe {
            set(obj, self.context, ctx);
            set(obj, self.loop_, new_ref(loop_));
            set(obj, self.callback, new_ref(callback));
            set(obj, self.args, new_ref(args.as_any()));
            set(obj, self.cancelled, py_bool(false));
            set(obj, self.repr, singleton(ffi::Py_None()));
            set(obj, self.source_tb, singleton(ffi::Py_None()));
            if let Some(w) = when {
                set(obj, self.when, new_ref(w));
                set(obj, self.scheduled, py_bool(false));
            }
        }
        Ok((handle, hidden_ctx))
    }

    /// Takes a handle that has run (or was dropped cancelled) for reuse when nothing else can
    /// see it: refcount 1 (the queue entry's), no weak references, exactly `Handle` or
    /// `TimerHandle`, and not from debug mode. Its slots are reset to what `tp_alloc` + `build`
    /// would overwrite anyway, which releases the callback, args and context now. Returns the
    /// handle and whether it is a timer, or `None` when it must simply be dropped.
    ///
    /// Must be called with no loop state borrowed: releasing the old slot values can run
    /// arbitrary Python code (`__del__`).
    #[inline(always)]
    pub fn recycle(&self, py: Python<'_>, q: Queued) -> Option<(Py<PyAny>, bool)> {
        let obj = q.handle.as_ptr();
        if q.is_bare() {
            return None;
        }
        if !self.untrack_ok {
            // Without the contracts no handle was hidden from the GC, and the free list
            // (which keeps spares untracked) is off.
            return None;
        }
        // SAFETY: obj is a live object; we only read its type, refcount and weaklist slot.
        let reusable = unsafe {
            let tp = ffi::Py_TYPE(obj);
            let timer = tp == self.timer_type.as_ptr() as *mut ffi::PyTypeObject;
            // The weakref list sits at a signed offset: positive for a `__weakref__` slot
            // (3.10, 3.11), negative in the pre-header for managed weakrefs (3.12+), as
            // CPython's _PyObject_GET_WEAKREFS_LISTPTR computes it.
            let wl = (*tp).tp_weaklistoffset;
            let tb = get(obj, self.source_tb);
            // A cancelled handle is not kept: that is how the reader (writer) handles of the
            // fd table arrive here, one per connection closed while its readiness event was
            // queued (remove_reader cancels it and the queue holds the last reference). They
            // are not the demand the spares serve (handles queued at once by call_soon and
            // call_at): kept, they filled the free list up to FREE_LIST_MAX at ~1 per
            // connection, ~3 MiB a busy server never gave back (benches/churn.py: +10.9 MiB
            // RSS per 100k connections until it was full).
            if (!timer && tp != self.handle_type.as_ptr() as *mut ffi::PyTypeObject)
                || is_true(get(obj, self.cancelled))
                || ffi::Py_REFCNT(obj) != 1
                || (wl != 0
                    && !(*((obj as *mut u8).offset(wl) as *mut *mut ffi::PyObject)).is_null())
                || tb.is_null()
                || tb != ffi::Py_None()
            {
                None
            } else {
                Some(timer)
            }
        };
        let Some(timer) = reusable else {
            // `release_for_run` may have left it untracked; it lives on (or dies) as a normal
            // object now.
            track(obj);
            return None;
        };
        // SAFETY: obj is exclusively ours (refcount 1, no weakrefs); each store passes a new
        // reference to a singleton and releases the old value.
        unsafe {
            for off in [
                self.callback,
                self.args,
                self.context,
                self.loop_,
                self.repr,
            ] {
                set(obj, off, singleton(ffi::Py_None()));
            }
            set(obj, self.cancelled, py_bool(false));
            if timer {
                set(obj, self.when, singleton(ffi::Py_None()));
                set(obj, self.scheduled, py_bool(false));
            }
        }
        let Queued {
            handle, hidden_ctx, ..
        } = q;
        drop(hidden_ctx);
        // SAFETY: reading refcount and tracking state of a live object. A __del__ run above
        // cannot have reached this handle (nothing referenced it), but check again anyway.
        unsafe {
            if ffi::Py_REFCNT(handle.as_ptr()) != 1 {
                track(obj);
                return None;
            }
            if gc::is_tracked(obj) {
                ffi::PyObject_GC_UnTrack(obj.cast());
            }
        }
        let _ = py;
        Some((handle, timer))
    }

    /// Gives a queue entry's handle (and the context copy hidden with it) back to the GC.
    #[inline]
    pub fn release(&self, q: &Queued) {
        if !self.untrack_ok {
            return; // nothing was hidden
        }
        // A handle-less entry's callback was never hidden (and need not be a GC object).
        if !q.is_bare() {
            track(q.handle.as_ptr());
        }
        if let Some(c) = &q.hidden_ctx {
            track(c.as_ptr());
        }
    }

    /// `release` for a handle about to run: the context copy goes back to the GC (it must be
    /// tracked before anything frees it), the handle only if someone else holds it. A handle
    /// only the loop holds stays untracked through its run (the GC then keeps, never frees,
    /// what it points to), and `recycle` either reuses it as it is or tracks it; this saves a
    /// track and an untrack per callback.
    #[inline]
    pub fn release_for_run(&self, q: &Queued) {
        if !self.untrack_ok {
            return; // nothing was hidden
        }
        if let Some(c) = &q.hidden_ctx {
            track(c.as_ptr());
        }
        self.track_if_shared(q);
    }

    /// Re-tracks a queued handle that has owners besides the loop. Tracking runs no Python
    /// code, so this is safe under a state borrow.
    pub fn track_if_shared(&self, q: &Queued) {
        // SAFETY: reading the refcount of a live object.
        if unsafe { ffi::Py_REFCNT(q.handle.as_ptr()) } > 1 {
            self.release(q);
        }
    }

    /// For the loop's `__traverse__`: calls `f` with each object an untracked handle holds,
    /// when the loop's queue is the handle's only owner. Such a handle is in effect part of the
    /// loop, so its references count as the loop's and a dropped, unclosed loop with queued
    /// callbacks is still collected. A handle that someone else also holds is visited as
    /// itself (the GC ignores it while untracked, so it keeps the loop alive, as asyncio's
    /// tracked handle would).
    pub fn traverse_parts(
        &self,
        q: &Queued,
        mut f: impl FnMut(*mut ffi::PyObject) -> bool,
    ) -> bool {
        let obj = q.handle.as_ptr();
        if let Some(args) = &q.bare {
            if let Some(c) = &q.hidden_ctx {
                if !f(c.as_ptr()) {
                    return false;
                }
            }
            return f(args.as_ptr()) && f(obj);
        }
        // SAFETY: called during tp_traverse with the GIL held; obj is a live Handle owned by
        // the loop, and slots are only read (NULLs skipped), never changed.
        unsafe {
            if ffi::PyObject_GC_IsTracked(obj) != 0 || ffi::Py_REFCNT(obj) != 1 {
                return f(obj);
            }
            for off in [self.callback, self.args, self.loop_, self.context] {
                let p = get(obj, off);
                if !p.is_null() && !f(p) {
                    return false;
                }
            }
        }
        true
    }

    /// `getattr(h, name) is True`, without the `handle_slots` contract (an unset attribute
    /// reads as an unset slot does: false).
    #[cold]
    fn attr_is_true(
        &self,
        py: Python<'_>,
        h: &Bound<'_, PyAny>,
        name: &Bound<'_, pyo3::types::PyString>,
    ) -> bool {
        match h.getattr(name) {
            Ok(v) => is_true(v.as_ptr()),
            Err(e) => {
                drop(e);
                let _ = py;
                false
            }
        }
    }

    #[inline]
    pub fn is_cancelled(&self, py: Python<'_>, h: &Bound<'_, PyAny>) -> bool {
        if !self.fast {
            return self.attr_is_true(py, h, pyo3::intern!(py, "_cancelled"));
        }
        // SAFETY: h is a Handle (the loop only queues handles); the slot may be NULL.
        let v = unsafe { get(h.as_ptr(), self.cancelled) };
        is_true(v)
    }

    /// `h.cancel()` with debug off, for a handle the loop built (`build`): `Handle.cancel` of
    /// events.py (3.10-3.15, where it is the verified function) then sets `_cancelled` and
    /// clears `_callback` and `_args`, and calls `self._loop.get_debug()`, which runs no user code for an oxloop loop. Anything
    /// but an exact `Handle` gets its own `cancel()`. Releasing the callback and args can run
    /// arbitrary code, so call this with no loop state borrowed.
    pub fn cancel(&self, py: Python<'_>, h: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.fast || !h.get_type().is(self.handle_type.bind(py)) || !cancel_verified(py) {
            h.call_method0(pyo3::intern!(py, "cancel"))?;
            return Ok(());
        }
        if self.is_cancelled(py, h) {
            return Ok(());
        }
        // SAFETY: h is an exact Handle whose slots we located at init; each store passes a
        // new reference to a singleton and releases the old value.
        unsafe {
            set(h.as_ptr(), self.cancelled, py_bool(true));
            set(h.as_ptr(), self.callback, singleton(ffi::Py_None()));
            set(h.as_ptr(), self.args, singleton(ffi::Py_None()));
        }
        Ok(())
    }

    #[inline]
    pub fn is_scheduled(&self, py: Python<'_>, h: &Bound<'_, PyAny>) -> bool {
        if !self.fast {
            return self.attr_is_true(py, h, pyo3::intern!(py, "_scheduled"));
        }
        // SAFETY: h is a TimerHandle (only timers reach the heap); the slot may be NULL.
        let v = unsafe { get(h.as_ptr(), self.scheduled) };
        is_true(v)
    }

    #[inline]
    pub fn set_scheduled(&self, py: Python<'_>, h: &Bound<'_, PyAny>, on: bool) {
        if !self.fast {
            // What TimerHandle's own code stores; a handle refusing it keeps its value.
            let _ = h.setattr(pyo3::intern!(py, "_scheduled"), on);
            return;
        }
        // SAFETY: h is a TimerHandle; a new reference to the bool passes to the slot, and
        // releasing the old bool runs no Python code.
        unsafe { set(h.as_ptr(), self.scheduled, py_bool(on)) };
    }

    /// The callback, args and context of a handle, as new references; `None` when any slot
    /// is unset or not of the type the fast path needs (the caller then uses `Handle._run`).
    #[inline]
    pub fn parts<'py>(
        &self,
        py: Python<'py>,
        h: &Bound<'py, PyAny>,
    ) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        if !self.fast {
            return None; // the handle's own `_run`
        }
        // SAFETY: h is a Handle; NULL slots are checked before use, and each pointer is
        // turned into a new strong reference so the callback may mutate the handle freely.
        unsafe {
            let cb = get(h.as_ptr(), self.callback);
            let args = get(h.as_ptr(), self.args);
            let ctx = get(h.as_ptr(), self.context);
            if cb.is_null() || args.is_null() || ctx.is_null() {
                return None;
            }
            if ffi::PyTuple_CheckExact(args) == 0 || ffi::PyContext_CheckExact(ctx) == 0 {
                return None;
            }
            Some((
                Bound::from_borrowed_ptr(py, cb),
                Bound::from_borrowed_ptr(py, args),
                Bound::from_borrowed_ptr(py, ctx),
            ))
        }
    }
}

//! `WriteBuffer`: the socket transport's write queue on Python 3.10 and 3.11, without copying
//! large writes.
//!
//! asyncio 3.10/3.11 queue what a socket could not take at once in a `bytearray`
//! (`_SelectorTransport._buffer_factory`, selector_events.py): `write` extends it (a copy of
//! every queued byte into memory that grows, often by mmap, and faults in page by page),
//! `_write_ready` sends from it and deletes what went out, which copies the rest again into a
//! fresh allocation whenever it falls under half the old one (`PyByteArray_Resize`). A bulk
//! writer (10 MiB per `write`, of which the kernel takes 1-4 MiB) paid about 1.5 extra copies
//! of each byte. 3.12+ queue memoryviews of the caller's data in a deque and need nothing here.
//!
//! `_SocketTransport` (python/oxloop/_transports.py) makes this its `_buffer_factory` where
//! asyncio's is `bytearray`. It supports exactly what asyncio's transport code does with the
//! buffer: `extend(data)`, `len()` / truth, `del buf[:n]`, `clear()` and the buffer protocol
//! for `sock.send(buf)`, which exports the front chunk only (a send may take less than it is
//! given, and `_write_ready` deletes what it took).
//!
//! Invariants:
//! - Queued bytes are the caller's at the time of `write`, as with the bytearray: a `bytes`
//!   object (immutable) of at least [`SHARE_MIN`] bytes, or a read-only memoryview of one, is
//!   queued by reference; anything else (a bytearray, a writable buffer, small writes) is
//!   copied into an owned chunk, small ones coalesced so a send still takes many of them.
//! - While the front chunk is exported (`sock.send` holds the view for the call), nothing
//!   moves or frees it: `del` and `clear` raise `BufferError` as the bytearray does, and
//!   `extend` never appends into an exported chunk.
use std::collections::VecDeque;
use std::ffi::c_int;

use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PySlice};

/// `bytes` writes at least this large are queued by reference; smaller ones are copied into
/// the owned tail chunk, so that one `send` from the front chunk still carries many of them.
const SHARE_MIN: usize = 64 * 1024;

/// An owned chunk stops taking small writes past this size.
const OWNED_MAX: usize = 256 * 1024;

enum Chunk {
    /// `len` bytes at `ptr` inside `obj`, an immutable bytes object kept alive here.
    Shared {
        _obj: Py<PyAny>,
        ptr: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: ptr/len lie inside the bytes object `_obj`, which this chunk keeps alive
            // and which never changes.
            Chunk::Shared { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(*ptr as *const u8, *len)
            },
            Chunk::Owned(v) => v,
        }
    }
}

/// A FIFO of byte chunks standing in for asyncio's `bytearray` write buffer.
#[pyclass(module = "oxloop._oxloop")]
pub struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    front_off: usize,
    /// Total queued bytes (what `len()` answers).
    len: usize,
    /// Live buffer exports of the front chunk.
    exports: usize,
}

impl WriteBuffer {
    /// Total queued bytes: what `len()` answers.
    pub(crate) fn queued(&self) -> usize {
        self.len
    }

    fn push_copy(&mut self, data: &[u8]) {
        // Append to the owned tail unless it is full or is the exported front chunk.
        let exported_front = self.exports > 0 && self.chunks.len() == 1;
        if let Some(Chunk::Owned(v)) = self.chunks.back_mut() {
            if !exported_front && v.len() + data.len() <= OWNED_MAX.max(v.len()) {
                v.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(Chunk::Owned(data.to_vec()));
    }

    fn check_resizable(&self) -> PyResult<()> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(
                "Existing exports of data: object cannot be re-sized",
            ));
        }
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.front_off;
            if n < left {
                self.front_off += n;
                return;
            }
            n -= left;
            self.front_off = 0;
            self.chunks.pop_front();
        }
    }
}

/// The bytes object a read-only, C-contiguous memoryview of `bytes` shows, with the pointer
/// and length of what it shows; `None` for anything else.
fn shared_bytes(data: &Bound<'_, PyAny>) -> Option<(Py<PyAny>, usize, usize)> {
    let py = data.py();
    if data.is_exact_instance_of::<PyBytes>() {
        let b = data.cast::<PyBytes>().ok()?.as_bytes();
        return Some((data.clone().unbind(), b.as_ptr() as usize, b.len()));
    }
    if !data.is_exact_instance_of::<PyMemoryView>() {
        return None;
    }
    let obj = data.getattr("obj").ok()?;
    if !obj.is_exact_instance_of::<PyBytes>() {
        return None;
    }
    let mut raw = std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed();
    // SAFETY: data is a live memoryview; on success the view is released right below.
    if unsafe { ffi::PyObject_GetBuffer(data.as_ptr(), raw.as_mut_ptr(), ffi::PyBUF_SIMPLE) } != 0 {
        drop(PyErr::take(py));
        return None;
    }
    // SAFETY: PyObject_GetBuffer succeeded, so the struct is initialised; released once. The
    // pointer stays valid after the release: it points into `obj`, an immutable bytes
    // object that the chunk keeps alive.
    let (ptr, len) = unsafe {
        let mut view = raw.assume_init();
        let r = (view.buf as usize, usize::try_from(view.len).unwrap_or(0));
        ffi::PyBuffer_Release(&mut view);
        r
    };
    Some((obj.unbind(), ptr, len))
}

#[pymethods]
impl WriteBuffer {
    #[new]
    pub(crate) fn new() -> Self {
        Self {
            chunks: VecDeque::new(),
            front_off: 0,
            len: 0,
            exports: 0,
        }
    }

    /// `bytearray.extend(data)` for the bytes-like objects asyncio's `write` accepts.
    fn extend(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some((obj, ptr, len)) = shared_bytes(data) {
            if len >= SHARE_MIN {
                self.chunks.push_back(Chunk::Shared {
                    _obj: obj,
                    ptr,
                    len,
                });
                self.len += len;
                return Ok(());
            }
            // SAFETY: ptr/len lie inside `obj`, held here, immutable.
            let b = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            self.push_copy(b);
            self.len += len;
            return Ok(());
        }
        let mut raw = std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed();
        // SAFETY: data is a live object; on success the view is released below.
        if unsafe { ffi::PyObject_GetBuffer(data.as_ptr(), raw.as_mut_ptr(), ffi::PyBUF_SIMPLE) }
            != 0
        {
            let err = PyErr::fetch(data.py());
            // SAFETY: data is a live object; the check reads its type's buffer slot.
            if unsafe { ffi::PyObject_CheckBuffer(data.as_ptr()) } == 0 {
                return Err(err);
            }
            // A buffer with no simple view (a non-contiguous memoryview): the error
            // bytearray.extend raises (bytearray_setslice, Objects/bytearrayobject.c).
            let name = data.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "can't set bytearray slice from {name:.100}"
            )));
        }
        // SAFETY: initialised by the successful call above; copied, then released once.
        unsafe {
            let mut view = raw.assume_init();
            let len = usize::try_from(view.len).unwrap_or(0);
            if len > 0 {
                let b = std::slice::from_raw_parts(view.buf as *const u8, len);
                self.push_copy(b);
                self.len += len;
            }
            ffi::PyBuffer_Release(&mut view);
        }
        Ok(())
    }

    fn clear(&mut self) -> PyResult<()> {
        self.check_resizable()?;
        self.chunks.clear();
        self.front_off = 0;
        self.len = 0;
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.queued()
    }

    /// `del buf[:n]` (what `_write_ready` does after a send of n bytes); other keys are not
    /// used by asyncio and raise TypeError.
    fn __delitem__(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let slice = key
            .cast::<PySlice>()
            .map_err(|_| PyTypeError::new_err("WriteBuffer supports only del buf[:n]"))?;
        let (start, stop, step) = (
            slice.getattr("start")?,
            slice.getattr("stop")?,
            slice.getattr("step")?,
        );
        let start_zero = start.is_none() || start.extract::<i64>().is_ok_and(|s| s == 0);
        if !start_zero || !step.is_none() {
            return Err(PyTypeError::new_err(
                "WriteBuffer supports only del buf[:n]",
            ));
        }
        let n = if stop.is_none() {
            self.len
        } else {
            usize::try_from(stop.extract::<i64>()?.max(0)).unwrap_or(0)
        };
        if n == 0 {
            return Ok(());
        }
        self.check_resizable()?;
        self.consume(n);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "<WriteBuffer of {} bytes in {} chunks>",
            self.len,
            self.chunks.len()
        )
    }

    /// Exports the unsent part of the front chunk, read-only (what `sock.send(buf)` takes).
    unsafe fn __getbuffer__(
        mut slf: PyRefMut<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len) = match slf.chunks.front() {
            Some(c) => {
                let b = &c.bytes()[slf.front_off..];
                (b.as_ptr(), b.len())
            }
            None => (std::ptr::NonNull::<u8>::dangling().as_ptr().cast_const(), 0),
        };
        let obj = slf.as_ptr();
        // SAFETY: view is the caller's Py_buffer to fill; PyBuffer_FillInfo sets it to a
        // read-only 1-D byte view of ptr/len owned by obj (taking a reference), or fails with
        // BufferError when a writable view is asked for.
        if unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                obj,
                ptr.cast_mut().cast(),
                ffi::Py_ssize_t::try_from(len).unwrap_or(0),
                1,
                flags,
            )
        } != 0
        {
            return Err(PyErr::fetch(slf.py()));
        }
        slf.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(mut slf: PyRefMut<'_, Self>, _view: *mut ffi::Py_buffer) {
        slf.exports = slf.exports.saturating_sub(1);
    }
}

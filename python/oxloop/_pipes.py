"""Pipe transports on oxloop: asyncio's own, with 64 KiB reads.

``Loop._make_read_pipe_transport`` (what ``connect_read_pipe`` and the subprocess transport's
stdout/stderr go through) builds ``_pipes._UnixReadPipeTransport``: a subclass of the running
version's ``unix_events._UnixReadPipeTransport`` with one class attribute changed, so its checks
(pipes, FIFOs, sockets and character devices only; a regular file is a ValueError), its
callbacks and their order, pause/resume, EOF and the EIO of a hung-up pty are asyncio's exactly.
Write pipes are asyncio's ``_UnixWritePipeTransport`` unchanged.

Why the read size: asyncio reads ``os.read(fd, 256 KiB)``. CPython allocates the full 256 KiB
bytes object and shrinks it to what was read; 256 KiB is above glibc's default mmap threshold
(128 KiB, mallopt(3)), so unless an earlier free happened to raise that threshold, every read
costs an mmap, page faults on the pages written, an mremap and a munmap. A pipe holds 64 KiB by
default (pipe(7)), so a read rarely returns more than that anyway; reading 64 KiB, as libuv
does, keeps the allocation on the heap. Reading 256 MiB from a child's stdout took 3x less CPU
this way (benches/children.py, the `pipe` row).
"""

from __future__ import annotations

from asyncio import unix_events

__all__ = ["_UnixReadPipeTransport"]


class _UnixReadPipeTransport(unix_events._UnixReadPipeTransport):  # type: ignore[name-defined]
    """asyncio's read pipe transport, reading at most 64 KiB per readiness event.

    Named as its base so that its repr (built from the class name) reads as asyncio's.
    """

    max_size = 64 * 1024

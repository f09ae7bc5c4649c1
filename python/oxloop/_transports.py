"""oxloop's stream socket transport: asyncio's own, with its per-event paths in Rust.

``_SocketTransport`` subclasses ``selector_events._SelectorSocketTransport`` of the running
Python, so state, flow control, closing, ``write_eof``, ``writelines``, sendfile, the error
paths and every attribute tools and tests look at are CPython's. Only two paths change:

- ``_read_ready`` gives a ``_oxloop.SocketReader``: recv and ``data_received`` (or
  ``get_buffer`` / recv_into / ``buffer_updated``) in Rust, with asyncio's checks and
  ``_fatal_error`` messages. The loop's reader handle holds it, and it holds the transport, as
  the bound method asyncio registers does (that is what keeps a transport alive).
- ``write`` is set on the instance (in a slot): the bound ``write`` of a
  ``_oxloop.SocketWriter`` (the device 3.13's transport uses for ``_write_ready``), one
  ``send`` in Rust when nothing is queued; every other case runs asyncio's ``write`` (kept as
  ``_write_slow``). The writer holds the transport weakly, so no reference cycle is added.

The attributes those two paths read per event are ``__slots__`` here (asyncio's code stores
them as usual, through the slot descriptors), so the Rust side reads each with one load at an
offset it takes from the descriptors at import (``register_transport_slots``) instead of a dict
lookup. A subclass of ``_SocketTransport`` gets the attribute protocol instead.

Invariant: ``_oxloop_buffered`` tells the read path which protocol shape to drive and follows
``set_protocol`` as ``_read_ready_cb`` does in asyncio.
"""

from __future__ import annotations

from asyncio import protocols, selector_events
from typing import Any

from . import _oxloop

__all__ = ["_SocketTransport"]


class _SocketTransport(selector_events._SelectorSocketTransport):  # type: ignore[name-defined,misc]
    # The fields src/transport.rs reads by offset, and ``write``, the bound fast write, which
    # callers find sooner in a slot than in the dict.
    __slots__ = (*_oxloop.TRANSPORT_FIELDS, "write")

    # asyncio's write, for everything the native fast path leaves to it.
    _write_slow = selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: Any,
        waiter: Any = None,
        extra: Any = None,
        server: Any = None,
    ) -> None:
        self.write = _oxloop.SocketWriter(self).write
        super().__init__(loop, sock, protocol, waiter, extra, server)

    @property
    def _read_ready(self) -> Any:
        # Read where asyncio registers (or re-registers, on resume_reading) its reader.
        return _oxloop.SocketReader(self)

    def set_protocol(self, protocol: Any) -> None:
        self._oxloop_buffered = isinstance(protocol, protocols.BufferedProtocol)
        super().set_protocol(protocol)


_oxloop.register_transport_slots(_SocketTransport)

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

What this assumes of asyncio's transport is the ``socket_transport`` entry of the CPython
contract (``_contract.py``); without it ``_SocketTransport`` is asyncio's class itself.

Both paths read and write the fd themselves, which only ``socket.socket``'s own methods do: a
transport over a socket subclass (which may override ``recv`` / ``send``, as a wrapper counting
or logging I/O does) reads and writes through asyncio's code, which calls the object's methods.

Invariant: ``_oxloop_buffered`` tells the read path which protocol shape to drive and follows
``set_protocol`` as ``_read_ready_cb`` does in asyncio.

Connection contexts (3.15): asyncio's transport takes ``context=`` and keeps it as
``_context``; its ``_add_reader`` / ``_add_writer`` / ``_call_soon`` hand it to the loop, so the
reader and writer handles (the ones that run the Rust paths above) and every protocol callback
run in it. Nothing here reads it: the loop enters a handle's context around every callback,
the Rust ones included. Whether the running asyncio has these keywords is probed below from
its signatures, never from the version number.
"""

from __future__ import annotations

import _socket
import collections
import inspect
import socket
import weakref
from asyncio import (
    base_events,
    events,
    futures,
    protocols,
    selector_events,
    sslproto,
    transports,
    trsock,
)

from . import _contract, _oxloop

# Not `from typing import ...`: typing is not loaded by asyncio on 3.14+, and `import oxloop`
# must not pay for it (benches/import_time.py). Type checkers treat this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["_SocketTransport"]

_SSLProtocol = sslproto.SSLProtocol  # type: ignore[attr-defined]


def _takes_keyword(func: Any, name: str) -> bool:
    """Whether ``func`` accepts the keyword ``name``; False when its signature is unknown."""
    try:
        param = inspect.signature(func).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


_Base = selector_events.BaseSelectorEventLoop  # type: ignore[attr-defined]
# 3.15's `_add_reader(fd, callback, *args, context=None)` and `_add_writer`: the loop's
# Rust versions take the keyword exactly when asyncio's do.
IO_CONTEXT = _takes_keyword(_Base._add_reader, "context") and _takes_keyword(
    _Base._add_writer, "context"
)
# 3.15's `_make_socket_transport(..., context=None)` and `_SelectorSocketTransport(...,
# context=None)`: the connection's context, which the transport keeps as `_context`.
MAKE_TRANSPORT_CONTEXT = _takes_keyword(_Base._make_socket_transport, "context")
TRANSPORT_CONTEXT = _takes_keyword(
    selector_events._SelectorSocketTransport.__init__,  # type: ignore[attr-defined]
    "context",
)
_oxloop._set_io_context_keyword(IO_CONTEXT)


_AsyncioTransport = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
_SelectorTransport = selector_events._SelectorTransport  # type: ignore[attr-defined]
# Whether the running asyncio drops ``_read_ready_cb`` (a bound method of the transport, so a
# reference cycle) when the transport closes: 3.12+ do, in ``close`` or
# ``_call_connection_lost``.
_CLEARS_READ_READY_CB = any(
    "_read_ready_cb" in getattr(_AsyncioTransport, name).__code__.co_names
    for name in ("close", "_call_connection_lost")
    if name in vars(_AsyncioTransport)
)


# -- transport set-up --------------------------------------------------------------------------
# `_SelectorSocketTransport.__init__` calls `base_events._set_nodelay(self._sock)`, which reads
# `sock.family` and `sock.type` through socket.py's properties: each converts the C integer to an
# IntEnum (`_intenum_converter`, `EnumMeta.__call__`, `Enum.__new__`) only for it to be compared
# with an integer; 14,000 instructions per connection on 3.11 (benches/net_callgrind.sh
# churn-protocol), an eighth of all the server does per connection. Where the running asyncio's
# `__init__` and `_set_nodelay` are, statement for statement, the code below them (their
# bytecode, names and constants equal those of `_INIT_SOURCES` / `_NODELAY_SOURCE` compiled here),
# `_SocketTransport.__init__` runs that code itself, with `_set_nodelay`'s test on the socket's
# C fields; otherwise (another CPython, a patched asyncio, a socket subclass, a replaced
# `_set_nodelay`) asyncio's own runs.
_INIT_SOURCES = {
    # 3.10
    "paused": """
class _SelectorSocketTransport(_SelectorTransport):
    def __init__(self, loop, sock, protocol, waiter=None,
                 extra=None, server=None):

        self._read_ready_cb = None
        super().__init__(loop, sock, protocol, extra, server)
        self._eof = False
        self._paused = False
        self._empty_waiter = None
        base_events._set_nodelay(self._sock)
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(self._add_reader,
                             self._sock_fd, self._read_ready)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled,
                                 waiter, None)
""",
    # 3.11
    "plain": """
class _SelectorSocketTransport(_SelectorTransport):
    def __init__(self, loop, sock, protocol, waiter=None,
                 extra=None, server=None):

        self._read_ready_cb = None
        super().__init__(loop, sock, protocol, extra, server)
        self._eof = False
        self._empty_waiter = None
        base_events._set_nodelay(self._sock)
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(self._add_reader,
                             self._sock_fd, self._read_ready)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled,
                                 waiter, None)
""",
    # 3.12-3.14
    "write_ready": """
class _SelectorSocketTransport(_SelectorTransport):
    def __init__(self, loop, sock, protocol, waiter=None,
                 extra=None, server=None):

        self._read_ready_cb = None
        super().__init__(loop, sock, protocol, extra, server)
        self._eof = False
        self._empty_waiter = None
        if _HAS_SENDMSG:
            self._write_ready = self._write_sendmsg
        else:
            self._write_ready = self._write_send
        base_events._set_nodelay(self._sock)
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(self._add_reader,
                             self._sock_fd, self._read_ready)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled,
                                 waiter, None)
""",
}
# The imports of selector_events.py and base_events.py the code above uses.
_IMPORTS = (
    "import collections\nimport socket\nimport _collections_abc\n"
    "from . import base_events\nfrom . import futures\nfrom . import transports\n"
    "from . import protocols\nfrom . import trsock\nfrom .log import logger\n"
    "from _weakref import ref\n"
)
_NODELAY_SOURCE = """
def _set_nodelay(sock):
    if (sock.family in {socket.AF_INET, socket.AF_INET6} and
            sock.type == socket.SOCK_STREAM and
            sock.proto == socket.IPPROTO_TCP):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""


def _same_code(func: Any, source: str, *path: str) -> bool:
    """Whether ``func``'s code is that of the function at ``path`` in ``source`` (compiled here)."""
    try:
        # With the module's imports: 3.11+ compile a call on an imported name's attribute
        # without LOAD_METHOD (compile.c `is_import_originated`).
        code = compile(_IMPORTS + source, "<oxloop reference>", "exec")
        for name in path:
            code = next(
                c for c in code.co_consts if isinstance(c, type(code)) and c.co_name == name
            )
        mine = func.__code__
    except (AttributeError, StopIteration, SyntaxError):
        return False
    return all(
        getattr(mine, field) == getattr(code, field)
        for field in (
            "co_code",
            "co_names",
            "co_consts",
            "co_varnames",
            "co_freevars",
            "co_argcount",
        )
    )


def _edited(source: str, *edits: tuple[str, str]) -> str:
    """``source`` with each ``(old, new)`` edit made, for another version's text of a function.

    An ``old`` that ``source`` does not contain is a typo of ours that would leave the variant
    equal to its base without a word; it fails at import instead, on every version's tests."""
    for old, new in edits:
        if old not in source:
            raise AssertionError(f"oxloop: a reference edit does not apply: {old!r}")
        source = source.replace(old, new)
    return source


_INIT_VARIANT = next(
    (
        variant
        for variant, source in _INIT_SOURCES.items()
        if _same_code(_AsyncioTransport.__init__, source, "_SelectorSocketTransport", "__init__")
    ),
    None,
)
# The __init__ verified: one put on the class later (by a test's or a tool's patch) is run.
_ASYNCIO_INIT = _AsyncioTransport.__init__
# The `_set_nodelay` this module verified; a replaced one is called instead.
_NODELAY = (
    base_events._set_nodelay
    if _same_code(base_events._set_nodelay, _NODELAY_SOURCE, "_set_nodelay")
    else None
)
_SOCK_FAMILY = _socket.socket.family.__get__
_SOCK_TYPE = _socket.socket.type.__get__
_INET = (socket.AF_INET.value, socket.AF_INET6.value)


# One level further, where asyncio's code is again the one below: `_SelectorTransport.__init__`
# with its chain (`_FlowControlMixin.__init__`, `BaseTransport.__init__`,
# `_set_write_buffer_limits()` with its defaults) and the loop's `_transports[fd] = self`
# (`WeakValueDictionary.__setitem__`: a `KeyedRef`, made here without its two Python-level
# constructors). Seven Python calls per connection fewer.
_SELECTOR_INIT_SOURCE = """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def __init__(self, loop, sock, protocol, extra=None, server=None):
        super().__init__(extra, loop)
        self._extra['socket'] = trsock.TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except socket.error:
                self._extra['peername'] = None
        self._sock = sock
        self._sock_fd = sock.fileno()

        self._protocol_connected = False
        self.set_protocol(protocol)

        self._server = server
        self._buffer = self._buffer_factory()
        self._conn_lost = 0  # Set when call to connection_lost scheduled.
        self._closing = False  # Set when close() called.
        self._paused = False

        if self._server is not None:
            self._server._attach()
        loop._transports[self._sock_fd] = self

"""
# 3.12+: the write buffer is a deque (the buffer factory is gone).
_DEQUE = ("self._buffer_factory()", "collections.deque()")
_SELECTOR_INIT_SOURCES = {
    # 3.11
    "buffer_factory+paused": _SELECTOR_INIT_SOURCE,
    # 3.10: no _paused here
    "buffer_factory": _edited(_SELECTOR_INIT_SOURCE, ("        self._paused = False\n", "")),
    # 3.12
    "deque+paused": _edited(_SELECTOR_INIT_SOURCE, _DEQUE),
    # 3.13, 3.14
    "deque+paused+attach_self": _edited(
        _SELECTOR_INIT_SOURCE, _DEQUE, ("self._server._attach()", "self._server._attach(self)")
    ),
}
_FLOW_SOURCE = """
class _FlowControlMixin(Transport):
    def __init__(self, extra=None, loop=None):
        super().__init__(extra)
        assert loop is not None
        self._loop = loop
        self._protocol_paused = False
        self._set_write_buffer_limits()

    def _set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            if low is None:
                high = 64 * 1024
            else:
                high = 4 * low
        if low is None:
            low = high // 4

        if not high >= low >= 0:
            raise ValueError(
                f'high ({high!r}) must be >= low ({low!r}) must be >= 0')

        self._high_water = high
        self._low_water = low

class BaseTransport:
    def __init__(self, extra=None):
        if extra is None:
            extra = {}
        self._extra = extra
"""
_WEAK_SOURCES = {
    # 3.10-3.13
    "pending": """
class WeakValueDictionary(_collections_abc.MutableMapping):
    def __setitem__(self, key, value):
        if self._pending_removals:
            self._commit_removals()
        self.data[key] = KeyedRef(value, self._remove, key)
""",
    # 3.14+
    "plain": """
class WeakValueDictionary(_collections_abc.MutableMapping):
    def __setitem__(self, key, value):
        self.data[key] = KeyedRef(value, self._remove, key)
""",
}
_KEYED_REF_SOURCE = """
class KeyedRef(ref):
    __slots__ = "key",

    def __new__(type, ob, callback, key):
        self = ref.__new__(type, ob, callback)
        self.key = key
        return self

    def __init__(self, ob, callback, key):
        super().__init__(ob, callback)
"""
_SET_PROTOCOL_SOURCE = """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True

class _SelectorSocketTransport(_SelectorTransport):
    def set_protocol(self, protocol):
        if isinstance(protocol, protocols.BufferedProtocol):
            self._read_ready_cb = self._read_ready__get_buffer
        else:
            self._read_ready_cb = self._read_ready__data_received

        super().set_protocol(protocol)
"""
# The reader's registration, one iteration after __init__: `self._add_reader(fd, reader)`.
_ADD_READER_SOURCES = {
    # 3.11-3.14
    "is_reading": """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def is_closing(self):
        return self._closing

    def is_reading(self):
        return not self.is_closing() and not self._paused

    def _add_reader(self, fd, callback, *args):
        if not self.is_reading():
            return
        self._loop._add_reader(fd, callback, *args)
""",
    # 3.10
    "closing": """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def _add_reader(self, fd, callback, *args):
        if self._closing:
            return
        self._loop._add_reader(fd, callback, *args)
""",
}
_Flow = transports._FlowControlMixin  # type: ignore[attr-defined]
_SELECTOR_VARIANT = next(
    (
        variant
        for variant, source in _SELECTOR_INIT_SOURCES.items()
        if _same_code(_SelectorTransport.__init__, source, "_SelectorTransport", "__init__")
    ),
    None,
)
_WEAK_VARIANT = next(
    (
        variant
        for variant, source in _WEAK_SOURCES.items()
        if _same_code(
            weakref.WeakValueDictionary.__setitem__, source, "WeakValueDictionary", "__setitem__"
        )
    ),
    None,
)
_DEEP = (
    _INIT_VARIANT is not None
    and _SELECTOR_VARIANT is not None
    and _WEAK_VARIANT is not None
    and _same_code(_Flow.__init__, _FLOW_SOURCE, "_FlowControlMixin", "__init__")
    and _same_code(
        _Flow._set_write_buffer_limits,
        _FLOW_SOURCE,
        "_FlowControlMixin",
        "_set_write_buffer_limits",
    )
    and _same_code(transports.BaseTransport.__init__, _FLOW_SOURCE, "BaseTransport", "__init__")
    and _same_code(weakref.KeyedRef.__new__, _KEYED_REF_SOURCE, "KeyedRef", "__new__")
    and _same_code(weakref.KeyedRef.__init__, _KEYED_REF_SOURCE, "KeyedRef", "__init__")
    and _same_code(
        _SelectorTransport.set_protocol, _SET_PROTOCOL_SOURCE, "_SelectorTransport", "set_protocol"
    )
    and _same_code(
        _AsyncioTransport.set_protocol,
        _SET_PROTOCOL_SOURCE,
        "_SelectorSocketTransport",
        "set_protocol",
    )
)
_WeakValueDictionary = weakref.WeakValueDictionary
_sockname = _oxloop.sockname
_set_nodelay = _oxloop.set_nodelay
_setup_transport = _oxloop.setup_transport
_oxloop._set_setsockopt_guard(
    _oxloop.ClassGuard([(socket.socket, "setsockopt", _socket.socket.setsockopt)])
)
_oxloop._set_sockname_guard(
    _oxloop.ClassGuard([(socket.socket, "getsockname", _socket.socket.getsockname)])
)
_KeyedRef = weakref.KeyedRef
_ref = weakref.ref


def _chain() -> tuple[Any, ...]:
    """The functions the inlined set-up stands for, as the classes hold them now."""
    return (
        _SelectorTransport.__init__,
        _Flow.__init__,
        _Flow._set_write_buffer_limits,
        transports.BaseTransport.__init__,
        _WeakValueDictionary.__setitem__,
        _KeyedRef.__new__,
        _KeyedRef.__init__,
        _SelectorTransport.set_protocol,
        _AsyncioTransport.set_protocol,
        _SocketTransport.set_protocol,
    )


def _chain_intact() -> bool:
    return _CHAIN_GUARD()


def _selector_init(self: Any, loop: Any, sock: Any, protocol: Any, extra: Any, server: Any) -> None:
    """`_SelectorTransport.__init__` of the running asyncio (``_SELECTOR_VARIANT``) with its
    chain inlined; for an exact `_SocketTransport` (whose methods these are)."""
    # _FlowControlMixin.__init__ -> BaseTransport.__init__
    if extra is None:
        extra = {}
    self._extra = extra
    assert loop is not None
    self._loop = loop
    self._protocol_paused = False
    # _set_write_buffer_limits() with no arguments
    self._high_water = 64 * 1024
    self._low_water = 16 * 1024
    extra = self._extra
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        # sock.getsockname(), for a plain IPv4 socket in Rust (src/accept.rs `sockname`).
        extra["sockname"] = _sockname(sock)
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None
    self._sock = sock
    fd = self._sock_fd = sock.fileno()

    self._protocol_connected = False
    # self.set_protocol(protocol): _SocketTransport's, then asyncio's two.
    if type(protocol) is _SSLProtocol:
        from . import _tls

        if _tls.NATIVE:
            protocol.__class__ = _tls._StartTLSProtocol
    buffered = self._oxloop_buffered = isinstance(protocol, protocols.BufferedProtocol)
    if buffered:
        self._read_ready_cb = self._read_ready__get_buffer
    else:
        self._read_ready_cb = self._read_ready__data_received
    self._protocol = protocol
    self._protocol_connected = True

    self._server = server
    variant = _SELECTOR_VARIANT
    if variant.startswith("deque"):  # type: ignore[union-attr]
        self._buffer = collections.deque()
    else:
        self._buffer = self._buffer_factory()
    self._conn_lost = 0
    self._closing = False
    if variant != "buffer_factory":
        self._paused = False
    if self._server is not None:
        if variant == "deque+paused+attach_self":
            self._server._attach(self)
        else:
            self._server._attach()
    transports_map = loop._transports
    if type(transports_map) is _WeakValueDictionary:
        # WeakValueDictionary.__setitem__, with a weak reference that has no callback (as the
        # native set-up, src/transport_setup.rs, says why): a dead entry reads as absent, and
        # the next transport on the fd replaces it.
        if _WEAK_VARIANT == "pending" and transports_map._pending_removals:
            transports_map._commit_removals()
        transports_map.data[fd] = _ref(self)
    else:
        transports_map[fd] = self


# The other fields asyncio's set-up stores, slots too where no class of the running asyncio has
# the name (3.10/3.11 have a `_write_ready` method, and `_SelectorTransport` a class-level
# `_sock = None` its `__del__` relies on): the native set-up stores each with one write
# (src/transport_setup.rs), the Python code with its specialised slot store.
_SETUP_SLOTS = tuple(
    name
    for name in (
        "_read_ready_cb",
        "_sock_fd",
        "_protocol_connected",
        "_server",
        "_closing",
        "_paused",
        "_write_ready",
    )
    if not any(name in vars(cls) for cls in _AsyncioTransport.__mro__)
)


class _SocketTransport(selector_events._SelectorSocketTransport):  # type: ignore[name-defined,misc]
    # The fields src/transport.rs reads by offset, and ``write``, the bound fast write, which
    # callers find sooner in a slot than in the dict.
    __slots__ = (*_oxloop.TRANSPORT_FIELDS, "write", "_oxloop_read_state", *_SETUP_SLOTS)

    if getattr(_AsyncioTransport, "_buffer_factory", None) is bytearray:
        # 3.10/3.11 queue unsent data in a bytearray, copying every queued byte (and again
        # as sends drain it); the native queue keeps large bytes by reference (see
        # src/writebuf.rs). 3.12+ queue memoryviews in a deque and keep theirs.
        _buffer_factory = _oxloop.WriteBuffer

    # asyncio's write, for everything the native fast path leaves to it.
    _write_slow = selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]

    if _INIT_VARIANT is None:

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # asyncio's own signature, whatever the version (3.15 adds ``context``): its
            # __init__ checks the arguments, so a wrong call fails as it does on stock asyncio.
            self.write = _oxloop.SocketWriter(self).write
            # What the native reads learnt of this connection's traffic, kept across the
            # readers that pause_reading / resume_reading register in turn.
            self._oxloop_read_state = _oxloop.ReadState()
            super().__init__(*args, **kwargs)
            if type(self._sock) is not socket.socket:
                # A socket subclass may override send (a wrapper counting or logging I/O),
                # which asyncio's write calls: every write goes to asyncio's.
                self.write = _oxloop.SocketWriter(self, False).write
    else:

        def __init__(
            self,
            loop: Any,
            sock: Any,
            protocol: Any,
            waiter: Any = None,
            extra: Any = None,
            server: Any = None,
        ) -> None:
            # The same steps as above, with asyncio's __init__ (``_INIT_VARIANT``) inlined
            # and ``_set_nodelay``'s test on the socket's C fields (see above): in Rust for
            # the plain case (src/transport_setup.rs, which says when that is).
            if _setup_transport(self, loop, sock, protocol, waiter, extra, server):
                return
            self.write = _oxloop.SocketWriter(self).write
            self._oxloop_read_state = _oxloop.ReadState()
            if _AsyncioTransport.__init__ is not _ASYNCIO_INIT:
                super().__init__(loop, sock, protocol, waiter, extra, server)
                if type(self._sock) is not socket.socket:
                    self.write = _oxloop.SocketWriter(self, False).write
                return
            self._read_ready_cb = None
            if _DEEP and type(self) is _SocketTransport and _CHAIN_GUARD():
                _selector_init(self, loop, sock, protocol, extra, server)
            else:
                _SelectorTransport.__init__(self, loop, sock, protocol, extra, server)
            self._eof = False
            if _INIT_VARIANT == "paused":
                self._paused = False
            self._empty_waiter = None
            if _INIT_VARIANT == "write_ready":
                if selector_events._HAS_SENDMSG:  # type: ignore[attr-defined]
                    self._write_ready = self._write_sendmsg
                else:
                    self._write_ready = self._write_send
            sock = self._sock
            plain = type(sock) is socket.socket
            nodelay = base_events._set_nodelay  # type: ignore[attr-defined]
            if nodelay is _NODELAY and plain:
                # `sock.family in {AF_INET, AF_INET6} and sock.type == SOCK_STREAM and
                # sock.proto == IPPROTO_TCP`, the integers read without socket.py's enum
                # conversions: in Rust where `setsockopt` is _socket's (src/accept.rs).
                if not _set_nodelay(sock) and (
                    _SOCK_FAMILY(sock) in _INET
                    and _SOCK_TYPE(sock) == socket.SOCK_STREAM
                    and sock.proto == socket.IPPROTO_TCP
                ):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                nodelay(sock)
            call_soon = self._loop.call_soon
            call_soon(self._protocol.connection_made, self)
            # `self._read_ready` (the property below) without its call, for this class.
            if plain and type(self) is _SocketTransport:
                reader = _oxloop.SocketReader(self, self._oxloop_read_state)
            else:
                reader = self._read_ready
            if (
                _ADD_READER_VARIANT is not None
                and type(self) is _SocketTransport
                and _SocketTransport._add_reader is _READING_CHAIN[0]
                and not self._loop.get_debug()
            ):
                # The same registration without three Python calls; debug mode keeps the
                # handle asyncio makes (its repr is in slow-callback reports).
                call_soon(_start_reading, self, self._sock_fd, reader)
            else:
                call_soon(self._add_reader, self._sock_fd, reader)
            if waiter is not None:
                call_soon(futures._set_result_unless_cancelled, waiter, None)
            if not plain:
                self.write = _oxloop.SocketWriter(self, False).write

    @property
    def _read_ready(self) -> Any:
        # Read where asyncio registers (or re-registers, on resume_reading) its reader. The
        # native reader reads the fd itself, which only `socket.socket`'s own recv /
        # recv_into do: a subclass (which may override them) gets asyncio's _read_ready,
        # which calls the object's methods.
        if type(self._sock) is socket.socket:
            return _oxloop.SocketReader(self, self._oxloop_read_state)
        return _AsyncioTransport._read_ready.__get__(self)

    def _call_connection_lost(self, exc: Any) -> None:
        # 3.10/3.11 keep ``_read_ready_cb``, a bound method of the transport, after the
        # connection is lost: a reference cycle, so every closed transport (with its
        # socket, extra dict and writer) waited for the cyclic GC -- 11 objects per
        # connection, and a gen-0 collection every ~60 connections of a churning server.
        # 3.12+ clear it on close (gh-100348: selector_events.py ``close``, 3.14
        # ``_call_connection_lost``); this is that clearing, once asyncio's own steps ran.
        try:
            if _LOST_VARIANT is not None and type(self) is _SocketTransport and _LOST_GUARD():
                # asyncio's two `_call_connection_lost` in one, with `socket.close` and
                # `Server._detach` inlined where they are the verified ones (see "transport
                # close" below); the same statements in the same `try`/`finally` levels.
                try:
                    try:
                        if self._protocol_connected:
                            self._protocol.connection_lost(exc)
                    finally:
                        sock = self._sock
                        if (
                            type(sock) is _socket_socket
                            and _SOCKET_CLOSE is not None
                            and _SOCKET_CLOSE_GUARD()
                        ):
                            # socket.close, then _real_close (socket.socket has no __dict__)
                            sock._closed = True
                            if sock._io_refs <= 0:
                                # The loop forgets the fd's parked registration, which the
                                # kernel drops with the file (src/loop_core `_fd_closing`).
                                self._loop._fd_closing(sock.fileno())
                                _c_close(sock)
                        else:
                            sock.close()
                        self._sock = None
                        self._protocol = None
                        self._loop = None
                        server = self._server
                        if server is not None:
                            detach = server._detach
                            if _DETACH is None or getattr(detach, "__func__", None) is not _DETACH:
                                if _SELECTOR_LOST_VARIANT == "detach":
                                    detach()
                                else:
                                    detach(self)
                            elif _SELECTOR_LOST_VARIANT == "detach":
                                assert server._active_count > 0
                                server._active_count -= 1
                                if server._active_count == 0 and server._sockets is None:
                                    server._wakeup()
                            else:
                                server._clients.discard(self)
                                if len(server._clients) == 0 and server._sockets is None:
                                    server._wakeup()
                            self._server = None
                finally:
                    if _LOST_VARIANT == "finally":
                        self._write_ready = None
                        self._read_ready_cb = None
                        if self._empty_waiter is not None:
                            self._empty_waiter.set_exception(
                                ConnectionError("Connection is closed by peer")
                            )
                if _LOST_VARIANT == "plain" and self._empty_waiter is not None:
                    self._empty_waiter.set_exception(
                        ConnectionError("Connection is closed by peer")
                    )
            else:
                super()._call_connection_lost(exc)
        finally:
            if not _CLEARS_READ_READY_CB:
                self._read_ready_cb = None

    def set_protocol(self, protocol: Any) -> None:
        if type(protocol) is _SSLProtocol:
            # loop.start_tls (base_events.py) builds asyncio's SSLProtocol and sets it here,
            # before its connection_made: it gets the native TLS data path (see _tls).
            from . import _tls

            if _tls.NATIVE:
                protocol.__class__ = _tls._StartTLSProtocol
        self._oxloop_buffered = isinstance(protocol, protocols.BufferedProtocol)
        super().set_protocol(protocol)


_CHAIN = _chain()
# `_chain() == _CHAIN`, asked of each class's version tag first (src/guard.rs).
_CHAIN_GUARD_ENTRIES = [
    (_SelectorTransport, "__init__", _CHAIN[0]),
    (_Flow, "__init__", _CHAIN[1]),
    (_Flow, "_set_write_buffer_limits", _CHAIN[2]),
    (transports.BaseTransport, "__init__", _CHAIN[3]),
    (_WeakValueDictionary, "__setitem__", _CHAIN[4]),
    (_KeyedRef, "__new__", _CHAIN[5]),
    (_KeyedRef, "__init__", _CHAIN[6]),
    (_SelectorTransport, "set_protocol", _CHAIN[7]),
    (_AsyncioTransport, "set_protocol", _CHAIN[8]),
    (_SocketTransport, "set_protocol", _CHAIN[9]),
]
_CHAIN_GUARD = _oxloop.ClassGuard(_CHAIN_GUARD_ENTRIES)


# -- transport close ---------------------------------------------------------------------------
# A closed connection runs `_SelectorSocketTransport._call_connection_lost`, its super's, the
# socket's `close` and `_real_close` and the server's `_detach`: five Python frames
# (benches/net_callgrind.sh churn-protocol). Where all of them are, statement for statement, the
# code below (checked as for `__init__` above), an exact `_SocketTransport`'s
# `_call_connection_lost` runs their statements itself, in the same `try`/`finally` levels (so
# an exception is raised, chained and reported as asyncio's would be), calling each piece that
# has since been replaced (a patched `Server._detach`, a socket subclass's `close`) as asyncio's
# code does. The same statements in Rust through the C API (getattr/setattr by name) measured no
# fewer instructions than 3.11's specialised bytecode, so they stay Python; so did a version that
# stores and reads the transport's slots by offset, as the native set-up does (54,805 -> 54,708
# per connection of churn-protocol, inside the noise: its work is calls, not field stores).
_LOST_SOURCES = {
    # 3.10-3.13
    "plain": """
class _SelectorSocketTransport(_SelectorTransport):
    def _call_connection_lost(self, exc):
        super()._call_connection_lost(exc)
        if self._empty_waiter is not None:
            self._empty_waiter.set_exception(
                ConnectionError("Connection is closed by peer"))
""",
    # 3.14+ (gh-100348 moved the clearing of the callbacks here)
    "finally": """
class _SelectorSocketTransport(_SelectorTransport):
    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            self._write_ready = None
            self._read_ready_cb = None
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(
                    ConnectionError("Connection is closed by peer"))
""",
}
_SELECTOR_LOST_SOURCE = """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                server._detach()
                self._server = None
"""
_SELECTOR_LOST_SOURCES = {
    # 3.10-3.12
    "detach": _SELECTOR_LOST_SOURCE,
    # 3.13+: the server keeps its clients (gh-79033)
    "detach_self": _edited(_SELECTOR_LOST_SOURCE, ("server._detach()", "server._detach(self)")),
}
_DETACH_SOURCES = {
    # 3.10-3.12
    "detach": """
class Server(events.AbstractServer):
    def _detach(self):
        assert self._active_count > 0
        self._active_count -= 1
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()
""",
    # 3.13+
    "detach_self": """
class Server(events.AbstractServer):
    def _detach(self, transport):
        self._clients.discard(transport)
        if len(self._clients) == 0 and self._sockets is None:
            self._wakeup()
""",
}
_SOCKET_CLOSE_SOURCE = """
class socket(_socket.socket):
    def _real_close(self, _ss=_socket.socket):
        # This function should not reference any globals. See issue #808164.
        _ss.close(self)

    def close(self):
        # This function should not reference any globals. See issue #808164.
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()
"""


def _variant(func: Any, sources: dict[str, str], *path: str) -> str | None:
    """The key of the source in ``sources`` whose function at ``path`` is ``func``'s code."""
    return next((k for k, src in sources.items() if _same_code(func, src, *path)), None)


_LOST_CHAIN = (
    _AsyncioTransport._call_connection_lost,
    _SelectorTransport._call_connection_lost,
)
_SELECTOR_LOST_VARIANT = _variant(
    _LOST_CHAIN[1], _SELECTOR_LOST_SOURCES, "_SelectorTransport", "_call_connection_lost"
)
_LOST_VARIANT = (
    _variant(_LOST_CHAIN[0], _LOST_SOURCES, "_SelectorSocketTransport", "_call_connection_lost")
    if _SELECTOR_LOST_VARIANT is not None
    else None
)
_Server = base_events.Server  # type: ignore[attr-defined]
# Server._detach as verified (its argument as `_SELECTOR_LOST_VARIANT` passes it), else None:
# then the server's own `_detach` is called.
_DETACH = (
    _Server._detach
    if _variant(_Server._detach, _DETACH_SOURCES, "Server", "_detach") == _SELECTOR_LOST_VARIANT
    else None
)
_socket_socket = socket.socket
_SOCKET_CLOSE = (
    (_socket_socket.close, _socket_socket._real_close)
    if _same_code(_socket_socket.close, _SOCKET_CLOSE_SOURCE, "socket", "close")
    and _same_code(_socket_socket._real_close, _SOCKET_CLOSE_SOURCE, "socket", "_real_close")
    and _socket_socket._real_close.__defaults__ == (_socket.socket,)
    else None
)
_c_close = _socket.socket.close
# Whether the classes still hold the verified functions (src/guard.rs).
_LOST_GUARD = _oxloop.ClassGuard(
    [
        (_AsyncioTransport, "_call_connection_lost", _LOST_CHAIN[0]),
        (_SelectorTransport, "_call_connection_lost", _LOST_CHAIN[1]),
    ]
)
_SOCKET_CLOSE_GUARD = _oxloop.ClassGuard(
    []
    if _SOCKET_CLOSE is None
    else [
        (_socket_socket, "close", _SOCKET_CLOSE[0]),
        (_socket_socket, "_real_close", _SOCKET_CLOSE[1]),
    ]
)

# The reader's handle is cancelled by the `_remove_reader` of every transport's `close`: the
# loop does what events.py's `Handle.cancel` does (outside debug mode) without its frame, where
# it is this code (src/handles.rs `Layout::cancel`).
_HANDLE_CANCEL_SOURCE = """
class Handle:
    def cancel(self):
        if not self._cancelled:
            self._cancelled = True
            if self._loop.get_debug():
                # Keep a representation in debug mode to keep callback and
                # parameters. For example, to log the warning
                # "Executing <Handle...> took 2.5 second"
                self._repr = repr(self)
            self._callback = None
            self._args = None
"""
if _same_code(events.Handle.cancel, _HANDLE_CANCEL_SOURCE, "Handle", "cancel"):
    _oxloop._set_verified_handle_cancel(
        _oxloop.ClassGuard([(events.Handle, "cancel", events.Handle.cancel)])
    )


def _reading_chain() -> tuple[Any, ...]:
    """What `self._add_reader` of a `_SocketTransport` runs, as the classes hold it now."""
    return (
        _SocketTransport._add_reader,
        _SocketTransport.is_reading,
        _SocketTransport.is_closing,
    )


_READING_CHAIN = _reading_chain()
_ADD_READER_VARIANT = next(
    (
        variant
        for variant, source in _ADD_READER_SOURCES.items()
        if _same_code(_SelectorTransport._add_reader, source, "_SelectorTransport", "_add_reader")
        and (
            variant == "closing"
            or (
                _same_code(
                    _SelectorTransport.is_reading, source, "_SelectorTransport", "is_reading"
                )
                and _same_code(
                    _SelectorTransport.is_closing, source, "_SelectorTransport", "is_closing"
                )
            )
        )
    ),
    None,
)
# Where the class's own are asyncio's (3.10's _SelectorSocketTransport has its own is_reading,
# which 3.10's _add_reader does not call).
if _READING_CHAIN[0] is not _SelectorTransport._add_reader or (
    _ADD_READER_VARIANT == "is_reading"
    and _READING_CHAIN[1:] != (_SelectorTransport.is_reading, _SelectorTransport.is_closing)
):
    _ADD_READER_VARIANT = None


def _start_reading(transport: Any, fd: int, reader: Any) -> None:
    """What the bound ``self._add_reader`` that asyncio's ``__init__`` schedules does (the
    verified function, ``_ADD_READER_VARIANT``), in one call: 3.10 registers the reader unless
    the transport is closing, 3.11+ unless ``is_reading()`` is false."""
    if _ADD_READER_VARIANT == "is_reading":
        # `self.is_reading()`, looked up now as asyncio's code does: an instance attribute or a
        # patched method is called.
        is_reading = transport.is_reading
        if (
            getattr(is_reading, "__func__", None) is _READING_CHAIN[1]
            and getattr(transport.is_closing, "__func__", None) is _READING_CHAIN[2]
        ):
            if transport._closing or transport._paused:
                return
        elif not is_reading():
            return
    elif transport._closing:
        return
    transport._loop._add_reader(fd, reader)


# -- end of stream ----------------------------------------------------------------------------
# A peer's EOF runs `_read_ready__on_eof`, which calls the protocol's `eof_received` and then
# `close` (3.12+: `_SelectorSocketTransport.close` and its super's), and `close` schedules
# `_call_connection_lost`: two or three Python frames per connection, each calling the loop's
# `_remove_reader` / `_remove_writer` through their argument parsing. Where these functions are
# the code below (checked as for `__init__` above), the native reader does their statements
# itself (src/transport_life.rs), calling back into Python for the protocol and for whatever
# has since been replaced.
_EOF_SOURCE = """
class _SelectorSocketTransport(_SelectorTransport):
    def _read_ready__on_eof(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)

        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(
                exc, 'Fatal error: protocol.eof_received() call failed.')
            return

        if keep_open:
            self._loop._remove_reader(self._sock_fd)
        else:
            self.close()
"""
_SELECTOR_CLOSE_SOURCE = """
class _SelectorTransport(transports._FlowControlMixin, transports.Transport):
    def close(self):
        if self._closing:
            return
        self._closing = True
        self._loop._remove_reader(self._sock_fd)
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._sock_fd)
            self._loop.call_soon(self._call_connection_lost, None)
"""
_TRANSPORT_CLOSE_SOURCES = {
    # 3.12, 3.13 (gh-100348: the callbacks are cleared on close)
    "clear_both": """
class _SelectorSocketTransport(_SelectorTransport):
    def close(self):
        self._read_ready_cb = None
        self._write_ready = None
        super().close()
""",
    # 3.14 (`_write_ready` is cleared in `_call_connection_lost` instead)
    "clear_read": """
class _SelectorSocketTransport(_SelectorTransport):
    def close(self):
        self._read_ready_cb = None
        super().close()
""",
}
# 3.10 and 3.11 have no `close` of their own: "selector".
_CLOSE_VARIANT = (
    "selector"
    if "close" not in vars(_AsyncioTransport)
    else _variant(
        _AsyncioTransport.close, _TRANSPORT_CLOSE_SOURCES, "_SelectorSocketTransport", "close"
    )
)
_EOF_NATIVE = (
    _CLOSE_VARIANT is not None
    and _same_code(_SelectorTransport.close, _SELECTOR_CLOSE_SOURCE, "_SelectorTransport", "close")
    and _same_code(
        _AsyncioTransport._read_ready__on_eof,
        _EOF_SOURCE,
        "_SelectorSocketTransport",
        "_read_ready__on_eof",
    )
)


# `trsock.TransportSocket(sock)`, which the set-up makes per connection: where the class is
# this one (`__slots__`, an `__init__` of this code, `object`'s `__new__`, no metaclass), the
# native set-up makes it as `type_call` would, `object.__new__` and the one slot store, without
# the `__init__` frame (about 1,000 instructions per connection on 3.11).
_TRSOCK_SOURCE = """
class TransportSocket:
    def __init__(self, sock: socket.socket):
        self._sock = sock
"""
_TRSOCK = trsock.TransportSocket
_TRSOCK_DIRECT = (
    type(_TRSOCK) is type
    and _TRSOCK.__slots__ == ("_sock",)
    and _TRSOCK.__new__ is object.__new__
    and _same_code(_TRSOCK.__init__, _TRSOCK_SOURCE, "TransportSocket", "__init__")
)

# Whether `_SocketTransport` sets up a plain connection in one native call (below).
NATIVE_SETUP = False

if _contract.holds("socket_transport"):
    _oxloop.register_transport_slots(_SocketTransport)
    if (
        _DEEP
        and _NODELAY is not None
        and _ADD_READER_VARIANT is not None
        and _SELECTOR_VARIANT is not None
        and _INIT_VARIANT is not None
    ):
        # The whole plain set-up in one native call, where each function it stands for is
        # the verified one (`_CHAIN_GUARD`'s, asyncio's `__init__`, the class's `_add_reader`):
        # src/transport_setup.rs.
        _oxloop._set_transport_setup(
            _SocketTransport,
            _oxloop.ClassGuard(
                [
                    *_CHAIN_GUARD_ENTRIES,
                    (_AsyncioTransport, "__init__", _ASYNCIO_INIT),
                    (_SocketTransport, "_add_reader", _READING_CHAIN[0]),
                    # Slots are stored by offset: a `__setattr__` put on the class must run.
                    (_SocketTransport, "__setattr__", object.__setattr__),
                    *(
                        [
                            (_TRSOCK, "__init__", _TRSOCK.__init__),
                            (_TRSOCK, "__new__", object.__new__),
                        ]
                        if _TRSOCK_DIRECT
                        else []
                    ),
                ]
            ),
            base_events,
            _NODELAY,
            selector_events,
            socket.socket,
            _SSLProtocol,
            protocols.BufferedProtocol,
            _TRSOCK,
            _WeakValueDictionary,
            collections.deque,
            _start_reading,
            futures._set_result_unless_cancelled,
            selector_paused=_SELECTOR_VARIANT != "buffer_factory",
            deque_buffer=_SELECTOR_VARIANT.startswith("deque"),
            attach_self=_SELECTOR_VARIANT == "deque+paused+attach_self",
            weak_pending=_WEAK_VARIANT == "pending",
            init_paused=_INIT_VARIANT == "paused",
            write_ready=_INIT_VARIANT == "write_ready",
            trsock_direct=_TRSOCK_DIRECT,
        )
        NATIVE_SETUP = True
        # The reader's registration and the end of stream, natively (src/transport_life.rs).
        _oxloop._set_transport_life(
            _oxloop._start_reading,
            _start_reading,
            *(_READING_CHAIN[1:] if _ADD_READER_VARIANT == "is_reading" else (None, None)),
            _AsyncioTransport._read_ready__on_eof if _EOF_NATIVE else None,
            _SocketTransport.close if _EOF_NATIVE else None,
            _oxloop.ClassGuard([(_SelectorTransport, "close", _SelectorTransport.close)]),
            clear_read_cb=_CLOSE_VARIANT in ("clear_both", "clear_read"),
            clear_write_ready=_CLOSE_VARIANT == "clear_both",
        )
else:
    # The contract's `socket_transport` entry failed: asyncio's transport, whose read and
    # write paths are its own Python code (python/oxloop/_contract.py).
    _SocketTransport = _AsyncioTransport  # type: ignore[misc]

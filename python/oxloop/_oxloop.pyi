"""Type stubs for the Rust extension ``oxloop._oxloop`` (hand-written; checked by stubtest)."""

import asyncio
import contextvars
import socket
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, Protocol, TypeVar, final

from typing_extensions import TypeVarTuple, Unpack, disjoint_base

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

__all__ = [
    "__version__",
    "LoopCore",
    "SocketReader",
    "SocketWriter",
    "SockWaiter",
    "ReadState",
    "WriteBuffer",
    "Acceptor",
    "ClassGuard",
    "CONTRACT_ENTRIES",
    "TRANSPORT_FIELDS",
    "TLS_FIELDS",
    "_contract_status",
    "_fileno",
    "_install_fast_methods",
    "_set_io_context_keyword",
    "_set_setsockopt_guard",
    "_set_accept_now",
    "_set_transport_life",
    "_set_transport_setup",
    "_set_sockname_guard",
    "_set_verified_handle_cancel",
    "_set_verified_socket_init",
    "_start_reading",
    "_transport_setup_counts",
    "accept_now",
    "acceptor",
    "register_transport_slots",
    "set_nodelay",
    "setup_transport",
    "sock_recv",
    "sock_recv_into",
    "sock_sendall",
    "sockname",
    "tls_buffer_updated",
    "tls_install",
    "tls_stats",
    "tls_write_appdata",
]

__version__: str

CONTRACT_ENTRIES: tuple[str, ...]
"""The Rust side's CPython contract entries (src/cpython/mod.rs), in its table's order."""

def _contract_status() -> dict[str, bool]:
    """Each Rust-side contract entry and whether it holds (its fast path is on); runs the
    probes otherwise run at first use. ``oxloop._contract.status()`` adds the Python side's."""

def _install_fast_methods(cls: type[LoopCore]) -> None:
    """Sets call_soon, call_soon_threadsafe, call_later, call_at and get_debug on ``LoopCore``
    (``cls`` inherits them) as raw vectorcall method descriptors, their only versions; records
    ``cls`` as the loop class of the ``sock_*`` fast paths."""

def _fileno(obj: Any) -> int:
    """``obj`` when it is an int, else ``int(obj.fileno())``; ValueError("Invalid file object")
    as ``selectors._fileobj_to_fd`` raises it (the one copy of that step)."""

def _set_io_context_keyword(on: bool) -> None:
    """Whether ``LoopCore._add_reader`` / ``_add_writer`` accept ``context=`` (set at import
    from the running asyncio's signatures; otherwise the keyword is a TypeError)."""

@disjoint_base
class LoopCore:
    """The Rust core of ``oxloop.Loop``: scheduling, timers, the poller, fd watching."""

    _closed: bool
    _stopping: bool
    _debug: bool

    def __new__(cls, *_args: Any, **_kwargs: Any) -> LoopCore: ...
    def time(self) -> float: ...
    def _is_virtual(self) -> bool: ...
    def _virtual_set_threshold(self, seconds: float) -> None: ...
    def _virtual_advance_to(self, target: float | None) -> None: ...
    def _virtual_thread(self, delta: int) -> None: ...
    def create_future(self) -> asyncio.Future[Any]: ...
    def create_task(self, coro: Coroutine[Any, Any, _T], **kwargs: Any) -> asyncio.Task[_T]: ...
    def call_soon(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle: ...
    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle: ...
    def stop(self) -> None: ...
    def is_closed(self) -> bool: ...
    def get_debug(self) -> bool: ...
    # `context=` only where the running asyncio's methods take it (3.15): see
    # `_set_io_context_keyword`.
    def _add_reader(
        self,
        fd: Any,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def _add_writer(
        self,
        fd: Any,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle: ...
    def _remove_reader(self, fd: Any) -> bool: ...
    def _remove_writer(self, fd: Any) -> bool: ...
    def _fd_closing(self, fd: int) -> None: ...
    def _fd_parked(self, fd: int) -> bool: ...
    def _fd_key(
        self, fileobj: Any
    ) -> tuple[int, int, asyncio.Handle | None, asyncio.Handle | None, Any] | None: ...
    def _fd_list(self) -> list[int]: ...
    def _run(self) -> None: ...
    def _run_once(self) -> None: ...
    def _add_callback(self, handle: asyncio.Handle) -> None: ...
    def _add_callback_signalsafe(self, handle: asyncio.Handle) -> None: ...
    def _add_timer(self, timer: asyncio.TimerHandle) -> None: ...
    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None: ...
    def _write_to_self(self) -> None: ...
    def _signal_wakeup_fd(self) -> int | None: ...
    def _close_core(self) -> None: ...
    def _gc_track_shared(self) -> None: ...
    def _metrics_raw(self) -> tuple[int, ...]: ...
    def _start_watchdog(self) -> None: ...
    def _stop_watchdog(self) -> None: ...
    def _watchdog_running(self) -> bool: ...
    def _take_slow_handle(self, seq: int) -> asyncio.Handle | None: ...
    @property
    def slow_callback_duration(self) -> Any: ...
    @slow_callback_duration.setter
    def slow_callback_duration(self, value: Any) -> None: ...

class LoopHooks(Protocol):
    """What the Rust core calls on its Python subclass by name (``oxloop.Loop`` in
    ``_loop.py`` implements it): the one interface between the two halves, besides the
    ``LoopCore`` methods above. Stub-only (no runtime class; listed in stubtest-allowlist.txt).

    Every hook runs on the loop thread with no loop state borrowed, so it may call any loop
    method, unless said otherwise. An exception a hook raises propagates out of the core
    method that called it (``run_forever`` / ``run_until_complete`` for the run-loop hooks).
    """

    _transports: Any
    """selector_events' ``WeakValueDictionary`` of fd -> transport, read from the instance
    ``__dict__`` by the ``sock_*`` fast paths: an fd not among the keys of its ``data`` dict
    belongs to no transport; when it is there, or ``_transports`` is anything else, they ask
    ``_ensure_fd_no_transport`` / ``remove_reader`` / ``remove_writer`` instead."""

    def time(self) -> float:
        """Called in place of the core's clock when the class or the instance replaced
        ``time`` (``mock.patch.object(loop, "time")``), by ``call_later`` and once per
        iteration, as asyncio calls ``self.time()``."""

    def _call_soon_debug(
        self, callback: Any, args: tuple[Any, ...], context: Any, method: str
    ) -> asyncio.Handle:
        """``call_soon`` / ``call_soon_threadsafe`` in debug mode (``method`` is the name the
        user called): asyncio's checks, the handle built by ``Handle.__init__`` (which captures
        the source traceback) and queued; returns that handle. May run on any thread for
        ``call_soon_threadsafe``."""

    def _call_at_debug(
        self, when: Any, callback: Any, args: tuple[Any, ...], context: Any
    ) -> asyncio.TimerHandle:
        """``call_at`` / ``call_later`` in debug mode: asyncio's checks, then the timer is
        built and scheduled (``_add_timer``); returns it."""

    def _run_handle_debug(self, handle: asyncio.Handle) -> None:
        """Runs one ready handle in debug mode (asyncio's slow-callback warning), in place of
        the core running it. Returns None; only what ``Handle._run`` lets escape propagates."""

    def _report_callback_error(self, handle: asyncio.Handle, exc: BaseException) -> None:
        """A callback the core ran (outside ``Handle._run``) raised ``exc``, neither
        SystemExit nor KeyboardInterrupt: report it as ``Handle._run`` does
        (``call_exception_handler``). Returns None."""

    def _process_signals(self, data: bytes) -> None:
        """After a poll, with the bytes read from the signal wake-up socket (one signal number
        each, as ``signal.set_wakeup_fd`` writes them): schedule the handlers
        ``add_signal_handler`` registered. Returns None."""

    def _virtual_advanced(self) -> None:
        """Virtual time only: the core stepped time to the earliest ``advance()`` target (and
        cleared it); wake the callers waiting for it and set the next target
        (``_virtual_advance_to``). Returns None."""

    def _virtual_end_reached(self) -> None:
        """Virtual time only: time reached the clock's ``end`` (which the core then clears):
        raise the clock's ``EndOfVirtualTime``, which ends the run; returning None lets the
        loop go on."""

    def _virtual_deadlock(self) -> None:
        """Virtual time only: nothing can ever wake the loop (no ready callback, no finite
        timer, no fd, no thread work) after a short real grace wait: raise the clock's
        ``Deadlock``; returning None (a signal handler may still wake the loop) makes the core
        wait for the poller without a timeout."""

    def _watchdog_sample(self, handle: asyncio.Handle) -> Any:
        """Called on the watchdog thread (holding the GIL) while the loop thread is stalled in
        ``handle``'s callback for longer than ``slow_callback_duration``: returns a sample of
        the loop thread's stack (any object), handed back to ``_watchdog_report``. An exception
        is reported as unraisable (the report then gets None as the sample)."""

    def _watchdog_report(self, sample: Any, duration: float, unsampled: bool, seq: int) -> None:
        """Called on the watchdog thread once a stalled callback ended: ``sample`` from
        ``_watchdog_sample`` (None when it was not called, ``unsampled`` then True, or raised),
        its duration in
        seconds and its activity word ``seq`` (for ``LoopCore._take_slow_handle``). Must only
        hand the report to the loop thread (``call_soon_threadsafe``). Returns None; an
        exception is reported as unraisable."""

    def _ensure_fd_no_transport(self, fd: Any) -> None:
        """selector_events' check, called by ``sock_*`` before they watch ``fd`` unless
        ``_transports`` shows that no transport has it: RuntimeError when an open transport
        owns it. Returns None."""

    def remove_reader(self, fd: Any) -> bool:
        """Called by a ``sock_*`` waiter when its operation completed, unless ``_transports``
        shows that no transport has the fd (asyncio's ``_sock_read_done`` calls it always).
        The result is ignored."""

    def remove_writer(self, fd: Any) -> bool:
        """As ``remove_reader``, for ``sock_sendall``."""

@final
class SocketReader:
    """The read-event callback of one stream socket transport."""

    def __new__(
        cls, transport: asyncio.Transport, state: ReadState | None = None
    ) -> SocketReader: ...
    def __call__(self, *args: Any, **kwargs: Any) -> None: ...
    @property
    def __qualname__(self) -> str: ...  # type: ignore[override]
    @property
    def __name__(self) -> str: ...

@final
class ReadState:
    """What one transport's reads learned (the last read's size), kept across the readers that
    ``resume_reading`` registers; holds no object."""

    def __new__(cls) -> ReadState: ...

@final
class WriteBuffer:
    """The write queue of a stream socket transport on 3.10/3.11 (``_buffer_factory``): what
    asyncio's code uses of a ``bytearray`` (``extend``, ``len``, ``del buf[:n]``, ``clear``, and
    a read-only buffer of the front chunk); large ``bytes`` are held by reference."""

    def __new__(cls) -> WriteBuffer: ...
    def extend(self, data: bytes | bytearray | memoryview) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __delitem__(self, key: slice, /) -> None: ...

@final
class SocketWriter:
    """The fast ``write`` of one stream socket transport (held weakly)."""

    def __new__(cls, transport: asyncio.Transport, native: bool = True) -> SocketWriter: ...
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

TRANSPORT_FIELDS: tuple[str, ...]
"""The transport attributes the Rust read and write paths read by offset: the slots of
``_SocketTransport``."""
TLS_FIELDS: tuple[str, ...]
"""The SSLProtocol attributes the Rust TLS data path reads by offset: the slots of
``_tls.SSLProtocol``."""

def register_transport_slots(cls: type) -> None:
    """Record where ``cls`` (``_SocketTransport``) keeps the slots its per-event paths read;
    RuntimeError when the layout is not the one expected."""

def setup_transport(
    t: Any, loop_: Any, sock: Any, protocol: Any, waiter: Any, extra: Any, server: Any
) -> bool:
    """``_SocketTransport.__init__`` for the plain case, as asyncio's verified set-up runs it;
    False, with nothing done, when a precondition does not hold (src/transport_setup.rs)."""

def _set_transport_setup(
    transport: type,
    guard: ClassGuard,
    base_events: ModuleType,
    nodelay: Any,
    selector_events: ModuleType,
    socket: type,
    ssl_protocol: type,
    buffered_protocol: type,
    transport_socket: type,
    weak_value_dict: type,
    deque: Any,
    start_reading: Any,
    set_result_unless_cancelled: Any,
    *,
    selector_paused: bool,
    deque_buffer: bool,
    attach_self: bool,
    weak_pending: bool,
    init_paused: bool,
    write_ready: bool,
    trsock_direct: bool,
) -> None:
    """What ``setup_transport`` stands for, as ``_transports.py`` verified it (once);
    ``trsock_direct``: ``transport_socket`` may be made as ``object.__new__`` and its one
    ``_sock`` store (its ``__init__`` verified, guarded by ``guard``)."""

def _set_transport_life(
    native: Any,
    start_reading: Any,
    is_reading: Any,
    is_closing: Any,
    on_eof: Any,
    close: Any,
    selector_close: ClassGuard,
    *,
    clear_read_cb: bool,
    clear_write_ready: bool,
) -> bool:
    """The reader's registration and the end of stream in Rust, as ``_transports.py`` verified
    them (once; src/transport_life.rs): ``native`` is ``_start_reading``, ``start_reading``
    the Python one it falls back to; ``is_reading``/``is_closing`` None for 3.10's
    ``_add_reader``, ``on_eof``/``close`` None where the end of stream is not verified. Whether
    it took them (the native set-up and the ``get_method`` contract are needed)."""

def _start_reading(t: Any, fd: Any, reader: Any) -> None:
    """``transport._add_reader(fd, reader)`` as the native set-up schedules it: the reader is
    registered unless the transport is closing (3.11+: or paused)."""

def _transport_setup_counts() -> tuple[int, int]:
    """``(transports set up natively, connections accepted natively)`` since import (tests)."""

def _set_accept_now(loop_class: type, guard: ClassGuard, ensure_fd: bool, fallback: Any) -> bool:
    """What ``accept_now`` stands for (once): the loop class (whose ``_make_socket_transport``
    a loop must resolve to), the guard of the transport class's ``__new__`` and ``__init__``,
    whether ``_ensure_fd_no_transport`` runs first (3.12+), and the Python ``_accept_now``;
    False (nothing registered) where the ``get_method`` contract does not hold."""

def accept_now(
    loop_: Any, protocol_factory: Any, conn: Any, extra: Any, server: Any, context: Any = None
) -> None:
    """``_loop._accept_now`` in one call: the protocol and its transport, errors other than
    SystemExit and KeyboardInterrupt dropped; the Python function where the case is not plain."""

def sock_recv(lp: asyncio.AbstractEventLoop, sock: socket.socket, n: Any) -> Any:
    """``lp.sock_recv(sock, n)`` up to the wait: bytes, ``(future, handle, fd)`` when it
    waits (registered), or NotImplemented to fall back to asyncio's method."""

def sock_recv_into(lp: asyncio.AbstractEventLoop, sock: socket.socket, buf: Any) -> Any:
    """``lp.sock_recv_into(sock, buf)`` up to the wait: a count, ``(future, handle, fd)``,
    or NotImplemented."""

def sock_sendall(lp: asyncio.AbstractEventLoop, sock: socket.socket, data: Any) -> Any:
    """``lp.sock_sendall(sock, data)`` up to the wait: None when all was sent,
    ``(future, handle, fd)``, or NotImplemented."""

@final
class SockWaiter:
    """The reader/writer callback of a ``sock_*`` call waiting for readiness."""

    def __call__(self, *args: Any, **kwargs: Any) -> None: ...
    @property
    def __qualname__(self) -> str: ...  # type: ignore[override]
    @property
    def __name__(self) -> str: ...
    @property
    def future(self) -> asyncio.Future[Any] | None: ...

@final
class Acceptor:
    """Stands in for a listening ``socket.socket`` in asyncio's accept loop (src/accept.rs)."""

    def accept(self) -> tuple[socket.socket, Any]: ...
    def accept_nonblocking(self) -> tuple[socket.socket, Any, bool]: ...
    def accept_batch(
        self, lp: Any, protocol_factory: Any, server: Any, limit: int
    ) -> tuple[int, BaseException | None]:
        """Up to ``limit`` iterations of ``Loop._accept_plain``'s loop for plain connections
        set up by ``accept_now``: ``(connections made, the exception of the next accept)``."""
    def fileno(self) -> int: ...
    @property
    def sock(self) -> socket.socket: ...

def acceptor(sock: socket.socket) -> Acceptor | socket.socket:
    """What asyncio's accept loop calls ``accept()`` on for ``sock``: an ``Acceptor`` for a
    plain ``socket.socket``, else ``sock`` itself."""

def tls_buffer_updated(proto: asyncio.BaseProtocol, nbytes: int) -> bool:
    """``sslproto.SSLProtocol.buffer_updated(nbytes)`` in the WRAPPED state with a non-buffered
    app protocol, in Rust (src/tls/); False, having done nothing, in any other case."""

def tls_write_appdata(proto: asyncio.BaseProtocol, list_of_data: list[bytes]) -> bool:
    """``sslproto.SSLProtocol._write_appdata(list_of_data)`` in the WRAPPED state with an empty
    backlog, in Rust; False, having done nothing, in any other case."""

def tls_stats() -> tuple[int, int]:
    """(records fed, application writes) the native TLS path handled since the process
    started."""

def tls_install(cls: type, base: type) -> None:
    """Installs raw ``buffer_updated`` and ``_write_appdata`` methods on ``cls``
    (``oxloop._tls.SSLProtocol``, a subclass of asyncio's ``base``)."""

@final
class ClassGuard:
    """Whether every ``getattr(cls, name) is obj`` of its entries still holds, looking a method
    up again only when its class's version tag changed (src/guard.rs)."""

    def __new__(cls, entries: list[tuple[type, str, Any]]) -> ClassGuard: ...
    # Takes no arguments (a TypeError otherwise); PyO3's tp_call shows as (*args, **kwargs).
    def __call__(self, *args: Any, **kwargs: Any) -> bool: ...

def _set_verified_handle_cancel(guard: ClassGuard) -> None:
    """Whether ``events.Handle.cancel`` is still the function ``_transports.py`` verified: a
    transport's ``_remove_reader``/``_remove_writer`` cancels natively while it holds."""

def _set_verified_socket_init(init: ClassGuard, accept: ClassGuard, base: type) -> None:
    """The guards under which an accepted socket is made without socket.py's ``__init__``
    frame and a non-blocking IPv4 listener accepts in Rust (``base``: ``_socket.socket``)."""

def _set_sockname_guard(guard: ClassGuard) -> None:
    """Whether ``socket.socket.getsockname`` is still ``_socket.socket``'s (for ``sockname``)."""

def _set_setsockopt_guard(guard: ClassGuard) -> None:
    """Whether ``socket.socket.setsockopt`` is still ``_socket.socket``'s (for ``set_nodelay``)."""

def sockname(sock: socket.socket) -> Any:
    """``sock.getsockname()``; read in Rust for an exact AF_INET ``socket.socket`` whose
    ``getsockname`` is ``_socket``'s."""

def set_nodelay(sock: socket.socket) -> bool:
    """asyncio's ``_set_nodelay(sock)`` in one call for an exact ``socket.socket`` whose
    ``setsockopt`` is ``_socket``'s; False when it did nothing (the caller runs the Python)."""

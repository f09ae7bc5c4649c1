"""The oxloop event loop class: a Rust core under asyncio's own cold paths.

``Loop`` inherits from ``_oxloop.LoopCore`` (Rust: scheduling, timers, the poller, fd watching,
the run loop) and from asyncio's Unix selector loop class (``unix_events._UnixSelectorEventLoop``,
which is ``asyncio.SelectorEventLoop``), whose Python methods supply the parts that run once per
task, per call or per connection and must behave exactly as the running version's asyncio does:
task factories and ``create_task``, exception handlers, executors, async generator hooks,
``run_until_complete``, debug checks, and the network layer (create_connection, create_server,
the sock_* API, TLS through sslproto, Unix sockets, pipes) over the core's ``_add_reader`` family.
Every method of the core overrides its Python namesake (the MRO puts ``LoopCore`` first), so
``BaseEventLoop``'s ``_ready`` and ``_scheduled`` containers exist but stay empty.

Invariants: the selector loop's ``__init__`` and ``close`` never run (they would build a
selector and a self-pipe the core does not use); ``_selector`` is a read-only view of the core's
fd table, for the transports' reprs and code that inspects registrations.

This module adds what lives in neither: ``run_forever`` around the Rust run loop, ``close``,
signal handling as ``unix_events`` does it, and the debug-mode and error-reporting paths the
core calls back into.
"""

from __future__ import annotations

import _socket
import concurrent.futures
import errno
import gc
import os
import selectors
import socket
import sys
import threading
import warnings
import weakref
from asyncio import (
    base_events,
    constants,
    events,
    format_helpers,
    futures,
    selector_events,
    trsock,
    unix_events,
)
from asyncio.log import logger
from collections.abc import Callable, Iterator, Mapping
from contextvars import copy_context

from . import _contract, _oxloop, _pipes, _signals, _subprocess, _transports
from ._oxloop import Acceptor as _Acceptor
from ._oxloop import _fileno
from ._oxloop import acceptor as _acceptor
from ._oxloop import sock_recv as _sock_recv
from ._oxloop import sock_recv_into as _sock_recv_into
from ._oxloop import sock_sendall as _sock_sendall
from ._transports import _SocketTransport

# The contract's `sock_methods` entry (_contract.py): without it the sock_* methods and
# `_ensure_fd_no_transport` below run asyncio's own code, decided here once.
_SOCK_FAST = _contract.holds("sock_methods")
if not _SOCK_FAST:

    def _sock_recv(*_args: Any) -> Any:
        return NotImplemented

    _sock_recv_into = _sock_sendall = _sock_recv

# What a loop does not need to run (slow-callback reports, metrics snapshots, the monitor,
# virtual time, ipaddress) is imported on first use, so `import oxloop` costs no more than
# `import uvloop` (benches/import_time.py; tests/test_import.py checks the module list).
# Not `from typing import TYPE_CHECKING`: asyncio does not load typing on 3.14+, and `import
# oxloop` must not pay for it. Type checkers treat this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from . import _insight
    from ._metrics import LoopMetrics
    from .testing import VirtualClock

__all__ = ["Loop", "new_event_loop"]

_PY313 = sys.version_info >= (3, 13)

# 3.14+ (gh-128340): call_soon_threadsafe returns this Handle subclass, whose RLock makes a
# cancel() from another thread wait for a callback that has started. The core builds it too
# (src/handles.rs); None where asyncio has no such class.
_ThreadSafeHandle: type[events.Handle] | None = getattr(events, "_ThreadSafeHandle", None)


# What selector_events.py _accept_connection reports when accept() runs out of a resource.
_ACCEPT_RESOURCE_MESSAGE = "socket.accept() out of system resource"
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


# socket.socket.accept as socket.py defines it: the Acceptor (src/accept.rs) stands in for it,
# so a patched one (a mock, an instrumenting wrapper) is called instead.
_SOCKET_ACCEPT = socket.socket.accept
# socket.py's `socket.__init__` (the same on 3.10-3.15), which the Acceptor runs without its
# frame for each accepted connection (src/accept.rs `new_socket`) while the class holds it; and
# `socket.socket._accept`, `_socket.socket`'s, which it runs in Rust for an IPv4 listener.
_SOCKET_INIT_SOURCE = """
class socket(_socket.socket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        # For user code address family and type values are IntEnum members, but
        # for the underlying _socket.socket they're just integers. The
        # constructor of _socket.socket converts the given argument to an
        # integer automatically.
        if fileno is None:
            if family == -1:
                family = AF_INET
            if type == -1:
                type = SOCK_STREAM
            if proto == -1:
                proto = 0
        _socket.socket.__init__(self, family, type, proto, fileno)
        self._io_refs = 0
        self._closed = False
"""
if (
    _transports._same_code(socket.socket.__init__, _SOCKET_INIT_SOURCE, "socket", "__init__")
    and socket.socket.__bases__ == (_socket.socket,)
    and socket.socket.__slots__ == ["__weakref__", "_io_refs", "_closed"]
):
    _oxloop._set_verified_socket_init(
        _oxloop.ClassGuard([(socket.socket, "__init__", socket.socket.__init__)]),
        _oxloop.ClassGuard([(socket.socket, "_accept", _socket.socket._accept)]),
        _socket.socket,
    )


class _AcceptPaused(Exception):
    """Ends asyncio's accept loop at its first out-of-resource report (Loop._accept_connection)."""


# -- accepting without a Task ----------------------------------------------------------------
# selector_events.py `_accept_connection` runs `_accept_connection2` as a Task per connection:
# protocol_factory(), the transport, then `await waiter` until connection_made has been
# scheduled; errors are reported only in debug mode. Outside debug mode, for a plain
# connection (no TLS) with no task factory set, the Task does nothing else anyone can see but
# its own existence, and costs 18,600 instructions per connection (of 102,000 on 3.11,
# benches/net_callgrind.sh churn-protocol). There `Loop._accept_connection` runs asyncio's
# accept loop with `self` an `_AcceptingLoop`, whose `_accept_connection2` does that work at
# once, in a copy of the context as the Task would (`_accept_now`), and whose `create_task`
# then has nothing to run. The difference: no Task exists during the accept
# (`current_task()` in protocol_factory is None, `all_tasks()` lacks it), as on uvloop
# (docs/compatibility.md). TLS, debug mode, a task factory, a Loop subclass's own
# `_accept_connection2`, or a running asyncio whose `_accept_connection2` is not the code
# below (3.15's connection contexts) keep asyncio's Task.
_ACCEPT2_SOURCE = """
class BaseSelectorEventLoop:
    async def _accept_connection2(
            self, protocol_factory, conn, extra,
            sslcontext=None, server=None,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if sslcontext:
                transport = self._make_ssl_transport(
                    conn, protocol, sslcontext, waiter=waiter,
                    server_side=True, extra=extra, server=server,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout)
            else:
                transport = self._make_socket_transport(
                    conn, protocol, waiter=waiter, extra=extra,
                    server=server)
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    'message':
                        'Error on transport creation for incoming connection',
                    'exception': exc,
                }
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.call_exception_handler(context)
"""
# 3.10's accept functions take no ssl_shutdown_timeout.
_NO_SHUTDOWN_TIMEOUT = (
    """ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):""",
    "ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT):",
)
_DROP_WAITER = (
    """                transport.close()
                raise""",
    """                transport.close()
                waiter = None
                raise""",
)
_ACCEPT2_SOURCES = (
    # 3.11, 3.12
    _ACCEPT2_SOURCE,
    # 3.10
    _transports._edited(
        _ACCEPT2_SOURCE,
        _NO_SHUTDOWN_TIMEOUT,
        (
            """ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout)""",
            "ssl_handshake_timeout=ssl_handshake_timeout)",
        ),
    ),
    # 3.13, 3.14: gh-109534 drops the waiter before re-raising
    _transports._edited(_ACCEPT2_SOURCE, _DROP_WAITER),
)
# 3.15: the connection's context (gh-139283: create_server's context=) is passed on.
_ACCEPT2_SOURCE_315 = _transports._edited(
    _ACCEPT2_SOURCE,
    _DROP_WAITER,
    (
        "ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):",
        "ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT, context=None):",
    ),
    (
        "ssl_shutdown_timeout=ssl_shutdown_timeout)",
        """ssl_shutdown_timeout=ssl_shutdown_timeout,
                    context=context)""",
    ),
    ("server=server)", "server=server, context=context)"),
)
_ASYNCIO_ACCEPT2 = selector_events.BaseSelectorEventLoop._accept_connection2  # type: ignore[attr-defined]
# Whether the running asyncio's _accept_connection2 is 3.15's (a connection has a context).
_ACCEPT_CONTEXT = _transports._same_code(
    _ASYNCIO_ACCEPT2, _ACCEPT2_SOURCE_315, "BaseSelectorEventLoop", "_accept_connection2"
)
_ACCEPT_NOW = _ACCEPT_CONTEXT or any(
    _transports._same_code(_ASYNCIO_ACCEPT2, source, "BaseSelectorEventLoop", "_accept_connection2")
    for source in _ACCEPT2_SOURCES
)


# -- accepting without asyncio's setblocking(False) ---------------------------------------------
# selector_events.py `_accept_connection` makes each accepted socket non-blocking with
# `conn.setblocking(False)`: an `ioctl(FIONBIO)` per connection (about 0.8 us of kernel time
# here, benches/net.py churn rows; strace -f of the churn server). accept4(2) can make the fd
# non-blocking itself (SOCK_NONBLOCK), and CPython's `init_sockobject` (Modules/socketmodule.c)
# then sets the socket's timeout to 0 with no syscall: the state `setblocking(False)` leaves.
# Where asyncio's `_accept_connection` is the code below (3.10-3.15), `Loop._accept_plain` runs
# its statements for a plain connection (no TLS), taking each connection from the Acceptor's
# `accept_nonblocking` (src/accept.rs), and calling `conn.setblocking(False)` only when that
# could not make it non-blocking, or when `socket.socket.setblocking` is not `_socket`'s (a
# patched one is called, as asyncio calls it).
_ACCEPT_SOURCE = """
import errno
from . import constants
from .log import logger
class BaseSelectorEventLoop:
    def _accept_connection(
            self, protocol_factory, sock,
            sslcontext=None, server=None, backlog=100,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # This method is only called once for each event loop tick where the
        # listening socket has triggered an EVENT_READ. There may be multiple
        # connections waiting for an .accept() so it is called in a loop.
        # See https://bugs.python.org/issue27906 for more details.
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r",
                                 server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                # Early exit because the socket accept buffer is empty.
                return None
            except OSError as exc:
                # There's nowhere to send the error, so just log it.
                if exc.errno in (errno.EMFILE, errno.ENFILE,
                                 errno.ENOBUFS, errno.ENOMEM):
                    # Some platforms (e.g. Linux keep reporting the FD as
                    # ready, so we remove the read handler temporarily.
                    # We'll try again in a while.
                    self.call_exception_handler({
                        'message': 'socket.accept() out of system resource',
                        'exception': exc,
                        'socket': trsock.TransportSocket(sock),
                    })
                    self._remove_reader(sock.fileno())
                    self.call_later(constants.ACCEPT_RETRY_DELAY,
                                    self._start_serving,
                                    protocol_factory, sock, sslcontext, server,
                                    backlog, ssl_handshake_timeout,
                                    ssl_shutdown_timeout)
                else:
                    raise  # The event loop will catch, log and ignore it.
            else:
                extra = {'peername': addr}
                accept = self._accept_connection2(
                    protocol_factory, conn, extra, sslcontext, server,
                    ssl_handshake_timeout, ssl_shutdown_timeout)
                self.create_task(accept)

"""
_ACCEPT_SOURCES = (
    # 3.11-3.13
    _ACCEPT_SOURCE,
    # 3.10
    _transports._edited(
        _ACCEPT_SOURCE,
        _NO_SHUTDOWN_TIMEOUT,
        (
            """backlog, ssl_handshake_timeout,
                                    ssl_shutdown_timeout)""",
            "backlog, ssl_handshake_timeout)",
        ),
        ("ssl_handshake_timeout, ssl_shutdown_timeout)", "ssl_handshake_timeout)"),
    ),
)
# 3.14's selector_events.py: one accept more than the backlog, and a connection aborted before
# accept() is skipped instead of ending the loop.
_ACCEPT_SOURCE_314 = _transports._edited(
    _ACCEPT_SOURCE,
    ("for _ in range(backlog):", "for _ in range(backlog + 1):"),
    (
        """            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                # Early exit because the socket accept buffer is empty.
                return None""",
        """            except ConnectionAbortedError:
                # Discard connections that were aborted before accept().
                continue
            except (BlockingIOError, InterruptedError):
                # Early exit because of a signal or
                # the socket accept buffer is empty.
                return""",
    ),
)
# 3.15's: the server's context, copied for each connection (see _ACCEPT2_SOURCE_315).
_ACCEPT_SOURCE_315 = _transports._edited(
    _ACCEPT_SOURCE_314,
    (
        "ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):",
        "ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT, context=None):",
    ),
    (
        """backlog, ssl_handshake_timeout,
                                    ssl_shutdown_timeout)""",
        """backlog, ssl_handshake_timeout,
                                    ssl_shutdown_timeout, context)""",
    ),
    (
        """                extra = {'peername': addr}
                accept = self._accept_connection2(
                    protocol_factory, conn, extra, sslcontext, server,
                    ssl_handshake_timeout, ssl_shutdown_timeout)
                self.create_task(accept)""",
        """                extra = {'peername': addr}
                conn_context = context.copy() if context is not None else None
                accept = self._accept_connection2(
                    protocol_factory, conn, extra, sslcontext, server,
                    ssl_handshake_timeout, ssl_shutdown_timeout, context=conn_context)
                self.create_task(accept, context=conn_context)""",
    ),
)
_ASYNCIO_ACCEPT = selector_events.BaseSelectorEventLoop._accept_connection  # type: ignore[attr-defined]
# Whether the running asyncio's accept loop is 3.15's, or 3.14's or 3.15's (`Loop._accept_plain`
# follows it: one accept more than the backlog, aborted connections skipped).
_ACCEPT_315 = _ACCEPT_CONTEXT and _transports._same_code(
    _ASYNCIO_ACCEPT, _ACCEPT_SOURCE_315, "BaseSelectorEventLoop", "_accept_connection"
)
_ACCEPT_314 = _ACCEPT_315 or _transports._same_code(
    _ASYNCIO_ACCEPT, _ACCEPT_SOURCE_314, "BaseSelectorEventLoop", "_accept_connection"
)
_ACCEPT_PLAIN = _ACCEPT_314 or any(
    _transports._same_code(_ASYNCIO_ACCEPT, source, "BaseSelectorEventLoop", "_accept_connection")
    for source in _ACCEPT_SOURCES
)
# Whether `socket.socket.setblocking` is still `_socket.socket`'s (src/guard.rs).
_SETBLOCKING_GUARD = _oxloop.ClassGuard(
    [(socket.socket, "setblocking", _socket.socket.setblocking)]
)


def _accept_now(
    loop: Any, protocol_factory: Any, conn: Any, extra: Any, server: Any, context: Any = None
) -> None:
    """`_accept_connection2` for a plain connection outside debug mode, without its Task.

    Its waiter only tells the Task that connection_made has been scheduled; with no Task it
    is not made (the transport's ``waiter=None``). ``context``: 3.15's, the connection's."""
    try:
        protocol = protocol_factory()
        if _ACCEPT_CONTEXT:
            loop._make_socket_transport(conn, protocol, extra=extra, server=server, context=context)
        else:
            loop._make_socket_transport(conn, protocol, extra=extra, server=server)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        # asyncio reports the error in debug mode only, which keeps its Task.
        pass


class _AcceptingLoop:
    """``self`` of asyncio's accept loop on a Loop: the loop's, but for ``_accept_connection2``
    (done at once for a plain connection) and ``create_task`` (nothing to run then)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    @property
    def _debug(self) -> Any:
        return self._loop._debug

    def _accept_connection2(
        self,
        protocol_factory: Any,
        conn: Any,
        extra: Any,
        sslcontext: Any = None,
        server: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        loop = self._loop
        if sslcontext or loop._debug or loop._task_factory is not None:
            return loop._accept_connection2(
                protocol_factory, conn, extra, sslcontext, server, *args, **kwargs
            )
        # The Task would run in the connection's context (3.15), else in a copy of this one
        # (tasks.py: Task.__init__).
        context = kwargs.get("context")
        ctx = context if context is not None else copy_context()
        ctx.run(_accept_connection_now, loop, protocol_factory, conn, extra, server, context)
        return None

    def create_task(self, coro: Any, **kwargs: Any) -> Any:
        if coro is None:
            return None
        return self._loop.create_task(coro, **kwargs)


if _PY313:

    def _format_callback_source(loop: Loop, callback: Any, args: Any) -> str:
        return format_helpers._format_callback_source(callback, args, debug=loop.get_debug())
else:

    def _format_callback_source(loop: Loop, callback: Any, args: Any) -> str:
        return format_helpers._format_callback_source(callback, args)


def _as_handle(loop: Loop, entry: Any) -> Any:
    """The Handle asyncio would have run for a queue entry: a C Task's step or wakeup is
    queued without one (src/loop_core/mod.rs, `schedule_soon`), and a report names it as that
    Handle (a slow one's report gets it whole from the core; the watchdog's sample of a running
    wakeup shows it without its future)."""
    if entry is None or isinstance(entry, events.Handle):
        return entry
    return events.Handle(entry, (), loop, None)


# Loops whose queued handles the GC hook below must expose.
_live_loops: weakref.WeakSet[Loop] = weakref.WeakSet()


def _on_gc(phase: str, info: dict[str, int]) -> None:
    # The core hides queued handles from the cyclic GC (src/handles.rs). Before each full
    # collection, the ones that someone besides the loop holds are tracked again, so a garbage
    # cycle through such a handle is collected as asyncio's would be.
    if phase == "start" and info.get("generation") == 2:
        for loop in list(_live_loops):
            if not loop.is_closed():
                loop._gc_track_shared()


gc.callbacks.append(_on_gc)


def _monitor_autostart(loop: Loop) -> None:
    """Start the monitor when ``OXLOOP_MONITOR`` asks for it (oxloop.monitor._autostart);
    only then is oxloop.monitor imported."""
    if os.environ.get("OXLOOP_MONITOR", "") in ("", "0"):
        return
    from .monitor import _autostart

    _autostart(loop)


def _is_numeric_host(host: Any) -> bool:
    """None or an IP literal (IPv6 with an optional %scope): getaddrinfo answers it without a
    name lookup."""
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    import ipaddress  # on first use: a name lookup is a per-connection cost already

    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _is_numeric_port(port: Any) -> bool:
    if port is None or (isinstance(port, int) and not isinstance(port, bool)):
        return True
    return isinstance(port, (str, bytes)) and port.isdigit()


_NUMERIC_NAMEINFO = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


class _FdMap(Mapping[int, selectors.SelectorKey]):
    """``selector.get_map()`` of the view below: fd -> SelectorKey."""

    def __init__(self, view: _SelectorView) -> None:
        self._view = view

    def __len__(self) -> int:
        return len(self._view._core._fd_list())

    def __iter__(self) -> Iterator[int]:
        return iter(self._view._core._fd_list())

    def __getitem__(self, fd: int) -> selectors.SelectorKey:
        key = self._view._key(fd)
        if key is None:
            raise KeyError(fd)
        return key


class _SelectorView:
    """Read-only stand-in for the selector of asyncio's selector loop.

    asyncio's transports read ``loop._selector`` for their repr ("polling" or "idle"), and
    tests and tools look registrations up with ``get_key`` / ``get_map``. The core owns the
    real poller (epoll), so this answers from its fd table; data is ``(reader, writer)``
    handles, as the selector loop stores them. Registering through it is refused: use
    ``add_reader`` / ``add_writer``.
    """

    def __init__(self, core: Loop) -> None:
        self._core = core

    def _key(self, fileobj: Any) -> selectors.SelectorKey | None:
        # The core looks the object up as selectors' _fileobj_lookup does: by its fileno(),
        # else (a closed socket) among the objects registrations were made with.
        found = self._core._fd_key(fileobj)
        if found is None:
            return None
        fd, events_, reader, writer, key_fileobj = found
        # The key holds the object it was registered with, as selectors' does.
        return selectors.SelectorKey(
            fd if key_fileobj is None else key_fileobj, fd, events_, (reader, writer)
        )

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._key(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self) -> Mapping[int, selectors.SelectorKey]:
        return _FdMap(self)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "oxloop's poller is not a selectors.BaseSelector: "
            "use loop.add_reader() / loop.add_writer() to watch fds"
        )

    register = modify = unregister = select = _refuse

    def close(self) -> None:
        pass


class Loop(_signals.SignalHandlers, _oxloop.LoopCore, unix_events._UnixSelectorEventLoop):
    """An asyncio event loop whose core is written in Rust."""

    def __init__(self, *, clock: VirtualClock | None = None) -> None:
        # `clock` was already read by LoopCore.__new__, which built the core's clock from it.
        # BaseSelectorEventLoop.__init__ would make a selector and a self-pipe; the core has
        # its own poller and waker, so only the state its Python methods use is set up here
        # (selector_events.py and unix_events.py __init__ of 3.10-3.13).
        base_events.BaseEventLoop.__init__(self)
        self._selector: _SelectorView | None = _SelectorView(self)
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._signal_handlers: dict[int, events.Handle] = {}
        self._unix_server_sockets: dict[Any, Any] = {}
        # The selector loop counts its self-pipe here; the core's counterpart is its waker.
        # There is no self-pipe socket pair (the core wakes through an eventfd).
        self._internal_fds = 1
        self._ssock = self._csock = None
        self._slow_reporter: _insight.Reporter | None = None
        self._clock: VirtualClock | None = None
        if clock is not None:
            try:
                if not self._is_virtual():
                    raise TypeError("pass clock= to the constructor call that makes the loop")
                clock._bind(self)
            except BaseException:
                # The caller never gets this loop: closed here, it does not warn "unclosed
                # event loop" when collected (base_events.py __del__).
                self.close()
                raise
            self._clock = clock
        _live_loops.add(self)
        if os.environ.get("OXLOOP_SLOW_CALLBACKS", "") not in ("", "0"):
            self.enable_slow_callback_reports()

    @property
    def clock(self) -> VirtualClock | None:
        """The loop's ``oxloop.testing.VirtualClock``, or None on real time."""
        return self._clock

    # -- virtual time: what the core does not see ------------------------------------------

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:
        """As asyncio; on virtual time the work counts as pending until the thread finishes,
        so autojump never jumps over it."""
        if self._clock is None:
            return super().run_in_executor(executor, func, *args)
        # BaseEventLoop.run_in_executor of 3.10-3.13, keeping hold of the executor's future.
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        cfut = executor.submit(func, *args)
        self._virtual_thread(1)
        # Runs in the worker thread when the work ends (or at once if it already has, or when
        # it is cancelled before it starts): the count drops and the loop re-decides.
        cfut.add_done_callback(self._virtual_thread_done)
        return futures.wrap_future(cfut, loop=self)

    def _virtual_thread_done(self, _fut: Any) -> None:
        self._virtual_thread(-1)

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """As asyncio; on virtual time the joining thread counts as pending work (its timeout,
        3.12+, would otherwise be jumped over at once)."""
        if self._clock is None:
            return await super().shutdown_default_executor(*args, **kwargs)
        self._virtual_thread(1)
        try:
            return await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._virtual_thread(-1)

    def _virtual_advanced(self) -> None:
        if self._clock is not None:
            self._clock._advanced(self)

    def _virtual_end_reached(self) -> None:
        if self._clock is not None:
            self._clock._end_reached(self)

    def _virtual_deadlock(self) -> None:
        # A signal handler can still wake the loop: then the core waits for it.
        if self._clock is not None and not self._signal_handlers:
            self._clock._deadlock(self)

    # -- running ---------------------------------------------------------------------------

    if hasattr(base_events.BaseEventLoop, "_run_forever_setup"):
        # 3.13+: asyncio exposes the setup and cleanup steps; use them as they are.
        if sys.version_info < (3, 13, 3):

            def run_forever(self) -> None:
                """Run until stop() is called."""
                # 3.13.0-3.13.2 set up inside the try: a refused start (closed, or another
                # loop running in this thread) still runs the cleanup, which unsets the
                # running loop of the caller (gh-130145, fixed in 3.13.3).
                try:
                    self._run_forever_setup()
                    _monitor_autostart(self)
                    self._run()
                finally:
                    self._run_forever_cleanup()

        else:

            def run_forever(self) -> None:
                """Run until stop() is called."""
                # Set up before the try (gh-130145): a refused start runs no cleanup.
                self._run_forever_setup()
                try:
                    _monitor_autostart(self)
                    self._run()
                finally:
                    self._run_forever_cleanup()

    else:

        def run_forever(self) -> None:
            """Run until stop() is called."""
            # The steps of BaseEventLoop.run_forever on 3.10-3.12, around the Rust run loop.
            self._check_closed()
            self._check_running()
            self._set_coroutine_origin_tracking(self._debug)
            self._thread_id = threading.get_ident()
            old_agen_hooks = sys.get_asyncgen_hooks()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            try:
                events._set_running_loop(self)
                _monitor_autostart(self)
                self._run()
            finally:
                self._stopping = False
                self._thread_id = None
                events._set_running_loop(None)
                self._set_coroutine_origin_tracking(False)
                sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        """Close the loop: remove its signal handlers, shut the default executor down
        without waiting, and release the poller. The loop must not be running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            # As unix_events: the signal module may be half torn down at this point.
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown "
                f"stage, skipping signal handlers removal",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
            self._signal_handlers.clear()
        # Children still running go to a reaper thread while their pidfds can be unregistered.
        _subprocess.loop_closing(self)
        base_events.BaseEventLoop.close(self)
        self._close_core()
        self._internal_fds = 0
        # As BaseSelectorEventLoop.close: transports' reprs say "open" once the loop is gone.
        self._selector = None

    # -- pipes and subprocesses --------------------------------------------------------------

    def _make_read_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> Any:
        """asyncio's read pipe transport with 64 KiB reads: see _pipes.py."""
        return _pipes._UnixReadPipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        extra: Any = None,
        **kwargs: Any,
    ) -> Any:
        """asyncio's subprocess transport with oxloop's child-exit watching (a pidfd in the
        poller; no child watcher, no SIGCHLD handler): see _subprocess.py."""
        return await _subprocess.make_subprocess_transport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs
        )

    # -- name resolution ---------------------------------------------------------------------

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        """asyncio's getaddrinfo; an IP literal (or None) with a numeric port is answered at
        once, without the executor round trip: no name lookup can block there."""
        if not self._debug and _is_numeric_host(host) and _is_numeric_port(port):
            return socket.getaddrinfo(host, port, family, type, proto, flags)
        return await super().getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        """asyncio's getnameinfo; numeric-only requests are answered without the executor."""
        if isinstance(flags, int) and flags & _NUMERIC_NAMEINFO == _NUMERIC_NAMEINFO:
            return socket.getnameinfo(sockaddr, flags)
        return await super().getnameinfo(sockaddr, flags)

    # -- insight ---------------------------------------------------------------------------

    def metrics(self) -> LoopMetrics:
        """An immutable snapshot of the loop's counters, as of its last poll (safe from any
        thread). ``later - earlier`` gives the interval between two snapshots."""
        from ._metrics import LoopMetrics

        return LoopMetrics._from_raw(self._metrics_raw())

    def enable_slow_callback_reports(
        self,
        hook: Callable[[_insight.SlowCallbackReport], object] | None = None,
        *,
        min_interval: float = 1.0,
    ) -> None:
        """Report every callback that runs longer than ``slow_callback_duration``, with the
        line that blocked, without debug mode: a watchdog thread samples the loop thread's
        stack during the stall. Each report goes to the ``asyncio`` logger (a warning) and to
        ``hook(report)`` on the loop thread; at most one per ``min_interval`` seconds."""
        if hook is not None and not callable(hook):
            raise TypeError(f"hook must be callable or None, not {type(hook).__name__}")
        min_interval = float(min_interval)
        if not min_interval >= 0.0:
            raise ValueError(f"min_interval must be >= 0, not {min_interval!r}")
        # Imported here, on the loop's side, before the watchdog thread can need it.
        from . import _insight

        self._slow_reporter = _insight.Reporter(hook, min_interval)
        self._start_watchdog()

    def disable_slow_callback_reports(self) -> None:
        """Stop reporting slow callbacks and join the watchdog thread."""
        self._slow_reporter = None
        self._stop_watchdog()

    def _watchdog_sample(self, handle: events.Handle) -> Any:
        # Watchdog thread, loop thread paused inside `handle`. enable_slow_callback_reports
        # imported _insight before starting the watchdog: this import only reads sys.modules.
        from . import _insight

        return _insight.sample(self, _as_handle(self, handle))

    def _watchdog_report(self, sample: Any, duration: float, unsampled: bool, seq: int) -> None:
        # Watchdog thread: the stall is over; report from the loop thread.
        if self._slow_reporter is None or self.is_closed():
            return
        try:
            self.call_soon_threadsafe(self._deliver_slow_report, sample, duration, unsampled, seq)
        except RuntimeError:
            pass  # closed meanwhile

    def _deliver_slow_report(self, sample: Any, duration: float, unsampled: bool, seq: int) -> None:
        reporter = self._slow_reporter
        handle = _as_handle(self, self._take_slow_handle(seq))
        if reporter is not None:
            from . import _insight

            report = _insight.build_report(sample, duration, unsampled, handle)
            reporter.deliver(self, report)

    # -- transports ---------------------------------------------------------------------------

    if _transports.MAKE_TRANSPORT_CONTEXT:

        def _make_socket_transport(
            self,
            sock: Any,
            protocol: Any,
            waiter: Any = None,
            *,
            extra: Any = None,
            server: Any = None,
            context: Any = None,
        ) -> Any:
            """asyncio's stream socket transport with its read and write paths in Rust; its
            callbacks run in ``context`` (3.15: the connection's, see base_events.py
            ``_create_connection_transport`` and selector_events.py ``_accept_connection``)."""
            self._ensure_fd_no_transport(sock)
            if _transports.TRANSPORT_CONTEXT:
                return _SocketTransport(self, sock, protocol, waiter, extra, server, context)
            return _SocketTransport(self, sock, protocol, waiter, extra, server)
    else:

        def _make_socket_transport(
            self,
            sock: Any,
            protocol: Any,
            waiter: Any = None,
            *,
            extra: Any = None,
            server: Any = None,
        ) -> Any:
            """asyncio's stream socket transport with its read and write paths in Rust."""
            if sys.version_info >= (3, 12):
                # 3.12+ refuse a socket another transport already uses (selector_events.py).
                self._ensure_fd_no_transport(sock)
            return _SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, *args: Any, **kwargs: Any) -> Any:
        """asyncio's TLS transport with the per-record work in Rust (see ``_tls``); 3.10 and
        ``OXLOOP_NATIVE_TLS=0`` keep asyncio's."""
        from . import _tls

        if _tls.NATIVE:
            return _tls.make_ssl_transport(self, *args, **kwargs)
        return super()._make_ssl_transport(*args, **kwargs)

    # -- accepting at the descriptor limit -----------------------------------------------------
    # selector_events.py _accept_connection, when accept() fails with EMFILE, ENFILE, ENOBUFS or
    # ENOMEM, reports it, removes the listener's reader and schedules _start_serving in
    # constants.ACCEPT_RETRY_DELAY (1 s) -- then goes on looping: up to `backlog` more failing
    # accept() calls per event, each reported and each scheduling one more _start_serving.
    # Those timers fire one after another (each report took a while), and every one re-adds
    # the reader, which the still-queued clients make ready at once: one event gives ~100
    # timers, each of which gives ~100 more. The attempts grow every second (10,500 reports
    # in 8 s here; the server's CPU climbs past 5 % and on), on stock asyncio as on the core.
    # Here the running asyncio's loop runs unchanged up to its first report; that report then
    # ends it, and one timer retries: one accept() and one report per ACCEPT_RETRY_DELAY while
    # the limit lasts, no wake-up in between, and every queued client is accepted once
    # descriptors are free (uvloop accepts and closes them instead).
    # asyncio's loop calls accept() on an `_oxloop.Acceptor` standing for a plain listener
    # (src/accept.rs): socket.accept without its enum conversions, and on TCP without the
    # accept(2) that fails with EAGAIN at the end of every event. The EMFILE report's
    # TransportSocket is given the listener back below.

    _accepting: Any = None  # the listening socket whose accept loop runs now

    def _accept_connection(
        self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any
    ) -> None:
        outer = self._accepting
        self._accepting = sock
        try:
            listener = _acceptor(sock) if socket.socket.accept is _SOCKET_ACCEPT else sock
            accept = super()._accept_connection
            if _ACCEPT_NOW and type(self)._accept_connection2 is _ASYNCIO_ACCEPT2:
                if (
                    _ACCEPT_PLAIN
                    and not kwargs
                    and len(args) >= 3
                    and args[0] is None  # sslcontext
                    and type(listener) is _Acceptor
                    and accept.__func__ is _ASYNCIO_ACCEPT
                ):
                    # asyncio's loop without its setblocking syscall (above).
                    self._accept_plain(protocol_factory, sock, listener, args)
                    return
                # asyncio's loop, with plain connections set up without a Task (above).
                accept.__func__(_AcceptingLoop(self), protocol_factory, listener, *args, **kwargs)
            else:
                accept(protocol_factory, listener, *args, **kwargs)
        except _AcceptPaused:
            # asyncio's branch has reported the error; do the rest of it once.
            self._remove_reader(sock.fileno())
            self.call_later(
                constants.ACCEPT_RETRY_DELAY,
                self._resume_accepting,
                protocol_factory,
                sock,
                args,
                kwargs,
            )
        finally:
            self._accepting = outer

    def _accept_plain(
        self, protocol_factory: Any, sock: Any, listener: Any, args: tuple[Any, ...]
    ) -> None:
        """selector_events.py ``_accept_connection`` (the verified code, ``_ACCEPT_SOURCES``)
        with ``sslcontext`` None, run by ``_accept_connection`` above: the same statements,
        each connection set up as ``_AcceptingLoop._accept_connection2`` does, and
        ``conn.setblocking(False)`` left out where the Acceptor made ``conn`` non-blocking
        (see "accepting without asyncio's setblocking(False)")."""
        server = args[1]
        take = listener.accept_nonblocking if _SETBLOCKING_GUARD() else None
        # The iterations whose connection is set up as the `else` branch below does, in one
        # native call (`Acceptor.accept_batch`, src/accept.rs), where that branch calls the
        # native `accept_now`: `(n, error)`, n connections made, then the exception of the
        # next iteration's accept or setblocking (spent, handled here), or None (the count
        # spent, or the loop now in debug mode or with a task factory: this loop goes on).
        batch = (
            listener.accept_batch
            if take is not None and _accept_connection_now is _oxloop.accept_now
            else None
        )
        # backlog; 3.14's loop accepts one more (_ACCEPT_SOURCE_314).
        remaining = args[2] + 1 if _ACCEPT_314 else args[2]
        while remaining > 0:
            try:
                if batch is not None and not self._debug and self._task_factory is None:
                    done, error = batch(self, protocol_factory, server, remaining)
                    remaining -= done
                    if error is not None:
                        remaining -= 1
                        try:
                            raise error
                        finally:
                            # No local keeps the exception: its traceback holds this frame.
                            error = None
                    if done:
                        continue
                remaining -= 1
                if take is not None:
                    conn, addr, nonblocking = take()
                else:
                    conn, addr = listener.accept()
                    nonblocking = False
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                if not nonblocking:
                    conn.setblocking(False)
            except ConnectionAbortedError:
                if _ACCEPT_314:
                    # Discard connections that were aborted before accept().
                    continue
                # Early exit because the socket accept buffer is empty.
                return None
            except (BlockingIOError, InterruptedError):
                # Early exit because of a signal or the socket accept buffer is empty.
                return None
            except OSError as exc:
                # There's nowhere to send the error, so just log it.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Some platforms (e.g. Linux keep reporting the FD as
                    # ready, so we remove the read handler temporarily.
                    # We'll try again in a while.
                    self.call_exception_handler(
                        {
                            "message": _ACCEPT_RESOURCE_MESSAGE,
                            "exception": exc,
                            "socket": trsock.TransportSocket(sock),
                        }
                    )
                    self._remove_reader(sock.fileno())
                    self.call_later(
                        constants.ACCEPT_RETRY_DELAY,
                        self._start_serving,
                        protocol_factory,
                        sock,
                        *args,
                    )
                else:
                    raise  # The event loop will catch, log and ignore it.
            else:
                extra = {"peername": addr}
                if _ACCEPT_CONTEXT:
                    # 3.15: the server's context (args[5]), copied for the connection.
                    context = args[5] if len(args) > 5 else None
                    conn_context = context.copy() if context is not None else None
                    timeouts = args[3:5]
                else:
                    conn_context = None
                    timeouts = args[3:]
                if self._debug or self._task_factory is not None:
                    # _AcceptingLoop._accept_connection2: these keep asyncio's Task.
                    accept = self._accept_connection2(
                        protocol_factory,
                        conn,
                        extra,
                        args[0],
                        server,
                        *timeouts,
                        **({"context": conn_context} if _ACCEPT_CONTEXT else {}),
                    )
                    if _ACCEPT_CONTEXT:
                        self.create_task(accept, context=conn_context)
                    else:
                        self.create_task(accept)
                else:
                    # The Task would run in the connection's context (3.15), else in a copy
                    # of this one (tasks.py: Task.__init__).
                    ctx = conn_context if conn_context is not None else copy_context()
                    ctx.run(
                        _accept_connection_now,
                        self,
                        protocol_factory,
                        conn,
                        extra,
                        server,
                        conn_context,
                    )
        return None

    def _resume_accepting(
        self, protocol_factory: Any, sock: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        # Server.close() (base_events.py _stop_serving) closed the socket meanwhile: nothing
        # to resume (asyncio's timer would call _add_reader(-1) and report its ValueError).
        if sock.fileno() == -1:
            return
        self._start_serving(protocol_factory, sock, *args, **kwargs)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        accepting = self._accepting
        if accepting is not None and context.get("message") == _ACCEPT_RESOURCE_MESSAGE:
            # The report names the socket asyncio's loop was given: the listener, not the
            # acceptor that stood in for it.
            wrapped = context.get("socket")
            if type(getattr(wrapped, "_sock", None)) is _Acceptor:
                context["socket"] = trsock.TransportSocket(accepting)
        super().call_exception_handler(context)
        # Only asyncio's accept loop, running under _accept_connection above, is cut short.
        if self._accepting is not None and context.get("message") == _ACCEPT_RESOURCE_MESSAGE:
            exc = context.get("exception")
            if getattr(exc, "errno", None) in _ACCEPT_RESOURCE_ERRNOS:
                self._accepting = None
                raise _AcceptPaused

    # -- the sock_* API -----------------------------------------------------------------------
    # asyncio's sock_recv / sock_recv_into / sock_sendall (selector_events.py, the same code on
    # 3.10-3.13) with everything up to the wait in one native call (src/sock.rs): the first
    # attempt (None, not a BlockingIOError, when it would block; a receive through the shared
    # buffer instead of a fresh n-byte object) and, when it must wait, create_future,
    # _ensure_fd_no_transport and the registration, answered as (future, handle, fd). The
    # callback registered is a native SockWaiter that resolves the future and drops its
    # registration itself (asyncio's _sock_read_done), so no functools.partial or done callback
    # is made; the except clause stands in for that done callback on cancellation. Debug mode,
    # a Loop subclass and anything unusual get NotImplemented (before any syscall) and run
    # asyncio's own method.

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receive up to ``n`` bytes from the non-blocking socket ``sock``."""
        data = _sock_recv(self, sock, n)
        if type(data) is tuple:  # waiting: the reader is registered
            fut, handle, fd = data
            try:
                return await fut  # type: ignore[no-any-return]
            except BaseException:
                if not handle.cancelled():  # not replaced, not removed by the waiter
                    self.remove_reader(fd)
                raise
        if data is NotImplemented:
            return await super().sock_recv(sock, n)  # type: ignore[no-any-return]
        return data  # type: ignore[no-any-return]

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        """Receive into the writable buffer ``buf``; returns the number of bytes received."""
        nbytes = _sock_recv_into(self, sock, buf)
        if type(nbytes) is tuple:
            fut, handle, fd = nbytes
            try:
                return await fut  # type: ignore[no-any-return]
            except BaseException:
                if not handle.cancelled():
                    self.remove_reader(fd)
                raise
        if nbytes is NotImplemented:
            return await super().sock_recv_into(sock, buf)  # type: ignore[no-any-return]
        return nbytes  # type: ignore[no-any-return]

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        """Send all of ``data`` on the connected non-blocking socket ``sock``."""
        sent = _sock_sendall(self, sock, data)
        if sent is None:
            return  # all sent
        if type(sent) is tuple:  # the rest waits for the writer
            fut, handle, fd = sent
            try:
                return await fut  # type: ignore[no-any-return]
            except BaseException:
                if not handle.cancelled():
                    self.remove_writer(fd)
                raise
        return await super().sock_sendall(sock, data)  # type: ignore[no-any-return]

    def _ensure_fd_no_transport(self, fd: Any) -> None:
        """selector_events' check that no open transport uses ``fd``, without the KeyError
        its WeakValueDictionary lookup raises and catches for every fd no transport owns."""
        transports = self._transports
        if not _SOCK_FAST or type(transports) is not weakref.WeakValueDictionary:
            return super()._ensure_fd_no_transport(fd)  # type: ignore[no-any-return]
        fileno = fd if isinstance(fd, int) else _fileno(fd)
        ref = transports.data.get(fileno)
        transport = None if ref is None else ref()
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # -- paths the Rust core calls back into --------------------------------------------------

    def _report_callback_error(self, handle: events.Handle, exc: BaseException) -> None:
        """What Handle._run does when its callback raises (the core ran the callback)."""
        cb = _format_callback_source(self, handle._callback, handle._args)
        context = {
            "message": f"Exception in callback {cb}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _call_soon_debug(
        self, callback: Any, args: tuple[Any, ...], context: Any, method: str
    ) -> events.Handle:
        """call_soon / call_soon_threadsafe in debug mode, with asyncio's checks."""
        threadsafe = method == "call_soon_threadsafe"
        if not threadsafe:
            self._check_thread()
        self._check_callback(callback, method)
        if threadsafe and _ThreadSafeHandle is not None:
            handle = _ThreadSafeHandle(callback, args, self, context)
            if handle._source_traceback:
                # _ThreadSafeHandle.__init__'s frame, as base_events drops it.
                del handle._source_traceback[-1]
        else:
            handle = events.Handle(callback, args, self, context)
        if handle._source_traceback:
            # Drop this helper's frame so the traceback ends at the caller, as in asyncio.
            del handle._source_traceback[-1]
        self._add_callback(handle)
        if threadsafe:
            self._write_to_self()
        return handle

    def _call_at_debug(
        self, when: Any, callback: Any, args: tuple[Any, ...], context: Any
    ) -> events.TimerHandle:
        """call_at / call_later in debug mode, with asyncio's checks."""
        self._check_thread()
        self._check_callback(callback, "call_at")
        timer = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        self._add_timer(timer)
        return timer

    def _run_handle_debug(self, handle: events.Handle) -> None:
        """Runs one handle in debug mode, warning about slow callbacks as asyncio does."""
        self._current_handle = handle
        try:
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                logger.warning(
                    "Executing %s took %.3f seconds", base_events._format_handle(handle), dt
                )
        finally:
            self._current_handle = None
            # Break the cycle task -> exception -> traceback -> this frame -> handle -> task,
            # as BaseEventLoop._run_once does, so a failed task is freed (and its unretrieved
            # exception reported) at once rather than at the next collection.
            handle = None  # noqa: F841


# call_soon, call_soon_threadsafe, call_later, call_at, get_debug and create_future as raw C
# methods of LoopCore (their only versions; src/loop_core/fastcall.rs says what they save over
# PyO3 wrappers).
_oxloop._install_fast_methods(Loop)

# `_accept_now` in one native call (src/transport_setup.rs `accept_now`) where the set-up is
# native: an exact Loop on which `_make_socket_transport` resolves to this class's (above) gets
# the protocol, `_ensure_fd_no_transport` (3.12+, by name) and the transport made as
# `_SocketTransport(...)` would, without the three Python frames (`_accept_now`,
# `_make_socket_transport`, `__init__`).
if (
    _transports.NATIVE_SETUP
    and not _transports.MAKE_TRANSPORT_CONTEXT
    and _oxloop._set_accept_now(
        Loop,
        _oxloop.ClassGuard(
            [
                (_SocketTransport, "__new__", object.__new__),
                (_SocketTransport, "__init__", _SocketTransport.__init__),
            ]
        ),
        sys.version_info >= (3, 12),
        _accept_now,
    )
):
    _accept_connection_now = _oxloop.accept_now
else:
    _accept_connection_now = _accept_now

if TYPE_CHECKING:

    def _implements_the_hooks(lp: Loop) -> _oxloop.LoopHooks:
        """mypy: Loop has every hook the core calls by name, with the documented signature."""
        return lp


def new_event_loop(*, clock: VirtualClock | None = None) -> Loop:
    """A new oxloop event loop (the loop factory for asyncio.Runner, uvicorn, anyio, ...).

    ``clock``: an ``oxloop.testing.VirtualClock`` to run the loop on virtual time (tests).
    """
    if clock is None:
        return Loop()
    return Loop(clock=clock)

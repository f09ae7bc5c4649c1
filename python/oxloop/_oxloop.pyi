"""Type stubs for the Rust extension ``oxloop._oxloop`` (hand-written; checked by stubtest)."""

import asyncio
import contextvars
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, final

from typing_extensions import TypeVarTuple, Unpack, disjoint_base

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

__all__ = [
    "__version__",
    "LoopCore",
    "SocketReader",
    "SocketWriter",
    "SockWaiter",
    "CONTRACT_ENTRIES",
    "TRANSPORT_FIELDS",
    "_contract_status",
    "_install_fast_methods",
    "_set_io_context_keyword",
    "register_transport_slots",
    "sock_recv",
    "sock_recv_into",
    "sock_sendall",
]

__version__: str

CONTRACT_ENTRIES: tuple[str, ...]
"""The Rust side's CPython contract entries (src/cpython/mod.rs), in its table's order."""

def _contract_status() -> dict[str, bool]:
    """Each Rust-side contract entry and whether it holds (its fast path is on); runs the
    probes otherwise run at first use. ``oxloop._contract.status()`` adds the Python side's."""

def _install_fast_methods(cls: type[LoopCore]) -> None:
    """Sets call_soon, call_soon_threadsafe, call_later, call_at and get_debug on ``cls`` as raw
    vectorcall method descriptors of the same core."""

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

@final
class SocketReader:
    """The read-event callback of one stream socket transport."""

    def __new__(cls, transport: asyncio.Transport) -> SocketReader: ...
    def __call__(self, *args: Any, **kwargs: Any) -> None: ...
    @property
    def __qualname__(self) -> str: ...  # type: ignore[override]
    @property
    def __name__(self) -> str: ...

@final
class SocketWriter:
    """The fast ``write`` of one stream socket transport (held weakly)."""

    def __new__(cls, transport: asyncio.Transport, native: bool = True) -> SocketWriter: ...
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

TRANSPORT_FIELDS: tuple[str, ...]
"""The transport attributes the Rust read and write paths read by offset: the slots of
``_SocketTransport``."""

def register_transport_slots(cls: type) -> None:
    """Record where ``cls`` (``_SocketTransport``) keeps the slots its per-event paths read;
    RuntimeError when the layout is not the one expected."""

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

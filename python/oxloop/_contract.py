"""The CPython contract, Python side: what oxloop's Python code assumes about asyncio's internals.

The Rust side's table (C layouts, private C functions, reference counts, GC tracking) opens
``src/cpython/mod.rs``; this module holds the assumptions about private names of the running
asyncio. Three kinds:

Fast paths: probed at import; a probe that fails turns off only that path, and asyncio's own
code runs instead.

================== ======================================= ================== =================
entry              what is assumed                         used by            off: instead
================== ======================================= ================== =================
socket_transport   ``selector_events._SelectorSocketTran   ``_transports.py`` asyncio's
                   sport``'s code stores the fields the    (``_SocketTranspor ``_SelectorSocket
                   Rust read and write paths read          t``), ``src/transp Transport``
                   (``_transport.TRANSPORT_FIELDS``) as    ort.rs``
                   attributes, registers its reader as
                   ``self._read_ready`` and names its
                   socket ``_sock`` / ``_sock_fd``
sock_methods       ``BaseSelectorEventLoop`` has           ``_loop.py``       asyncio's
                   ``_ensure_fd_no_transport``,            (``sock_recv``,    ``sock_recv``,
                   ``_add_reader`` / ``_add_writer`` /     ``sock_recv_into``,``sock_recv_into``
                   ``_remove_reader`` / ``_remove_writer`` ``sock_sendall``,  , ``sock_sendall``
                   and ``_transports``; a                  ``_ensure_fd_no_tr , ``_ensure_fd_no_
                   ``weakref.WeakValueDictionary`` keeps   ansport``),        transport``
                   ``data``: a dict of key -> weak         ``src/sock.rs``
                   reference
ssl_protocol       (3.11+) ``sslproto.SSLProtocol``'s code ``_tls.py``,       asyncio's
                   keeps the state the native TLS data     ``src/tls/``       ``SSLProtocol``
                   path reads and calls (``_sslobj``,                         data path
                   ``_state``, ``_incoming``,
                   ``_outgoing``, the flow-control fields
                   and methods: ``_SSL_PROTOCOL_NAMES``);
                   ``SSLProtocolState.WRAPPED``,
                   ``SSLAgainErrors`` exist
================== ======================================= ================== =================

Required: the classes oxloop is built from; a missing name raises ImportError naming it (there
is no fallback: ``oxloop.Loop`` *is* a ``_UnixSelectorEventLoop``).

- ``selector_loop``: ``unix_events._UnixSelectorEventLoop``,
  ``selector_events.BaseSelectorEventLoop`` and ``base_events.BaseEventLoop`` (``_loop.py``,
  whose ``Loop.__init__`` sets the state their ``__init__`` would).
- ``running_loop``: ``events._set_running_loop`` / ``_get_running_loop`` (``_loop.py``,
  ``_api.py``).
- ``callback_format``: ``format_helpers._format_callback_source``,
  ``base_events._format_handle`` (``_loop.py``, ``_insight.py``).
- ``pipe_transport``: ``unix_events._UnixReadPipeTransport`` (``_pipes.py``).
- ``subprocess_transport``: ``unix_events._UnixSubprocessTransport`` (``_subprocess.py``).
- ``socket_transport_class``: ``selector_events._SelectorSocketTransport`` (``_transports.py``).

Version-dependent names looked up with a fallback where they are used (``getattr``, never
assumed), listed here so a new CPython is checked in one place: ``tasks._GatheringFuture``,
``tasks._PyTask``, ``tasks._py_all_tasks``, ``tasks._py_current_task``,
``futures._PyFuture.__await__`` (``_tasks.py``: the task dump shows what asyncio's functions
show without them); ``events._get_event_loop_policy``, ``_set_event_loop_policy``,
``_AbstractEventLoopPolicy``, ``unix_events._UnixDefaultEventLoopPolicy`` (``_compat.py``:
the public names otherwise); ``events._ThreadSafeHandle`` (``_loop.py``, 3.14+; the Rust
side's ``handle_slots`` covers its layout); ``(_)ThreadedChildWatcher._reap_and_notify``
(``_subprocess.py``, 3.14.7+: the thread reaps the child itself otherwise); the ``context=``
keyword of ``_add_reader`` / ``_add_writer`` / ``_make_socket_transport`` /
``_SelectorSocketTransport.__init__`` (``_transports.py``, probed with ``inspect.signature``:
3.15). docs/architecture.md ("Interpreter versions") has the versions each was verified on.

Verified code (compared at import, bytecode, names and constants, with the source oxloop
holds; a mismatch keeps asyncio's own code): the socket transport's set-up chain
(``_transports.py``: ``_INIT_VARIANT``, ``_SELECTOR_VARIANT``, ``_WEAK_VARIANT``, ``_DEEP``,
``_NODELAY``; the functions are also checked for replacement per transport) and
``BaseSelectorEventLoop._accept_connection2`` and ``_accept_connection`` (``_loop.py``:
``_ACCEPT_NOW``, ``_ACCEPT_PLAIN``; 3.15's with the connection's context), on 3.10-3.15.

Verified: every probe passes (``tests/test_contract.py::test_every_probe_passes``) on CPython
3.10, 3.11, 3.12, 3.13, 3.14, 3.14d (debug build) and 3.15.

``OXLOOP_CONTRACT_FAIL=name[,name...]`` (read once, at import) makes the named probes fail,
here and on the Rust side; ``status()`` says which entries of both sides hold.
``tests/test_contract.py`` runs each fast path's tests with its probe forced to fail.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from asyncio import base_events, events, format_helpers, selector_events, unix_events

from . import _oxloop

__all__ = ["FAIL_VAR", "FAST_PATHS", "REQUIRED", "holds", "status"]

FAIL_VAR = "OXLOOP_CONTRACT_FAIL"

# Which probes to fail, as OXLOOP_CONTRACT_FAIL names them.
_FORCED = frozenset(n.strip() for n in os.environ.get(FAIL_VAR, "").split(",") if n.strip())


def _code_names(cls: type, *, bases: bool = True) -> set[str]:
    """Every name the functions (and property getters) of ``cls`` (and its bases) use."""
    names: set[str] = set()
    for klass in cls.__mro__ if bases else (cls,):
        for value in vars(klass).values():
            func = getattr(value, "fget", value)
            code = getattr(func, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names


def _probe_socket_transport() -> bool:
    cls = getattr(selector_events, "_SelectorSocketTransport", None)
    if cls is None:
        return False
    used = _code_names(cls)
    # `_oxloop_buffered` is oxloop's own field (set by _SocketTransport.set_protocol).
    fields = {name for name in _oxloop.TRANSPORT_FIELDS if name != "_oxloop_buffered"}
    return (
        fields | {"_read_ready", "_sock", "_sock_fd", "_add_reader"} <= used
        and callable(getattr(cls, "write", None))
        and callable(getattr(cls, "set_protocol", None))
    )


def _probe_sock_methods() -> bool:
    base = selector_events.BaseSelectorEventLoop
    needed = (
        "_ensure_fd_no_transport",
        "_add_reader",
        "_add_writer",
        "_remove_reader",
        "_remove_writer",
        "sock_recv",
        "sock_recv_into",
        "sock_sendall",
    )
    if not all(callable(getattr(base, name, None)) for name in needed):
        return False
    if "_transports" not in _code_names(base, bases=False):
        return False
    # WeakValueDictionary.data: key -> KeyedRef (Lib/weakref.py), what both the Rust check
    # (src/sock.rs `no_transport_entry`) and `Loop._ensure_fd_no_transport` read.
    d: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()
    value = base_events  # any object that can be weakly referenced and outlives the probe
    d[7] = value
    data = getattr(d, "data", None)
    return type(data) is dict and list(data) == [7] and data[7]() is value


# What src/tls/mod.rs reads from an SSLProtocol (instance fields, methods it calls).
_SSL_PROTOCOL_NAMES = frozenset(
    (
        "_app_protocol _app_protocol_is_buffer _app_reading_paused _app_writing_paused "
        "_call_eof_received _control_app_writing _control_ssl_reading _do_write _fatal_error "
        "_get_read_buffer_size _incoming _incoming_high_water _incoming_low_water _outgoing "
        "_outgoing_high_water _outgoing_low_water _process_outgoing _ssl_buffer_view "
        "_ssl_reading_paused _ssl_writing_paused _sslobj _start_shutdown _state _transport "
        "_write_backlog _write_buffer_size max_size buffer_updated _write_appdata"
    ).split()
)


def _probe_ssl_protocol() -> bool:
    from asyncio import sslproto

    cls = getattr(sslproto, "SSLProtocol", None)
    state = getattr(sslproto, "SSLProtocolState", None)
    if cls is None or state is None or not hasattr(sslproto, "SSLAgainErrors"):
        return False
    names = _code_names(cls) | set(dir(cls))
    return hasattr(state, "WRAPPED") and _SSL_PROTOCOL_NAMES <= names


FAST_PATHS = {
    "socket_transport": _probe_socket_transport,
    "sock_methods": _probe_sock_methods,
}
# 3.10's sslproto is the older `_SSLPipe` design, which the native path does not cover.
if sys.version_info >= (3, 11):
    FAST_PATHS["ssl_protocol"] = _probe_ssl_protocol

REQUIRED: dict[str, tuple[tuple[object, str], ...]] = {
    "selector_loop": (
        (unix_events, "_UnixSelectorEventLoop"),
        (selector_events, "BaseSelectorEventLoop"),
        (base_events, "BaseEventLoop"),
    ),
    "running_loop": ((events, "_set_running_loop"), (events, "_get_running_loop")),
    "callback_format": (
        (format_helpers, "_format_callback_source"),
        (base_events, "_format_handle"),
    ),
    "pipe_transport": ((unix_events, "_UnixReadPipeTransport"),),
    "subprocess_transport": ((unix_events, "_UnixSubprocessTransport"),),
    "socket_transport_class": ((selector_events, "_SelectorSocketTransport"),),
}


def _missing() -> list[str]:
    return [
        f"{name} ({getattr(module, '__name__', module)}.{attr})"
        for name, needs in REQUIRED.items()
        for module, attr in needs
        if not hasattr(module, attr)
    ]


_missing_names = _missing()
if _missing_names:
    raise ImportError(
        "oxloop: this Python's asyncio lacks what oxloop is built from: "
        + ", ".join(_missing_names)
    )

_unknown = _FORCED - set(FAST_PATHS) - set(_oxloop.CONTRACT_ENTRIES)
if _unknown:
    warnings.warn(
        f"{FAIL_VAR} names unknown contract entries: {', '.join(sorted(_unknown))}",
        RuntimeWarning,
        stacklevel=2,
    )


def _run_probe(name: str) -> bool:
    if name in _FORCED:
        return False
    try:
        return bool(FAST_PATHS[name]())
    except Exception:  # a probe that cannot even run: the fast path stays off
        return False


_HOLDS = {name: _run_probe(name) for name in FAST_PATHS}


def holds(name: str) -> bool:
    """Whether the Python-side fast path ``name`` is on (its probe passed at import); False for
    an entry this version does not have."""
    return _HOLDS.get(name, False)


def status() -> dict[str, bool]:
    """Every contract entry, Rust side and Python side, and whether it holds."""
    return {**_oxloop._contract_status(), **_HOLDS}

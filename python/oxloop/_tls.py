"""TLS for oxloop's loop: asyncio's ``sslproto.SSLProtocol`` with its per-record data path in
Rust (src/tls/), over oxloop's native socket transport.

``make_ssl_transport`` is the loop's ``_make_ssl_transport`` (create_connection /
create_server / connect_accepted_socket with ``ssl=``): the body of asyncio's own
(Lib/asyncio/selector_events.py, 3.11-3.15), with this module's ``SSLProtocol`` and
``_transports._SocketTransport`` in place of ``sslproto.SSLProtocol`` and
``_SelectorSocketTransport``. ``SSLProtocol`` is asyncio's class of the running version
(the fields the native path reads are ``__slots__`` of the subclass);
in the WRAPPED state ``buffer_updated`` and ``_write_appdata`` run natively (the same
``_ssl`` C methods, the same order of calls, see src/tls/mod.rs) and every other case --
handshake, shutdown, flushing, a write backlog, a BufferedProtocol app, errors -- is asyncio's
Python code. 3.10's sslproto is the older ``_SSLPipe`` design: there ``NATIVE`` is False
and the loop keeps asyncio's ``_make_ssl_transport``. ``OXLOOP_NATIVE_TLS=0`` turns it off
too, and so does a failed probe of the CPython contract's ``ssl_protocol`` entry
(``_contract.py``).
"""

from __future__ import annotations

import os
import sys
from asyncio import constants, sslproto

from . import _contract, _oxloop, _transports

TYPE_CHECKING = False  # as _loop.py: typing is not loaded on 3.14+
if TYPE_CHECKING:
    from typing import Any

# The contract's `ssl_protocol` entry (_contract.py) holds on 3.11+ only.
NATIVE = _contract.holds("ssl_protocol") and os.environ.get("OXLOOP_NATIVE_TLS", "1") != "0"

_SHUTDOWN_TIMEOUT = getattr(constants, "SSL_SHUTDOWN_TIMEOUT", None)  # 3.11+
_Base: Any = sslproto.SSLProtocol  # type: ignore[attr-defined]


class SSLProtocol(_Base):
    """asyncio's SSLProtocol; ``buffer_updated``, ``_write_appdata`` and ``get_buffer`` are
    raw C methods (installed below) that run the WRAPPED-state data path in Rust and call
    asyncio's own method for every other case."""

    # The fields the Rust data path reads per record: asyncio's code stores them as usual,
    # through the slot descriptors, and src/tls/ reads each with one load at the slot's
    # offset instead of a lookup in the instance __dict__ (as _transports._SocketTransport).
    __slots__ = _oxloop.TLS_FIELDS if NATIVE else ()


class _StartTLSProtocol(_Base):
    """What ``loop.start_tls``'s asyncio ``SSLProtocol`` becomes (``_transports.py``'s
    ``set_protocol``): the same raw methods, asyncio's layout (a ``__class__`` assignment
    needs it), so its fields stay in the instance ``__dict__``."""

    __slots__ = ()


if NATIVE:
    _oxloop.tls_install(SSLProtocol, _Base)
    _oxloop.tls_install(_StartTLSProtocol, _Base)


def make_ssl_transport(
    loop: Any,
    rawsock: Any,
    protocol: Any,
    sslcontext: Any,
    waiter: Any = None,
    *,
    server_side: bool = False,
    server_hostname: Any = None,
    extra: Any = None,
    server: Any = None,
    ssl_handshake_timeout: Any = constants.SSL_HANDSHAKE_TIMEOUT,
    ssl_shutdown_timeout: Any = _SHUTDOWN_TIMEOUT,
    **kwargs: Any,  # 3.15: context
) -> Any:
    if sys.version_info >= (3, 12):
        loop._ensure_fd_no_transport(rawsock)
    ssl_protocol = SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    _transports._SocketTransport(loop, rawsock, ssl_protocol, extra=extra, server=server, **kwargs)
    return ssl_protocol._app_transport

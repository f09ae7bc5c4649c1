"""Helpers shared by the network tests (test_tcp, test_unix, test_udp, test_sock, test_tls,
test_server): recording protocols, connected pairs, payloads and the stock-asyncio reference.

Everything here waits on events (futures resolved by protocol callbacks), never on wall-clock
sleeps, so the tests stay deterministic on a loaded machine. The reference for every behaviour
is CPython's selector loop of the running version (`asyncio.SelectorEventLoop`):
``same_as_stock`` runs a scenario on it as well and compares.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

# Bounds every wait in the network tests, so a lost event fails the test instead of hanging it.
TIMEOUT = 10.0

HAS_IPV6 = False
if socket.has_ipv6:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _s:
            _s.bind(("::1", 0))
        HAS_IPV6 = True
    except OSError:
        pass


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes (a SHA-256 counter stream)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:size])


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected non-blocking Unix stream socket pair."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def wait(aw: Awaitable[Any], timeout: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(aw, timeout)


class Recorder(asyncio.Protocol):
    """A stream protocol that records every callback it gets, in order.

    ``events`` lists the callbacks ('made', 'eof', 'pause', 'resume', ('lost', exc type)).
    ``data`` accumulates what was received; ``until(n)`` waits for at least n bytes.
    ``eof_result`` is what eof_received returns (True keeps a half-closed transport open).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, eof_result: Any = None) -> None:
        self.loop = loop
        self.eof_result = eof_result
        self.transport: Any = None
        self.events: list[Any] = []
        self.data = bytearray()
        self.chunks = 0  # data_received calls
        self.max_chunk = 0  # the largest data_received argument
        self.made: asyncio.Future[Any] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self.paused: asyncio.Future[None] = loop.create_future()
        self.resumed: asyncio.Future[None] = loop.create_future()
        self._want: tuple[int, asyncio.Future[None]] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        assert isinstance(data, bytes), type(data)
        self.chunks += 1
        self.max_chunk = max(self.max_chunk, len(data))
        self.data += data
        self._check()

    def eof_received(self) -> Any:
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", type(exc) if exc is not None else None))
        self.lost.set_result(exc)
        if self._want is not None and not self._want[1].done():
            self._want[1].set_exception(ConnectionError(f"lost after {len(self.data)} bytes"))

    def pause_writing(self) -> None:
        self.events.append("pause")
        if not self.paused.done():
            self.paused.set_result(None)

    def resume_writing(self) -> None:
        self.events.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)

    def _check(self) -> None:
        if self._want is not None and len(self.data) >= self._want[0]:
            if not self._want[1].done():
                self._want[1].set_result(None)
            self._want = None

    async def until(self, n: int) -> bytes:
        """Wait until at least n bytes arrived; return everything received so far."""
        if len(self.data) < n:
            fut = self.loop.create_future()
            self._want = (n, fut)
            await wait(fut)
        return bytes(self.data)


class Echo(Recorder):
    """A Recorder that writes back everything it receives (and closes on EOF)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.transport.write(data)


class Server:
    """A listening server whose accepted connections' protocols are collected in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: type[Recorder] = Recorder, **kw):
        self.loop = loop
        self.proto = proto
        self.kw = kw
        self.protocols: list[Recorder] = []
        self._next: asyncio.Future[Recorder] | None = None
        self.server: asyncio.AbstractServer | None = None

    def factory(self) -> Recorder:
        p = self.proto(self.loop, **self.kw)
        self.protocols.append(p)
        if self._next is not None and not self._next.done():
            self._next.set_result(p)
        return p

    async def accepted(self, index: int = -1) -> Recorder:
        """The protocol of the (index)th accepted connection, once its connection_made ran."""
        want = len(self.protocols) if index == -1 else index
        while len(self.protocols) <= want:
            self._next = self.loop.create_future()
            await wait(self._next)
        p = self.protocols[want]
        await wait(p.made)
        return p


async def tcp_server(loop, proto=Recorder, host="127.0.0.1", **kw) -> tuple[Server, Any]:
    """A Server on host, a free port; returns (Server, address)."""
    srv = Server(loop, proto, **{k: kw.pop(k) for k in list(kw) if k == "eof_result"})
    srv.server = await loop.create_server(srv.factory, host, 0, **kw)
    return srv, srv.server.sockets[0].getsockname()


async def tcp_pair(
    loop, server_proto=Recorder, client_proto=Recorder, **client_kw
) -> tuple[Server, Recorder, Recorder]:
    """A server, a client connected to it, and the accepted side: (Server, client, peer)."""
    srv, addr = await tcp_server(loop, server_proto)
    client_kw_proto = {k: client_kw.pop(k) for k in list(client_kw) if k == "eof_result"}
    _, client = await loop.create_connection(
        lambda: client_proto(loop, **client_kw_proto), *addr[:2], **client_kw
    )
    peer = await srv.accepted(0)
    return srv, client, peer


async def close_all(srv: Server | None, *protos: Recorder) -> None:
    """Close transports and the server, and let the loop run their connection_lost calls."""
    for p in protos:
        if p.transport is not None and not p.transport.is_closing():
            p.transport.close()
    if srv is not None:
        for p in srv.protocols:
            if p.transport is not None and not p.transport.is_closing():
                p.transport.close()
    for p in [*protos, *(srv.protocols if srv else [])]:
        if p.transport is not None:
            await wait(p.lost)
    if srv is not None and srv.server is not None:
        srv.server.close()
        await wait(srv.server.wait_closed())


async def drain_loop(iterations: int = 5) -> None:
    """Let the loop run a few full iterations (poll included) without a wall-clock wait."""
    for _ in range(iterations):
        await asyncio.sleep(0)


def stock_run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[Any]]) -> Any:
    """scenario(loop) on a fresh stock asyncio selector loop: what CPython does is the spec."""
    ref = asyncio.SelectorEventLoop()
    try:
        return ref.run_until_complete(scenario(ref))
    finally:
        ref.run_until_complete(ref.shutdown_asyncgens())
        ref.close()


def same_as_stock(loop, loop_kind: str, scenario) -> Any:
    """Run scenario(loop) on the test's loop; on oxloop also on stock asyncio, and require the
    same result. Returns the result (so the test can pin it as well)."""
    got = loop.run_until_complete(scenario(loop))
    if loop_kind == "oxloop":
        asyncio.set_event_loop(None)
        try:
            expected = stock_run(scenario)
        finally:
            asyncio.set_event_loop(loop)
        assert got == expected, f"oxloop {got!r} != stock asyncio {expected!r}"
    return got


def outcome_of(exc: BaseException | None) -> tuple[Any, ...]:
    """An exception summarised for comparison: (type, errno) or ('ok',)."""
    if exc is None:
        return ("ok",)
    return (type(exc), getattr(exc, "errno", None))


async def aoutcome(aw: Awaitable[Any] | Callable[[], Awaitable[Any]]) -> tuple[Any, ...]:
    """Await aw (or call it and await the result, so a TypeError raised by the call itself is
    caught too); return outcome_of its exception."""
    try:
        await (aw() if callable(aw) else aw)
    except Exception as exc:
        return outcome_of(exc)
    return ("ok",)


# -- TLS ---------------------------------------------------------------------------------------

_CA: Any = None
_CONTEXTS: tuple[ssl.SSLContext, ssl.SSLContext] | None = None


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for 'localhost' / 127.0.0.1 / ::1, from a CA made by
    trustme once per process (the same two objects on every call); the client trusts only
    that CA."""
    import trustme

    global _CA, _CONTEXTS
    if _CONTEXTS is None:
        ca = trustme.CA()
        _CA = (ca, ca.issue_cert("localhost", "127.0.0.1", "::1"))
        cert = _CA[1]
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(client)
        _CONTEXTS = (server, client)
    return _CONTEXTS


def tls_files(tmp_path: os.PathLike[str]) -> tuple[str, str, str]:
    """(cert chain file, key file, CA file) of the same certificate, for tools that take paths."""
    tls_contexts()
    ca, cert = _CA
    base = os.fspath(tmp_path)
    chain, key, cafile = (os.path.join(base, n) for n in ("chain.pem", "key.pem", "ca.pem"))
    cert.private_key_pem.write_to_path(key)
    with open(chain, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(cafile)
    return chain, key, cafile


def fill(transport: asyncio.WriteTransport, *, beyond: int = 0, seed: int = 0) -> bytes:
    """Write to a transport whose peer does not read until more than ``beyond`` bytes sit in
    the transport's own buffer (the kernel's buffers are full); return everything written."""
    written = bytearray()
    chunk = 256 * 1024
    counter = 0
    while transport.get_write_buffer_size() <= beyond:
        block = payload(chunk, seed=seed * 1000 + counter)
        counter += 1
        transport.write(block)
        written += block
        assert len(written) < 256 * 1024 * 1024, "the transport never buffered"
    return bytes(written)


def write_type_error(data: Any) -> str:
    """A regex for the TypeError of a stream transport's ``write(data)`` when ``data`` is not
    bytes-like, as selector_events.py words it: 3.14 names the three accepted types."""
    name = type(data).__name__
    if sys.version_info >= (3, 14):
        message = f"data argument must be a bytes, bytearray, or memoryview object, not {name!r}"
    else:
        message = f"data argument must be a bytes-like object, not {name!r}"
    return "^" + re.escape(message) + "$"


# A socket subclass that overrides its I/O methods (a wrapper counting or logging I/O):
# asyncio calls the object's methods, so both loops must (tests/test_sock.py,
# tests/test_transport_fastpath.py).


class CountingSocket(socket.socket):
    """Counts the calls of its I/O methods in `calls` (a class attribute the test resets)."""

    calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        CountingSocket.calls[name] = CountingSocket.calls.get(name, 0) + 1

    def recv(self, *args):
        self._count("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self._count("recv_into")
        return super().recv_into(*args)

    def send(self, *args):
        self._count("send")
        return super().send(*args)

    def sendall(self, *args):
        self._count("sendall")
        return super().sendall(*args)

    def accept(self):
        self._count("accept")
        return super().accept()

    def recvfrom(self, *args):
        self._count("recvfrom")
        return super().recvfrom(*args)

    def sendto(self, *args):
        self._count("sendto")
        return super().sendto(*args)


def counting(sock: socket.socket) -> CountingSocket:
    """`sock` as a non-blocking CountingSocket (it takes over the fd)."""
    s = CountingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    s.setblocking(False)
    return s

"""asyncio.Server on both loops: create_server's options and the Server object's lifecycle.

Pins base_events.Server of the running version: sockets, is_serving, start_serving,
serve_forever, close, wait_closed (whose semantics changed in 3.12.1), close_clients /
abort_clients (3.13), async with, get_loop; create_server with several hosts, reuse_port,
reuse_address, keep_alive (3.13), sock=, start_serving=False; bad arguments; a server closed
while clients are connected; and accept failing with EMFILE (the server keeps running,
retries after asyncio's ACCEPT_RETRY_DELAY without spinning, and serves every queued client).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys

import pytest
from _helpers import python_subprocess
from _net import (
    HAS_IPV6,
    Echo,
    Recorder,
    Server,
    aoutcome,
    close_all,
    drain_loop,
    same_as_stock,
    tcp_server,
    wait,
)

pytestmark = pytest.mark.timeout(60)
PY313 = sys.version_info >= (3, 13)


def test_server_object(loop, run):
    async def main():
        srv, addr = await tcp_server(loop)
        server = srv.server
        assert isinstance(server, asyncio.AbstractServer)
        assert isinstance(server, asyncio.base_events.Server)
        assert server.get_loop() is loop
        assert server.is_serving()
        socks = server.sockets
        assert isinstance(socks, tuple) and len(socks) == 1
        assert isinstance(socks[0], asyncio.trsock.TransportSocket)
        assert socks[0].getsockname() == addr
        # asyncio sets SO_REUSEADDR on Unix by default (base_events.create_server).
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        assert repr(server) == f"<Server sockets={socks!r}>"
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # twice is fine
        await wait(server.wait_closed())
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *addr)

    run(main())


def test_start_serving_false(loop, run):
    async def main():
        srv = Server(loop, Echo)
        server = await loop.create_server(srv.factory, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        addr = server.sockets[0].getsockname()
        # Not listening yet: asyncio calls listen() in start_serving.
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *addr)
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # again: no-op
        r, w = await asyncio.open_connection(*addr)
        w.write(b"hi")
        assert await wait(r.readexactly(2)) == b"hi"
        w.close()
        await w.wait_closed()
        srv.server = server
        await close_all(srv)

    run(main())


def test_serve_forever_and_cancellation(loop, run):
    async def main():
        srv = Server(loop, Echo)
        server = await loop.create_server(srv.factory, "127.0.0.1", 0, start_serving=False)
        task = asyncio.ensure_future(server.serve_forever())
        await drain_loop(2)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match="already being awaited"):
            await server.serve_forever()
        r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
        w.write(b"x")
        assert await wait(r.readexactly(1)) == b"x"
        w.close()
        await w.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait(task)
        assert not server.is_serving()  # serve_forever closes the server when cancelled
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    run(main())


def test_serve_forever_ends_when_closed(loop, run):
    async def main():
        srv, _ = await tcp_server(loop)
        task = asyncio.ensure_future(srv.server.serve_forever())
        await drain_loop(2)
        srv.server.close()
        with pytest.raises(asyncio.CancelledError):
            await wait(task)

    run(main())


def test_async_with_closes_the_server(loop, run):
    async def main():
        srv, addr = await tcp_server(loop)
        async with srv.server as server:
            assert server is srv.server
            assert server.is_serving()
        assert not srv.server.is_serving()
        assert srv.server.sockets == ()
        await wait(srv.server.wait_closed())

    run(main())


def test_wait_closed_semantics_of_the_running_version(loop, loop_kind):
    """3.12.1+: wait_closed waits until the server is closed and every connection is gone.
    3.10 / 3.11: it returns at once once the server is closed, live connections or not."""

    async def scenario(lp):
        srv, addr = await tcp_server(lp)
        _, client = await lp.create_connection(lambda: Recorder(lp), *addr)
        peer = await srv.accepted(0)
        before = asyncio.ensure_future(srv.server.wait_closed())
        await drain_loop()
        states = [before.done()]
        srv.server.close()
        after = asyncio.ensure_future(srv.server.wait_closed())
        await drain_loop()
        states += [before.done(), after.done()]
        # The server is closed, the connection is still alive and works.
        client.transport.write(b"still here")
        await peer.until(10)
        peer.transport.close()
        await wait(client.lost)
        await wait(asyncio.gather(before, after))
        return states

    states = same_as_stock(loop, loop_kind, scenario)
    if sys.version_info >= (3, 12, 1):
        assert states == [False, False, False]
    elif sys.version_info < (3, 12):
        assert states == [False, False, True]


def test_server_closed_while_clients_are_connected(loop, run):
    """close() stops accepting; the established connections go on until their own close."""

    async def main():
        srv, addr = await tcp_server(loop, Echo)
        clients = []
        for _ in range(3):
            _, c = await loop.create_connection(lambda: Recorder(loop), *addr)
            clients.append(c)
        for i in range(3):
            await srv.accepted(i)
        srv.server.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *addr)
        for i, c in enumerate(clients):
            c.transport.write(b"%d" % i)
        for i, c in enumerate(clients):
            assert await c.until(1) == b"%d" % i
        await close_all(srv, *clients)

    run(main())


@pytest.mark.skipif(not PY313, reason="close_clients / abort_clients are new in 3.13")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(loop, run, how):
    async def main():
        srv, addr = await tcp_server(loop)
        clients = []
        for _ in range(2):
            _, c = await loop.create_connection(lambda: Recorder(loop), *addr)
            clients.append(c)
        peers = [await srv.accepted(i) for i in range(2)]
        closed = asyncio.ensure_future(srv.server.wait_closed())
        srv.server.close()
        getattr(srv.server, how)()
        for p in peers:
            assert p.transport.is_closing()
            assert await wait(p.lost) is None
        for c in clients:
            await wait(c.lost)
            # close flushes and sends FIN (eof); abort just drops the socket.
            if how == "close_clients":
                assert c.events == ["made", "eof", ("lost", None)]
        await wait(closed)

    run(main())


def test_several_hosts(loop, run):
    async def main():
        hosts = ["127.0.0.1", "::1"] if HAS_IPV6 else ["127.0.0.1", "127.0.0.2"]
        srv = Server(loop, Echo)
        srv.server = await loop.create_server(srv.factory, hosts, 0)
        socks = srv.server.sockets
        assert len(socks) == 2
        assert sorted(s.getsockname()[0] for s in socks) == sorted(hosts)
        for s in socks:
            r, w = await asyncio.open_connection(*s.getsockname()[:2])
            w.write(b"ok")
            assert await wait(r.readexactly(2)) == b"ok"
            w.close()
            await w.wait_closed()
        await close_all(srv)

    run(main())


def test_host_none_binds_every_family(loop, loop_kind):
    async def scenario(lp):
        server = await lp.create_server(asyncio.Protocol, None, 0)
        families = sorted(s.family for s in server.sockets)
        server.close()
        await server.wait_closed()
        return families

    assert socket.AF_INET in same_as_stock(loop, loop_kind, scenario)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port(loop, run):
    async def main():
        a = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, reuse_port=True)
        port = a.sockets[0].getsockname()[1]
        b = await loop.create_server(asyncio.Protocol, "127.0.0.1", port, reuse_port=True)
        for s in (*a.sockets, *b.sockets):
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        with pytest.raises(OSError) as info:
            await loop.create_server(asyncio.Protocol, "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        assert "error while attempting to bind on address" in str(info.value)
        for s in (a, b):
            s.close()
            await s.wait_closed()

    run(main())


@pytest.mark.skipif(not PY313, reason="keep_alive is new in 3.13")
def test_keep_alive(loop, run):
    async def main():
        srv = Server(loop)
        srv.server = await loop.create_server(srv.factory, "127.0.0.1", 0, keep_alive=True)
        s = srv.server.sockets[0]
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        _, c = await loop.create_connection(lambda: Recorder(loop), *s.getsockname())
        p = await srv.accepted(0)
        sock = p.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        await close_all(srv, c)

    run(main())


def test_server_from_sock(loop, run):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        srv = Server(loop, Echo)
        srv.server = await loop.create_server(srv.factory, sock=lsock, backlog=5)
        assert srv.server.sockets[0].fileno() == lsock.fileno()
        assert lsock.gettimeout() == 0  # asyncio makes it non-blocking
        r, w = await asyncio.open_connection(*lsock.getsockname())
        w.write(b"s")
        assert await wait(r.readexactly(1)) == b"s"
        w.close()
        await w.wait_closed()
        await close_all(srv)
        assert lsock.fileno() == -1  # closing the server closes the socket it was given

    run(main())


def test_invalid_arguments(loop, loop_kind):
    async def scenario(lp):
        P = asyncio.Protocol
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            cases = [
                lp.create_server(P),  # neither host/port nor sock
                lp.create_server(P, "127.0.0.1", 0, sock=tcp),
                lp.create_server(P, sock=udp),
                lp.create_server(P, "127.0.0.1", 0, ssl=True),
                lp.create_server(P, "127.0.0.1", 0, ssl_handshake_timeout=1),
                lp.create_server(P, "127.0.0.1", 70000),
                lp.create_server(P, "::1", 0, family=socket.AF_INET),
                lp.create_server(P, "127.0.0.1", 0, reuse_address=True, family=socket.AF_UNIX),
            ]
            return [await aoutcome(c) for c in cases]

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[0] == (ValueError, None)
    assert got[1] == (ValueError, None)
    assert got[2] == (ValueError, None)
    assert got[3] == (TypeError, None)
    assert got[4] == (ValueError, None)
    assert got[5][0] is OverflowError


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_queued_clients_are_accepted_as_socket_accept_gives_them(loop, run, family, tmp_path):
    # More clients than `backlog` (the most one event takes) connect at once;
    # each accepted socket is what socket.accept() + setblocking(False) give (oxloop's accept
    # loop takes them through src/accept.rs): same family and type, non-blocking, the address
    # accept() returned as peername.
    # Unix sockets refuse a connect (EAGAIN) past the queue's length rather than wait.
    clients, backlog = (7 if family == "tcp" else 3), 3
    made = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)
            transport.write(b"hi")
            transport.close()

    if family == "tcp":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "s.sock"))
    listener.listen(16)
    address = listener.getsockname()
    socks, names = [], []
    try:

        async def main():
            server = await loop.create_server(P, sock=listener, backlog=backlog)
            for _ in range(clients):
                c = socket.socket(listener.family, socket.SOCK_STREAM)
                c.setblocking(False)
                socks.append(c)
            # The kernel's queue holds `backlog` (+1) connections: connect through the loop.
            await wait(asyncio.gather(*(loop.sock_connect(c, address) for c in socks)))
            names.extend(c.getsockname() for c in socks)
            while len(made) < clients:
                await asyncio.sleep(0)
            got = []
            for c in socks:
                c.settimeout(10)
                got.append(c.recv(2))
            server.close()
            await wait(server.wait_closed())
            return got

        assert run(main()) == [b"hi"] * clients
    finally:
        for c in socks:
            c.close()
        listener.close()
    for tr in made:
        s = tr.get_extra_info("socket")
        assert (s.family, s.type) == (listener.family, socket.SOCK_STREAM)
    if family == "tcp":
        assert sorted(tr.get_extra_info("peername") for tr in made) == sorted(names)
    assert [tr.get_extra_info("sockname") for tr in made] == [address] * clients


EMFILE_CHILD = r"""
import asyncio, json, os, resource, sys, threading, time
import oxloop

loop = oxloop.new_event_loop() if sys.argv[1] == "oxloop" else asyncio.SelectorEventLoop()
WINDOW = float(sys.argv[2])

async def main():
    reports = []
    failed = loop.create_future()

    def handler(lp, ctx):
        reports.append(ctx)
        if not failed.done():
            failed.set_result(None)

    loop.set_exception_handler(handler)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            if not lost.done():
                lost.set_result(None)

    lost = loop.create_future()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    # One connection served first, with descriptors to spare (oxloop probes the socket
    # layout at its first accept).
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
    w.write(b"x")
    await r.readexactly(1)
    w.close()
    await w.wait_closed()
    await lost  # its descriptor is free again
    # Use every descriptor the limit allows, so accept() fails with EMFILE.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print(server.sockets[0].getsockname()[1], flush=True)
    # The parent connects its clients now (the kernel completes the handshakes; accept() is
    # what fails), then closes our stdin once it has checked their echoes.
    finished = loop.create_future()
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(finished.set_result, None)),
        daemon=True,
    ).start()
    await asyncio.wait_for(failed, 10)
    first = len(reports)
    # The limit persists for WINDOW seconds with every client queued.
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(WINDOW)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    during = len(reports)
    for fd in held:
        os.close(fd)
    print(json.dumps({
        "first": first,
        "during": during,
        "cpu": cpu,
        "wall": wall,
        "messages": sorted({e["message"] for e in reports}),
        "errnos": sorted({getattr(e.get("exception"), "errno", None) for e in reports}),
        "serving": server.is_serving(),
        # The report names the listener (its family and fd through the TransportSocket).
        "listener": [
            reports[0]["socket"].fileno() == server.sockets[0].fileno(),
            reports[0]["socket"].family == server.sockets[0].family,
        ],
    }), flush=True)
    await finished
    server.close()
    await server.wait_closed()

loop.run_until_complete(main())
loop.close()
"""


def test_accept_at_the_fd_limit_waits_without_spinning_and_serves_every_client(loop_kind):
    # The child lowers its own RLIMIT_NOFILE and fills its fd table; this process's clients
    # queue in the listener's backlog meanwhile. (benches: 10,500 reports and 0.43 s of CPU in
    # 8 s on stock asyncio with its default handler; 9 reports and 5 ms on oxloop.)
    clients, window = 20, 1.5
    proc = python_subprocess(EMFILE_CHILD, loop_kind, str(window), stdin=subprocess.PIPE)
    socks = []
    try:
        port = int(proc.stdout.readline())
        for i in range(clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(b"client %d" % i)
        got = json.loads(proc.stdout.readline())
        # Every queued client is accepted once descriptors are free, and echoed.
        for i, s in enumerate(socks):
            want = b"client %d" % i
            data = b""
            while len(data) < len(want):
                chunk = s.recv(64)
                assert chunk, (i, data)
                data += chunk
            assert data == want
        for s in socks:  # 3.12.1+: wait_closed() waits for the connections to end
            s.close()
        out, err = proc.communicate(timeout=30)  # closes the child's stdin: it ends
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert got["messages"] == ["socket.accept() out of system resource"]
    assert got["errnos"] == [errno.EMFILE]
    assert got["serving"]
    assert got["listener"] == [True, True]
    if loop_kind == "oxloop":
        # One accept() and one report per ACCEPT_RETRY_DELAY (1 s), nothing in between.
        assert got["first"] == 1, got
        assert got["during"] <= 2 + got["wall"], got
        assert got["cpu"] < 0.1 * got["wall"], got
    else:
        # asyncio goes on with its accept loop after the first report: `backlog` (100)
        # failing accept() calls, reports and retry timers per event (3.14+: backlog + 1).
        assert got["first"] >= 100, got


def test_a_patched_socket_accept_is_called(loop, run, monkeypatch):
    # socket.socket.accept replaced (a mock, an instrumenting wrapper): the accept loop calls
    # it, as asyncio's does (oxloop's native accept stands in only for socket.py's own).
    calls = []
    original = socket.socket.accept

    def accept(self):
        calls.append(self.fileno())
        return original(self)

    monkeypatch.setattr(socket.socket, "accept", accept)

    async def main():
        srv, addr = await tcp_server(loop, Echo)
        r, w = await asyncio.open_connection(*addr)
        w.write(b"x")
        assert await wait(r.readexactly(1)) == b"x"
        w.close()
        await wait(w.wait_closed())
        srv.server.close()
        await wait(srv.server.wait_closed())

    run(main())
    assert calls


def _accept_one(loop, host="127.0.0.1", family=socket.AF_INET):
    """Accept one connection on a server of `host`; returns (the server side's socket.socket,
    its peername extra, the client's sockname)."""
    made = loop.create_future()

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            made.set_result(transport)

    async def main():
        srv = await loop.create_server(P, host, 0, family=family)
        c = socket.socket(family, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            await loop.sock_connect(c, srv.sockets[0].getsockname()[:2])
            transport = await wait(made)
            sock = transport.get_extra_info("socket")._sock
            facts = (
                type(sock),
                (sock.family, sock.type, sock.proto),
                sock.gettimeout(),
                sock.get_inheritable(),
                (sock._io_refs, sock._closed),
                transport.get_extra_info("peername"),
                c.getsockname(),
                bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK),
            )
            transport.close()
        finally:
            c.close()
        srv.close()
        await srv.wait_closed()
        return facts

    return loop.run_until_complete(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_accepted_socket_is_what_socket_accept_makes(loop, host):
    # oxloop accepts on an IPv4 listener in Rust and makes the socket without socket.py's
    # __init__ frame (src/accept.rs): the result is what socket.accept() and asyncio's
    # setblocking(False) give, read on both loops.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        facts = _accept_one(loop, host, family)
    except OSError as exc:  # no IPv6 on this host
        pytest.skip(f"{host}: {exc}")
    kind, (fam, typ, proto), timeout, inheritable, refs, peername, client, nonblocking = facts
    assert kind is socket.socket
    # setblocking(False) (oxloop: accept4's SOCK_NONBLOCK for an IPv4 listener): the fd too.
    assert nonblocking is True
    assert (fam, typ, proto) == (family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    assert type(fam) is socket.AddressFamily and type(typ) is socket.SocketKind
    # accept4(SOCK_CLOEXEC): not inherited by child processes.
    assert timeout == 0.0 and inheritable is False
    assert refs == (0, False)
    assert peername == client
    assert type(peername[0]) is str and type(peername[1]) is int


@pytest.mark.parametrize(
    "server_host, client_host",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.200.30.9", "127.1.22.100"),
        ("127.255.10.99", "127.9.0.250"),
    ],
)
def test_accepted_addresses_are_socket_accepts_strings(loop, server_host, client_host):
    # oxloop writes the peername and sockname extras of an IPv4 connection itself (src/accept.rs
    # `inet_address`): every width of byte, read on both loops (all of 127/8 is loopback).
    made = loop.create_future()

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            made.set_result(transport)

    async def main():
        srv = await loop.create_server(P, server_host, 0)
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.bind((client_host, 0))
            address = srv.sockets[0].getsockname()
            await loop.sock_connect(c, address)
            transport = await wait(made)
            got = (transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
            transport.close()
            return got, (c.getsockname(), address)
        finally:
            c.close()
            srv.close()
            await srv.wait_closed()

    try:
        got, expected = loop.run_until_complete(main())
    except OSError as exc:  # a host without the whole loopback range
        pytest.skip(f"{server_host}/{client_host}: {exc}")
    assert got == expected
    assert [type(a[0]) for a in got] == [str, str]


def test_a_patched_setblocking_is_called_for_accepted_sockets(loop, monkeypatch):
    # asyncio's accept loop calls conn.setblocking(False); oxloop leaves that call out where
    # accept4 made the socket non-blocking, but only while setblocking is _socket's own.
    calls = []
    original = socket.socket.setblocking

    def spy(self, flag):
        # Only the accepted socket is connected when its call comes (not the listener, nor
        # the client's socket, nor the Unix socket of oxloop's layout probe).
        try:
            self.getpeername()
        except OSError:
            connected = False
        else:
            connected = True
        calls.append((connected, flag))
        return original(self, flag)

    monkeypatch.setattr(socket.socket, "setblocking", spy)
    facts = _accept_one(loop)
    assert facts[-1] is True  # non-blocking fd
    # The accepted socket's call.
    assert (True, False) in calls


def test_plain_accepts_run_without_asyncios_setblocking(monkeypatch):
    # 3.10-3.15's `_accept_connection` is the code _loop verified: oxloop runs its statements
    # for plain connections (`Loop._accept_plain`), which take non-blocking sockets from
    # accept4. Every accepted socket is checked as asyncio's on both loops above.
    import oxloop
    from oxloop import _loop

    assert _loop._ACCEPT_PLAIN and _loop._ACCEPT_NOW
    assert _loop._ACCEPT_CONTEXT == (sys.version_info >= (3, 15))
    ran = []
    original = _loop.Loop._accept_plain

    def spy(self, *args):
        ran.append(args[2])
        return original(self, *args)

    monkeypatch.setattr(_loop.Loop, "_accept_plain", spy)
    loop = oxloop.new_event_loop()
    try:
        facts = _accept_one(loop)
    finally:
        loop.close()
    assert facts[-1] is True
    assert len(ran) == (1 if _loop._ACCEPT_PLAIN else 0)


def _child_output_on_both(code: str) -> dict[str, str]:
    """What `python -c code LOOP` prints for LOOP asyncio and oxloop (each must exit 0): for
    audit hooks, which cannot be removed from a process."""
    seen = {}
    for kind in ("asyncio", "oxloop"):
        p = python_subprocess(code, kind)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        seen[kind] = out
    return seen


def test_accepted_sockets_raise_the_socket_new_audit_event():
    # `socket.__new__` is audited by _socket.socket.__init__ (sock_initobj); oxloop raises it
    # itself where it fills an accepted socket without that call (src/accept.rs
    # `accepted_socket`), with socket.accept's arguments: the listener's family, type and
    # protocol. Audit hooks cannot be removed: in a child.
    code = r"""
import asyncio, socket, sys
import oxloop
events = []
def hook(ev, args):
    if ev == "socket.__new__":
        events.append([type(args[0]).__name__, *[int(a) for a in args[1:]]])
sys.addaudithook(hook)
loop = oxloop.new_event_loop() if sys.argv[1] == "oxloop" else asyncio.SelectorEventLoop()
class P(asyncio.Protocol):
    def connection_made(self, t):
        done.set_result(None)
async def connect(srv):
    global done
    done = loop.create_future()
    c = socket.socket()
    c.setblocking(False)
    await loop.sock_connect(c, srv.sockets[0].getsockname())
    await done
    c.close()
async def main():
    srv = await loop.create_server(P, "127.0.0.1", 0)
    await connect(srv)
    before = len(events)
    await connect(srv)
    srv.close()
    return events[before:]
print(loop.run_until_complete(main()))
"""
    seen = _child_output_on_both(code)
    # The client's socket (protocol 0) and the accepted one (the listener's, TCP), on both.
    stream = [int(socket.AF_INET), int(socket.SOCK_STREAM)]
    expected = [["socket", *stream, 0], ["socket", *stream, int(socket.IPPROTO_TCP)]]
    assert seen["asyncio"] == seen["oxloop"] == f"{expected}\n"


def test_an_audit_hook_refusing_an_accepted_socket_is_reported_and_serving_goes_on():
    # A hook that raises on `socket.__new__` makes socket.accept() raise: asyncio's accept
    # loop lets it reach the exception handler, and the server still serves the next client.
    # The refused fd: CPython's socket.accept leaves it open, oxloop closes it
    # (docs/compatibility.md), counted in /proc/self/fd once everything else is closed.
    code = r"""
import asyncio, os, socket, sys
import oxloop
refuse = []
def hook(ev, args):
    if ev == "socket.__new__" and refuse and args[3] == socket.IPPROTO_TCP:
        refuse.pop()
        raise PermissionError("refused by the hook")
sys.addaudithook(hook)
loop = oxloop.new_event_loop() if sys.argv[1] == "oxloop" else asyncio.SelectorEventLoop()
reported = loop.create_future()
loop.set_exception_handler(lambda lp, ctx: reported.set_result(type(ctx.get("exception")).__name__))
lost = loop.create_future()
class P(asyncio.Protocol):
    def connection_made(self, t):
        t.close()
    def connection_lost(self, exc):
        # asyncio closes the socket right after this returns, before the waiter resumes.
        lost.set_result(None)
async def connect(srv):
    c = socket.socket()
    c.setblocking(False)
    await loop.sock_connect(c, srv.sockets[0].getsockname())
    return c
async def main():
    fds = len(os.listdir("/proc/self/fd"))
    srv = await loop.create_server(P, "127.0.0.1", 0)
    refuse.append(1)
    first = await connect(srv)
    error = await asyncio.wait_for(reported, 10)
    second = await connect(srv)
    await asyncio.wait_for(lost, 10)
    first.close()
    second.close()
    srv.close()
    await srv.wait_closed()
    return error, len(os.listdir("/proc/self/fd")) - fds
print(loop.run_until_complete(main()))
"""
    assert _child_output_on_both(code) == {
        "asyncio": "('PermissionError', 1)\n",  # the refused fd, left open
        "oxloop": "('PermissionError', 0)\n",
    }


@pytest.mark.parametrize("name", ["__init__", "_accept"])
def test_a_patched_socket_init_or_accept_is_called_for_accepted_sockets(loop, monkeypatch, name):
    original = getattr(socket.socket, name)
    calls = []

    def patched(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, name, patched)
    facts = _accept_one(loop)
    assert facts[0] is socket.socket and facts[5] == facts[6]
    if name == "_accept":
        # asyncio's loop calls it again until EAGAIN; oxloop's, knowing the queue's length,
        # does not (src/accept.rs).
        assert calls
    else:
        # The accepted one, as socket.py's accept() calls it: the fd by keyword.
        assert [list(kw) for a, kw in calls if kw] == [["fileno"]]


def test_one_accept_event_takes_backlog_connections_or_one_more_from_3_14(loop):
    # selector_events.py `_accept_connection` accepts at most `backlog` connections per read
    # event (bpo-27906), 3.14's one more: with the loop stopped, four connections wait in the
    # kernel's queue of a server with backlog 1; one loop iteration reports the listener once,
    # and what is left in the queue shows how many that event took.
    taken = 2 if sys.version_info >= (3, 14) else 1
    lost = loop.create_future()
    closed = []

    class P(asyncio.Protocol):
        def connection_lost(self, exc):
            closed.append(exc)
            if len(closed) == taken and not lost.done():
                lost.set_result(None)

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)

    async def serve():
        return await loop.create_server(P, sock=lst, backlog=1, start_serving=False)

    srv = loop.run_until_complete(serve())
    clients = [socket.create_connection(lst.getsockname()) for _ in range(4)]
    try:
        # What start_serving() does before its sleep(0): listen(1) (the four stay queued) and
        # the listener's reader, with no loop iteration in between.
        srv._start_serving()
        loop.call_soon(loop.stop)
        loop.run_forever()
        left = socket.socket(fileno=os.dup(lst.fileno()))
        left.setblocking(False)
        remaining = 0
        try:
            while True:
                left.accept()[0].close()
                remaining += 1
        except BlockingIOError:
            pass
        finally:
            left.close()
        assert 4 - remaining == taken
    finally:
        for c in clients:
            c.close()
        # The accepted connections read EOF and close (asyncio.Protocol's eof_received).
        loop.run_until_complete(wait(lost))
        srv.close()
        loop.run_until_complete(srv.wait_closed())

"""The sock_* API, sendfile and DNS on both loops (selector_events.py / base_events.py).

Covers sock_connect / sock_accept / sock_sendall / sock_recv / sock_recv_into, sock_sendto /
sock_recvfrom / sock_recvfrom_into (3.11+), sock_sendfile and loop.sendfile (native and
fallback, offsets and counts, file position afterwards, argument checks), cancellation leaving
no fd registration behind, a socket closed while an operation waits, a socket owned by a
transport being refused, SSL sockets refused, the debug-mode non-blocking check, and
getaddrinfo / getnameinfo giving what the socket module gives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import socket
import ssl
import struct
import sys
import tempfile
import time
from typing import Any

import pytest
from _helpers import fast_path
from _net import (
    CountingSocket,
    Recorder,
    aoutcome,
    close_all,
    counting,
    digest,
    drain_loop,
    payload,
    same_as_stock,
    tcp_pair,
    tcp_server,
    wait,
)

pytestmark = pytest.mark.timeout(60)
PY311 = sys.version_info >= (3, 11)


def nb_socket(family=socket.AF_INET, type=socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(family, type)
    s.setblocking(False)
    return s


async def connected_pair(loop) -> tuple[socket.socket, socket.socket]:
    """(client, server side) TCP sockets connected with sock_connect / sock_accept."""
    with nb_socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = nb_socket()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        await wait(loop.sock_connect(client, listener.getsockname()))
        conn, addr = await wait(accept)
        assert addr == client.getsockname()
        assert conn.gettimeout() == 0  # asyncio makes accepted sockets non-blocking
        return client, conn


def test_connect_accept_sendall_recv(loop, run):
    async def main():
        client, conn = await connected_pair(loop)
        with client, conn:
            data = payload(4 * 1024 * 1024, seed=30)
            send = asyncio.ensure_future(loop.sock_sendall(client, data))
            got = bytearray()
            while len(got) < len(data):
                chunk = await wait(loop.sock_recv(conn, 65536))
                assert chunk
                got += chunk
            assert await wait(send) is None
            assert digest(got) == digest(data)
            buf = bytearray(10)
            await loop.sock_sendall(conn, b"into")
            n = await wait(loop.sock_recv_into(client, buf))
            assert (n, bytes(buf[:n])) == (4, b"into")
            await loop.sock_sendall(conn, b"")  # nothing to send: returns at once
            conn.shutdown(socket.SHUT_WR)
            assert await wait(loop.sock_recv(client, 10)) == b""

    run(main())


@pytest.mark.skipif(not PY311, reason="sock_recvfrom / sock_sendto are new in 3.11")
def test_datagram_sock_methods(loop, run):
    async def main():
        with nb_socket(type=socket.SOCK_DGRAM) as a, nb_socket(type=socket.SOCK_DGRAM) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            recv = asyncio.ensure_future(loop.sock_recvfrom(a, 100))
            await drain_loop(2)
            assert not recv.done()  # waiting on readiness
            assert await loop.sock_sendto(b, b"hello", a.getsockname()) == 5
            assert await wait(recv) == (b"hello", b.getsockname())
            buf = bytearray(3)
            await loop.sock_sendto(b, b"truncated", a.getsockname())
            n, addr = await wait(loop.sock_recvfrom_into(a, buf))
            assert (n, bytes(buf), addr) == (3, b"tru", b.getsockname())
            await loop.sock_sendto(b, b"abcdef", a.getsockname())
            n, _ = await wait(loop.sock_recvfrom_into(a, bytearray(10), 2))
            assert n == 2

    run(main())


@pytest.mark.parametrize("op", ["recv", "recv_into", "accept", "sendall", "recvfrom"])
def test_cancellation_leaves_no_registration(loop, run, op):
    if op == "recvfrom" and not PY311:
        pytest.skip("sock_recvfrom is new in 3.11")

    async def main():
        client, conn = await connected_pair(loop)
        listener = nb_socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        dgram = nb_socket(type=socket.SOCK_DGRAM)
        with client, conn, listener, dgram:
            if op == "recv":
                sock, coro = conn, loop.sock_recv(conn, 10)
            elif op == "recv_into":
                sock, coro = conn, loop.sock_recv_into(conn, bytearray(10))
            elif op == "accept":
                sock, coro = listener, loop.sock_accept(listener)
            elif op == "recvfrom":
                dgram.bind(("127.0.0.1", 0))
                sock, coro = dgram, loop.sock_recvfrom(dgram, 10)
            else:
                # The peer does not read: sendall fills the kernel buffers and waits.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock, coro = client, loop.sock_sendall(client, b"x" * 64 * 1024 * 1024)
            task = asyncio.ensure_future(coro)
            await drain_loop(3)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Nothing left watching the fd: removing a reader or writer finds nothing.
            assert loop.remove_reader(sock.fileno()) is False
            assert loop.remove_writer(sock.fileno()) is False
            # And the socket works for the next operation.
            if op in ("recv", "recv_into"):
                await loop.sock_sendall(client, b"after")
                assert await wait(loop.sock_recv(conn, 10)) == b"after"

    run(main())


def test_socket_closed_while_recv_waits(loop, run):
    """A socket closed under a pending sock_recv: the loop keeps running (no hang, no busy
    loop), and cancelling the orphaned operation afterwards is clean."""

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        client, conn = await connected_pair(loop)
        task = asyncio.ensure_future(loop.sock_recv(conn, 10))
        await drain_loop(2)
        conn.close()
        await loop.sock_sendall(client, b"to a closed peer")
        await drain_loop(5)
        # The loop neither hangs nor spins on the dead registration: a timer still fires, and
        # the wait costs little CPU. (A real wait: what is measured is the idle loop itself.)
        cpu = time.process_time()
        await asyncio.sleep(0.2)
        assert time.process_time() - cpu < 0.15
        task.cancel()
        try:
            await wait(task)
        except (asyncio.CancelledError, OSError):
            pass
        client.close()
        await drain_loop(2)
        assert errors == []

    run(main())


def test_socket_owned_by_a_transport_is_refused(loop, run):
    """sock_recv on the fd of a live transport raises RuntimeError once it would have to wait
    (selector_events._ensure_fd_no_transport); after the transport closed it is allowed."""

    async def main():
        srv, client, peer = await tcp_pair(loop)
        fd = client.transport.get_extra_info("socket").fileno()
        same_fd = socket.socket(fileno=fd)  # a second object on the transport's own fd
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(same_fd, 10)
            # add_reader / remove_reader refuse the fd too.
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.remove_reader(fd)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_writer(fd, lambda: None)
        finally:
            same_fd.detach()
        await close_all(srv, client)

    run(main())


def test_ssl_sockets_and_blocking_sockets_are_refused(loop, run):
    async def main():
        ctx = ssl.create_default_context()
        sock = socket.socket()
        with ctx.wrap_socket(sock, server_hostname="x", do_handshake_on_connect=False) as ssock:
            for call in (
                lambda: loop.sock_recv(ssock, 1),
                lambda: loop.sock_sendall(ssock, b"x"),
                lambda: loop.sock_connect(ssock, ("127.0.0.1", 1)),
                lambda: loop.sock_accept(ssock),
            ):
                with pytest.raises(TypeError, match="SSLSocket"):
                    await call()
        loop.set_debug(True)
        try:
            with socket.socket() as blocking:
                with pytest.raises(ValueError, match="must be non-blocking"):
                    await loop.sock_recv(blocking, 1)
        finally:
            loop.set_debug(False)

    run(main())


def test_sock_connect_errors(loop, loop_kind):
    async def scenario(lp):
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            addr = closed.getsockname()
            with nb_socket() as s:
                refused = await aoutcome(lp.sock_connect(s, addr))
            with nb_socket() as s:
                overflow = await aoutcome(lp.sock_connect(s, ("127.0.0.1", 70000)))
            with nb_socket() as s:
                wrong_family = await aoutcome(lp.sock_connect(s, "/tmp/x"))
        return refused, overflow[0], wrong_family[0]

    refused, *_ = same_as_stock(loop, loop_kind, scenario)
    assert refused == (ConnectionRefusedError, errno.ECONNREFUSED)


@pytest.fixture
def data_file():
    data = payload(3 * 1024 * 1024 + 123, seed=31)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        yield f, data


def test_sock_sendfile(loop, run, data_file):
    f, data = data_file

    async def main():
        client, conn = await connected_pair(loop)
        with client, conn:

            async def read_all(n):
                got = bytearray()
                while len(got) < n:
                    chunk = await wait(loop.sock_recv(conn, 1 << 20))
                    assert chunk
                    got += chunk
                return bytes(got)

            reader = asyncio.ensure_future(read_all(len(data)))
            assert await wait(loop.sock_sendfile(client, f)) == len(data)
            assert digest(await reader) == digest(data)
            assert f.tell() == len(data)  # the file position follows what was sent

            reader = asyncio.ensure_future(read_all(1000))
            assert await wait(loop.sock_sendfile(client, f, 5000, 1000)) == 1000
            assert await reader == data[5000:6000]
            assert f.tell() == 6000

            # Past the end: nothing sent.
            assert await loop.sock_sendfile(client, f, len(data) + 10) == 0

    run(main())


def test_sock_sendfile_argument_checks(loop, loop_kind, data_file):
    f, _ = data_file

    async def scenario(lp):
        with nb_socket(type=socket.SOCK_DGRAM) as udp, nb_socket() as tcp:
            with open(__file__) as text:
                cases = [
                    lp.sock_sendfile(tcp, text),
                    lp.sock_sendfile(udp, f),
                    lp.sock_sendfile(tcp, f, -1),
                    lp.sock_sendfile(tcp, f, "0"),
                    lp.sock_sendfile(tcp, f, 0, 0),
                    lp.sock_sendfile(tcp, f, 0, 1.5),
                ]
                return [await aoutcome(c) for c in cases]

    got = same_as_stock(loop, loop_kind, scenario)
    assert [g[0] for g in got] == [
        ValueError,
        ValueError,
        ValueError,
        TypeError,
        ValueError,
        TypeError,
    ]


def test_loop_sendfile_on_a_transport(loop, run, data_file):
    f, data = data_file

    async def main():
        srv, client, peer = await tcp_pair(loop)
        t = client.transport
        t.write(b"head:")
        sending = asyncio.ensure_future(loop.sendfile(t, f))
        await asyncio.sleep(0)
        if not sending.done():
            # While sendfile runs the transport refuses writes (selector_events).
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                t.write(b"x")
        assert await wait(sending) == len(data)
        t.write(b":tail")
        got = await peer.until(len(data) + 10)
        assert digest(got) == digest(b"head:" + data + b":tail")
        assert f.tell() == len(data)
        # offset / count, and the transport still reads and writes afterwards.
        assert await wait(loop.sendfile(t, f, 10, 20)) == 20
        assert (await peer.until(len(data) + 30))[-20:] == data[10:30]
        assert f.tell() == 30
        peer.transport.write(b"back")
        assert await client.until(4) == b"back"
        await close_all(srv, client)

    run(main())


def test_loop_sendfile_fallback_false_and_bad_transports(loop, loop_kind, data_file):
    f, _ = data_file

    async def scenario(lp):
        out = []
        srv, client, peer = await tcp_pair(lp)
        client.transport.close()
        out.append(await aoutcome(lp.sendfile(client.transport, f)))
        dt, _ = await lp.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        out.append(await aoutcome(lp.sendfile(dt, f)))
        dt.close()
        await close_all(srv, client)
        return out

    got = same_as_stock(loop, loop_kind, scenario)
    assert [g[0] for g in got] == [RuntimeError, RuntimeError]


def test_streams_sendfile_over_unix_socket(loop, run, data_file):
    f, data = data_file

    async def main():
        a, b = socket.socketpair()
        ra, wa = await asyncio.open_connection(sock=a)
        rb, wb = await asyncio.open_connection(sock=b)
        # Read while sending: the StreamReader stops reading past twice its limit.
        received = asyncio.ensure_future(rb.read())
        assert await wait(loop.sendfile(wa.transport, f)) == len(data)
        wa.write_eof()
        assert digest(await wait(received)) == digest(data)
        for w in (wa, wb):
            w.close()
            await w.wait_closed()

    run(main())


GAI_CASES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "http", {"type": socket.SOCK_STREAM}),
    ("localhost", 443, {"family": socket.AF_INET, "type": socket.SOCK_STREAM}),
    ("::1", 53, {"type": socket.SOCK_DGRAM}),
    (None, 8080, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    (b"127.0.0.1", b"80", {}),
    ("127.0.0.1", None, {"proto": socket.IPPROTO_TCP}),
]


@pytest.mark.parametrize("host,port,kw", GAI_CASES)
def test_getaddrinfo_matches_the_socket_module(loop, run, host, port, kw):
    try:
        expected = socket.getaddrinfo(host, port, **kw)
    except socket.gaierror as exc:
        with pytest.raises(socket.gaierror) as info:
            run(loop.getaddrinfo(host, port, **kw))
        assert info.value.errno == exc.errno
        return
    assert run(loop.getaddrinfo(host, port, **kw)) == expected


def test_getaddrinfo_errors(loop, loop_kind):
    async def scenario(lp):
        return [
            await aoutcome(lp.getaddrinfo(None, None)),
            await aoutcome(lp.getaddrinfo("127.0.0.1", 70000)),
            await aoutcome(lp.getaddrinfo("127.0.0.1", 80, family=12345)),
            await aoutcome(lp.getaddrinfo("not-an-ip", 80, flags=socket.AI_NUMERICHOST)),
        ]

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[0][0] is socket.gaierror
    assert got[3][0] is socket.gaierror


@pytest.mark.parametrize(
    "addr,flags",
    [
        (("127.0.0.1", 80), 0),
        (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
        (("::1", 443, 0, 0), socket.NI_NUMERICHOST),
        (("127.0.0.1", 53), socket.NI_DGRAM),
    ],
)
def test_getnameinfo_matches_the_socket_module(loop, run, addr, flags):
    assert run(loop.getnameinfo(addr, flags)) == socket.getnameinfo(addr, flags)


def test_getnameinfo_errors(loop, loop_kind):
    async def scenario(lp):
        return [
            await aoutcome(lp.getnameinfo(("127.0.0.1",))),
            await aoutcome(lp.getnameinfo("127.0.0.1")),
            await aoutcome(lp.getnameinfo(("127.0.0.1", 70000))),
        ]

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[1][0] is TypeError


def test_create_server_and_connect_on_sockets_from_sock_api(loop, run):
    """sock_accept'ed sockets handed to connect_accepted_socket, and transports created from
    sockets that went through the sock_* API first."""

    async def main():
        srv, addr = await tcp_server(loop)
        s = nb_socket()
        await loop.sock_connect(s, addr)
        await loop.sock_sendall(s, b"raw first, ")
        _, proto = await loop.create_connection(lambda: Recorder(loop), sock=s)
        proto.transport.write(b"then transport")
        peer = await srv.accepted(0)
        assert await peer.until(25) == b"raw first, then transport"
        await close_all(srv, proto)

    run(main())


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, *args, **kwargs):
        self.calls += 1
        return super().submit(*args, **kwargs)


@pytest.mark.parametrize(
    ("host", "port"),
    [("127.0.0.1", 80), ("::1", "443"), (None, 8080), (b"10.1.2.3", b"22"), ("fe80::1%1", 0)],
)
def test_numeric_getaddrinfo_needs_no_thread_on_oxloop(loop, loop_kind, run, host, port):
    # Same answer as the socket module on both loops; oxloop skips the executor round trip for
    # IP literals (uvloop does the same), stock asyncio always uses it.
    executor = _CountingExecutor()
    loop.set_default_executor(executor)
    try:
        expected = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        assert run(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)) == expected
        assert executor.calls == (0 if loop_kind == "oxloop" else 1)
        # A name still goes through the executor, on both loops.
        run(loop.getaddrinfo("localhost", 80))
        assert executor.calls == (1 if loop_kind == "oxloop" else 2)
    finally:
        run(loop.shutdown_default_executor())


def test_numeric_getnameinfo_needs_no_thread_on_oxloop(loop, loop_kind, run):
    executor = _CountingExecutor()
    loop.set_default_executor(executor)
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    try:
        got = run(loop.getnameinfo(("127.0.0.1", 8080), flags))
        assert got == socket.getnameinfo(("127.0.0.1", 8080), flags) == ("127.0.0.1", "8080")
        assert executor.calls == (0 if loop_kind == "oxloop" else 1)
        with pytest.raises(TypeError):
            run(loop.getnameinfo("not a sockaddr", flags))
    finally:
        run(loop.shutdown_default_executor())


# -- sock_recv / sock_recv_into / sock_sendall: oxloop's native paths (src/sock.rs) against
# -- asyncio's selector_events.py: results, errors, cancellation, concurrent waiters ---------


def nb_pair(family=socket.AF_UNIX, type=socket.SOCK_STREAM) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(family, type)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def registered(loop, sock: socket.socket) -> bool:
    return sock.fileno() in loop._selector.get_map()


def summary(exc: BaseException | None) -> tuple[Any, ...]:
    """An exception compared across loops: type, errno, and the message unless it is an
    OSError (whose message is strerror, the same on both loops by construction)."""
    if exc is None:
        return ("ok",)
    if isinstance(exc, OSError):
        return (type(exc), exc.errno)
    return (type(exc), str(exc))


async def result_of(aw_factory) -> tuple[Any, ...]:
    try:
        return ("ok", await aw_factory())
    except Exception as exc:
        return summary(exc)


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_recv_and_recv_into_results(loop, loop_kind, run, family):
    """Data already there and data that has to be waited for, partial reads, recv(0), and
    recv_into through memoryview slices (only the slice is written)."""

    async def main():
        if family == "tcp":
            a, b = await connected_pair(loop)
        else:
            a, b = nb_pair()
        with a, b:
            await loop.sock_sendall(a, b"0123456789")
            await drain_loop(2)
            assert await wait(loop.sock_recv(b, 4)) == b"0123"  # partial, immediate
            assert await wait(loop.sock_recv(b, 0)) == b""  # recv(0): no read at all
            assert await wait(loop.sock_recv(b, 100)) == b"456789"
            pending = asyncio.ensure_future(loop.sock_recv(b, 100))
            await drain_loop(3)
            assert not pending.done() and registered(loop, b)
            callback = loop._selector.get_key(b).data[0]._callback
            if fast_path(loop_kind, "sock_methods"):  # the native path, not asyncio's fallback
                assert type(callback).__name__ == "SockWaiter"
            assert callback.__name__ == "_sock_recv"
            await loop.sock_sendall(a, b"later")
            assert await wait(pending) == b"later"
            assert not registered(loop, b)

            buf = bytearray(b"." * 20)
            await loop.sock_sendall(a, b"abc")
            await drain_loop(2)
            assert await wait(loop.sock_recv_into(b, memoryview(buf)[5:10])) == 3
            assert buf == b".....abc" + b"." * 12
            pending = asyncio.ensure_future(loop.sock_recv_into(b, memoryview(buf)[12:14]))
            await drain_loop(3)
            assert not pending.done() and registered(loop, b)
            await loop.sock_sendall(a, b"XYZ")
            assert await wait(pending) == 2
            assert buf == b".....abc...." + b"XY" + b"." * 6
            assert await wait(loop.sock_recv_into(b, bytearray(8))) == 1  # the "Z" left over
            assert not registered(loop, b)

    run(main())


def test_recv_of_a_datagram_socket_truncates_as_asyncio(loop, loop_kind):
    async def scenario(lp):
        a, b = nb_pair(type=socket.SOCK_DGRAM)
        with a, b:
            await lp.sock_sendall(a, b"datagram-one")
            await lp.sock_sendall(a, b"datagram-two")
            await lp.sock_sendall(a, b"")  # an empty datagram is a datagram
            first = await wait(lp.sock_recv(b, 4))
            buf = bytearray(100)
            n = await wait(lp.sock_recv_into(b, buf))
            empty = await wait(lp.sock_recv(b, 10))
            return first, bytes(buf[:n]), empty

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == (b"data", b"datagram-two", b"")


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "mv-slice", "array"])
def test_sendall_of_a_multi_megabyte_buffer_to_a_slow_reader(loop, run, kind):
    """sendall of 6 MB that the peer reads in small steps: it waits for writability many
    times; every byte arrives once, in order (compared by hash)."""
    import array

    raw = payload(6 * 1024 * 1024 + 17, seed=61)
    if kind == "bytes":
        data, expected = raw, raw
    elif kind == "bytearray":
        data, expected = bytearray(raw), raw
    elif kind == "memoryview":
        data, expected = memoryview(raw), raw
    elif kind == "mv-slice":
        data, expected = memoryview(bytearray(raw))[3:-5], raw[3:-5]
    else:  # not one of the native path's types: asyncio's own sock_sendall
        data, expected = array.array("B", raw), raw

    async def main():
        a, b = await connected_pair(loop)
        with a, b:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            send = asyncio.ensure_future(loop.sock_sendall(a, data))
            got = bytearray()
            steps = 0
            while len(got) < len(expected):
                chunk = await wait(loop.sock_recv(b, 8192))
                assert chunk
                got += chunk
                steps += 1
                await asyncio.sleep(0)
            assert await wait(send) is None
            assert steps > 10  # the sender really had to wait
            assert digest(got) == digest(expected)
            assert not registered(loop, a) and not registered(loop, b)

    run(main())


def test_sendall_keeps_a_bytearray_exported_while_it_waits(loop, run):
    """As asyncio (which holds memoryview(data)): resizing the bytearray being sent raises
    BufferError until sendall is done."""

    async def main():
        a, b = nb_pair()
        with a, b:
            data = bytearray(payload(4 * 1024 * 1024, seed=62))
            send = asyncio.ensure_future(loop.sock_sendall(a, data))
            await drain_loop(3)
            assert not send.done()
            with pytest.raises(BufferError):
                data.extend(b"more")
            got = bytearray()
            while len(got) < len(data):
                got += await wait(loop.sock_recv(b, 262144))
            await wait(send)
            data.extend(b"more")  # released
            assert digest(got) == digest(bytes(data[:-4]))

    run(main())


def test_recv_eof(loop, run):
    async def main():
        a, b = nb_pair()
        with a, b:
            pending = asyncio.ensure_future(loop.sock_recv(b, 10))
            await drain_loop(3)
            assert not pending.done()
            a.shutdown(socket.SHUT_WR)
            assert await wait(pending) == b""  # EOF while waiting
            assert await wait(loop.sock_recv(b, 10)) == b""  # EOF at once
            buf = bytearray(4)
            assert await wait(loop.sock_recv_into(b, buf)) == 0
            assert not registered(loop, b)

    run(main())


def test_connection_reset_and_broken_pipe(loop, loop_kind):
    """A peer that resets: a waiting recv, an immediate recv and a sendall all get the errors
    asyncio gives (ConnectionResetError / BrokenPipeError), and nothing stays registered."""

    async def scenario(lp):
        outcomes = []
        for mode in ("waiting", "immediate", "sendall", "recv_into"):
            a, b = await connected_pair(lp)
            with a, b:
                if mode == "waiting":
                    op = asyncio.ensure_future(lp.sock_recv(b, 10))
                elif mode == "recv_into":
                    op = asyncio.ensure_future(lp.sock_recv_into(b, bytearray(10)))
                await drain_loop(3)
                # RST: close with a zero linger time.
                a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                a.close()
                await drain_loop(2)
                if mode == "immediate":
                    op = asyncio.ensure_future(lp.sock_recv(b, 10))
                elif mode == "sendall":
                    op = asyncio.ensure_future(lp.sock_sendall(b, b"x" * 100))
                outcomes.append(await result_of(lambda op=op: wait(op)))
                outcomes.append(registered(lp, b))
        return outcomes

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[0] == (ConnectionResetError, errno.ECONNRESET)
    assert not any(got[1::2])


def test_concurrent_waiters_on_one_socket(loop, loop_kind):
    """Two sock_recv on one socket: as in asyncio, the second registration replaces the first
    (add_reader), so the data goes to the second and the first waits until cancelled."""

    async def scenario(lp):
        a, b = nb_pair()
        with a, b:
            first = asyncio.ensure_future(lp.sock_recv(b, 10))
            await drain_loop(3)
            second = asyncio.ensure_future(lp.sock_recv(b, 10))
            await drain_loop(3)
            await lp.sock_sendall(a, b"data")
            got = await wait(second)
            await drain_loop(3)
            first_done = first.done()
            still = registered(lp, b)
            first.cancel()
            try:
                await first
            except asyncio.CancelledError:
                pass
            # Cancelling the replaced waiter removes nothing (its handle was cancelled), and
            # the socket still works.
            ok = lp.add_reader(b, lambda: None) is None
            removed = lp.remove_reader(b)
            await lp.sock_sendall(a, b"after")
            after = await wait(lp.sock_recv(b, 10))
            return got, first_done, still, ok, removed, after, registered(lp, b)

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == (b"data", False, False, True, True, b"after", False)


@pytest.mark.parametrize("op", ["recv", "recv_into", "sendall"])
def test_socket_closed_while_an_operation_waits(loop, run, op):
    """The socket is closed under a waiting operation: the loop goes on (the epoll
    registration went with the fd), and cancelling the orphan leaves nothing behind."""

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        a, b = nb_pair()
        if op == "recv":
            task = asyncio.ensure_future(loop.sock_recv(b, 10))
        elif op == "recv_into":
            task = asyncio.ensure_future(loop.sock_recv_into(b, bytearray(10)))
        else:
            task = asyncio.ensure_future(loop.sock_sendall(b, b"x" * 8 * 1024 * 1024))
        await drain_loop(3)
        assert not task.done()
        fd = b.fileno()
        b.close()
        await drain_loop(5)
        timer = loop.create_future()
        loop.call_later(0.01, timer.set_result, None)
        await wait(timer)  # the loop still runs timers
        task.cancel()
        try:
            await wait(task)
        except (asyncio.CancelledError, OSError):
            pass
        assert fd not in loop._selector.get_map()
        a.close()
        await drain_loop(2)
        assert errors == []

    run(main())


def test_cancelled_operations_leave_the_fd_free_for_add_reader(loop, run):
    async def main():
        a, b = nb_pair()
        with a, b:
            for make in (
                lambda: loop.sock_recv(b, 10),
                lambda: loop.sock_recv_into(b, bytearray(10)),
            ):
                task = asyncio.ensure_future(make())
                await drain_loop(3)
                assert registered(loop, b)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert not registered(loop, b)
            fired = loop.create_future()
            loop.add_reader(b, lambda: fired.done() or fired.set_result(b.recv(10)))
            await loop.sock_sendall(a, b"ping")
            assert await wait(fired) == b"ping"
            assert loop.remove_reader(b) is True
            assert not registered(loop, b)

    run(main())


class _RecordingSocket(socket.socket):
    """A socket subclass whose recv / recv_into / send are overridden: asyncio calls them."""

    calls: list[str]

    def recv(self, n, *args):
        self.calls.append("recv")
        return super().recv(n, *args)

    def recv_into(self, buf, *args):
        self.calls.append("recv_into")
        return super().recv_into(buf, *args)

    def send(self, data, *args):
        self.calls.append("send")
        return super().send(data, *args)


def test_socket_subclass_methods_are_called(loop, loop_kind):
    async def scenario(lp):
        a, plain = nb_pair()
        b = _RecordingSocket(fileno=plain.detach())
        b.setblocking(False)
        b.calls = []
        with a, b:
            await lp.sock_sendall(b, b"out")
            await lp.sock_sendall(a, b"in")
            await drain_loop(2)
            got = await wait(lp.sock_recv(b, 1))
            n = await wait(lp.sock_recv_into(b, bytearray(5)))
            pending = asyncio.ensure_future(lp.sock_recv(b, 5))
            await drain_loop(2)
            await lp.sock_sendall(a, b"!")
            return got, n, await wait(pending), b.calls

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == (b"i", 1, b"!", ["send", "recv", "recv_into", "recv", "recv"])


def test_bad_arguments_give_asyncios_errors(loop, loop_kind):
    import array

    async def scenario(lp):
        a, b = nb_pair()
        closed, _peer = nb_pair()
        _peer.close()
        closed.close()
        out = []
        with a, b:
            await lp.sock_sendall(a, b"abcdef")
            await drain_loop(2)
            for factory in (
                lambda: lp.sock_recv(b, -1),
                lambda: lp.sock_recv(b, 1.5),
                lambda: lp.sock_recv(b, "1"),
                lambda: lp.sock_recv(b, 2**70),
                lambda: lp.sock_recv(b, True),
                lambda: lp.sock_recv(closed, 1),
                lambda: lp.sock_recv_into(b, b"read-only"),
                lambda: lp.sock_recv_into(b, memoryview(b"read-only")),
                lambda: lp.sock_recv_into(b, memoryview(bytearray(8))[::2]),
                lambda: lp.sock_recv_into(b, array.array("b", b"\0" * 2)),
                lambda: lp.sock_recv_into(closed, bytearray(1)),
                lambda: lp.sock_sendall(a, "text"),
                lambda: lp.sock_sendall(a, None),
                lambda: lp.sock_sendall(a, memoryview(b"xyxyxy")[::2]),
                lambda: lp.sock_sendall(closed, b"x"),
                lambda: lp.sock_sendall(closed, b""),
                lambda: wait(lp.sock_recv(b, 1024 * 1024), 0.5),  # beyond the shared buffer
            ):
                out.append(await result_of(factory))
            mv = memoryview(bytearray(4))
            mv.release()
            out.append(await result_of(lambda: lp.sock_recv_into(b, mv)))
            out.append(await result_of(lambda: lp.sock_sendall(a, mv)))
            await lp.sock_sendall(a, b"end")
            out.append(await result_of(lambda: wait(lp.sock_recv(b, 100))))
        return out

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[0] == (ValueError, "negative buffersize in recv")
    assert got[5] == (OSError, errno.EBADF)
    assert got[-1] == ("ok", b"end")


def test_socket_with_a_timeout_and_debug_mode(loop, run):
    """A socket with a timeout and debug mode take asyncio's own path: same results."""

    async def main():
        a, b = nb_pair()
        with a, b:
            b.settimeout(5.0)
            await loop.sock_sendall(a, b"timeout-socket")
            await drain_loop(2)
            assert await wait(loop.sock_recv(b, 100)) == b"timeout-socket"
            b.setblocking(False)
            loop.set_debug(True)
            try:
                pending = asyncio.ensure_future(loop.sock_recv(b, 100))
                await drain_loop(3)
                await loop.sock_sendall(a, memoryview(b"debug"))
                assert await wait(pending) == b"debug"
                assert not registered(loop, b)
            finally:
                loop.set_debug(False)

    run(main())


def test_waiting_operations_are_collected_with_their_loop(loop_factory):
    """A sock_recv still waiting when its loop is closed: the task, its future and the
    native callback form a cycle the garbage collector frees (no leak)."""
    import gc
    import weakref

    lp = loop_factory()
    a, b = nb_pair()
    try:
        task = lp.create_task(lp.sock_recv(b, 10))
        lp.run_until_complete(drain_loop(3))
        assert not task.done()
        ref = weakref.ref(task)
        # Asyncio logs "Task was destroyed but it is pending!" for it, as for any such task.
        lp.set_exception_handler(lambda lp_, ctx: None)
        del task
        lp.close()
        gc.collect()
        assert ref() is None
    finally:
        a.close()
        b.close()


def test_loop_subclass_methods_are_called(loop):
    """A loop subclass that overrides the methods sock_recv / sock_sendall go through sees
    the calls asyncio's code makes (oxloop's native steps stand in for them only on an exact
    oxloop.Loop)."""
    calls: list[str] = []
    base = type(loop)

    class Sub(base):  # type: ignore[misc, valid-type]
        def create_future(self):
            calls.append("create_future")
            return super().create_future()

        def _ensure_fd_no_transport(self, fd):
            calls.append("ensure")
            return super()._ensure_fd_no_transport(fd)

        def remove_reader(self, fd):
            calls.append("remove_reader")
            return super().remove_reader(fd)

    lp = Sub()
    try:

        async def main():
            a, b = nb_pair()
            with a, b:
                task = asyncio.ensure_future(lp.sock_recv(b, 10))
                await drain_loop(3)
                await lp.sock_sendall(a, b"hi")
                got = await wait(task)
                await drain_loop(3)
                return got

        assert lp.run_until_complete(main()) == b"hi"
        # remove_reader checks for a transport again (selector_events.py).
        assert [c for c in calls if c != "create_future"] == ["ensure", "remove_reader", "ensure"]
        assert "create_future" in calls
    finally:
        lp.close()


def _socket_at(fd: int) -> tuple[socket.socket, socket.socket]:
    """A connected non-blocking pair whose first socket has the (free) fd number `fd`."""
    c, d = nb_pair()
    if d.fileno() == fd:
        c, d = d, c
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        at = socket.socket(fileno=fd)
        c.close()
        c = at
        c.setblocking(False)
    return c, d


@pytest.mark.parametrize("dup", [False, True])
def test_waits_on_a_new_socket_at_a_closed_sockets_fd_number(loop, run, dup):
    """sock_recv waits on a socket, which is then closed (with `dup`, while a dup keeps its
    file open and readable); a new socket given the same fd number waits and receives its own
    data, and only that."""

    async def main():
        a, b = nb_pair()
        fd = a.fileno()
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await drain_loop(3)
        await loop.sock_sendall(b, b"first")
        assert await wait(task) == b"first"
        kept = a.dup() if dup else None
        a.close()
        if dup:
            await loop.sock_sendall(b, b"for the dup")
        new, peer = _socket_at(fd)
        try:
            for i in range(3):
                task = asyncio.ensure_future(loop.sock_recv(new, 100))
                await drain_loop(3)
                assert not task.done()
                await loop.sock_sendall(peer, b"new %d" % i)
                assert await wait(task) == b"new %d" % i
            if kept is not None:
                assert kept.recv(100) == b"for the dup"
        finally:
            for s in (new, peer, b, kept):
                if s is not None:
                    s.close()

    run(main())


# -- a socket closed under (or after) a sock_* operation, then remove_reader / remove_writer
# of the socket object: the registration asyncio's sock_* make is by fd number, so the closed
# socket (fileno() -1) leads to none and both loops raise selectors' ValueError; the
# operation then ends as asyncio ends it (it waits until cancelled). A registration made with
# the socket object itself is found (tests/test_io.py).


def _tcp_nb_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _start_op(lp, family: str, op: str):
    """(task, socket it waits on, things to close): a sock_* operation that has to wait."""
    if op in ("accept", "connect"):
        listener = socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET)
        listener.setblocking(False)
        listener.bind("" if family == "unix" else ("127.0.0.1", 0))
        if op == "accept":
            listener.listen()
            return asyncio.ensure_future(lp.sock_accept(listener)), listener, [listener]
        # A full accept queue (backlog 0, one connection queued, never accepted): the next
        # TCP connect stays in progress (its SYNs are dropped).
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname())
        a = nb_socket()
        task = asyncio.ensure_future(lp.sock_connect(a, listener.getsockname()))
        return task, a, [listener, filler, a]
    a, b = nb_pair() if family == "unix" else _tcp_nb_pair()
    if op == "recv":
        task = asyncio.ensure_future(lp.sock_recv(a, 10))
    elif op == "recv_into":
        task = asyncio.ensure_future(lp.sock_recv_into(a, bytearray(10)))
    else:
        task = asyncio.ensure_future(lp.sock_sendall(a, b"x" * 16 * 1024 * 1024))
    return task, a, [a, b]


async def _ending(task) -> tuple[Any, ...]:
    """How `task` ends: ("ok",) or the summary of what it raises (cancellation included)."""
    try:
        await task
    except BaseException as exc:
        return summary(exc)
    return ("ok",)


def _closed_socket_scenario(family: str, op: str, cancel_first: bool):
    async def scenario(lp):
        task, a, to_close = _start_op(lp, family, op)
        out = []
        try:
            await drain_loop(3)
            out.append(task.done())
            fd = a.fileno()
            if cancel_first:
                task.cancel()
                out.append(await _ending(task))
            a.close()
            for remove in (lp.remove_reader, lp.remove_writer):
                try:
                    out.append(remove(a))
                except Exception as exc:
                    out.append(summary(exc))
            await drain_loop(3)
            out.append(task.done())
            if not cancel_first:
                task.cancel()
                out.append(await _ending(task))
            out.append(fd in lp._selector.get_map())
        finally:
            for s in to_close:
                s.close()
        return out

    return scenario


@pytest.mark.parametrize("cancel_first", [False, True], ids=["pending", "cancelled"])
@pytest.mark.parametrize(
    ("family", "op"),
    [
        ("unix", "recv"),
        ("unix", "recv_into"),
        ("unix", "sendall"),
        ("unix", "accept"),
        ("tcp", "recv"),
        ("tcp", "recv_into"),
        ("tcp", "sendall"),
        ("tcp", "accept"),
        # A Unix connect does not wait: it completes or fails at once (EAGAIN).
        ("tcp", "connect"),
    ],
)
def test_socket_closed_under_an_operation_then_removed(loop, loop_kind, family, op, cancel_first):
    got = same_as_stock(loop, loop_kind, _closed_socket_scenario(family, op, cancel_first))
    invalid = (ValueError, "Invalid file descriptor: -1")
    cancelled = (asyncio.CancelledError, "")
    if cancel_first:
        assert got == [False, cancelled, invalid, invalid, True, False]
    else:
        assert got == [False, invalid, invalid, False, cancelled, False]


# -- zero-length receives: socket.recv(0) and recv_into of an empty buffer make no syscall
# (Modules/socketmodule.c, sock_recv_guts), so asyncio's sock_recv(sock, 0) returns b'' (and
# sock_recv_into(sock, <empty>) 0) at once on any socket: listening, unconnected, connected
# with nothing to read, closed.


def _zero_length_sockets(family: str):
    fam = socket.AF_UNIX if family == "unix" else socket.AF_INET
    listening = socket.socket(fam)
    listening.bind("" if family == "unix" else ("127.0.0.1", 0))
    listening.listen()
    unconnected = socket.socket(fam)
    connected, peer = nb_pair() if family == "unix" else _tcp_nb_pair()
    closed = socket.socket(fam)
    closed.close()
    for s in (listening, unconnected):
        s.setblocking(False)
    return {
        "listening": listening,
        "unconnected": unconnected,
        "connected": connected,
        "closed": closed,
    }, [listening, unconnected, connected, peer]


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_zero_length_receives(loop, loop_kind, family):
    async def scenario(lp):
        socks, to_close = _zero_length_sockets(family)
        out = {}
        try:
            for name, s in socks.items():
                for what, make in (
                    ("recv", lambda s=s: lp.sock_recv(s, 0)),
                    ("recv_into", lambda s=s: lp.sock_recv_into(s, bytearray())),
                    (
                        "recv_into_view",
                        lambda s=s: lp.sock_recv_into(s, memoryview(bytearray(8))[:0]),
                    ),
                    ("recv_1", lambda s=s: lp.sock_recv(s, 1)),
                ):
                    task = asyncio.ensure_future(make())
                    await drain_loop(3)
                    if task.done():
                        exc = task.exception()
                        out[name, what] = ("result", task.result()) if exc is None else summary(exc)
                    else:
                        task.cancel()
                        out[name, what] = "waits"
                        await _ending(task)
        finally:
            for s in to_close:
                s.close()
        return out

    got = same_as_stock(loop, loop_kind, scenario)
    for name in ("listening", "unconnected", "connected", "closed"):
        assert got[name, "recv"] == ("result", b"")
        assert got[name, "recv_into"] == ("result", 0)
        assert got[name, "recv_into_view"] == ("result", 0)
    assert got["connected", "recv_1"] == "waits"
    assert got["listening", "recv_1"][0] is OSError


# -- a socket subclass that overrides its I/O methods (a wrapper counting or logging I/O):
# asyncio's sock_* call the object's methods, so both loops must (oxloop's native paths take
# only the exact socket.socket).


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_socket_subclass_methods_are_called_on_every_path(loop, loop_kind, family):
    # As test_socket_subclass_methods_are_called, over TCP too, with a sendall that waits and
    # with sock_accept.
    async def scenario(lp):
        CountingSocket.calls = {}
        a, b = nb_pair() if family == "unix" else _tcp_nb_pair()
        a = counting(a)
        with a, b:
            b.send(b"1")
            await drain_loop(2)
            assert await wait(lp.sock_recv(a, 10)) == b"1"  # data there: the first attempt
            task = asyncio.ensure_future(lp.sock_recv(a, 10))  # waits, then reads
            await drain_loop(3)
            b.send(b"2")
            assert await wait(task) == b"2"
            buf = bytearray(10)
            task = asyncio.ensure_future(lp.sock_recv_into(a, buf))
            await drain_loop(3)
            b.send(b"3")
            assert await wait(task) == 1 and buf[:1] == b"3"
            await wait(lp.sock_sendall(a, b"out"))
            await drain_loop(2)
            assert b.recv(10) == b"out"
            # A send that must wait for room: the rest goes out from the waiter.
            big = payload(4 * 1024 * 1024)
            task = asyncio.ensure_future(lp.sock_sendall(a, big))
            got = bytearray()
            while len(got) < len(big):
                await drain_loop(1)
                try:
                    got += b.recv(1024 * 1024)
                except BlockingIOError:
                    pass
            await wait(task)
            assert digest(got) == digest(big)
        with socket.socket(a.family) as raw:
            raw.bind("" if family == "unix" else ("127.0.0.1", 0))
            listener = counting(raw.dup())
        with listener:
            listener.listen()
            peer = socket.socket(listener.family)
            with peer:
                peer.connect(listener.getsockname())
                conn, _ = await wait(lp.sock_accept(listener))
                conn.close()
        calls = dict(CountingSocket.calls)
        # The waiting sendall's own count depends on the socket buffer sizes: only "called".
        assert calls.pop("send") >= 2
        return calls

    got = same_as_stock(loop, loop_kind, scenario)
    # A wait costs one more call: the first attempt would block, the waiter's succeeds.
    assert got == {"recv": 3, "recv_into": 2, "accept": 1}


@pytest.mark.skipif(not PY311, reason="sock_sendto / sock_recvfrom are 3.11+")
def test_socket_subclass_datagram_methods_are_called(loop, loop_kind):
    async def scenario(lp):
        CountingSocket.calls = {}
        a = counting(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            await wait(lp.sock_sendto(a, b"d", b.getsockname()))
            assert b.recvfrom(10)[0] == b"d"
            task = asyncio.ensure_future(lp.sock_recvfrom(a, 10))
            await drain_loop(3)
            b.sendto(b"e", a.getsockname())
            assert (await wait(task))[0] == b"e"
        return dict(CountingSocket.calls)

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == {"sendto": 1, "recvfrom": 2}

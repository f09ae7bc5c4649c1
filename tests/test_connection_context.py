"""Which contextvars context a connection's callbacks run in, and the write buffer's size.

3.15 gives each connection one context (selector_events.py, base_events.py): a server copies
the context of ``create_server``'s caller once (``Server._context``) and each accepted
connection gets a copy of it; ``create_connection`` and ``connect_accepted_socket`` copy their
caller's. The transport keeps it as ``_context`` and hands it to every handle it makes
(``_add_reader``, ``_add_writer`` and ``call_soon`` with ``context=``), so connection_made,
data_received, get_buffer / buffer_updated, eof_received, resume_writing and connection_lost
share it: what one sets, the next sees. Before 3.15 each of those handles copied whatever
context was current when it was made (the reader's when reading started, the writer's in the
``write`` that queued data). oxloop runs the read and write events in Rust; the loop enters
the handle's context around them as around any callback. Every expectation is stated for each
version, and checked on both loops.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys

import pytest
from _net import (
    Recorder,
    close_all,
    fill,
    payload,
    socket_pair,
    tcp_server,
    tls_contexts,
    wait,
)

pytestmark = pytest.mark.timeout(60)

PY315 = sys.version_info >= (3, 15)

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def run_fresh(loop, coro):
    """Run coro on loop inside a fresh copy of the context, so `var` never leaks between
    tests."""
    return contextvars.copy_context().run(loop.run_until_complete, coro)


class Seeing(Recorder):
    """A Recorder noting `var` in every callback; connection_made sets it to "conn"."""

    def __init__(self, loop, **kw):
        super().__init__(loop, **kw)
        self.seen: list[tuple[str, str]] = []

    def connection_made(self, transport):
        self.seen.append(("made", var.get()))
        var.set("conn")
        super().connection_made(transport)

    def data_received(self, data):
        if not self.data:
            self.seen.append(("data", var.get()))
        super().data_received(data)

    def eof_received(self):
        self.seen.append(("eof", var.get()))
        return super().eof_received()

    def pause_writing(self):
        self.seen.append(("pause", var.get()))
        super().pause_writing()

    def resume_writing(self):
        self.seen.append(("resume", var.get()))
        super().resume_writing()

    def connection_lost(self, exc):
        self.seen.append(("lost", var.get()))
        super().connection_lost(exc)


@pytest.mark.parametrize("debug", [False, True])
def test_server_connections_run_in_copies_of_the_servers_context(loop, debug):
    """The context of create_server's caller reaches every connection; each connection's own
    changes stay its own (debug mode builds the handles with asyncio's constructor)."""
    loop.set_debug(debug)
    loop.slow_callback_duration = 60.0

    async def main():
        var.set("server creator")
        srv, addr = await tcp_server(loop, Seeing)
        var.set("changed after create_server")
        clients = []
        for _ in range(2):
            _, c = await loop.create_connection(lambda: Recorder(loop), *addr)
            clients.append(c)
        first, second = await srv.accepted(0), await srv.accepted(1)
        for c in clients:
            c.transport.write(b"x")
        await first.until(1)
        await second.until(1)
        await close_all(srv, *clients)
        return first.seen, second.seen

    first, second = run_fresh(loop, main())
    for seen in (first, second):
        # 3.15: one context per connection, so connection_made's "conn" is seen by the reads
        # and by connection_lost. Before: the reader copied the server's context, and
        # connection_lost (called by close() from the test's task) saw the task's.
        assert seen == [
            ("made", "server creator"),
            ("data", "conn" if PY315 else "server creator"),
            ("lost", "conn" if PY315 else "changed after create_server"),
        ]


def test_a_server_started_later_keeps_the_context_of_create_server(loop):
    """3.15 copies the server's context in create_server (Server.__init__); before, the
    listening reader copied the one current at start_serving()."""

    async def main():
        var.set("at create_server")
        srv, addr = await tcp_server(loop, Seeing, start_serving=False)
        var.set("at start_serving")
        await srv.server.start_serving()
        var.set("after")
        _, client = await loop.create_connection(lambda: Recorder(loop), *addr)
        peer = await srv.accepted(0)
        await close_all(srv, client)
        return peer.seen[0]

    made = run_fresh(loop, main())
    assert made == ("made", "at create_server" if PY315 else "at start_serving")


def test_client_connection_context(loop):
    """create_connection's caller's context, copied: 3.15 shares it among the connection's
    callbacks (the write-side ones included); before, each handle had its own copy."""

    async def main():
        srv, addr = await tcp_server(loop, Recorder)
        var.set("client creator")
        _, client = await loop.create_connection(lambda: Seeing(loop), *addr)
        var.set("after create_connection")
        peer = await srv.accepted(0)
        peer.transport.write(b"y")
        await client.until(1)
        # Fill the client's buffer from this task: pause_writing runs inside the write call,
        # resume_writing in the writer handle once the peer reads.
        var.set("writing task")
        client.transport.set_write_buffer_limits(high=64 * 1024)
        # Past the high-water mark, not just "something buffered": the kernel may take all but
        # a few KiB of the last 256 KiB chunk, and then pause_writing never comes.
        sent = fill(client.transport, beyond=64 * 1024)
        await wait(client.paused)
        var.set("after writing")
        await peer.until(len(sent))
        await wait(client.resumed)
        peer.transport.write_eof()
        await wait(client.eof)
        await close_all(srv, client)
        return client.seen, var.get()

    seen, outer = run_fresh(loop, main())
    assert outer == "after writing"
    assert seen == [
        ("made", "client creator"),
        ("data", "conn" if PY315 else "client creator"),
        ("pause", "writing task"),
        # 3.15's writer handle runs in the connection's context; before, in a copy of the one
        # current in the write that registered it.
        ("resume", "conn" if PY315 else "writing task"),
        ("eof", "conn" if PY315 else "client creator"),
        ("lost", "conn" if PY315 else "client creator"),
    ]


def test_connection_lost_after_flushing_runs_in_the_connections_context(loop):
    """close() with data queued: the writer handle that flushes it calls connection_lost
    (selector_events._write_send / _write_sendmsg): 3.15 in the connection's context, before in
    the copy made by the write that queued the data."""
    a, b = socket_pair()

    async def main():
        var.set("creator")
        proto = Seeing(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
        var.set("writing task")
        sent = fill(transport)
        transport.close()
        var.set("after close")
        received = bytearray()
        while len(received) < len(sent):
            received += await loop.sock_recv(b, 1 << 20)
        await wait(proto.lost)
        assert received == sent
        return proto.seen

    try:
        seen = run_fresh(loop, main())
    finally:
        b.close()
    assert seen[0] == ("made", "creator")
    assert seen[-1] == ("lost", "conn" if PY315 else "writing task")


def test_buffered_protocol_shares_the_connections_context(loop):
    """get_buffer / buffer_updated run in the reader handle (Rust on oxloop)."""
    a, b = socket_pair()

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(16)
            self.seen = []
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.seen.append(("made", var.get()))
            var.set("conn")

        def get_buffer(self, sizehint):
            self.seen.append(("get_buffer", var.get()))
            return self.buf

        def buffer_updated(self, nbytes):
            self.seen.append(("updated", var.get()))
            var.set("updated")

        def eof_received(self):
            self.seen.append(("eof", var.get()))

        def connection_lost(self, exc):
            self.seen.append(("lost", var.get()))
            self.done.set_result(None)

    async def main():
        var.set("creator")
        proto = Buffered()
        await loop.connect_accepted_socket(lambda: proto, a)
        var.set("after")
        b.sendall(b"1234")
        b.shutdown(socket.SHUT_WR)
        await wait(proto.done)
        return proto.seen

    try:
        seen = run_fresh(loop, main())
    finally:
        b.close()
    read_ctx = "conn" if PY315 else "creator"
    assert seen == [
        ("made", "creator"),
        ("get_buffer", read_ctx),
        ("updated", read_ctx),
        ("get_buffer", "updated"),  # the recv that finds EOF
        ("eof", "updated"),
        ("lost", "updated"),
    ]


def test_streams_handler_and_reads_see_the_servers_context(loop):
    """start_server: the handler task starts from a copy of the connection's context; the
    reads (oxloop's Rust stream path) wake it without touching contexts."""

    async def main():
        var.set("server creator")
        seen = []
        done = loop.create_future()

        async def handler(reader, writer):
            seen.append(var.get())
            var.set("handler")
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            done.set_result(None)

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        var.set("client")
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"hello\n")
        assert await reader.readline() == b"HELLO\n"
        await wait(done)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return seen, var.get()

    seen, outer = run_fresh(loop, main())
    assert seen == ["server creator"]
    assert outer == "client"


def test_unix_server_connections_share_one_context(loop, tmp_path):
    async def main():
        var.set("server creator")
        peers = []
        path = str(tmp_path / "s")

        def factory():
            peers.append(Seeing(loop))
            return peers[-1]

        server = await loop.create_unix_server(factory, path)
        _, client = await loop.create_unix_connection(lambda: Recorder(loop), path)
        while not peers:
            await asyncio.sleep(0)
        peer = peers[0]
        await wait(peer.made)
        client.transport.write(b"x")
        await peer.until(1)
        client.transport.close()
        await wait(peer.lost)
        await wait(client.lost)
        server.close()
        await server.wait_closed()
        return peer.seen

    seen = run_fresh(loop, main())
    read_ctx = "conn" if PY315 else "server creator"
    assert seen == [
        ("made", "server creator"),
        ("data", read_ctx),
        ("eof", read_ctx),
        ("lost", read_ctx),
    ]


def test_tls_protocol_callbacks_share_one_context(loop):
    """Over TLS the application protocol's callbacks come from SSLProtocol, inside the raw
    transport's reader handle: one context on every version (3.15 makes it the
    connection's)."""
    pytest.importorskip("trustme", reason="trustme is in requirements-dev / integration")

    async def main():
        server_ctx, client_ctx = tls_contexts()
        var.set("server creator")
        peers = []

        def factory():
            peers.append(Seeing(loop))
            return peers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
        var.set("client creator")
        _, client = await loop.create_connection(
            lambda: Seeing(loop),
            *server.sockets[0].getsockname(),
            ssl=client_ctx,
            server_hostname="localhost",
        )
        var.set("after")
        while not peers:
            await asyncio.sleep(0)
        peer = peers[0]
        await wait(peer.made)
        client.transport.write(b"x")
        await peer.until(1)
        peer.transport.write(b"y")
        await client.until(1)
        client.transport.close()
        await wait(peer.lost)
        await wait(client.lost)
        server.close()
        await server.wait_closed()
        return client.seen, peer.seen

    client_seen, peer_seen = run_fresh(loop, main())
    for seen, creator in ((client_seen, "client creator"), (peer_seen, "server creator")):
        assert seen[:2] == [("made", creator), ("data", "conn")]
        assert seen[-1] == ("lost", "conn")


@pytest.mark.parametrize("debug", [False, True])
def test_add_reader_and_writer_context_keyword(loop, debug):
    """3.15's `_add_reader(fd, callback, *args, context=None)` (and `_add_writer`), which the
    transports use; earlier versions have no such keyword."""
    loop.set_debug(debug)
    a, b = socket_pair()
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")
    seen = []

    def reader(tag):
        seen.append((tag, var.get()))
        loop._remove_reader(a.fileno())

    def writer(tag):
        seen.append((tag, var.get()))
        loop._remove_writer(a.fileno())

    async def main():
        var.set("current")
        b.send(b"x")
        if not PY315:
            with pytest.raises(TypeError, match="context"):
                loop._add_reader(a.fileno(), reader, "r", context=ctx)
            with pytest.raises(TypeError, match="context"):
                loop._add_writer(a.fileno(), writer, "w", context=ctx)
            return
        h = loop._add_reader(a.fileno(), reader, "r", context=ctx)
        assert h.get_context() is ctx
        loop._add_writer(a.fileno(), writer, "w", context=None)  # None: a copy of the current
        while len(seen) < 2:
            await asyncio.sleep(0)

    try:
        run_fresh(loop, main())
    finally:
        a.close()
        b.close()
    assert sorted(seen) == ([] if not PY315 else [("r", "given"), ("w", "current")])


def test_write_buffer_size_is_what_the_kernel_did_not_take(loop):
    """get_write_buffer_size after a partial send (on oxloop, the Rust write path's) is
    exactly the unsent part, and follows every later write, writelines and the flush."""
    a, b = socket_pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        proto = Recorder(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
        transport.set_write_buffer_limits(high=1 << 30)
        block = payload(1 << 20)
        transport.write(block)  # nothing queued: one send, which the kernel takes part of
        queued = transport.get_write_buffer_size()
        assert 0 < queued < len(block)
        # Later data is queued whole (writelines tries a send, which the full kernel buffer
        # refuses).
        transport.write(b"abc")
        transport.write(memoryview(b"xdefx")[1:4])
        transport.writelines([b"gh", b"", bytearray(b"i")])
        assert transport.get_write_buffer_size() == queued + 9
        # The kernel holds exactly the unqueued part (the loop has not run since).
        unqueued = len(block) - queued
        b.setblocking(True)
        got = bytearray()
        while len(got) < unqueued:
            got += b.recv(unqueued - len(got))
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(1)
        while len(got) < len(block) + 9:
            got += await loop.sock_recv(b, 1 << 20)
        assert got == block + b"abcdefghi"
        # Everything the peer got was sent: nothing is left.
        assert transport.get_write_buffer_size() == 0
        # Aborting with data queued empties the buffer at once.
        fill(transport, beyond=0)
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        await wait(proto.lost)

    try:
        run_fresh(loop, main())
    finally:
        b.close()

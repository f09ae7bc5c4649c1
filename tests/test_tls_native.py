"""oxloop's native TLS data path (src/tls/, oxloop/_tls.py), on both loops.

With a verifying context (the client checks the CA and the hostname, ``_net.tls_contexts``):
records in both directions of every size, writelines and a close_notify from the peer go
through the native path on oxloop 3.11+ (its counters move; on 3.10 and stock asyncio they do
not), write flow control pauses and resumes the app protocol as on stock asyncio, and an app
protocol raising in data_received gets asyncio's fatal error path.
"""

from __future__ import annotations

import asyncio
import sys

import oxloop
import pytest
from _net import Echo, Recorder, Server, close_all, digest, payload, tls_contexts, wait
from oxloop import _oxloop, _tls

pytest.importorskip("trustme", reason="trustme is in requirements-dev / integration")
pytestmark = pytest.mark.timeout(60)


def native_expected(loop) -> bool:
    # 3.11+ (test_contract.py checks the probe holds there), unless the contract's
    # `ssl_protocol` probe is forced to fail.
    return isinstance(loop, oxloop.Loop) and _tls.NATIVE


async def pair(loop, server_proto=Echo):
    server_ctx, client_ctx = tls_contexts()
    assert client_ctx.check_hostname and client_ctx.verify_mode.name == "CERT_REQUIRED"
    srv = Server(loop, server_proto)
    srv.server = await loop.create_server(srv.factory, "127.0.0.1", 0, ssl=server_ctx)
    addr = srv.server.sockets[0].getsockname()
    _, client = await loop.create_connection(
        lambda: Recorder(loop), *addr, ssl=client_ctx, server_hostname="localhost"
    )
    peer = await srv.accepted(0)
    return srv, client, peer


def test_native_path_runs_with_a_verifying_context(loop, run):
    async def main():
        before = _oxloop.tls_stats()
        srv, client, peer = await pair(loop)
        assert client.transport.get_extra_info("peercert")["subjectAltName"]
        sent = bytearray()
        for n in (1, 1024, 16 * 1024 + 1, 64 * 1024, 1024 * 1024):
            data = payload(n, seed=n)
            client.transport.write(data)
            sent += data
            assert digest((await client.until(len(sent)))[: len(sent)]) == digest(sent)
        client.transport.writelines([b"a" * 10, bytearray(b"b" * 20), memoryview(b"c" * 30)])
        sent += b"a" * 10 + b"b" * 20 + b"c" * 30
        assert bytes(await client.until(len(sent))) == bytes(sent)
        reads, writes = (a - b for a, b in zip(_oxloop.tls_stats(), before, strict=True))
        # The peer closes: its close_notify reaches the client's data path.
        peer.transport.close()
        await wait(client.lost)
        # 3.10's sslproto (the _SSLPipe design) does not call eof_received on close_notify.
        end = ["eof", ("lost", None)] if sys.version_info >= (3, 11) else ["made", ("lost", None)]
        assert client.events[-2:] == end
        await close_all(srv, client)
        return reads, writes

    reads, writes = run(main())
    if native_expected(loop):
        assert reads >= 10 and writes >= 6, (reads, writes)
    else:
        assert (reads, writes) == (0, 0)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is new in 3.11")
def test_start_tls_takes_the_native_path(loop, run):
    async def main():
        server_ctx, client_ctx = tls_contexts()
        upgraded = loop.create_future()

        async def handle(reader, writer):
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.start_tls(server_ctx)
            upgraded.set_result(None)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await wait(reader.readline()) == b"GO\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        await wait(upgraded)
        before = _oxloop.tls_stats()
        data = payload(200 * 1024, seed=3)
        writer.write(data)
        await writer.drain()
        got = await wait(reader.readexactly(len(data)))
        stats = tuple(a - b for a, b in zip(_oxloop.tls_stats(), before, strict=True))
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        return digest(got) == digest(data), stats

    same, (reads, writes) = run(main())
    assert same
    if native_expected(loop):
        assert reads >= 2 and writes >= 2, (reads, writes)
    else:
        assert (reads, writes) == (0, 0)


def test_write_flow_control_and_data(loop, run):
    async def main():
        srv, client, peer = await pair(loop, Recorder)
        client.transport.set_write_buffer_limits(high=64 * 1024)
        peer.transport.pause_reading()
        data = payload(8 * 1024 * 1024, seed=7)
        for i in range(0, len(data), 256 * 1024):
            client.transport.write(data[i : i + 256 * 1024])
        await wait(client.paused)
        peer.transport.resume_reading()
        await wait(client.resumed)
        assert digest((await peer.until(len(data)))[: len(data)]) == digest(data)
        await close_all(srv, client)
        return client.events[:3]

    assert run(main()) == ["made", "pause", "resume"]


def test_error_in_data_received_is_fatal(loop, run):
    class Boom(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("boom")

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        srv, client, peer = await pair(loop, Boom)
        client.transport.write(b"x")
        exc = await wait(peer.lost)
        await close_all(srv, client)
        return type(exc), [(c["message"], type(c.get("exception"))) for c in errors]

    exc, errors = run(main())
    assert exc is ZeroDivisionError
    if sys.version_info >= (3, 11):
        assert ("Fatal error on SSL protocol", ZeroDivisionError) in errors
    else:  # 3.10's _SSLPipe sslproto
        assert ("application protocol failed to receive SSL data", ZeroDivisionError) in errors


def test_writelines_with_an_item_without_len(loop, run):
    # 3.11+: asyncio appends each item to its backlog before taking its len(): the bad item
    # stays queued, writelines raises TypeError, and the next write fails on it (fatal error).
    async def main():
        loop.set_exception_handler(lambda lp, ctx: None)
        srv, client, peer = await pair(loop, Recorder)
        with pytest.raises(TypeError):
            client.transport.writelines([b"ab", 5])
        client.transport.write(b"cd")
        if sys.version_info < (3, 11):
            # 3.10: WriteTransport.writelines joins the items first; nothing was queued.
            got = await peer.until(2)
            await close_all(srv, client)
            return got
        exc = await wait(client.lost)
        await close_all(srv, client)
        return type(exc)

    assert run(main()) == (b"cd" if sys.version_info < (3, 11) else TypeError)


@pytest.mark.skipif(not hasattr(sys, "gettotalrefcount"), reason="needs a debug build (3.14d)")
def test_no_reference_leak_per_record(loop, run):
    # A debug build counts every reference: the echo's steady state must not grow it.
    import gc

    async def main():
        srv, client, peer = await pair(loop)
        sent = 0

        async def rounds(n):
            nonlocal sent
            for _ in range(n):
                client.transport.write(b"x" * 1000)
                sent += 1000
                await client.until(sent)

        await rounds(50)
        gc.collect()
        before = sys.gettotalrefcount()
        await rounds(500)
        gc.collect()
        grown = sys.gettotalrefcount() - before
        await close_all(srv, client)
        return grown

    assert run(main()) < 100


async def stream_pair(loop, limit=2**16):
    """asyncio streams over TLS (verifying client context): an echo server's connection."""
    server_ctx, client_ctx = tls_contexts()

    async def echo(reader, writer):
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx, limit=limit)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost", limit=limit
    )
    return srv, reader, writer


def test_streams_over_tls(loop, run):
    # The decrypted records of a message go straight into the StreamReader's buffer (one
    # read of several records, records split across socket reads, the reader's limit pausing
    # the TLS transport): the bytes arrive whole and in order through every reader method.
    async def main():
        before = _oxloop.tls_stats()
        srv, reader, writer = await stream_pair(loop, limit=4096)
        sent = []
        for n in (1, 1024, 16 * 1024 + 1, 64 * 1024, 1024 * 1024):
            data = payload(n, seed=n)
            writer.write(data)
            sent.append(data)
        writer.write(b"line one\nline two\n")
        await writer.drain()
        got = [await wait(reader.readexactly(len(d))) for d in sent]
        lines = [await wait(reader.readline()), await wait(reader.readuntil(b"\n"))]
        reads, _ = (a - b for a, b in zip(_oxloop.tls_stats(), before, strict=True))
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        return [digest(g) for g in got] == [digest(d) for d in sent], lines, reads

    same, lines, reads = run(main())
    assert same
    assert lines == [b"line one\n", b"line two\n"]
    if native_expected(loop):
        assert reads >= 10, reads


def test_streams_over_tls_honour_a_patched_data_received(loop, run, monkeypatch):
    # A patched StreamReaderProtocol.data_received is called for TLS records too.
    seen = []
    original = asyncio.StreamReaderProtocol.data_received

    def spy(self, data):
        seen.append(len(data))
        return original(self, data)

    monkeypatch.setattr(asyncio.StreamReaderProtocol, "data_received", spy)

    async def main():
        srv, reader, writer = await stream_pair(loop)
        writer.write(b"ping\n")
        got = await wait(reader.readline())
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        return got

    assert run(main()) == b"ping\n"
    assert seen.count(5) == 2  # the server's read and the client's


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="3.10's sslproto (_SSLPipe) has no get_buffer"
)
def test_get_buffer(loop, run):
    # sslproto's get_buffer (native on oxloop 3.11+): max_size for n <= 0 or above it, a new
    # larger buffer only when asked for more than the current one holds.
    async def main():
        srv, client, peer = await pair(loop)
        p = client.transport._ssl_protocol
        out = [len(p.get_buffer(-1)) == p.max_size, len(p.get_buffer(0)) == p.max_size]
        first = p.get_buffer(10)
        out.append(first is p._ssl_buffer_view and len(first) == p.max_size)
        p.max_size = p.max_size * 2
        bigger = p.get_buffer(p.max_size + 1)
        out += [len(bigger) == p.max_size, bigger is p._ssl_buffer_view, bigger is not first]
        out.append(p.get_buffer(1) is bigger)
        out.append(bytes(p._ssl_buffer[:4]) == b"\0\0\0\0")
        # The protocol still works with the new buffer.
        client.transport.write(b"after")
        got = bytes(await client.until(5))
        await close_all(srv, client)
        return out, got

    out, got = run(main())
    assert all(out), out
    assert got == b"after"


def test_max_size_is_honoured(loop, run):
    # sslproto reads `self.max_size` per SSLObject.read: an instance's own value (here a small
    # one) still delivers every byte, in order.
    async def main():
        srv, client, peer = await pair(loop)
        peer.transport._ssl_protocol.max_size = 1000
        data = payload(100 * 1024, seed=11)
        client.transport.write(data)
        got = bytes((await client.until(len(data)))[: len(data)])
        await close_all(srv, client)
        return digest(got) == digest(data)

    assert run(main())


def test_set_protocol_between_records_is_followed(loop, run):
    # asyncio's own code replaces fields the native path reads (set_protocol sets
    # _app_protocol and _app_protocol_is_buffer): each record goes to the protocol set last,
    # a BufferedProtocol through asyncio's _do_read__buffered.
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.got = bytearray()
            self.arrived = loop.create_future()

        def get_buffer(self, n):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]
            if len(self.got) >= 3 and not self.arrived.done():
                self.arrived.set_result(None)

    async def main():
        srv, client, peer = await pair(loop)
        transport = client.transport
        transport.write(b"one")
        await client.until(3)
        buffered = Buffered()
        transport.set_protocol(buffered)
        transport.write(b"two")
        await wait(buffered.arrived)
        transport.set_protocol(client)
        transport.write(b"three")
        got = await client.until(8)
        await close_all(srv, client)
        return bytes(got), bytes(buffered.got)

    assert run(main()) == (b"onethree", b"two")

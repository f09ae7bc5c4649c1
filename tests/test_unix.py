"""Unix domain stream sockets on both loops: unix_events.py's create_unix_server /
create_unix_connection and their transports.

Covers filesystem paths (str, bytes and pathlib), the abstract namespace, stale socket files,
cleanup_socket (3.13: the socket file is removed on close), get_extra_info, half-close,
streams (start_unix_server / open_unix_connection), bad arguments and a multi-megabyte
transfer in both directions compared by hash.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import socket
import sys
import uuid

import pytest
from _net import (
    Echo,
    Recorder,
    Server,
    aoutcome,
    close_all,
    digest,
    fill,
    payload,
    same_as_stock,
    wait,
)

pytestmark = pytest.mark.timeout(60)
PY313 = sys.version_info >= (3, 13)


@pytest.fixture
def sock_path(tmp_path):
    # sun_path holds 108 bytes; pytest's tmp_path can be longer, so use a short directory.
    short = pathlib.Path("/tmp") / f"oxl-{uuid.uuid4().hex[:12]}"
    short.mkdir()
    try:
        yield str(short / "s")
    finally:
        for p in short.iterdir():
            p.unlink()
        short.rmdir()


async def unix_pair(loop, path, server_proto=Recorder, **kw):
    srv = Server(loop, server_proto, **kw)
    srv.server = await loop.create_unix_server(srv.factory, path)
    _, client = await loop.create_unix_connection(lambda: Recorder(loop), path)
    peer = await srv.accepted(0)
    return srv, client, peer


def test_echo_and_extra_info(loop, run, sock_path):
    async def main():
        srv, client, peer = await unix_pair(loop, sock_path, Echo)
        t = client.transport
        assert isinstance(t, asyncio.Transport)
        sock = t.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_UNIX
        assert t.get_extra_info("peername") == sock_path
        assert t.get_extra_info("sockname") == ""  # an unbound client socket
        assert peer.transport.get_extra_info("sockname") == sock_path
        assert srv.server.sockets[0].getsockname() == sock_path
        assert t.can_write_eof()
        t.write(b"over unix")
        assert await client.until(9) == b"over unix"
        await close_all(srv, client)

    run(main())


def test_paths_as_bytes_and_pathlib(loop, run, sock_path):
    async def main():
        srv = Server(loop, Echo)
        srv.server = await loop.create_unix_server(srv.factory, pathlib.Path(sock_path))
        _, c1 = await loop.create_unix_connection(lambda: Recorder(loop), os.fsencode(sock_path))
        _, c2 = await loop.create_unix_connection(lambda: Recorder(loop), pathlib.Path(sock_path))
        for c in (c1, c2):
            c.transport.write(b"p")
            assert await c.until(1) == b"p"
        await close_all(srv, c1, c2)

    run(main())


def test_abstract_namespace(loop, run):
    async def main():
        name = "\0oxloop-test-" + uuid.uuid4().hex
        srv, client, peer = await unix_pair(loop, name, Echo)
        # Linux reports abstract names as bytes with the leading NUL.
        assert srv.server.sockets[0].getsockname() == name.encode()
        assert client.transport.get_extra_info("peername") == name.encode()
        client.transport.write(b"abstract")
        assert await client.until(8) == b"abstract"
        await close_all(srv, client)

    run(main())


def test_socket_file_after_close(loop, loop_kind, sock_path):
    """3.13 removes the socket file when the server closes (cleanup_socket=True by default);
    earlier versions leave it. cleanup_socket=False keeps it on 3.13."""

    async def scenario(lp):
        path = sock_path + lp.__class__.__name__[:3]
        server = await lp.create_unix_server(asyncio.Protocol, path)
        existed = os.path.exists(path)
        server.close()
        await server.wait_closed()
        kept = os.path.exists(path)
        if kept:
            os.unlink(path)
        result = [existed, kept]
        if PY313:
            server = await lp.create_unix_server(asyncio.Protocol, path, cleanup_socket=False)
            server.close()
            await server.wait_closed()
            result.append(os.path.exists(path))
            os.unlink(path)
        return result

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == ([True, False, True] if PY313 else [True, True])


@pytest.mark.skipif(not PY313, reason="cleanup_socket is new in 3.13")
def test_cleanup_leaves_a_replaced_file_alone(loop, run, sock_path):
    async def main():
        server = await loop.create_unix_server(asyncio.Protocol, sock_path)
        os.unlink(sock_path)
        with open(sock_path, "w") as f:
            f.write("not ours")
        server.close()
        await server.wait_closed()
        # unix_events compares the inode before unlinking.
        assert os.path.exists(sock_path)

    run(main())


def test_stale_socket_file_is_replaced_and_other_files_are_not(loop, run, sock_path):
    async def main():
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(sock_path)
        stale.close()  # the file stays behind
        assert os.path.exists(sock_path)
        srv, client, peer = await unix_pair(loop, sock_path)
        await close_all(srv, client)
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        with open(sock_path, "w") as f:
            f.write("regular file")
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(asyncio.Protocol, sock_path)
        assert info.value.errno == errno.EADDRINUSE
        assert "is already in use" in str(info.value)

    run(main())


def test_connect_errors(loop, loop_kind, sock_path):
    async def scenario(lp):
        P = asyncio.Protocol
        missing = await aoutcome(lp.create_unix_connection(P, sock_path + "-missing"))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(sock_path + "-stale")
        stale.close()
        refused = await aoutcome(lp.create_unix_connection(P, sock_path + "-stale"))
        os.unlink(sock_path + "-stale")
        with socket.socket() as inet, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dg:
            bad = [
                await aoutcome(lp.create_unix_connection(P)),
                await aoutcome(lp.create_unix_connection(P, sock_path, sock=inet)),
                await aoutcome(lp.create_unix_connection(P, sock=inet)),
                await aoutcome(lp.create_unix_connection(P, sock=dg)),
                await aoutcome(lp.create_unix_connection(P, sock_path, server_hostname="x")),
                await aoutcome(lp.create_unix_server(P, sock_path, sock=inet)),
                await aoutcome(lp.create_unix_server(P)),
                await aoutcome(lp.create_unix_server(P, sock=inet)),
                await aoutcome(lp.create_unix_server(P, sock_path, ssl=True)),
            ]
        return missing, refused, bad

    missing, refused, bad = same_as_stock(loop, loop_kind, scenario)
    assert missing == (FileNotFoundError, errno.ENOENT)
    assert refused == (ConnectionRefusedError, errno.ECONNREFUSED)
    assert [b[0] for b in bad] == [ValueError] * 8 + [TypeError]


def test_server_from_sock_and_streams(loop, run, sock_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(sock_path)

        async def handler(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(handler, sock=lsock)
        r, w = await asyncio.open_unix_connection(sock_path)
        w.write(b"line\n")
        assert await wait(r.read()) == b"LINE\n"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_half_close(loop, run, sock_path):
    async def main():
        srv = Server(loop, Recorder, eof_result=True)
        srv.server = await loop.create_unix_server(srv.factory, sock_path)
        _, client = await loop.create_unix_connection(lambda: Recorder(loop), sock_path)
        peer = await srv.accepted(0)
        client.transport.write(b"q")
        client.transport.write_eof()
        await wait(peer.eof)
        peer.transport.write(b"answer")
        assert await client.until(6) == b"answer"
        peer.transport.close()
        await wait(client.lost)
        assert client.events == ["made", "eof", ("lost", None)]
        await close_all(srv)

    run(main())


def test_multi_megabyte_both_directions(loop, run, sock_path):
    async def main():
        srv, client, peer = await unix_pair(loop, sock_path)
        up, down = payload(6 * 1024 * 1024, seed=20), payload(6 * 1024 * 1024, seed=21)
        client.transport.write(up)
        peer.transport.write(down)
        client.transport.write_eof()
        peer.transport.write_eof()
        await wait(client.lost)
        await wait(peer.lost)
        assert digest(peer.data) == digest(up)
        assert digest(client.data) == digest(down)
        await close_all(srv)

    run(main())


def test_socketpair_connect_accepted_socket(loop, run):
    async def main():
        a, b = socket.socketpair()
        _, pa = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        _, pb = await loop.connect_accepted_socket(lambda: Echo(loop), b)
        pa.transport.write(b"pair")
        assert await pa.until(4) == b"pair"
        pa.transport.close()
        await wait(pb.lost)
        await wait(pa.lost)

    run(main())


def test_flow_control(loop, run, sock_path):
    """pause_writing past the high-water mark while the peer does not read, resume_writing
    once it reads again, every byte delivered (the Unix transport shares TCP's code path)."""

    async def main():
        srv, client, peer = await unix_pair(loop, sock_path)
        assert client.transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        peer.transport.pause_reading()
        data = fill(client.transport, beyond=64 * 1024, seed=22)
        await wait(client.paused)
        peer.transport.resume_reading()
        await wait(client.resumed)
        assert digest(await peer.until(len(data))) == digest(data)
        assert client.events[1:3] == ["pause", "resume"]
        await close_all(srv, client)

    run(main())


def test_buffered_protocol(loop, run, sock_path):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(5000)
            self.got = bytearray()
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        proto = Buffered()
        server = await loop.create_unix_server(lambda: proto, sock_path)
        r, w = await asyncio.open_unix_connection(sock_path)
        data = payload(2 * 1024 * 1024, seed=23)
        w.write(data)
        await w.drain()
        w.close()
        await w.wait_closed()
        assert await wait(proto.done) is None
        assert digest(proto.got) == digest(data)
        server.close()
        await server.wait_closed()

    run(main())

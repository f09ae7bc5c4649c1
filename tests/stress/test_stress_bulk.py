"""Bulk transfer: 1 GiB each way (full; 64 MiB in ci) through one TCP connection, echoed by the
server, through streams and through Protocols, every byte checked by sha256 on both sides.

The data is generated (a seeded RNG, chunks of 1 B to 256 KiB) and hashed as it is sent; the
server hashes what it receives before echoing it, the client hashes the echo. Limits: loopback;
one connection; the sender and the receiver share the loop under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from _stress import sized, stress_timeout

MAX_CHUNK = 256 * 1024


def _chunks(seed: int, total: int):
    rnd = random.Random(seed)
    left = total
    while left:
        n = min(left, rnd.randint(1, MAX_CHUNK))
        left -= n
        yield rnd.randbytes(n)


def _total() -> int:
    return sized(64, 1024) * 2**20


def _report(figures, total, wall, sent, server_got, client_got):
    figures.update(
        mib_each_way=total // 2**20,
        mib_per_s_each_way=round(total / 2**20 / wall, 1),
    )
    assert sent[0] == server_got[0] == client_got[0] == total
    assert sent[1] == server_got[1] == client_got[1]


@stress_timeout(180, 1200)
def test_bulk_streams_sha256(loop, figures):
    """Streams (start_server / open_connection): the client writes the data with drain() and
    write_eof(), the server echoes with read(256 KiB) / write / drain and hashes what it got,
    the client reads the echo to EOF. Sizes and sums must agree on all three sides."""
    total = _total()
    server_got = []

    async def echo(reader, writer):
        h = hashlib.sha256()
        n = 0
        while data := await reader.read(MAX_CHUNK):
            h.update(data)
            n += len(data)
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        server_got.extend((n, h.hexdigest()))
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())

        async def send():
            h = hashlib.sha256()
            n = 0
            for chunk in _chunks(1, total):
                h.update(chunk)
                n += len(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            return n, h.hexdigest()

        async def receive():
            h = hashlib.sha256()
            n = 0
            while data := await reader.read(MAX_CHUNK):
                h.update(data)
                n += len(data)
            return n, h.hexdigest()

        t0 = loop.time()
        sent, got = await asyncio.gather(send(), receive())
        wall = loop.time() - t0
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return wall, sent, got

    wall, sent, got = loop.run_until_complete(main())
    _report(figures, total, wall, sent, server_got, got)


@stress_timeout(180, 1200)
def test_bulk_protocol_sha256(loop, figures):
    """Protocols: the server echoes with flow control (pause_reading() on pause_writing()) and
    closes on EOF, the client pumps the data honouring pause_writing()/resume_writing(), then
    write_eof(); both hash what they receive. Sizes and sums must agree on all three sides."""
    total = _total()
    server_got = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.h = hashlib.sha256()
            self.n = 0

        def data_received(self, data):
            self.h.update(data)
            self.n += len(data)
            self.t.write(data)

        def pause_writing(self):
            self.t.pause_reading()

        def resume_writing(self):
            self.t.resume_reading()

        def eof_received(self):
            # Returning None closes the transport once its buffer is flushed: the client sees
            # EOF after the last byte, and Server.wait_closed() (3.12+ waits for connections)
            # does not wait on a half-closed one.
            server_got.extend((self.n, self.h.hexdigest()))

    class Client(asyncio.Protocol):
        def __init__(self):
            self.source = _chunks(2, total)
            self.sent_h = hashlib.sha256()
            self.sent_n = 0
            self.h = hashlib.sha256()
            self.n = 0
            self.paused = False
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.t = transport
            self.pump()

        def pump(self):
            for chunk in self.source:
                self.sent_h.update(chunk)
                self.sent_n += len(chunk)
                self.t.write(chunk)
                if self.paused:
                    return
            self.t.write_eof()

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.paused = False
            self.pump()

        def data_received(self, data):
            self.h.update(data)
            self.n += len(data)

        def eof_received(self):
            self.done.set_result(None)

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_exception(exc or ConnectionError("lost before EOF"))

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        t0 = loop.time()
        transport, client = await loop.create_connection(Client, *server.sockets[0].getsockname())
        await client.done
        wall = loop.time() - t0
        transport.close()
        server.close()
        await server.wait_closed()
        return wall, client

    wall, client = loop.run_until_complete(main())
    _report(
        figures,
        total,
        wall,
        (client.sent_n, client.sent_h.hexdigest()),
        server_got,
        (client.n, client.h.hexdigest()),
    )

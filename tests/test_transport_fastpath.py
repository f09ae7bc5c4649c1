"""The stream transport's Rust read and write paths behave as asyncio's Python ones.

oxloop's socket transport is asyncio's ``_SelectorSocketTransport`` with ``_read_ready`` and the
common case of ``write`` in Rust (python/oxloop/_transports.py, src/transport.rs). Each test
here drives one branch of those paths (what keeps a transport alive, the buffer shapes ``write``
accepts, partial sends, the error messages of ``_fatal_error``, BufferedProtocol, switching
protocols) and runs on stock asyncio too, where the expected result comes from.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import hashlib
import socket
import struct
import sys
import termios
import warnings

import pytest
from _helpers import collect_errors
from _net import CountingSocket, counting, payload, socket_pair, wait, write_type_error


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost: asyncio.Future | None = None
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.data += data

    def eof_received(self):
        self.eof = True

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _connect(loop, sock, proto):
    transport, _ = await loop.connect_accepted_socket(lambda: proto, sock)
    return transport


def test_loop_alone_keeps_an_unreferenced_transport_alive(loop, run):
    # Nothing but the loop's reader holds the transport (the protocol is only referenced by
    # the transport): a collection must not free it and close the socket under the peer.
    a, b = socket_pair()
    received = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    async def main():
        await loop.connect_accepted_socket(Echo, a)
        for i in range(5):
            gc.collect()
            await loop.sock_sendall(b, b"ping %d" % i)
            received.append(await loop.sock_recv(b, 100))
        b.close()

    run(main())
    assert received == [b"ping %d" % i for i in range(5)]


def test_unclosed_transport_is_reported_when_dropped(loop, run):
    a, b = socket_pair()

    async def main():
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        transport.pause_reading()  # the reader no longer holds it
        return [transport]

    box = run(main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del box[:]
        gc.collect()
    assert any(
        issubclass(w.category, ResourceWarning) and "unclosed transport" in str(w.message)
        for w in caught
    ), [str(w.message) for w in caught]
    assert a.fileno() == -1  # asyncio's __del__ closed the socket
    b.close()


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_write_accepts_bytes_like(loop, run, kind):
    a, b = socket_pair()
    payload = b"0123456789" * 100
    data = {"bytes": payload, "bytearray": bytearray(payload), "memoryview": memoryview(payload)}

    async def main():
        transport = await _connect(loop, a, Recorder())
        transport.write(data[kind])
        got = b""
        while len(got) < len(payload):
            got += await loop.sock_recv(b, 65536)
        transport.close()
        return got

    assert run(main()) == payload
    b.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: memoryview(bytearray(p))[3:-5],
        lambda p: memoryview(p).cast("B", (len(p),)),
        lambda p: memoryview(bytearray(p)).cast("i"),  # 4-byte items: len(view) != nbytes
        lambda p: memoryview(p).cast("B", (10, len(p) // 10)),  # 2-D, C-contiguous
    ],
    ids=["bytearray-slice", "cast-B", "cast-i", "2d"],
)
def test_write_memoryview_shapes(loop, run, make):
    # asyncio's write passes any memoryview to sock.send and queues data[n:] after a partial
    # send; every shape must arrive as the same bytes on both loops.
    a, b = socket_pair()
    payload = bytes(range(256)) * 40
    data = make(payload)
    expect = data.tobytes()

    async def main():
        transport = await _connect(loop, a, Recorder())
        transport.write(data)
        got = b""
        while len(got) < len(expect):
            got += await loop.sock_recv(b, 65536)
        transport.close()
        return got

    assert run(main()) == expect
    b.close()


def test_write_non_contiguous_memoryview_is_asyncios_error(loop, run):
    a, b = socket_pair()

    async def main():
        proto = Recorder()
        transport = await _connect(loop, a, proto)
        errors = collect_errors(loop)
        transport.write(memoryview(bytearray(b"abcdef"))[::2])
        exc = await proto.lost
        return exc, [(e.get("message"), e.get("exception")) for e in errors]

    exc, errors = run(main())
    b.close()
    # sock.send refuses the buffer; asyncio reports a fatal write error and closes with it.
    assert isinstance(exc, BufferError), exc
    assert errors == [("Fatal write error on socket transport", exc)]


def test_write_binds_its_argument_as_asyncio_does(loop, run):
    # asyncio's `def write(self, data)`: by position or as data=; anything else a TypeError.
    a, b = socket_pair()

    async def main():
        transport = await _connect(loop, a, Recorder())
        transport.write(data=b"kw-")
        transport.write(b"pos")
        for call in (
            lambda: transport.write(),
            lambda: transport.write(b"x", b"y"),
            lambda: transport.write(dat=b"x"),
            lambda: transport.write(b"x", data=b"y"),
        ):
            with pytest.raises(TypeError):
                call()
        got = b""
        while len(got) < 6:
            got += await loop.sock_recv(b, 100)
        transport.close()
        return got

    assert run(main()) == b"kw-pos"
    b.close()


@pytest.mark.parametrize("bad", ["text", 123, None])
def test_write_rejects_non_bytes(loop, run, bad):
    a, b = socket_pair()

    async def main():
        transport = await _connect(loop, a, Recorder())
        try:
            with pytest.raises(TypeError, match=write_type_error(bad)):
                transport.write(bad)
        finally:
            transport.close()

    run(main())
    b.close()


def test_write_after_write_eof_raises(loop, run):
    a, b = socket_pair()

    async def main():
        transport = await _connect(loop, a, Recorder())
        transport.write_eof()
        with pytest.raises(RuntimeError, match="Cannot call write"):
            transport.write(b"x")
        with pytest.raises(RuntimeError, match="Cannot call write"):
            transport.write(b"")  # checked before the empty-data shortcut, as asyncio does
        transport.close()

    run(main())
    b.close()


def test_writes_after_connection_lost_are_counted_and_dropped(loop, run):
    a, b = socket_pair()

    async def main():
        proto = Recorder()
        transport = await _connect(loop, a, proto)
        transport.abort()
        await proto.lost
        for _ in range(3):
            transport.write(b"dropped")
        return transport._conn_lost

    assert run(main()) == 4  # abort counts one loss, then one per write
    b.close()


@pytest.mark.parametrize("kind", ["bytes", "memoryview"])
def test_large_write_buffers_pauses_and_arrives_intact(loop, run, kind):
    # The peer does not read at first: the first send is partial, the rest is queued in
    # asyncio's buffer, pause_writing fires; then the peer drains everything. A memoryview of a
    # bytearray is what a BufferedProtocol echoing its own buffer writes.
    a, b = socket_pair()
    payload = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)
    data = payload if kind == "bytes" else memoryview(bytearray(payload))

    async def main():
        proto = Recorder()
        transport = await _connect(loop, a, proto)
        transport.write(data)
        queued = transport.get_write_buffer_size()
        paused = proto.paused
        h = hashlib.sha256()
        got = 0
        while got < len(payload):
            chunk = await loop.sock_recv(b, 1 << 20)
            h.update(chunk)
            got += len(chunk)
        transport.close()
        await proto.lost
        return queued, paused, proto.resumed, h.hexdigest()

    queued, paused, resumed, digest = run(main())
    assert 0 < queued < len(payload)
    assert (paused, resumed) == (1, 1)
    assert digest == hashlib.sha256(payload).hexdigest()
    b.close()


async def _drain_peer(loop, b, n):
    """Reads n bytes from the peer socket b."""
    got = bytearray()
    while len(got) < n:
        chunk = await wait(loop.sock_recv(b, 1 << 20))
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


def test_partially_sent_bytearray_is_queued_as_the_version_does(loop, run):
    # A bytearray whose first send is partial: 3.10/3.11 copy the rest into the transport's
    # buffer (selector_events.py `write`: `data = data[n:]`, `_buffer.extend`), so changing
    # the bytearray afterwards changes nothing sent; 3.12+ queue `memoryview(data)[n:]`, a
    # view of the caller's bytearray, which then cannot be resized, and sends what it holds
    # when the socket drains.
    a, b = socket_pair()
    original = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)
    data = bytearray(original)

    async def main():
        proto = Recorder()
        transport = await _connect(loop, a, proto)
        transport.write(data)
        sent = len(data) - transport.get_write_buffer_size()
        data[:] = bytes(len(data))  # same size: allowed with or without an export
        try:
            data.extend(b"x")
            resized = True
        except BufferError:
            resized = False
        got = await _drain_peer(loop, b, len(original))
        transport.close()
        await proto.lost
        return sent, resized, got

    sent, resized, got = run(main())
    assert 0 < sent < len(original)
    if sys.version_info >= (3, 12):
        assert not resized
        assert got == original[:sent] + bytes(len(original) - sent)
    else:
        assert resized
        assert got == original
    b.close()


def test_queued_writes_of_every_shape_arrive_in_order(loop, run):
    # Writes of every size and type queued behind a partial send (small ones, large bytes,
    # views of bytes, bytearrays, one mutated after its write) arrive in order and intact, the
    # write buffer size counts exactly what is queued, and write_eof waits for all of it.
    a, b = socket_pair()
    big = hashlib.sha256(b"big").digest() * (4 * 1024 * 1024 // 32)
    ba = bytearray(b"b" * 70_000)
    pieces = [
        big,
        b"small",
        memoryview(big)[100:200_000],
        bytes(range(256)) * 300,
        ba,
        memoryview(bytearray(b"v" * 5_000)),
        b"z" * 65_536,
        b"tail",
    ]
    expected = b"".join(bytes(p) for p in pieces)

    async def main():
        proto = Recorder()
        transport = await _connect(loop, a, proto)
        sizes = []
        for p in pieces:
            before = transport.get_write_buffer_size()
            transport.write(p)
            sizes.append(transport.get_write_buffer_size() - before)
        ba[:] = b"B" * len(ba)  # in place: 3.12+ may still hold it queued (no copy)
        transport.write_eof()
        got = await _drain_peer(loop, b, len(expected))
        eof = await wait(loop.sock_recv(b, 1))
        left = transport.get_write_buffer_size()
        transport.close()
        await proto.lost
        return sizes, got, eof, left

    sizes, got, eof, left = run(main())
    # Everything after the first (partial) write is queued whole.
    assert sizes[1:] == [len(bytes(p)) for p in pieces[1:]]
    assert (eof, left) == (b"", 0)
    start = sum(len(bytes(p)) for p in pieces[:4])
    head, mid, rest = got[:start], got[start : start + len(ba)], got[start + len(ba) :]
    assert head == expected[:start]
    assert rest == expected[start + len(ba) :]
    # The bytearray was queued whole, behind a partial send: copied on 3.10/3.11, held on 3.12+.
    assert mid == (b"B" if sys.version_info >= (3, 12) else b"b") * len(ba)
    b.close()


def test_non_contiguous_view_queued_behind_a_partial_send(loop, run):
    # 3.10/3.11 queue into a bytearray, whose extend refuses a buffer with no simple view
    # (bytearray_setslice's TypeError); 3.12+ queue a memoryview of it and write() returns.
    a, b = socket_pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        transport = await _connect(loop, a, Recorder())
        transport.write(b"x" * 4_000_000)  # the kernel takes part: the rest is queued
        assert transport.get_write_buffer_size() > 0
        try:
            transport.write(memoryview(b"abcdef")[::2])
        finally:
            transport.abort()

    if sys.version_info < (3, 12):
        with pytest.raises(TypeError, match="^can't set bytearray slice from memoryview$"):
            run(main())
    else:
        run(main())
    b.close()


def test_data_received_error_reaches_the_handler(loop, run):
    a, b = socket_pair()
    errors = collect_errors(loop)

    class Boom(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ZeroDivisionError("boom")

    async def main():
        proto = Boom()
        await _connect(loop, a, proto)
        await loop.sock_sendall(b, b"x")
        return await proto.lost

    exc = run(main())
    assert isinstance(exc, ZeroDivisionError)
    assert [e["message"] for e in errors] == ["Fatal error: protocol.data_received() call failed."]
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    b.close()


def test_peer_closing_is_eof_then_connection_lost(loop, run):
    a, b = socket_pair()
    errors = collect_errors(loop)

    async def main():
        proto = Recorder()
        await _connect(loop, a, proto)
        return proto, await asyncio.wait_for(proto.lost, 5)

    b.close()
    proto, exc = run(main())
    assert errors == []
    assert proto.eof and exc is None


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, size: int = 7) -> None:
        self.size = size
        self.data = bytearray()
        self.lost: asyncio.Future | None = None
        self.sizes: list[int] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int):
        self.sizes.append(sizehint)
        self.buf = bytearray(self.size)
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return None

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def test_large_reads_then_eof_arrive_intact(loop, run):
    # Large reads make oxloop size the next read to what is queued and receive straight into
    # the bytes handed to data_received (src/transport.rs); the bytes, their type and the
    # end of stream must come out as asyncio's.
    a, b = socket_pair()
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def main():
        proto = Recorder()
        await _connect(loop, a, proto)
        await loop.sock_sendall(b, payload)
        b.shutdown(socket.SHUT_WR)
        await _until_eof(proto)
        proto.transport.close()
        await proto.lost
        return proto

    proto = run(main())
    assert proto.eof
    assert hashlib.sha256(proto.data).digest() == hashlib.sha256(payload).digest()
    b.close()


@pytest.mark.parametrize("kind", ["protocol", "streams"])
def test_large_messages_one_at_a_time_arrive_intact(loop, run, kind):
    # Messages of 64-200 KiB, each read before the next is sent: oxloop predicts the size of a
    # large read from the last one (a short read drained the socket; a full one asks FIONREAD
    # next), so the sizes here go through predicted, full and sized reads. Every byte must
    # arrive in order, on both shapes of the read path.
    sizes = [100_000, 100_000, 70_000, 200_000, 90_000, 120_000, 65_536, 100_000]
    messages = [bytes([i]) * 7 + bytes(range(256)) * (n // 256) for i, n in enumerate(sizes)]
    a, b = socket_pair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    async def main():
        got = bytearray()
        if kind == "protocol":
            proto = Recorder()
            await _connect(loop, a, proto)
            got = proto.data
        else:
            reader, writer = await asyncio.open_connection(sock=a)
        for i, message in enumerate(messages):
            await loop.sock_sendall(b, message)
            want = sum(map(len, messages[: i + 1]))
            while len(got) < want:
                if kind == "protocol":
                    await asyncio.sleep(0)
                else:
                    got += await reader.read(1 << 20)
        b.shutdown(socket.SHUT_WR)
        if kind == "protocol":
            await _until_eof(proto)
            proto.transport.close()
        else:
            assert await reader.read() == b""
            writer.close()
        return bytes(got)

    assert run(wait(main(), 30)) == b"".join(messages)
    b.close()


def test_a_stream_buffer_is_allocated_for_what_arrived(loop, run):
    # Large reads of a stream land in the StreamReader's bytearray itself, grown first by what
    # the read asks for; a bytearray shrunk by less than half keeps its allocation
    # (bytearrayobject.c, PyByteArray_Resize). Asking for a guess (the last size plus an
    # eighth) left each buffer an eighth larger than the bytes read() copies out of it, so the
    # heap could not reuse one chunk for the other: glibc grew and trimmed its top with brk and
    # faulted fresh pages in on every few messages. Stock asyncio extends the buffer by exactly
    # what arrived; each round here queues one message before reading it, so every read takes
    # it whole.
    size = 100_000
    data = payload(size)
    a, b = socket_pair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def queued() -> int:
        return struct.unpack("i", fcntl.ioctl(a.fileno(), termios.FIONREAD, b"\0" * 4))[0]

    async def main():
        reader, writer = await asyncio.open_connection(sock=a, limit=1 << 20)
        slack = []
        for _ in range(4):
            writer.transport.pause_reading()
            await loop.sock_sendall(b, data)
            while queued() < size:
                await asyncio.sleep(0)
            writer.transport.resume_reading()
            while len(reader._buffer) < size:
                await asyncio.sleep(0)
            slack.append(reader._buffer.__alloc__() - len(reader._buffer))
            assert await reader.readexactly(size) == data
        writer.close()
        return slack

    slack = run(wait(main(), 30))
    assert max(slack) < 1024, slack
    b.close()


async def _until_eof(proto: Recorder) -> None:
    for _ in range(100_000):
        if proto.eof:
            return
        await asyncio.sleep(0)
    raise AssertionError("no eof_received")


def test_buffered_protocol_reads_through_its_buffer(loop, run):
    a, b = socket_pair()

    async def main():
        proto = Buffered()
        await _connect(loop, a, proto)
        await loop.sock_sendall(b, b"abcdefghijklmnopqrstuvwxyz")
        b.shutdown(socket.SHUT_WR)
        await proto.lost
        return proto

    proto = run(main())
    assert bytes(proto.data) == b"abcdefghijklmnopqrstuvwxyz"
    assert set(proto.sizes) == {-1}
    b.close()


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (bytearray(), "Fatal error: protocol.get_buffer() call failed."),
        (b"read-only", "Fatal read error on socket transport"),
    ],
)
def test_bad_buffers_are_fatal_errors(loop, run, buffer, message):
    a, b = socket_pair()
    errors = collect_errors(loop)

    class Bad(Buffered):
        def get_buffer(self, sizehint: int):
            return buffer

    async def main():
        proto = Bad()
        await _connect(loop, a, proto)
        await loop.sock_sendall(b, b"x")
        return await proto.lost

    exc = run(main())
    assert [e["message"] for e in errors] == [message]
    assert errors[0]["exception"] is exc
    # socket.recv_into's own exception for a read-only buffer, on both loops.
    assert type(exc) is (RuntimeError if not buffer else TypeError)
    b.close()


def test_set_protocol_switches_between_shapes(loop, run):
    a, b = socket_pair()

    async def main():
        first = Recorder()
        transport = await _connect(loop, a, first)
        await loop.sock_sendall(b, b"one")
        while not first.data:
            await asyncio.sleep(0)
        second = Buffered(size=4)
        second.connection_made(transport)
        transport.set_protocol(second)
        await loop.sock_sendall(b, b"twothree")
        b.shutdown(socket.SHUT_WR)
        await second.lost
        return bytes(first.data), bytes(second.data)

    assert run(main()) == (b"one", b"twothree")
    b.close()


def test_reader_handle_repr_names_read_ready(loop, run):
    # Debug-mode slow-callback lines and handle reprs name the reader as asyncio does.
    a, b = socket_pair()

    async def main():
        transport = await _connect(loop, a, Recorder())
        text = repr(loop._selector.get_key(a.fileno()).data[0])
        transport.close()
        return text

    assert run(main()).startswith("<Handle _SelectorSocketTransport._read_ready()")
    b.close()


def test_fields_rebound_by_assignment_are_honoured(loop, run):
    # The per-event paths read the transport's fields where asyncio's code stores them (slots
    # on oxloop): a protocol assigned straight to ``_protocol`` gets the next read, and a
    # ``_conn_lost`` set by hand makes writes count and drop, as asyncio's write does.
    a, b = socket_pair()

    async def main():
        first, second = Recorder(), Recorder()
        transport = await _connect(loop, a, first)
        second.connection_made(transport)
        transport._protocol = second
        await loop.sock_sendall(b, b"to the second")
        while len(second.data) < 13:
            await asyncio.sleep(0)
        transport.write(b"sent")
        assert await loop.sock_recv(b, 100) == b"sent"
        transport._conn_lost = 1
        transport.write(b"dropped")
        lost = transport._conn_lost
        transport._conn_lost = 0
        transport.write(b"after")
        got = await loop.sock_recv(b, 100)
        transport.close()
        return bytes(first.data), bytes(second.data), lost, got

    # A bound on the waits, so a read that goes astray fails instead of hanging.
    assert run(wait(main())) == (b"", b"to the second", 2, b"after")
    b.close()


def test_transport_subclass_with_property_fields_is_honoured(loop, run):
    # A subclass of the running loop's transport class that turns ``_protocol`` into a
    # property: oxloop's fast paths see the property, not the slot underneath, on reads and
    # writes alike.
    a, b = socket_pair()

    async def main():
        first, routed = Recorder(), Recorder()
        transport = await _connect(loop, a, first)
        routed.connection_made(transport)
        reads = []

        class Routed(type(transport)):
            @property
            def _protocol(self):
                reads.append(1)
                return self.__dict__["routed"]

            @_protocol.setter
            def _protocol(self, value):
                self.__dict__["routed"] = value

        transport.__dict__["routed"] = routed
        transport.__class__ = Routed
        await loop.sock_sendall(b, b"via the property")
        while len(routed.data) < 16:
            await asyncio.sleep(0)
        transport.write(b"from the subclass")
        got = await loop.sock_recv(b, 100)
        transport.close()
        await routed.lost
        return bytes(first.data), bytes(routed.data), got, bool(reads)

    result = run(wait(main()))
    assert result == (b"", b"via the property", b"from the subclass", True)
    b.close()


class Keeper(asyncio.Protocol):
    """Keeps what each data_received call got, as given or as views, or only a copy and its
    hash (so the bytes object itself is free to go)."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.kept: list = []
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.count += 1
        if self.how == "object":
            self.kept.append(data)
        elif self.how == "view":
            self.kept.append(memoryview(data))
        else:
            self.kept.append((bytes(bytearray(data)), hash(data), len(data)))


@pytest.mark.parametrize("how", ["object", "view", "copy"])
def test_each_read_gets_bytes_of_its_own(loop, run, how):
    # Messages of one size and of shrinking and growing sizes, each read on its own: what a
    # protocol keeps stays intact, and a hash taken of the bytes is the hash of their content.
    sizes = [1024] * 4 + [1000, 700, 400, 300, 2, 1, 5000, 9000, 1024]
    messages = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    a, b = socket_pair()

    async def main():
        proto = Keeper(how)
        transport = await _connect(loop, a, proto)
        for i, message in enumerate(messages):
            await loop.sock_sendall(b, message)
            sent = sum(map(len, messages[: i + 1]))
            while sum(k[2] if how == "copy" else len(k) for k in proto.kept) < sent:
                await asyncio.sleep(0)
        transport.close()
        return proto.kept

    kept = run(wait(main()))
    if how == "copy":
        assert b"".join(k[0] for k in kept) == b"".join(messages)
        assert all(h == hash(content) for content, h, _ in kept)
    else:
        assert b"".join(bytes(k) for k in kept) == b"".join(messages)
    b.close()


# -- a transport over a socket subclass that overrides its I/O methods (a wrapper counting or
# logging I/O): asyncio's transport calls the object's recv / recv_into / send, so both loops
# must; oxloop's native read and write paths take only the exact socket.socket.


def _counting_pair(family: str) -> tuple[CountingSocket, socket.socket]:
    if family == "unix":
        a, b = socket.socketpair()
    else:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            a = socket.create_connection(listener.getsockname())
            b, _ = listener.accept()
    b.setblocking(False)
    return counting(a), b


async def _peer_gets(b: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        await asyncio.sleep(0)
        try:
            got += b.recv(100)
        except BlockingIOError:
            pass
    return got


def _subclass_scenario(family: str, how: str, shape: str):
    async def scenario(lp):
        CountingSocket.calls = {}
        a, b = _counting_pair(family)
        with b:
            proto = Recorder() if shape == "protocol" else Buffered(size=64)
            if how == "create_connection":
                if family == "unix":
                    transport, _ = await lp.create_unix_connection(lambda: proto, sock=a)
                else:
                    transport, _ = await lp.create_connection(lambda: proto, sock=a)
            else:
                transport, _ = await lp.connect_accepted_socket(lambda: proto, a)
            b.send(b"abc")
            while len(proto.data) < 3:
                await asyncio.sleep(0)
            transport.write(b"xyz")  # nothing queued: one send
            assert await wait(_peer_gets(b, 3)) == b"xyz"
            b.shutdown(socket.SHUT_WR)  # the next read gets the end of the stream
            exc = await wait(proto.lost)
        return bytes(proto.data), exc, dict(CountingSocket.calls)

    return scenario


@pytest.mark.parametrize("shape", ["protocol", "buffered"])
@pytest.mark.parametrize("how", ["create_connection", "connect_accepted_socket"])
@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_socket_subclass_methods_are_called_by_the_transport(loop, loop_kind, family, how, shape):
    from _net import same_as_stock

    got = same_as_stock(loop, loop_kind, _subclass_scenario(family, how, shape))
    read = "recv" if shape == "protocol" else "recv_into"
    # The data, then the end of the stream (a Recorder keeps its transport open on EOF only
    # if eof_received says so; neither does): one read call each, and one send.
    assert got == (b"abc", None, {read: 2, "send": 1})


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_socket_subclass_methods_are_called_by_streams(loop, loop_kind, family):
    from _net import same_as_stock

    async def scenario(lp):
        CountingSocket.calls = {}
        a, b = _counting_pair(family)
        with b:
            if family == "unix":
                reader, writer = await asyncio.open_unix_connection(sock=a)
            else:
                reader, writer = await asyncio.open_connection(sock=a)
            b.send(b"line\n")
            line = await wait(reader.readline())
            writer.write(b"back")
            await wait(writer.drain())
            assert await wait(_peer_gets(b, 4)) == b"back"
            b.shutdown(socket.SHUT_WR)
            rest = await wait(reader.read())
            writer.close()
            await wait(writer.wait_closed())
        return line, rest, dict(CountingSocket.calls)

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == (b"line\n", b"", {"recv": 2, "send": 1})

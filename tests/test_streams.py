"""asyncio streams over the loop's socket transport behave as over asyncio's own.

oxloop feeds asyncio's ``StreamReaderProtocol`` / ``StreamReader`` natively when both are the
classes asyncio ships, unpatched (src/streams.rs): the bytes go straight into the reader's
buffer, then the waiter is woken and flow control applied as ``feed_data`` does. Each test runs
on stock asyncio too and drives one branch of that path: data integrity, flow control, a
cancelled reader, patched classes and instances (which must get the Python calls), and the
errors ``feed_data`` raises.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import random
from unittest import mock

import pytest
from _helpers import collect_errors
from _net import socket_pair


async def _until(predicate, what: str, rounds: int = 10_000) -> None:
    """Lets the loop run until `predicate()` holds (a bounded number of iterations)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("limit", [2**16, 2**22])
def test_every_byte_arrives_in_order_both_ways(loop, run, limit):
    # Random chunk sizes written, random read sizes and all the read methods on the other
    # side: the hashes of 3 MiB each way must match. With the default limit the transport
    # pauses and resumes reading all along; with a large one, oxloop's reads size themselves
    # to what is queued and receive straight into the reader's buffer (src/streams.rs).
    rnd = random.Random(20261124)
    payload = rnd.randbytes(3 * 1024 * 1024)

    async def pump(writer: asyncio.StreamWriter) -> None:
        pos = 0
        while pos < len(payload):
            n = rnd.randint(1, 100_000)
            writer.write(payload[pos : pos + n])
            pos += n
            await writer.drain()
        writer.write_eof()

    async def drain_all(reader: asyncio.StreamReader) -> bytes:
        h = hashlib.sha256()
        step = 0
        while True:
            step += 1
            if step % 3 == 0:
                try:
                    chunk = await reader.readexactly(rnd.randint(1, 70_000))
                except asyncio.IncompleteReadError as e:
                    chunk = e.partial
            elif step % 3 == 1:
                chunk = await reader.read(rnd.randint(1, 200_000))
            else:
                try:
                    chunk = await reader.readuntil(b"\x00")
                except asyncio.IncompleteReadError as e:
                    chunk = e.partial
                except asyncio.LimitOverrunError as e:
                    chunk = await reader.readexactly(e.consumed)
            if not chunk:
                return h.digest()
            h.update(chunk)

    async def main():
        a, b = socket_pair()
        ra, wa = await asyncio.open_connection(sock=a, limit=limit)
        rb, wb = await asyncio.open_connection(sock=b, limit=limit)
        digests = await asyncio.gather(pump(wa), pump(wb), drain_all(ra), drain_all(rb))
        wa.close()
        wb.close()
        return digests[2:]

    expected = hashlib.sha256(payload).digest()
    assert run(main()) == [expected, expected]


def test_reading_pauses_past_twice_the_limit_and_resumes(loop, run):
    # feed_data pauses the transport once more than 2 * limit bytes are buffered; reading
    # below the limit resumes it (_maybe_resume_transport).
    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a, limit=1024)
        b.sendall(b"x" * 4000)
        await _until(lambda: not writer.transport.is_reading(), "reading to pause")
        buffered = len(reader._buffer)
        data = await reader.read(4000)
        resumed = writer.transport.is_reading()
        writer.close()
        b.close()
        return buffered, len(data), resumed

    buffered, got, resumed = run(main())
    assert buffered > 2048
    assert got == buffered
    assert resumed


def test_a_cancelled_read_leaves_the_data_for_the_next(loop, run):
    # The waiter of a cancelled read() is cancelled: feed_data must not set its result, and the
    # bytes stay buffered for the next read.
    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a)
        task = asyncio.ensure_future(reader.read(100))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        b.sendall(b"after")
        data = await reader.read(100)
        writer.close()
        b.close()
        return data

    assert run(main()) == b"after"


@pytest.mark.parametrize("where", ["class", "instance"])
@pytest.mark.parametrize(
    "owner, method",
    [("reader", "feed_data"), ("reader", "_wakeup_waiter"), ("protocol", "data_received")],
)
def test_a_patched_method_is_called(loop, run, where, owner, method):
    calls: list = []

    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a)
        obj = reader if owner == "reader" else writer.transport.get_protocol()
        if where == "class":
            original = getattr(type(obj), method)

            def spy(self, *args):
                calls.append(args)
                return original(self, *args)

            patch = mock.patch.object(type(obj), method, spy)
        else:
            bound = getattr(obj, method)

            def spy(*args):
                calls.append(args)
                return bound(*args)

            patch = mock.patch.object(obj, method, spy)
        with patch:
            b.sendall(b"hello")
            data = await reader.read(100)
        writer.close()
        b.close()
        return data

    assert run(main()) == b"hello"
    assert calls, f"the patched {method} was not called"


def test_reader_and_protocol_subclasses_are_fed(loop, run):
    class Reader(asyncio.StreamReader):
        fed = 0

        def feed_data(self, data):
            Reader.fed += len(data)
            super().feed_data(data)

    class Proto(asyncio.StreamReaderProtocol):
        pass

    async def main():
        a, b = socket_pair()
        reader = Reader()
        transport, _ = await loop.connect_accepted_socket(lambda: Proto(reader), a)
        b.sendall(b"subclassed")
        data = await reader.read(100)
        transport.close()
        b.close()
        return data

    assert run(main()) == b"subclassed"
    assert Reader.fed == len(b"subclassed")


def test_data_for_a_collected_reader_is_dropped(loop, run):
    # Without a client_connected_cb the protocol holds its reader weakly: once the reader is
    # gone, data_received drops what arrives, and nothing is reported.
    errors = collect_errors(loop)

    async def main():
        a, b = socket_pair()
        reader = asyncio.StreamReader()
        proto = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
        del reader
        gc.collect()
        b.sendall(b"nobody reads this")
        for _ in range(20):  # the read event comes at the next poll; give it plenty
            await asyncio.sleep(0)
        closing = transport.is_closing()
        transport.close()
        b.close()
        return closing

    assert run(main()) is False
    assert errors == []


def test_data_after_feed_eof_is_a_fatal_error(loop, run):
    errors = collect_errors(loop)

    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a)
        reader.feed_eof()
        b.sendall(b"late")
        await _until(lambda: writer.transport.is_closing(), "the transport to close")
        b.close()

    run(main())
    assert [e["message"] for e in errors] == ["Fatal error: protocol.data_received() call failed."]
    assert isinstance(errors[0]["exception"], AssertionError)


@pytest.mark.parametrize("warmup", [0, 200_000])
def test_a_buffer_with_exports_cannot_grow(loop, run, warmup):
    # bytearray.extend refuses to resize while a memoryview of it is alive (BufferError):
    # feed_data raises, and the transport reports it as a data_received failure. A large
    # read first makes oxloop's next read size itself to what is queued (src/transport.rs).
    errors = collect_errors(loop)

    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a, limit=2**22)
        if warmup:
            sender = asyncio.ensure_future(loop.sock_sendall(b, b"w" * warmup))
            assert len(await reader.readexactly(warmup)) == warmup
            await sender
        view = memoryview(reader._buffer)
        b.sendall(b"r" * 100_000)
        await _until(lambda: writer.transport.is_closing(), "the transport to close")
        view.release()
        b.close()

    run(main())
    assert [e["message"] for e in errors] == ["Fatal error: protocol.data_received() call failed."]
    assert isinstance(errors[0]["exception"], BufferError)


@pytest.mark.parametrize("kind", ["cancelled", "shadowed", "python-future"])
def test_the_waiter_is_woken_as_wakeup_waiter_does(loop, run, kind):
    # _wakeup_waiter clears `_waiter`, then calls `waiter.cancelled()` and, when False,
    # `waiter.set_result(None)`. oxloop calls the C Future's methods without looking them up
    # when the waiter is exactly `_asyncio.Future` with no instance attribute (src/streams.rs,
    # CFuture); a cancelled waiter must not get a result (set_result would raise
    # InvalidStateError, a fatal data_received error), one whose instance shadows the methods
    # must have them called, and a waiter of another Future class takes the method calls.
    errors = collect_errors(loop)
    calls: list = []

    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a)
        if kind == "python-future":
            waiter = asyncio.futures._PyFuture(loop=loop)
        else:
            waiter = loop.create_future()
        if kind == "cancelled":
            waiter.cancel()
        if kind == "shadowed":
            cancelled, set_result = waiter.cancelled, waiter.set_result
            waiter.cancelled = lambda: calls.append("cancelled") or cancelled()
            waiter.set_result = lambda r: calls.append(("set_result", r)) or set_result(r)
        reader._waiter = waiter
        b.sendall(b"wake")
        await _until(lambda: reader._waiter is None, "the waiter to be woken")
        data = await reader.read(100)
        writer.close()
        b.close()
        return waiter, data

    waiter, data = run(main())
    assert data == b"wake"
    assert errors == []
    if kind == "cancelled":
        assert waiter.cancelled()
    else:
        assert waiter.done() and waiter.result() is None
    if kind == "shadowed":
        assert calls == ["cancelled", ("set_result", None)]


def test_a_stream_reader_property_patched_later_is_used(loop, run):
    # `StreamReaderProtocol._stream_reader` is looked up once per version tag of the class
    # (src/streams.rs): patching it after data has flowed must still take effect at once.
    calls: list = []
    original = asyncio.StreamReaderProtocol._stream_reader

    def spy(self):
        calls.append(self)
        return original.fget(self)

    async def main():
        a, b = socket_pair()
        reader, writer = await asyncio.open_connection(sock=a)
        b.sendall(b"first")
        assert await reader.read(100) == b"first"
        with mock.patch.object(asyncio.StreamReaderProtocol, "_stream_reader", property(spy)):
            b.sendall(b"second")
            data = await reader.read(100)
        writer.close()
        b.close()
        return data

    assert run(main()) == b"second"
    assert calls, "the patched _stream_reader was not called"

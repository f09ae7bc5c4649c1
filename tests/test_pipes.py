"""Pipes: connect_read_pipe and connect_write_pipe on both loops.

The transports are asyncio's own (unix_events._UnixReadPipeTransport and
_UnixWritePipeTransport) over the loop's fd watching, so these tests pin what they rely on from
the loop: readiness on pipes, FIFOs, ptys, character devices and sockets; end of file; the
"reader went away" detection of write pipes (a read event on the write end); flow control in both
directions; the EIO of a pty whose other side closed; the polling/idle state in reprs (read from
``loop._selector``); and asyncio's ValueError for a regular file.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import sys

import pytest
from _helpers import collect_errors

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix pipes")


class Reader(asyncio.Protocol):
    """Records what a read pipe transport delivers; `done` resolves at connection_lost."""

    def __init__(self, loop, stop_after: int | None = None) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.done = loop.create_future()
        self.stop_after = stop_after
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        if self.stop_after is not None and len(self.data) >= self.stop_after:
            self.transport.close()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)


class Writer(asyncio.BaseProtocol):
    def __init__(self, loop) -> None:
        self.events: list[str] = []
        self.done = loop.create_future()
        self.resumed: asyncio.Future | None = None

    def connection_made(self, transport):
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)


@pytest.fixture
def fds():
    """Closes every fd appended to it (those no transport took over)."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def test_read_pipe_data_eof_and_close(loop, run, fds):
    r, w = os.pipe()
    fds.append(w)

    async def main():
        rpipe = open(r, "rb", buffering=0)
        transport, proto = await loop.connect_read_pipe(lambda: Reader(loop), rpipe)
        assert proto.events == ["made"]  # the waiter resolves after connection_made
        assert transport.get_extra_info("pipe") is rpipe
        assert os.get_blocking(r) is False  # the transport made it non-blocking
        os.write(w, b"hello ")
        os.write(w, b"pipe")
        while len(proto.data) < 10:
            await asyncio.sleep(0)
        os.close(fds.pop())
        exc = await proto.done
        return exc, bytes(proto.data), proto.events, rpipe.closed

    assert run(main()) == (None, b"hello pipe", ["made", "data", "eof", "lost"], True)


def test_read_pipe_pause_resume_and_repr(loop, run, fds):
    r, w = os.pipe()
    fds.append(w)

    async def main():
        transport, proto = await loop.connect_read_pipe(
            lambda: Reader(loop), open(r, "rb", buffering=0)
        )
        await asyncio.sleep(0)  # the reader is added one callback after connection_made
        # (is_reading() is missing from the 3.10 pipe transport; the repr says it all.)
        assert "polling" in repr(transport)
        transport.pause_reading()
        assert "idle" in repr(transport)
        os.write(w, b"held")
        for _ in range(5):
            await asyncio.sleep(0)
        assert proto.data == b""  # nothing is read while paused
        transport.resume_reading()
        while proto.data != b"held":
            await asyncio.sleep(0)
        transport.close()
        assert "closing" in repr(transport)
        await proto.done
        return repr(transport)

    final = run(main())
    assert final.startswith("<_UnixReadPipeTransport closed fd=") and final.endswith(" closed>")


def test_write_pipe_writes_and_close(loop, run, fds):
    r, w = os.pipe()
    fds.append(r)

    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: Writer(loop), open(w, "wb", buffering=0)
        )
        assert transport.can_write_eof()
        transport.write(b"abc")
        transport.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
        assert transport.get_write_buffer_size() == 0  # a pipe with room takes it at once
        transport.write_eof()  # closes the write end
        exc = await proto.done
        return exc, proto.events

    assert run(main()) == (None, ["made", "lost"])
    assert os.read(r, 100) == b"abcdef"
    assert os.read(r, 100) == b""  # EOF: the transport closed the pipe


def test_write_pipe_flow_control(loop, run, fds):
    r, w = os.pipe()
    fds.append(r)
    os.set_blocking(r, False)

    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: Writer(loop), open(w, "wb", buffering=0)
        )
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        proto.resumed = loop.create_future()
        # A pipe holds 64 KiB by default: 1 MiB overflows it and the transport's buffer.
        transport.write(b"x" * (1 << 20))
        assert proto.events == ["made", "pause"]
        assert transport.get_write_buffer_size() > 64 * 1024
        drained = 0

        def drain():
            nonlocal drained
            try:
                drained += len(os.read(r, 1 << 20))
            except BlockingIOError:
                pass

        loop.add_reader(r, drain)
        await proto.resumed
        transport.close()
        await proto.done
        while drained < 1 << 20:
            await asyncio.sleep(0)
        loop.remove_reader(r)
        return proto.events, drained

    assert run(main()) == (["made", "pause", "resume", "lost"], 1 << 20)


@pytest.mark.parametrize("buffered", [False, True])
def test_write_pipe_sees_the_reader_go_away(loop, run, fds, buffered):
    """The write transport watches its fd for reading: when the read end closes, it learns at
    once (connection_lost(None)), or with BrokenPipeError if data was still queued."""
    r, w = os.pipe()
    fds.append(r)
    errors = collect_errors(loop)

    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: Writer(loop), open(w, "wb", buffering=0)
        )
        await asyncio.sleep(0)  # the read-event watch starts one callback after connection_made
        if buffered:
            transport.write(b"y" * (1 << 20))  # more than the pipe holds
            assert transport.get_write_buffer_size() > 0
        os.close(fds.pop())
        return await proto.done

    exc = run(main())
    if buffered:
        assert isinstance(exc, BrokenPipeError)
    else:
        assert exc is None
    assert errors == []


def test_fifo(loop, run, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)

    async def main():
        # Opening the read end first, non-blocking, lets the write end open without a peer.
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(path, os.O_WRONLY)
        _, rproto = await loop.connect_read_pipe(lambda: Reader(loop), os.fdopen(rfd, "rb", 0))
        wt, wproto = await loop.connect_write_pipe(lambda: Writer(loop), os.fdopen(wfd, "wb", 0))
        wt.write(b"through a fifo")
        wt.close()
        await wproto.done
        await rproto.done
        return bytes(rproto.data), rproto.events

    assert run(main()) == (b"through a fifo", ["made", "data", "eof", "lost"])


def test_pty_both_directions_and_eio(loop, run, fds):
    master, slave = os.openpty()
    fds.append(slave)
    errors = collect_errors(loop)

    async def main():
        mdup = os.dup(master)
        _, rproto = await loop.connect_read_pipe(lambda: Reader(loop), os.fdopen(master, "rb", 0))
        wt, _ = await loop.connect_write_pipe(lambda: Writer(loop), os.fdopen(mdup, "wb", 0))
        # slave -> master (read transport)
        os.write(slave, b"from the slave")
        while b"from the slave" not in rproto.data:
            await asyncio.sleep(0)
        # master -> slave (write transport); the line discipline hands it over at newline
        wt.write(b"to the slave\n")
        got = b""
        while b"\n" not in got:
            await asyncio.sleep(0)
            try:
                got += os.read(slave, 100)
            except BlockingIOError:
                pass
        wt.close()
        # Closing the slave makes the master read fail with EIO: a hang-up, which asyncio
        # reports to connection_lost without calling the exception handler.
        os.close(fds.pop())
        exc = await rproto.done
        return got, exc

    os.set_blocking(slave, False)
    got, exc = run(main())
    assert got.replace(b"\r", b"").startswith(b"to the slave")
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert errors == []


def test_character_devices(loop, run):
    async def main():
        # /dev/null takes every write at once: no polling needed.
        wt, wproto = await loop.connect_write_pipe(lambda: Writer(loop), open("/dev/null", "wb"))
        wt.write(b"into the void" * 1000)
        assert wt.get_write_buffer_size() == 0
        wt.close()
        # /dev/random can be polled: read until 4 KiB arrived.
        _, rproto = await loop.connect_read_pipe(
            lambda: Reader(loop, stop_after=4096), open("/dev/random", "rb")
        )
        return await wproto.done, await rproto.done, len(rproto.data) >= 4096

    assert run(main()) == (None, None, True)


def test_write_error_on_a_character_device(loop, run):
    errors = collect_errors(loop)

    async def main():
        wt, proto = await loop.connect_write_pipe(lambda: Writer(loop), open("/dev/full", "wb"))
        wt.write(b"no room")  # ENOSPC: an OSError, so connection_lost gets it, no handler call
        return await proto.done

    exc = run(main())
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert errors == []


def test_unpollable_character_device(loop, run):
    """epoll refuses /dev/zero (EPERM). The transport is created (it is a character device)
    and asyncio's deferred add_reader fails in a callback: the exception handler gets the
    PermissionError and the transport stays open until closed. Both loops do exactly that."""
    errors = collect_errors(loop)

    async def main():
        transport, proto = await loop.connect_read_pipe(
            lambda: Reader(loop), open("/dev/zero", "rb")
        )
        await asyncio.sleep(0)
        assert proto.data == b"" and not proto.done.done()
        transport.close()
        return await proto.done

    assert run(main()) is None
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], PermissionError)
    assert errors[0]["exception"].errno == errno.EPERM


def test_socket_is_accepted(loop, run):
    a, b = socket.socketpair()

    async def main():
        _, rproto = await loop.connect_read_pipe(lambda: Reader(loop), a)
        wt, _ = await loop.connect_write_pipe(lambda: Writer(loop), b)
        wt.write(b"over a socket")
        wt.close()
        await rproto.done
        return bytes(rproto.data)

    assert run(main()) == b"over a socket"


def test_stream_reader_over_a_pipe(loop, run, fds):
    r, w = os.pipe()
    fds.append(w)

    async def main():
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(r, "rb", buffering=0)
        )
        os.write(w, b"line one\nline two\n")
        os.close(fds.pop())
        return [await reader.readline(), await reader.readline(), await reader.read()]

    assert run(main()) == [b"line one\n", b"line two\n", b""]


@pytest.mark.parametrize("direction", ["read", "write"])
def test_regular_file_is_rejected(loop, run, tmp_path, direction):
    path = tmp_path / "regular"
    path.write_bytes(b"data")

    async def main():
        with open(path, "rb" if direction == "read" else "ab") as f:
            with pytest.raises(ValueError, match="Pipe transport is"):
                if direction == "read":
                    await loop.connect_read_pipe(asyncio.Protocol, f)
                else:
                    await loop.connect_write_pipe(asyncio.BaseProtocol, f)
            # The file is left alone and nothing is registered for it.
            assert not f.closed
            assert f.fileno() not in loop._selector.get_map()

    run(main())


# The half-built transport's __del__ then fails in its repr (asyncio's own, on both loops).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_closed_fd_is_rejected(loop, run):
    r, w = os.pipe()
    rpipe = open(r, "rb", buffering=0)
    rpipe.close()
    os.close(w)

    async def main():
        with pytest.raises(ValueError):  # I/O operation on closed file (fileno())
            await loop.connect_read_pipe(asyncio.Protocol, rpipe)

    run(main())


def test_read_size_per_event(loop, run, loop_kind, fds):
    """How much one readiness event reads: asyncio asks for 256 KiB, oxloop for 64 KiB (the
    default pipe capacity, libuv's read size; see python/oxloop/_pipes.py for the allocator
    cost it avoids). Chunk sizes are not part of the Protocol contract; both deliver all data."""
    r, w = os.pipe()
    fds.append(w)
    fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: room for 1 MiB, so big reads are possible
    os.write(w, b"z" * (512 * 1024))
    sizes: list[int] = []

    class Sizes(Reader):
        def data_received(self, data):
            sizes.append(len(data))
            super().data_received(data)

    async def main():
        transport, proto = await loop.connect_read_pipe(
            lambda: Sizes(loop), open(r, "rb", buffering=0)
        )
        while len(proto.data) < 512 * 1024:
            await asyncio.sleep(0)
        transport.close()
        await proto.done

    run(main())
    assert sum(sizes) == 512 * 1024
    assert max(sizes) == (64 * 1024 if loop_kind == "oxloop" else 256 * 1024)

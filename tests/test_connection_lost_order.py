"""When a stream protocol's connection_lost runs, counted in loop iterations, on both loops.

Issue 15 reported asyncpg's pool failing on oxloop with "unexpected connection_lost() call".
That message is asyncpg's ``TLSUpgradeProto.connection_lost``: it runs with ``exc=None``
while the protocol still waits for the server's answer to its SSLRequest, which happens
when the task in ``loop.create_connection`` is cancelled after the transport was made
(asyncpg's pool cancels its floor-maintenance task on ``close()``, and with
``max_queries=1`` that task is often mid-connect). ``create_connection``'s
``except: transport.close(); raise`` (base_events.py) then reaches the protocol, the
protocol fails its own future, and nobody retrieves it: "Future exception was never
retrieved", which asyncpg's test case turns into a failure. Stock asyncio does exactly the
same (asyncpg's test_pool_config_persistence shows it in about 1 run in 4 on either loop,
3.11, 3.13 and 3.14); the first test pins that sequence, without asyncpg, iteration by
iteration, the second the quiet path (answer, then close). The last pins the iteration in
which connection_lost follows each close path of selector_events.py's
``_SelectorSocketTransport`` (``close`` / ``abort`` / ``_force_close`` schedule
``_call_connection_lost`` with ``call_soon``; a flushed ``close`` calls it from
``_write_ready`` directly), so an oxloop transport that ran it
sooner, later or twice fails here on its own.

A ticker callback that re-schedules itself runs once per iteration; every event records the
tick it ran in. Ticks are compared relative to one another, never to the start, so the
connect's own progress (which the kernel decides) does not matter.
"""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from _helpers import collect_errors
from _net import wait

pytestmark = pytest.mark.timeout(60)


class Ticker:
    """Counts loop iterations: the callback re-schedules itself, so it runs once in each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.n = 0
        self.handle = loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        self.handle = self.loop.call_soon(self._tick)

    def stop(self) -> None:
        self.handle.cancel()


class Upgrade(asyncio.Protocol):
    """asyncpg's TLSUpgradeProto, reduced: waits for one byte answering its request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ticker: Ticker, on_made=None) -> None:
        self.on_data = loop.create_future()
        self.ticker = ticker
        self.on_made = on_made
        self.events: list = []

    def connection_made(self, transport) -> None:
        self.events.append(("made", self.ticker.n))
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", self.ticker.n))
        if not self.on_data.done():
            self.on_data.set_result(data)

    def connection_lost(self, exc) -> None:
        self.events.append(("lost", self.ticker.n, exc))
        if not self.on_data.done():
            self.on_data.set_exception(exc or ConnectionError("unexpected connection_lost() call"))


@pytest.mark.parametrize("when", ["in_connection_made", "next_iteration"])
def test_create_connection_cancelled_after_the_transport_is_made(loop, when):
    # "in_connection_made": the cancel lands while create_connection awaits its waiter;
    # "next_iteration": after the waiter's result is set, before the task resumes. Either
    # way the task closes the transport it made and connection_lost(None) follows.
    errors = collect_errors(loop)
    srv = socket.create_server(("127.0.0.1", 0))
    ticker = Ticker(loop)
    box: dict = {}

    def cancel() -> None:
        box["cancel"] = ticker.n
        box["task"].cancel()

    def on_made() -> None:
        if when == "in_connection_made":
            cancel()
        else:
            loop.call_soon(cancel)

    def factory() -> Upgrade:
        box["proto"] = Upgrade(loop, ticker, on_made)
        return box["proto"]

    async def main() -> None:
        box["task"] = task = loop.create_task(
            loop.create_connection(factory, *srv.getsockname()[:2])
        )
        with pytest.raises(asyncio.CancelledError):
            await wait(asyncio.shield(task))
        assert task.cancelled()
        proto = box["proto"]
        # connection_lost is scheduled by close() (call_soon): let it run.
        while len(proto.events) < 2:
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    ticker.stop()
    proto = box["proto"]
    (made, made_tick), (lost, lost_tick, exc) = proto.events
    assert (made, lost, exc) == ("made", "lost", None)
    # made at M; the task resumes at M+1 and closes; _call_connection_lost runs at M+2.
    assert box["cancel"] - made_tick == (0 if when == "in_connection_made" else 1)
    assert lost_tick - made_tick == 2
    # The protocol's future holds the error and nobody awaits it: when it is collected the
    # loop reports it, as asyncpg's test case saw (on stock asyncio too).
    # (The cancelled task's traceback holds create_connection's frame, which holds it too.)
    del proto, box["proto"], box["task"]
    gc.collect()
    assert [e["message"] for e in errors] == ["Future exception was never retrieved"]
    assert str(errors[0]["exception"]) == "unexpected connection_lost() call"
    srv.close()


def test_create_connection_not_cancelled_keeps_the_protocol_quiet(loop):
    # The pool's normal path: the server answers, then the transport is closed: connection_lost
    # finds the future done and sets nothing.
    errors = collect_errors(loop)
    srv = socket.create_server(("127.0.0.1", 0))
    ticker = Ticker(loop)

    async def main() -> Upgrade:
        tr, proto = await loop.create_connection(
            lambda: Upgrade(loop, ticker), *srv.getsockname()[:2]
        )
        peer, _ = srv.accept()
        with peer:
            peer.sendall(b"N")
            assert await wait(proto.on_data) == b"N"
            tr.close()
            while len(proto.events) < 3:
                await asyncio.sleep(0)
        return proto

    proto = loop.run_until_complete(main())
    ticker.stop()
    assert [e[0] for e in proto.events] == ["made", "data", "lost"]
    assert proto.events[2][2] is None
    del proto
    gc.collect()
    assert errors == []
    srv.close()


class Ticked(asyncio.Protocol):
    """Records (callback, tick) for every callback; ``act`` runs inside data_received."""

    def __init__(self, ticker: Ticker, *, eof_result=None, act=None) -> None:
        self.ticker = ticker
        self.eof_result = eof_result
        self.act = act
        self.transport = None
        self.events: list = []
        self.lost = ticker.loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append(("made", self.ticker.n))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", self.ticker.n))
        if self.act is not None:
            self.act(self.transport)

    def eof_received(self):
        self.events.append(("eof", self.ticker.n))
        return self.eof_result

    def pause_writing(self) -> None:
        self.events.append(("pause", self.ticker.n))

    def resume_writing(self) -> None:
        self.events.append(("resume", self.ticker.n))

    def connection_lost(self, exc) -> None:
        self.events.append(("lost", self.ticker.n, type(exc).__name__ if exc else None))
        self.lost.set_result(None)


def relative(events: list) -> list:
    """Each tick made relative to the last anchor: the first event, or a ("close",) marker."""
    out, origin = [], events[0][1] if events else 0
    for name, tick, *rest in events:
        if name in ("close", "abort"):
            origin = tick
        out.append((name, tick - origin, *rest))
    return out


# name -> the events, ticks relative to the last anchor (CPython's selector_events.py:
# close() and abort() schedule _call_connection_lost with call_soon; an EOF read by
# _read_ready__on_eof calls eof_received, then close() unless it returned true; a close()
# with a queue waits, and _write_ready calls _call_connection_lost once the queue is sent).
CLOSE_PATHS = {
    "close": [("close", 0), ("lost", 1, None)],
    "abort_with_queue": [("abort", 0), ("lost", 1, None)],
    "close_with_queue": [("close", 0), ("lost", None, None)],  # when the peer has read it all
    "close_in_data_received": [("data", 0), ("lost", 1, None)],
    "abort_in_data_received": [("data", 0), ("lost", 1, None)],
    "pause_reading_in_data_received_then_close": [
        ("data", 0),
        ("close", 0),
        ("lost", 1, None),
    ],
    "peer_eof": [("data", 0), ("eof", 1), ("lost", 2, None)],
    "peer_eof_kept_open_then_close": [("data", 0), ("eof", 1), ("close", 0), ("lost", 1, None)],
}


@pytest.mark.parametrize("case", sorted(CLOSE_PATHS))
def test_connection_lost_iteration_per_close_path(loop, case):
    errors = collect_errors(loop)
    srv = socket.create_server(("127.0.0.1", 0))
    ticker = Ticker(loop)
    acts = {
        "close_in_data_received": lambda tr: tr.close(),
        "abort_in_data_received": lambda tr: tr.abort(),
        "pause_reading_in_data_received_then_close": lambda tr: tr.pause_reading(),
    }
    proto = Ticked(
        ticker,
        eof_result=True if case == "peer_eof_kept_open_then_close" else None,
        act=acts.get(case),
    )

    def mark(name: str) -> None:
        proto.events.append((name, ticker.n))

    async def settle(n: int = 5) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def main() -> None:
        tr, _ = await loop.create_connection(lambda: proto, *srv.getsockname()[:2])
        peer, _ = srv.accept()
        peer.setblocking(False)
        with peer:
            await settle()
            proto.events.clear()
            if case == "close":
                mark("close")
                tr.close()
            elif case in ("abort_with_queue", "close_with_queue"):
                tr.set_write_buffer_limits(high=1 << 30)  # no pause_writing
                tr.write(b"x" * (16 << 20))  # more than the socket buffers hold
                assert tr.get_write_buffer_size() > 0
                if case == "abort_with_queue":
                    mark("abort")
                    tr.abort()
                    assert tr.get_write_buffer_size() == 0
                else:
                    mark("close")
                    tr.close()
                    await settle()
                    assert len(proto.events) == 1  # waits for the queue to flush
                    got = 0
                    while got < 16 << 20:
                        try:
                            got += len(peer.recv(1 << 20))
                        except BlockingIOError:
                            await asyncio.sleep(0)
            else:
                peer.sendall(b"a")
                if case.startswith("peer_eof"):
                    peer.shutdown(socket.SHUT_WR)
                else:
                    while not proto.events:
                        await asyncio.sleep(0)
                    peer.sendall(b"b")  # never delivered: reading stopped in data_received
                await settle()
                if case in (
                    "pause_reading_in_data_received_then_close",
                    "peer_eof_kept_open_then_close",
                ):
                    assert not tr.is_closing()
                    mark("close")
                    tr.close()
            await wait(proto.lost)
            await settle()

    loop.run_until_complete(main())
    ticker.stop()
    events = relative(proto.events)
    if case == "close_with_queue":
        assert events[-1][1] > 0
        events[-1] = ("lost", None, None)
    assert events == CLOSE_PATHS[case]
    assert errors == []
    srv.close()

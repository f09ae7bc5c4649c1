"""Garbage collection: handles and loops are collected as with asyncio.

oxloop hides queued handles from the cyclic GC while the loop owns them (for speed); these
tests pin down that nothing observable changes: dropped loops, cycles through handles users
keep, and loops kept alive by a handle a user still holds.
"""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest


class _Owner:
    def __init__(self, loop):
        # A cycle through the handle: self -> handle -> bound method -> self.
        self.handle = loop.call_soon(self.callback)
        self.timer = loop.call_later(3600, self.callback)

    def callback(self):
        pass


def test_dropped_unclosed_loop_with_queued_callbacks_is_collected(loop_factory):
    def make():
        lp = loop_factory()
        owner = _Owner(lp)
        lp.call_soon(owner.callback)
        return weakref.ref(lp)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed event loop"
        ref = make()
        gc.collect()
    assert ref() is None


async def _one():
    return 1


def test_closed_loop_that_made_futures_and_tasks_is_collected(loop_factory):
    # oxloop keeps the `{"loop": loop}` its create_future and create_task pass to the C
    # Future and Task (src/loop_core/factories.rs): a cycle the collector must break.
    def make():
        lp = loop_factory()
        fut = lp.create_future()
        fut.set_result(None)
        assert lp.run_until_complete(lp.create_task(_one())) == 1
        lp.close()
        return weakref.ref(lp)

    ref = make()
    gc.collect()
    assert ref() is None


def test_cycle_through_a_kept_handle_is_collected_after_it_runs(loop):
    owner = _Owner(loop)
    owner.timer.cancel()
    ref = weakref.ref(owner)
    del owner
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_cycle_through_a_cancelled_timer_is_collected_after_close(loop_factory):
    lp = loop_factory()
    owner = _Owner(lp)
    ref = weakref.ref(owner)
    del owner
    lp.close()
    gc.collect()
    assert ref() is None


def test_a_held_queued_handle_keeps_its_loop_alive(loop_factory):
    lp = loop_factory()
    handle = lp.call_soon(print)
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is not None
    assert not handle._loop.is_closed()
    handle._loop.close()


@pytest.mark.parametrize("n", [10_000])
def test_many_queued_handles_run_after_collections(loop, n):
    seen = []
    for i in range(n):
        loop.call_soon(seen.append, i)
    gc.collect()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == list(range(n))


def test_replacing_a_queued_handles_context_is_safe(loop):
    # The loop hides the context copy it makes for a handle from the GC; user code that swaps
    # the handle's context while it is queued must neither crash nor change what runs.
    import contextvars

    seen = []
    var = contextvars.ContextVar("var", default="unset")
    handle = loop.call_soon(lambda: seen.append(var.get()))
    other = contextvars.copy_context()
    other.run(var.set, "other")
    handle._context = other
    gc.collect()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["other"]


def test_a_kept_handle_keeps_its_state_after_it_ran(loop):
    # oxloop reuses handles nobody else holds; one the caller kept must stay as asyncio leaves
    # it, however many other callbacks run after it.
    def f(x):
        pass

    kept = loop.call_soon(f, "kept")
    for i in range(5000):
        loop.call_soon(f, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    for i in range(5000):
        loop.call_soon(f, -i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert kept._callback is f
    assert kept._args == ("kept",)
    assert not kept.cancelled()
    assert "kept" in repr(kept)


def test_a_weakly_referenced_handle_dies_after_it_ran(loop):
    ref = weakref.ref(loop.call_soon(lambda: None))
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_handles_are_distinct_objects_while_queued(loop):
    handles = [loop.call_soon(lambda: None) for _ in range(100)]
    loop.call_soon(loop.stop)
    loop.run_forever()
    handles += [loop.call_soon(lambda: None) for _ in range(100)]
    assert len({id(h) for h in handles}) == len(handles)
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_connections_closed_on_eof_keep_nothing(loop, run):
    # A transport that closes from its own read callback (EOF) removes the reader handle that
    # is running: the loop's queue then holds its last reference. oxloop kept such handles as
    # spares for call_soon, one per connection, up to 32,768 (~3 MiB) that a busy server
    # never gave back (benches/churn.py). Nothing a connection leaves behind may accumulate.
    import asyncio
    import socket
    import sys

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def connections(n):
        for _ in range(n):
            a, b = socket.socketpair()
            b.setblocking(False)
            transport, _ = await loop.connect_accepted_socket(Echo, a)
            b.sendall(b"ping")
            assert await loop.sock_recv(b, 4) == b"ping"
            b.close()  # EOF: the transport closes itself
            while not transport.is_closing():
                await asyncio.sleep(0)
            for _ in range(3):  # connection_lost runs
                await asyncio.sleep(0)

    def blocks():
        gc.collect()
        return sys.getallocatedblocks()

    n = 2000
    run(connections(n))  # warm-up: caches of the interpreter and of both loops fill
    # Bounded caches can still fill over the next few thousand connections (oxloop grew
    # 100-263 blocks in one of the first rounds, then 0-17), while what accumulates grows in
    # every round (the bug: ~n each): the least growth of three rounds is what is kept.
    growth = []
    for _ in range(3):
        before = blocks()
        run(connections(n))
        growth.append(blocks() - before)
    assert min(growth) < n // 10, growth  # oxloop kept ~n before (asyncio: ~0)


def _fd_is_open(fd):
    import os

    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _warning_kind(message):
    """What a ResourceWarning is about: "unclosed event loop", "unclosed transport", ..."""
    text = str(message)
    for kind in ("unclosed event loop", "unclosed transport", "unclosed <socket"):
        if text.startswith(kind):
            return kind
    return text


def test_dropped_unclosed_loop_with_open_connections_is_collected(loop_factory, tmp_path):
    # A loop nobody closes and nobody holds any more is collected with everything it serves
    # (asyncio: cycles through loop, transports, protocols, handles and futures, which the GC
    # finds). oxloop's native reader callback held its transport where the GC could not see
    # it, so such a loop, its connections and their fds were never freed.
    import asyncio
    import os
    import socket

    made = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            made.append(transport)

    fds = []
    unowned = []  # the fds of the sockets no transport owns
    refs = []

    def make():
        lp = loop_factory()

        async def setup():
            server = await lp.create_server(Proto, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            tcp, _ = await lp.create_connection(Proto, "127.0.0.1", port)
            path = str(tmp_path / "s")
            userver = await lp.create_unix_server(Proto, path)
            unix, _ = await lp.create_unix_connection(Proto, path)
            while len(made) < 4:  # the servers' side of both connections
                await asyncio.sleep(0)
            del made[:]
            a, b = socket.socketpair()
            c, d = socket.socketpair()
            for s in (a, b, c, d):
                s.setblocking(False)
            # sock_* waits that never complete: nothing is sent to a or c, d's buffer is full.
            waits = [
                lp.create_task(lp.sock_recv(a, 10)),
                lp.create_task(lp.sock_recv_into(c, bytearray(10))),
            ]
            try:
                while True:
                    d.send(b"x" * 65536)
            except BlockingIOError:
                pass
            waits.append(lp.create_task(lp.sock_sendall(d, b"y" * 1_000_000)))
            await asyncio.sleep(0)
            lp.call_later(3600, print)
            r, w = os.pipe()
            lp.add_reader(r, print)
            held = [server, userver, tcp, unix, waits, a, b, c, d, r, w]
            unowned.extend(s.fileno() for s in (*server.sockets, *userver.sockets, a, b, c, d))
            fds.extend(unowned)
            for t in (tcp, unix):
                fds.append(t.get_extra_info("socket").fileno())
            return held

        held = lp.run_until_complete(setup())
        r, w = held[-2:]
        os.close(w)
        refs.append(weakref.ref(lp))
        refs.append(weakref.ref(held[2]))  # the TCP transport
        return r

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = make()
        gc.collect()
        gc.collect()
    os.close(r)
    # A recorded ResourceWarning keeps its `source` (the loop, a transport): the finalizer that
    # warned made it reachable again. Up to 3.14 the collector had cleared its weak references
    # before running finalizers; on 3.15 the weakref stays alive while the record holds the
    # object (stock asyncio's loop too). Keep only the texts, then collect again.
    caught = [(w.category, w.message) for w in caught]
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    assert [fd for fd in fds if _fd_is_open(fd)] == []
    # asyncio's warnings: the loop's and each transport's __del__ warn once; a socket warns
    # when its own finalizer runs before its transport's __del__ closed it, which depends on
    # the order the collector finalizes the cycle in (3.11 and 3.13 differ), so the sockets no
    # transport owns (servers' and the socket pairs) are the ones that always warn.
    kinds = [_warning_kind(message) for category, message in caught if category is ResourceWarning]
    assert sorted(set(kinds)) == ["unclosed <socket", "unclosed event loop", "unclosed transport"]
    assert kinds.count("unclosed event loop") == 1
    assert kinds.count("unclosed transport") == 4  # both ends of the TCP and Unix connections
    warned = {
        int(str(message).split("fd=")[1].split(",")[0])
        for _, message in caught
        if _warning_kind(message) == "unclosed <socket"
    }
    assert set(unowned) <= warned, (unowned, [str(message) for _, message in caught])


def test_a_closed_socket_transport_is_freed_without_the_cyclic_gc(loop, loop_kind):
    # asyncio's socket transport keeps `_read_ready_cb`, a bound method of itself: 3.12+ drop
    # it on close (gh-100348), 3.10/3.11 keep it, so a closed transport (its socket, extra
    # dict, buffer) waits for the cyclic GC there; oxloop's transport drops it on every
    # version (docs/compatibility.md).
    import asyncio
    import socket
    import sys

    a, b = socket.socketpair()
    lost = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.set_result(exc)

    async def main():
        transport, _ = await loop.create_connection(Proto, sock=a)
        transport.close()
        await lost
        return weakref.ref(transport)

    gc.collect()
    gc.disable()
    try:
        ref = loop.run_until_complete(main())
        freed = ref() is None
    finally:
        gc.enable()
        b.close()
    assert freed == (loop_kind == "oxloop" or sys.version_info >= (3, 12))

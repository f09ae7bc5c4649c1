"""Virtual time (``oxloop.testing.VirtualClock``): autojump, advance, end, deadlocks, seeds.

Virtual time is an oxloop feature with no asyncio counterpart, so these tests run on oxloop
only; where a behaviour has an asyncio meaning (what a scenario's sleeps, timeouts and retries
produce), the same code also runs on stock asyncio at a tiny real-time scale and the outcomes
must be identical.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import math
import random
import socket
import sys
import threading
import time
import warnings

import oxloop
import pytest
from oxloop.testing import Deadlock, EndOfVirtualTime, VirtualClock, virtual_loop_factory

HAS_TIMEOUT = sys.version_info >= (3, 11)


def vrun(coro, **clock_kwargs):
    """Run `coro` with oxloop.run on a fresh virtual-time loop."""
    return oxloop.run(coro, loop_factory=virtual_loop_factory(**clock_kwargs))


def stock_run(coro):
    """Run `coro` on stock asyncio's selector loop."""
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def scenario(scale: float) -> list[tuple[str, float]]:
    """Sleeps, wait_for, asyncio.timeout and retry-with-backoff: ten minutes at scale 1.

    Returns (outcome, time since start in units of `scale`) for each step.
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    log: list[tuple[str, float]] = []

    def note(what: str) -> None:
        log.append((what, (loop.time() - t0) / scale))

    await asyncio.sleep(120 * scale)
    note("slept")
    try:
        await asyncio.wait_for(asyncio.sleep(60 * scale, result="late"), 30 * scale)
    except asyncio.TimeoutError:
        note("wait_for timed out")
    note(await asyncio.wait_for(asyncio.sleep(10 * scale, result="in time"), 30 * scale))
    if HAS_TIMEOUT:
        try:
            async with asyncio.timeout(45 * scale):
                await asyncio.sleep(90 * scale)
        except TimeoutError:
            note("timeout() fired")
    else:  # the same deadline through wait_for on 3.10
        try:
            await asyncio.wait_for(asyncio.sleep(90 * scale), 45 * scale)
        except asyncio.TimeoutError:
            note("timeout() fired")

    # Retry with exponential backoff: the fifth attempt succeeds.
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(1 * scale)
        if attempts < 5:
            raise ConnectionError(f"attempt {attempts} refused")
        return "connected"

    delay = 2.0
    while True:
        try:
            note(await asyncio.wait_for(flaky(), 10 * scale))
            break
        except ConnectionError as e:
            note(str(e))
            await asyncio.sleep(delay * scale)
            delay *= 2

    # A retry loop that never succeeds, bounded by an overall deadline.
    tries = 0

    async def retry_forever() -> None:
        nonlocal tries
        backoff = 5.0
        while True:
            tries += 1
            await asyncio.sleep(1 * scale)
            await asyncio.sleep(backoff * scale)
            backoff *= 2

    try:
        await asyncio.wait_for(retry_forever(), 300 * scale)
    except asyncio.TimeoutError:
        note(f"gave up after {tries} tries")
    await asyncio.sleep(60 * scale)
    note("done")
    return log


# What the scenario gives, worked out by hand from its sleeps and deadlines (in seconds).
EXPECTED = [
    ("slept", 120.0),
    ("wait_for timed out", 150.0),
    ("in time", 160.0),
    ("timeout() fired", 205.0),
    ("attempt 1 refused", 206.0),
    ("attempt 2 refused", 209.0),
    ("attempt 3 refused", 214.0),
    ("attempt 4 refused", 223.0),
    ("connected", 240.0),
    ("gave up after 6 tries", 540.0),
    ("done", 600.0),
]


def test_ten_minutes_of_timeouts_and_retries_take_milliseconds():
    t = time.perf_counter()
    log = vrun(scenario(1.0))
    elapsed = time.perf_counter() - t
    assert log == EXPECTED
    assert elapsed < 0.05, f"{elapsed * 1e3:.1f} ms of real time for ten virtual minutes"


def test_scenario_outcomes_match_stock_asyncio():
    # The same code on asyncio, in real time at 1/1000 scale (0.6 s): same outcomes, in order.
    stock = stock_run(scenario(0.001))
    assert [what for what, _ in stock] == [what for what, _ in EXPECTED]


def test_ten_thousand_sleepers_finish_in_a_repeatable_order():
    # Half on whole minutes, so many deadlines are equal.
    rng = random.Random(1234)
    delays = [
        rng.uniform(0, 3600) if i % 2 else float(rng.randrange(0, 3601, 60)) for i in range(10_000)
    ]

    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        done: list[tuple[int, float]] = []

        async def sleeper(i: int) -> None:
            await asyncio.sleep(delays[i])
            done.append((i, loop.time()))

        await asyncio.gather(*(sleeper(i) for i in range(len(delays))))
        return done

    first = vrun(main())
    second = vrun(main())
    assert first == second
    # Each woke at its own deadline, earliest first; equal deadlines (many multiples of 60 s)
    # in the order the sleeps began.
    assert [t for _, t in first] == [delays[i] for i, _ in first]
    assert [i for i, _ in first] == sorted(range(len(delays)), key=lambda i: (delays[i], i))


def test_time_starts_at_start_and_never_goes_back():
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = [loop.time()]
        loop.call_later(-5, lambda: seen.append(loop.time()))  # in the past: due at once
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.sleep(2.5)
        seen.append(loop.time())
        return seen

    assert vrun(main(), start=1000.0) == [1000.0, 1000.0, 1002.5]


def test_equal_deadlines_and_call_soon_stay_fifo():
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        for name in "abcde":
            loop.call_later(7, order.append, name)
        for name in "vwxyz":
            loop.call_soon(order.append, name)
        await asyncio.sleep(8)
        return order

    assert vrun(main(), seed=99) == list("vwxyzabcde")


def test_advance_runs_each_timer_at_its_own_deadline():
    async def main() -> tuple[list[tuple[str, float]], float]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def sleeper(name: str, d: float) -> None:
            await asyncio.sleep(d)
            seen.append((name, loop.time()))

        tasks = [asyncio.ensure_future(sleeper(n, d)) for n, d in [("b", 3), ("a", 1), ("c", 9)]]
        await loop.clock.advance(5)
        after = loop.time()
        seen.append(("advanced", after))
        await loop.clock.advance(10)
        await asyncio.gather(*tasks)
        return seen, loop.time()

    # Autojump off: time moves only through advance().
    seen, end = vrun(main(), autojump_threshold=None)
    assert seen == [("a", 1.0), ("b", 3.0), ("advanced", 5.0), ("c", 9.0)]
    assert end == 15.0


def test_advance_zero_lets_everything_due_now_run():
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        out: list[str] = []

        async def chain() -> None:
            for _ in range(5):
                await asyncio.sleep(0)
            out.append("chain")

        asyncio.ensure_future(chain())
        loop.call_later(0, out.append, "timer")
        await loop.clock.advance(0)
        out.append(f"now={loop.time()}")
        return out

    assert vrun(main(), autojump_threshold=None) == ["timer", "chain", "now=0.0"]


def test_advance_rejects_bad_arguments():
    async def main() -> None:
        clock = asyncio.get_running_loop().clock
        with pytest.raises(ValueError):
            await clock.advance(-1)
        with pytest.raises(ValueError):
            await clock.advance(math.nan)
        with pytest.raises(TypeError):
            await clock.advance("1")

    vrun(main())


def test_cancelled_advance_is_forgotten():
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t = asyncio.ensure_future(loop.clock.advance(100))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(3)
        return loop.time()

    assert vrun(main()) == 3.0


@pytest.mark.timeout(10)
def test_autojump_waits_for_executor_and_to_thread_work():
    # A thread that takes 50 ms of real time must finish before a 1 s virtual deadline: time
    # does not jump over pending thread work.
    async def main() -> tuple[str, str, float]:
        loop = asyncio.get_running_loop()
        a = await asyncio.wait_for(asyncio.to_thread(lambda: (time.sleep(0.05), "thread")[1]), 1)
        b = await asyncio.wait_for(
            loop.run_in_executor(None, lambda: (time.sleep(0.05), "executor")[1]), 1
        )
        t = loop.time()
        # Finished work no longer holds time still (a leaked count would block here forever).
        await asyncio.sleep(5)
        return a, b, t, loop.time()

    assert vrun(main()) == ("thread", "executor", 0.0, 5.0)


@pytest.mark.timeout(10)
def test_cancelled_executor_work_stops_holding_time():
    # Work cancelled before a worker picks it up never runs: its count must still drop.
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            gate = threading.Event()
            busy = loop.run_in_executor(pool, gate.wait)
            queued = loop.run_in_executor(pool, time.sleep, 100)
            queued.cancel()
            gate.set()
            await busy
        await asyncio.sleep(7)
        return loop.time()

    assert vrun(main()) == 7.0


def test_deadlock_raises_within_a_second_naming_the_task():
    async def stuck_here() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        await asyncio.gather(asyncio.ensure_future(stuck_here()), asyncio.sleep(5))

    t = time.perf_counter()
    with pytest.raises(Deadlock) as info:
        vrun(main())
    assert time.perf_counter() - t < 1.0
    msg = str(info.value)
    assert "stuck_here() at" in msg and __file__ in msg
    assert "wait() at" in msg  # asyncio.Event.wait, where the task sits
    assert "main() at" in msg


def test_deadlock_with_autojump_off_and_timers_pending():
    async def main() -> None:
        await asyncio.sleep(1)

    with pytest.raises(Deadlock, match="autojump is off"):
        vrun(main(), autojump_threshold=None)


def test_a_thread_calling_back_is_not_a_deadlock():
    # A hand-made thread the loop does not know of, calling back within the grace period.
    async def main() -> str:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Thread(
            target=lambda: (time.sleep(0.01), loop.call_soon_threadsafe(fut.set_result, "ok"))
        ).start()
        return await fut

    assert vrun(main()) == "ok"


def test_end_raises_a_timeout_error_once_then_cleanup_runs():
    cleaned: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(10)
            await asyncio.sleep(100)
        finally:
            await asyncio.sleep(1000)  # cleanup may still use time: end fires only once
            cleaned.append(loop.time())

    with pytest.raises(EndOfVirtualTime, match="end=60.0") as info:
        vrun(main(), end=60)
    assert isinstance(info.value, TimeoutError)
    assert "main() at" in str(info.value)
    assert cleaned == [1060.0]


def test_end_not_reached_is_silent():
    async def main() -> float:
        await asyncio.sleep(59)
        return asyncio.get_running_loop().time()

    assert vrun(main(), end=60) == 59.0


def echo_server_scenario():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        await asyncio.sleep(30)  # think for 30 virtual seconds
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello over loopback\n")
        reply = await asyncio.wait_for(reader.readline(), 60)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply, loop.time()

    return main()


def test_loopback_tcp_exchange_under_autojump_threshold():
    reply, now = vrun(echo_server_scenario(), autojump_threshold=0.01)
    assert reply == b"HELLO OVER LOOPBACK\n"
    assert now == 30.0


def io_order(seed: int | None) -> list[int]:
    """The order in which eight readable socket pairs' readers run in one poll."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        pairs = [socket.socketpair() for _ in range(8)]
        order: list[int] = []
        try:
            for i, (r, _w) in enumerate(pairs):
                r.setblocking(False)
                loop.add_reader(r, lambda i=i, r=r: (order.append(i), r.recv(16)))
            for _, w in pairs:
                w.send(b"x")
            while len(order) < len(pairs):
                await asyncio.sleep(0)
            return order
        finally:
            for r, w in pairs:
                loop.remove_reader(r)
                r.close()
                w.close()

    return vrun(main(), seed=seed)


def test_seed_shuffles_io_dispatch_reproducibly():
    orders = {seed: io_order(seed) for seed in range(12)}
    for seed in (0, 5, 11):
        assert io_order(seed) == orders[seed]
    assert all(sorted(o) == list(range(8)) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 1


def test_autojump_threshold_can_change_while_running():
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert loop.clock.autojump_threshold == math.inf
        await loop.clock.advance(0.5)
        loop.clock.autojump_threshold = 0
        await asyncio.sleep(100)
        return loop.time()

    assert vrun(main(), autojump_threshold=None) == 100.5


def test_clock_api():
    clock = VirtualClock(start=5, autojump_threshold=0.5, end=10, seed=3)
    assert (clock.now, clock.start, clock.end, clock.seed) == (5.0, 5.0, 10, 3)
    assert clock.autojump_threshold == 0.5
    assert repr(clock) == "<VirtualClock now=5.0 autojump_threshold=0.5 end=10.0 seed=3>"
    loop = oxloop.new_event_loop(clock=clock)
    try:
        assert loop.clock is clock
        assert loop.time() == 5.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RuntimeError, match="one per loop"):
                oxloop.new_event_loop(clock=clock)
            gc.collect()  # the refused loop is closed: no "unclosed event loop" when collected
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    finally:
        loop.close()
    real = oxloop.new_event_loop()
    try:
        assert real.clock is None
        assert abs(real.time() - time.monotonic()) < 1
    finally:
        real.close()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"start": math.inf}, ValueError),
        ({"start": "0"}, TypeError),
        ({"autojump_threshold": -1}, ValueError),
        ({"autojump_threshold": math.nan}, ValueError),
        ({"end": -1}, ValueError),
        ({"seed": 1.5}, TypeError),
    ],
)
def test_clock_rejects_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        VirtualClock(**kwargs)


def test_loop_rejects_a_foreign_clock():
    with pytest.raises(TypeError, match="VirtualClock"):
        oxloop.Loop(clock=object())


def test_run_until_complete_and_run_forever_work_directly():
    loop = oxloop.new_event_loop(clock=VirtualClock(start=0))
    try:
        loop.call_later(3600, loop.stop)
        t = time.perf_counter()
        loop.run_forever()
        assert loop.time() == 3600.0
        assert loop.run_until_complete(asyncio.sleep(60, result="r")) == "r"
        assert loop.time() == 3660.0
        assert time.perf_counter() - t < 0.5
    finally:
        loop.close()

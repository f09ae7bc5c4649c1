"""Seed 003 ("Mixing with blocking call"): asyncio.to_thread() beside a coroutine.

blocking_io() blocks its worker thread for 5 seconds while factorial("A", 3) sleeps twice for
2 seconds on the loop; main finishes after 5 seconds, not 9. The printed lines come seconds
apart, so their order is fixed. time.strftime('%X') is replaced
by clock() (see say_after_sequential.py).
"""

import asyncio
import datetime
import time

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
T0 = time.monotonic()
START = datetime.datetime(2024, 6, 17, 13, 10, 0)


def clock() -> str:
    # Sleeps never end early and end late by much less than 0.7 UNIT.
    seconds = int((time.monotonic() - T0) / UNIT + 0.3)
    return (START + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")


def blocking_io():
    print(f"start blocking_io at {clock()}")
    # Blocking I/O operation
    time.sleep(5 * UNIT)
    print(f"blocking_io complete at {clock()}")


async def factorial(name, number):
    f = 1
    for i in range(2, number + 1):
        print(f"Task {name}: Compute factorial({i})...")
        await asyncio.sleep(2 * UNIT)
        f *= i
    print(f"Task {name}: factorial({number}) = {f}")


async def main():
    print(f"started main at {clock()}")

    # The tutorial passes to_thread(blocking_io) first; then the worker thread's first print
    # races with factorial()'s. With factorial() first, the thread prints while the loop waits.
    await asyncio.gather(factorial("A", 3), asyncio.to_thread(blocking_io))

    print(f"finished main at {clock()}")


asyncio.run(main())

"""Seed 001 (asyncio docs): two say_after() tasks run concurrently and take 2 seconds, not 3.

time.strftime('%X') is replaced by clock() (see say_after_sequential.py).
"""

import asyncio
import datetime
import time

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
T0 = time.monotonic()
START = datetime.datetime(2024, 6, 17, 13, 3, 5)


def clock() -> str:
    # Sleeps never end early and end late by much less than 0.7 UNIT.
    seconds = int((time.monotonic() - T0) / UNIT + 0.3)
    return (START + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")


async def say_after(delay, what):
    await asyncio.sleep(delay * UNIT)
    print(what)


async def main():
    task1 = asyncio.create_task(say_after(1, "hello"))

    task2 = asyncio.create_task(say_after(2, "world"))

    print(f"started at {clock()}")

    # Wait until both tasks are completed (should take
    # around 2 seconds.)
    await task1
    await task2

    print(f"finished at {clock()}")


asyncio.run(main())

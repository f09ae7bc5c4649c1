"""Seed 001 (asyncio docs): awaiting say_after() twice takes 1 + 2 = 3 seconds.

time.strftime('%X') is replaced by clock(): the tutorial's wall clock at 13:01:45 plus the
elapsed time in whole tutorial seconds, so the printed times are deterministic and still
show how long the program took.
"""

import asyncio
import datetime
import time

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
T0 = time.monotonic()
START = datetime.datetime(2024, 6, 17, 13, 1, 45)


def clock() -> str:
    # Sleeps never end early and end late by much less than 0.7 UNIT.
    seconds = int((time.monotonic() - T0) / UNIT + 0.3)
    return (START + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")


async def say_after(delay, what):
    await asyncio.sleep(delay * UNIT)
    print(what)


async def main():
    print(f"started at {clock()}")

    await say_after(1, "hello")
    await say_after(2, "world")

    print(f"finished at {clock()}")


asyncio.run(main())

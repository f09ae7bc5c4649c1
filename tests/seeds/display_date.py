"""Seed 001 (asyncio docs): print the date every second for 5 seconds, timed by loop.time().

datetime.datetime.now() is replaced by now(): the tutorial's first timestamp plus the elapsed
loop time in whole tutorial seconds, so the five lines are deterministic.
"""

import asyncio
import datetime

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
START = datetime.datetime(2024, 6, 17, 13, 5, 7)


async def display_date():
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def now():
        # Sleeps never end early and end late by much less than 0.7 UNIT.
        return START + datetime.timedelta(seconds=int((loop.time() - t0) / UNIT + 0.3))

    end_time = loop.time() + 5.0 * UNIT
    while True:
        print(now())
        if (loop.time() + 1.0 * UNIT) >= end_time:
            break
        await asyncio.sleep(1 * UNIT)


asyncio.run(display_date())

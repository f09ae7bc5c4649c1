"""Seed 002: display_date(loop) on the loop from get_event_loop(), timed by loop.time().

datetime.datetime.now() is replaced by now() (see display_date.py).
"""

import asyncio
import datetime

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
START = datetime.datetime(2024, 6, 17, 13, 5, 7)


async def display_date(loop):
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


loop = asyncio.get_event_loop()
# Blocking call which returns when the display_date() coroutine is done
loop.run_until_complete(display_date(loop))
loop.close()

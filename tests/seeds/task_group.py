"""asyncio docs (Python 3.11+): a TaskGroup of say_after() tasks, then one whose task fails.

In the failing group the sibling task is cancelled and the group raises an ExceptionGroup;
the last group's ExceptionGroup is left uncaught, so the traceback and exit status 1 are
compared too. time.strftime('%X') is replaced by clock() (see say_after_sequential.py).
"""

import asyncio
import datetime
import time

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)
T0 = time.monotonic()
START = datetime.datetime(2024, 6, 17, 13, 20, 0)


def clock() -> str:
    # Sleeps never end early and end late by much less than 0.7 UNIT.
    seconds = int((time.monotonic() - T0) / UNIT + 0.3)
    return (START + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")


async def say_after(delay, what):
    await asyncio.sleep(delay * UNIT)
    print(what)
    return what


async def fail_after(delay):
    await asyncio.sleep(delay * UNIT)
    raise ValueError(f"failed after {delay}")


async def main():
    async with asyncio.TaskGroup() as tg:
        task1 = tg.create_task(say_after(1, "hello"))
        task2 = tg.create_task(say_after(2, "world"))

        print(f"started at {clock()}")

    # The await is implicit when the context manager exits.

    print(f"finished at {clock()}")
    print("results:", task1.result(), task2.result())

    try:
        async with asyncio.TaskGroup() as tg:
            slow = tg.create_task(say_after(3, "never printed"))
            tg.create_task(fail_after(1))
    except BaseException as eg:
        print(type(eg).__name__, eg, [repr(e) for e in eg.exceptions])
    print("sibling cancelled:", slow.cancelled())

    async with asyncio.TaskGroup() as tg:
        tg.create_task(fail_after(0))


asyncio.run(main())

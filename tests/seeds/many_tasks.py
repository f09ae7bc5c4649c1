"""Seed 003 ("A simple example"): TASK_COUNT tasks sleeping random pauses, gathered.

The tutorial's program, with --task-count (5 by default; the tutorial also runs 10000) and
--no-debug, the pauses scaled from seconds by UNIT and the RNG seeded. The tutorial prints
the measured run time; here the program checks that the run took at least the longest pause
(what the tutorial's numbers show) and prints that bound. Validation checks every task's
result is the pause it logged.

Log lines go to stderr through asyncio's logger, as in the tutorial. The "await" lines come in
creation order. The "done" lines come in deadline order: start time plus pause; with 5 tasks
(seeded for well-separated pauses) that is pause order, with 10000 tasks the start times spread
over more than the smallest gaps between pauses, so their order varies from run to run.
"""

import argparse
import asyncio
import logging
import random
import time
from asyncio import AbstractEventLoop, Task

LOGGER = logging.getLogger("asyncio")

UNIT = 0.01  # one tutorial second
MIN_PAUSE = 1
MAX_PAUSE = 10

random.seed(48)  # five pauses at least 1.4 s apart: the "done" order is fixed


async def delay(task_n: int) -> float:
    pause = random.uniform(MIN_PAUSE, MAX_PAUSE)
    LOGGER.warning("Task %d - await a sleep for %.2f", task_n, pause)
    await asyncio.sleep(pause * UNIT)
    LOGGER.warning("Task %d - done with sleep for %.2f", task_n, pause)
    return pause


async def main(task_count: int, async_loop: AbstractEventLoop) -> list[Task]:
    async_tasks = []
    for n in range(task_count):
        # each call to delay() returns a coroutine object
        coro = delay(n)
        # coroutine objects can be wrapped in an async task (future)
        async_task = async_loop.create_task(coro)
        async_tasks.append(async_task)
    # Up until this point, nothing is running;
    # to execute all the coroutines concurrently:
    await asyncio.gather(*async_tasks)
    # Each task has accessor methods to retrieve the future result;
    # so it's sufficient to return the tasks here.
    return async_tasks


parser = argparse.ArgumentParser()
parser.add_argument("--task-count", type=int, default=5)
parser.add_argument("--no-debug", dest="debug", action="store_false")
args = parser.parse_args()

# This will run the main coroutine in an asyncio event loop.
# The python 3.6 approach has become `asyncio.run` in later versions.
# First get the event loop for the main thread, with debug enabled.
loop = asyncio.get_event_loop()
loop.set_debug(enabled=args.debug)

try:
    # run TASK_COUNT concurrent tasks within 10 sec
    TASK_COUNT = args.task_count
    start = time.perf_counter()
    tasks = loop.run_until_complete(main(TASK_COUNT, loop))
    elapsed = time.perf_counter() - start
    longest = max(task.result() for task in tasks)
    if elapsed >= longest * UNIT:
        print(f"{TASK_COUNT} async tasks finished in {longest:.2f}+ seconds.")
    else:
        print(f"{TASK_COUNT} async tasks finished too early: {elapsed / UNIT:.2f} seconds.")
    ok = all(task.done() and MIN_PAUSE <= task.result() <= MAX_PAUSE for task in tasks)
    print(f"{TASK_COUNT} async tasks validated: {ok}.")
finally:
    loop.stop()
    loop.close()

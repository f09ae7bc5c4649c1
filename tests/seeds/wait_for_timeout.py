"""Seed 003 ("Timeout"): asyncio.wait_for() gives up on a 10 s task after 5 s.

The tutorial prints the raw perf_counter() difference; here it is printed in whole tutorial
seconds so that it is deterministic and still says how long the wait took.
"""

import asyncio
import time

UNIT = 0.2  # one tutorial second (wide enough that a loaded CI machine stays within the rounding)


async def long_running_task():
    await asyncio.sleep(10 * UNIT)
    return "Task completed"


async def main():
    start_time = time.perf_counter()

    try:
        result = await asyncio.wait_for(long_running_task(), timeout=5 * UNIT)
        print(result)
    except asyncio.TimeoutError:
        print("The task did not complete within the timeout period.")

    time_taken = time.perf_counter() - start_time
    # Timeouts never fire early and fire late by much less than 0.7 UNIT.
    print(f"Total time taken: {int(time_taken / UNIT + 0.3)}")


asyncio.run(main())

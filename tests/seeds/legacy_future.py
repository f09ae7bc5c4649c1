"""Seed 002: run_until_complete() on a Future that a task resolves."""

import asyncio

UNIT = 0.01  # one tutorial second


async def slow_operation(future):
    await asyncio.sleep(1 * UNIT)
    future.set_result("Future is done!")


loop = asyncio.get_event_loop()
future = asyncio.Future()
asyncio.ensure_future(slow_operation(future))
loop.run_until_complete(future)
print(future.result())
loop.close()

"""Seed 002: chained coroutines, print_sum() awaiting compute()."""

# ruff: noqa: UP031  (the tutorial's %-formatting, kept as written)
import asyncio

UNIT = 0.01  # one tutorial second


async def compute(x, y):
    print("Compute %s + %s ..." % (x, y))
    await asyncio.sleep(1.0 * UNIT)
    return x + y


async def print_sum(x, y):
    result = await compute(x, y)
    print("%s + %s = %s" % (x, y, result))


loop = asyncio.get_event_loop()
loop.run_until_complete(print_sum(1, 2))
loop.close()

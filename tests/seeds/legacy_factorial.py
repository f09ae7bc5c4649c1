"""Seed 002: parallel factorial() tasks gathered on the loop from get_event_loop()."""

# ruff: noqa: UP031  (the tutorial's %-formatting, kept as written)
import asyncio

UNIT = 0.01  # one tutorial second


async def factorial(name, number):
    f = 1
    for i in range(2, number + 1):
        print("Task %s: Compute factorial(%s)..." % (name, i))
        await asyncio.sleep(1 * UNIT)
        f *= i
    print("Task %s: factorial(%s) = %s" % (name, number, f))


loop = asyncio.get_event_loop()
loop.run_until_complete(
    asyncio.gather(
        factorial("A", 2),
        factorial("B", 3),
        factorial("C", 4),
    )
)
loop.close()

"""Seed 001: `await asyncio.sleep(3, result='hello')` evaluates to 'hello'."""

import asyncio

UNIT = 0.01  # one tutorial second


async def main():
    result = await asyncio.sleep(3 * UNIT, result="hello")
    print(repr(result))


asyncio.run(main())

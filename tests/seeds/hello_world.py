"""Seed 001 (asyncio docs): the "Hello ... World!" coroutine run with asyncio.run()."""

import asyncio

UNIT = 0.01  # one tutorial second


async def main():
    print("Hello ...")
    await asyncio.sleep(1 * UNIT)
    print("... World!")


asyncio.run(main())

"""Seed 001: asyncio.run() called while a loop is running (the notebook's cell) must raise.

The notebook runs `asyncio.run(main())` inside Jupyter's running loop and shows
"RuntimeError: asyncio.run() cannot be called from a running event loop"; here the outer loop
is our own asyncio.run(), and the inner call's error is printed, then main() is awaited as the
notebook's next cell does.
"""

import asyncio

UNIT = 0.01  # one tutorial second


async def main():
    print("Hello ...")
    await asyncio.sleep(1 * UNIT)
    print("... World!")


async def notebook():
    coro = main()
    try:
        asyncio.run(coro)
    except RuntimeError as e:
        print(f"{type(e).__name__}: {e}")
    finally:
        coro.close()  # the notebook never awaits this one: no "never awaited" warning
    await main()


asyncio.run(notebook())

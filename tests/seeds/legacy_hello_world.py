"""Seed 002: the pre-asyncio.run() style: get_event_loop(), run_until_complete(), close()."""

import asyncio


async def hello_world():
    print("Hello World!")


loop = asyncio.get_event_loop()
# Blocking call which returns when the hello_world() coroutine is done
loop.run_until_complete(hello_world())
loop.close()

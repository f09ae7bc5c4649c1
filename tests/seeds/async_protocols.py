"""Seed 002 ("Protocol"): __aiter__/__anext__ and __aenter__/__aexit__ driven by the loop.

The tutorial's Reader reads lines from somewhere; here readline() yields to the loop and
returns the next of a fixed list of lines, b'' at the end.
"""

import asyncio

LINES = [b"first line\n", b"second line\n", b"third line\n"]


async def log(message):
    await asyncio.sleep(0)
    print(message)


class Reader:
    def __init__(self, lines):
        self._lines = list(lines)

    async def readline(self):
        await asyncio.sleep(0)
        return self._lines.pop(0) if self._lines else b""

    def __aiter__(self):
        return self

    async def __anext__(self):
        val = await self.readline()
        if val == b"":
            raise StopAsyncIteration
        return val


class AsyncContextManager:
    async def __aenter__(self):
        await log("entering context")

    async def __aexit__(self, exc_type, exc, tb):
        await log("exiting context")


async def main():
    async with AsyncContextManager():
        async for line in Reader(LINES):
            print(line)
        lines = [line async for line in Reader(LINES)]
        print(len(lines), "lines in a comprehension")
    try:
        async with AsyncContextManager():
            raise ValueError("raised inside the context")
    except ValueError as e:
        print("caught:", e)


asyncio.run(main())

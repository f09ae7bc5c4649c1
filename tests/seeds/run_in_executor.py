"""Seed 002 (`loop.run_in_executor()`), as in the asyncio docs: blocking work in the default
executor, a ThreadPoolExecutor and a ProcessPoolExecutor.

blocking_io() reads this file instead of /dev/urandom, so the result is deterministic.
"""

import asyncio
import concurrent.futures
import hashlib
import os


def blocking_io():
    # File operations (such as logging) can block the
    # event loop: run them in a thread pool.
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def cpu_bound(n=10**5):
    # CPU-bound operations will block the event loop:
    # in general it is preferable to run them in a
    # process pool.
    return sum(i * i for i in range(n)), os.getpid() != PARENT


PARENT = os.getpid()


async def main():
    loop = asyncio.get_running_loop()

    ## Options:

    # 1. Run in the default loop's executor:
    result = await loop.run_in_executor(None, blocking_io)
    print("default thread pool", result == blocking_io())

    # 2. Run in a custom thread pool:
    with concurrent.futures.ThreadPoolExecutor() as pool:
        result = await loop.run_in_executor(pool, blocking_io)
        print("custom thread pool", result == blocking_io())

    # 3. Run in a custom process pool:
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        result = await loop.run_in_executor(pool, cpu_bound)
        print("custom process pool", result)
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, cpu_bound, n) for n in range(5))
        )
        print("gathered from the process pool", results)


if __name__ == "__main__":
    asyncio.run(main())

"""Seed 001 (FastAPI notes): three create_task()s gathered; they finish in order of delay.

Delays are the tutorial's seconds scaled by UNIT.
"""

import asyncio

UNIT = 0.01  # one tutorial second


async def wait_and_print(message: str, delay: int):
    """
    This async function waits for a specified delay and then prints a message.
    """
    await asyncio.sleep(delay * UNIT)  # Simulates asynchronous waiting
    print(message)


async def main():
    """
    This async function defines the tasks and runs them concurrently.
    """
    # Define two tasks with different messages and delays
    task1 = asyncio.create_task(wait_and_print("Hello from task 1!", 4))
    task2 = asyncio.create_task(wait_and_print("Hello from task 2!", 1))
    task3 = asyncio.create_task(wait_and_print("Hello from task 3!", 2))

    # Run the tasks concurrently using asyncio.gather
    await asyncio.gather(task1, task2, task3)  # Wait for both tasks to finish


if __name__ == "__main__":
    asyncio.run(main())

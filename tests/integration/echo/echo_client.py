# ruff: noqa: UP032 (the tutorial's str.format calls are kept as written)
"""Seed 002's trio echo client (the "Client" listing), written with asyncio streams.

Usage: echo_client.py PORT [MESSAGES]. The tutorial's sender sends its message every second
forever; here it sends MESSAGES times (default 3), each once the previous echo came back (an
event instead of trio.sleep(1), so the output order is fixed), then closes its sending side,
so the server closes and the receiver ends the program with sys.exit() as in the tutorial.
"""

import asyncio
import sys

PORT = int(sys.argv[1])
MESSAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 3
# How much memory to spend (at most) on each call to recv. Pretty arbitrary,
# but shouldn't be too big or too small.
BUFSIZE = 16384


async def sender(writer, echoed):
    print("sender: started!")
    for _ in range(MESSAGES):
        data = b"async can sometimes be confusing, but I believe in you!"
        print("sender: sending {!r}".format(data))
        writer.write(data)
        await writer.drain()
        await echoed.get()
    writer.write_eof()


async def receiver(reader, echoed):
    print("receiver: started!")
    while True:
        data = await reader.read(BUFSIZE)
        print("receiver: got data {!r}".format(data))
        if not data:
            print("receiver: connection closed")
            sys.exit()
        echoed.put_nowait(None)


async def parent():
    print("parent: connecting to 127.0.0.1:{}".format(PORT))
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    echoed = asyncio.Queue()
    try:
        print("parent: spawning sender...")
        send = asyncio.ensure_future(sender(writer, echoed))
        print("parent: spawning receiver...")
        receive = asyncio.ensure_future(receiver(reader, echoed))
        await asyncio.gather(send, receive)
    finally:
        writer.close()


asyncio.run(parent())

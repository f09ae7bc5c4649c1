# ruff: noqa: UP032 (the tutorial's str.format calls are kept as written)
"""Seed 002's trio echo server (the "Server" listing), written with asyncio streams.

Usage: echo_server.py FD [CONNECTIONS]. The tutorial listens on port 12345; here the listening
socket is inherited as file descriptor FD (bound and listening already), so the test needs no
fixed port and no wait for the server to start. The server handles CONNECTIONS connections
(default 1) and then exits, where the tutorial's serves forever. Everything printed is the
tutorial's.
"""

import asyncio
import socket
import sys
from itertools import count

# How much memory to spend (at most) on each call to recv. Pretty arbitrary,
# but shouldn't be too big or too small.
BUFSIZE = 16384

CONNECTION_COUNTER = count()


async def echo_server(reader, writer):
    # Assign each connection a unique number to make our debug prints easier
    # to understand when there are multiple simultaneous connections.
    ident = next(CONNECTION_COUNTER)
    print("echo_server {}: started".format(ident))
    try:
        while True:
            data = await reader.read(BUFSIZE)
            print("echo_server {}: received data {!r}".format(ident, data))
            if not data:
                print("echo_server {}: connection closed".format(ident))
                return
            print("echo_server {}: sending data {!r}".format(ident, data))
            writer.write(data)
            await writer.drain()
    except Exception as exc:
        print("echo_server {}: crashed: {!r}".format(ident, exc))
    finally:
        writer.close()


async def main(fd, connections):
    done = asyncio.Semaphore(0)

    async def handler(reader, writer):
        try:
            await echo_server(reader, writer)
        finally:
            done.release()

    sock = socket.socket(fileno=fd)
    server = await asyncio.start_server(handler, sock=sock)
    async with server:
        for _ in range(connections):
            await done.acquire()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1))

"""docs/insight.md's walkthrough: a FastAPI app whose async endpoint blocks the event loop.

Runs uvicorn inside ``oxloop.run`` with slow-callback reports on, has a client process send 20
concurrent requests to ``/report`` and prints what oxloop saw: the slow-callback report (which
names the blocking line) and the loop metrics of the burst. ``--fixed`` serves the same endpoint
with the blocking call moved to a thread (``asyncio.to_thread``); the metrics show the
difference.

    python docs/examples/blocking_endpoint.py            # the bug
    python docs/examples/blocking_endpoint.py --fixed    # the fix

Needs fastapi, uvicorn and httpx (requirements-integration.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import sys
import time

import fastapi
import oxloop
import uvicorn

app = fastapi.FastAPI()
FIXED = False

# The client runs in its own process, so the server's loop metrics show the server alone.
CLIENT = """
import asyncio, sys, time, httpx
async def main(url, n):
    async with httpx.AsyncClient(base_url=url) as client:
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(client.get(f"/report/{i}") for i in range(n)))
        assert all(r.status_code == 200 for r in replies)
        print(f"{time.perf_counter() - t0:.3f}")
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def render_report(n: int) -> str:
    # Stands in for a synchronous library call (a blocking HTTP client, a database driver
    # without async support...): it waits 50 ms and never yields to the event loop.
    time.sleep(0.05)
    return hashlib.sha256(str(n).encode()).hexdigest()


@app.get("/report/{n}")
async def report(n: int) -> dict[str, str]:
    if FIXED:
        body = await asyncio.to_thread(render_report, n)
    else:
        body = render_report(n)  # blocks the event loop for 50 ms
    return {"report": body}


async def main(fixed: bool, requests: int) -> None:
    global FIXED
    FIXED = fixed
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    loop.slow_callback_duration = 0.04
    loop.enable_slow_callback_reports(min_interval=60)  # one report for the whole burst

    before = loop.metrics()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        f"http://127.0.0.1:{port}",
        str(requests),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await client.communicate()
    burst = loop.metrics() - before
    assert client.returncode == 0, "the client failed"
    elapsed = float(out)
    await asyncio.sleep(0.05)  # let the watchdog's report for the last stall arrive

    print(f"{requests} requests in {elapsed * 1000:.0f} ms ({'fixed' if fixed else 'blocking'})")
    print(
        f"  loop utilization {burst.utilization:.0%}, "
        f"longest stall {burst.longest_stall_ns / 1e6:.0f} ms, "
        f"p99 iteration <= {burst.busy_percentile(0.99) / 1e6:.1f} ms, "
        f"slow callbacks {loop.metrics().slow_callbacks - before.slow_callbacks}"
    )
    server.should_exit = True
    await serving
    sock.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixed", action="store_true", help="move the blocking call to a thread")
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    oxloop.run(main(args.fixed, args.requests))

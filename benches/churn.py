"""Connection churn: does a server's memory grow with the number of connections it has served?

Role: runs an echo server (an asyncio.Protocol, and asyncio streams) in a child process per
loop (oxloop, stock asyncio, uvloop when installed), opens and closes many short connections to
it from this process (each sends 32 bytes and waits for their echo), and reports the server's
RSS growth per 100,000 connections after a warm-up, for every loop in the same run.

Invariants:
- The server runs in a fresh interpreter per (loop, mode): no loop inherits another's heap.
- Loops are interleaved within each mode, so load drifting on the shared machine hits all.
- Memory is read by the server itself at checkpoints, between batches, when no connection is
  open: `gc.collect()` first, then RSS (/proc/self/statm), glibc's `mallinfo2()` (bytes in use
  by malloc, and the heap's size: growth of the first is memory kept, growth of the second
  alone is fragmentation), `sys.getallocatedblocks()` (Python objects' blocks) and the number of
  GC-tracked objects.
- The growth is the least-squares slope of the checkpoints after the warm-up, per 100k
  connections, so one noisy reading does not decide it.
- Every connection's echo is checked; a wrong or missing echo fails the run (exit status 1).

Usage:
  .venv/3.11/bin/python benches/churn.py                      # 200k connections, 20k warm-up
  .venv/3.11/bin/python benches/churn.py --quick              # 30k, 10k warm-up (smoke test)
  .venv/3.11/bin/python benches/churn.py --connections 1000000 --loops oxloop --detail
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

MESSAGE = b"x" * 32
PAGE = os.sysconf("SC_PAGE_SIZE")


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


# -- the server (child process) -------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_MALLINFO2: Any = None


def _mallinfo() -> tuple[int, int] | None:
    """(bytes malloc has handed out, bytes its heap spans), or None without glibc's mallinfo2."""
    global _MALLINFO2
    if _MALLINFO2 is None:
        try:
            _MALLINFO2 = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
            _MALLINFO2.restype = _Mallinfo2
        except (OSError, AttributeError):
            _MALLINFO2 = False
    if not _MALLINFO2:
        return None
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd, info.arena + info.hblkhd


def memory() -> dict[str, int]:
    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    out = {
        "rss": rss,
        "blocks": sys.getallocatedblocks(),
        "objects": len(gc.get_objects()),
    }
    mi = _mallinfo()
    if mi is not None:
        out["malloc_used"], out["malloc_heap"] = mi
    return out


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def serve(kind: str, mode: str, trace: str = "0") -> None:
    """The child: serve until stdin closes; answer each line on stdin with a memory report."""
    _mallinfo()  # loads libc now, not between readings
    loop = new_loop(kind)
    asyncio.set_event_loop(loop)
    errors: list[str] = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(str(ctx.get("message"))))

    async def main() -> None:
        if mode == "streams":
            server = await asyncio.start_server(echo_stream, "127.0.0.1", 0, backlog=1024)
        else:
            server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        done = loop.create_future()

        snapshots = []

        def report() -> None:
            print(json.dumps({**memory(), "errors": len(errors)}), flush=True)
            if trace == "1":
                # Where the Python-side allocations made since the first reading come from.
                import tracemalloc

                if not snapshots:
                    tracemalloc.start(8)
                    snapshots.append(tracemalloc.take_snapshot())
                    return
                diff = tracemalloc.take_snapshot().compare_to(snapshots[0], "traceback")
                for stat in diff[:5]:
                    print(stat, *stat.traceback.format(), sep="\n  ", file=sys.stderr)

        def control() -> None:
            for _line in sys.stdin:
                loop.call_soon_threadsafe(report)
            loop.call_soon_threadsafe(done.set_result, None)

        threading.Thread(target=control, daemon=True).start()
        await done
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    loop.close()


# -- the client (this process) --------------------------------------------------------------


async def churn(port: int, count: int, concurrency: int) -> None:
    """Open, echo-check and close `count` connections, `concurrency` at a time."""
    loop = asyncio.get_running_loop()
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            s = socket.socket()
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(s, MESSAGE)
                got = b""
                while len(got) < len(MESSAGE):
                    chunk = await loop.sock_recv(s, 64)
                    if not chunk:
                        raise RuntimeError(f"connection closed after {got!r}")
                    got += chunk
                if got != MESSAGE:
                    raise RuntimeError(f"wrong echo {got!r}")
            finally:
                s.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def measure(
    kind: str,
    mode: str,
    total: int,
    warmup: int,
    points: int,
    concurrency: int,
    idle: float,
    trace: bool,
) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", kind, mode, str(int(trace))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port = int(proc.stdout.readline())

        def read_memory() -> dict[str, int]:
            if idle:
                time.sleep(idle)
            proc.stdin.write("m\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        client = new_loop("oxloop" if kind != "uvloop" else "asyncio")
        done = 0
        t0 = time.monotonic()
        try:
            client.run_until_complete(churn(port, warmup, concurrency))
            done = warmup
            samples = [(done, read_memory())]
            step = (total - warmup) // points
            for _ in range(points):
                client.run_until_complete(churn(port, step, concurrency))
                done += step
                samples.append((done, read_memory()))
        finally:
            client.close()
        wall = time.monotonic() - t0
    finally:
        proc.stdin.close()
        proc.wait(30)
    xs = [float(n) for n, _ in samples]
    result: dict[str, Any] = {"loop": kind, "mode": mode, "connections": done, "wall": wall}
    for key in samples[0][1]:
        if key == "errors":
            continue
        ys = [float(m[key]) for _, m in samples]
        result[key] = slope(xs, ys) * 100_000  # per 100k connections
    result["errors"] = samples[-1][1]["errors"]
    result["rss_end"] = samples[-1][1]["rss"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30k connections, 10k warm-up")
    ap.add_argument("--connections", type=int, help="connections per server (default 200k)")
    ap.add_argument("--warmup", type=int, help="connections before the first reading")
    ap.add_argument("--points", type=int, default=6, help="readings after the warm-up")
    ap.add_argument("--concurrency", type=int, default=16, help="connections open at once")
    ap.add_argument("--loops", default="oxloop,asyncio,uvloop")
    ap.add_argument("--modes", default="protocol,streams")
    ap.add_argument(
        "--idle", type=float, default=0.0, help="seconds the server idles before each reading"
    )
    ap.add_argument("--detail", action="store_true", help="malloc, blocks and objects too")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="the server traces Python allocations from the first reading on and prints\n"
        "the sites that grew most to stderr at each later one (slow)",
    )
    ap.add_argument("--serve", nargs=3, metavar=("LOOP", "MODE", "TRACE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    total = args.connections or (30_000 if args.quick else 200_000)
    # A tenth (a third with --quick): a cache that fills up to a fixed size shows as growth
    # until it is full, which is what a server's first hours look like, so the warm-up stays
    # short (the handle free list, full after ~33k connections, was 0.7 MiB per 100k here).
    warmup = args.warmup if args.warmup is not None else total // (3 if args.quick else 10)
    loops = []
    for kind in args.loops.split(","):
        try:
            new_loop(kind).close()
        except ImportError:
            print(f"{kind}: not installed, skipped")
            continue
        loops.append(kind)
    mib = 1024 * 1024
    results = []
    failed = False
    header = f"{'mode':<9} {'loop':<8} {'conns':>8} {'s':>6} {'RSS MiB/100k':>13} {'end MiB':>8}"
    if args.detail:
        header += f" {'malloc used':>12} {'malloc heap':>12} {'blocks':>8} {'objects':>8}"
    print(header)
    for mode in args.modes.split(","):
        for kind in loops:
            try:
                r = measure(
                    kind,
                    mode,
                    total,
                    warmup,
                    args.points,
                    args.concurrency,
                    args.idle,
                    args.tracemalloc,
                )
            except Exception as exc:  # a failed echo or a dead server: report, go on
                print(f"{mode:<9} {kind:<8} FAILED: {exc!r}")
                failed = True
                continue
            results.append(r)
            failed |= r["errors"] > 0
            line = (
                f"{mode:<9} {kind:<8} {r['connections']:>8} {r['wall']:>6.1f} "
                f"{r['rss'] / mib:>13.3f} {r['rss_end'] / mib:>8.1f}"
            )
            if args.detail:
                used, heap = r.get("malloc_used", 0) / mib, r.get("malloc_heap", 0) / mib
                line += f" {used:>12.3f} {heap:>12.3f} {r['blocks']:>8.0f} {r['objects']:>8.0f}"
            if r["errors"]:
                line += f"  ({r['errors']} errors reported by the server)"
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

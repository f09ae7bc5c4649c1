"""Bulk transfer through asyncio streams in one process (issue 18's bulk row).

Role: how fast large writes and reads go through `asyncio.start_server` / `open_connection`
on each loop. One process, both ends on the loop under test: the server writes CHUNK-sized
bytes objects (10 MiB by default) with `drain()` after each, the client reads them with
`read(CHUNK)` until TOTAL bytes (1 GiB) arrived. The figures are the wall time and the
process's CPU time of the transfer (connection set-up excluded). Each cell runs in a fresh
process (`--cell LOOP`), so loops do not share an interpreter's state; loops are interleaved
inside each round and a cell is the median of the rounds.

    python benches/streams_bulk.py [--loops oxloop,uvloop,asyncio] [--rounds 3]
                                   [--total-mib 1024] [--chunk-mib 10] [--family tcp|unix]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import asyncio
import gc
import importlib.util
import shutil
import statistics
import subprocess
import tempfile
import time
from types import ModuleType


def _load_micro() -> ModuleType:
    """benches/micro.py, for its loop construction (`make_loop`)."""
    spec = importlib.util.spec_from_file_location("micro", os.path.join(HERE, "micro.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["micro"] = module
    spec.loader.exec_module(module)
    return module


micro = _load_micro()


async def transfer(total: int, chunk: int, family: str) -> tuple[float, float]:
    """Sends `total` bytes server -> client; returns (wall, cpu) seconds of the transfer."""
    payload = b"x" * chunk
    started = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await started
        left = total
        while left > 0:
            writer.write(payload if left >= chunk else payload[:left])
            await writer.drain()
            left -= chunk
        writer.close()

    tmp = None
    if family == "unix":
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, "s")
        server = await asyncio.start_unix_server(serve, path)
        reader, writer = await asyncio.open_unix_connection(path)
    else:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    started.set_result(None)
    got = 0
    while got < total:
        data = await reader.read(chunk)
        if not data:
            raise RuntimeError(f"EOF after {got} of {total} bytes")
        got += len(data)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    writer.close()
    server.close()
    await server.wait_closed()
    if tmp is not None:
        # Some loops unlink the socket path when the server closes (3.13+ asyncio does too).
        shutil.rmtree(tmp, ignore_errors=True)
    return wall, cpu


def cell(loop_name: str, total: int, chunk: int, family: str) -> tuple[float, float]:
    loop = micro.make_loop(loop_name)
    try:
        return loop.run_until_complete(transfer(total, chunk, family))
    finally:
        loop.close()


def run_cell(loop_name: str, args: argparse.Namespace) -> tuple[float, float] | None:
    """One cell in a child process; None when the loop is not installed."""
    out = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--cell",
            loop_name,
            "--total-mib",
            str(args.total_mib),
            "--chunk-mib",
            str(args.chunk_mib),
            "--family",
            args.family,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode == 3:
        return None
    if out.returncode != 0:
        raise SystemExit(f"{loop_name}: {out.stderr.strip()[-500:]}")
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", default="oxloop,uvloop,rloop,asyncio")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--total-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=float, default=10)
    ap.add_argument("--family", choices=("tcp", "unix"), default="tcp")
    ap.add_argument("--cell", metavar="LOOP", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        try:
            wall, cpu = cell(
                args.cell, args.total_mib << 20, int(args.chunk_mib * (1 << 20)), args.family
            )
        except ImportError:
            sys.exit(3)
        print(wall, cpu)
        return
    loops = [name for name in args.loops.split(",") if name]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name in list(loops):
            sample = run_cell(name, args)
            if sample is None:
                print(f"{name}: n/a (not installed)", file=sys.stderr)
                loops.remove(name)
            else:
                samples[name].append(sample)
    print(
        f"streams bulk, {args.total_mib} MiB in {args.chunk_mib:g} MiB chunks, {args.family}, "
        f"median of {args.rounds} (Python {sys.version.split()[0]})"
    )
    print(f"{'loop':<10} {'wall s':>8} {'cpu s':>8} {'MiB/s':>8}")
    for name in loops:
        wall = statistics.median(w for w, _ in samples[name])
        cpu = statistics.median(c for _, c in samples[name])
        print(f"{name:<10} {wall:8.3f} {cpu:8.3f} {args.total_mib / wall:8.0f}")


if __name__ == "__main__":
    main()

"""Bulk transfer through asyncio streams (issue 18's bulk rows).

Role: how fast large writes and reads go through `asyncio.start_server` / `open_connection`
on each loop. Two modes:

- one process (default): both ends on the loop under test; the server writes CHUNK-sized
  bytes objects (10 MiB by default) with `drain()` after each, the client reads them with
  `read(CHUNK)` until TOTAL bytes (1 GiB) arrived. The figures are the wall time and the
  process's CPU time of the transfer (connection set-up excluded).
- `--two-process`: TOTAL bytes each way, both directions at once. A server process on the
  loop under test and a client process (on the same loop, or `--client-loop`) each run two
  tasks on their one connection: one writes CHUNK-sized bytes with `drain()` after each, the
  other reads with `read(CHUNK)` until TOTAL bytes arrived. The figures are the client's wall
  time from its connect until both directions finished, the MiB/s each way (TOTAL / wall),
  and the server process's CPU time of its transfer (from its accept).

Each cell runs in fresh processes (`--cell LOOP`), so loops do not share an interpreter's
state; loops are interleaved inside each round and a cell is the median of the rounds.

    python benches/streams_bulk.py [--loops oxloop,uvloop,asyncio] [--rounds 3]
                                   [--total-mib 1024] [--chunk-mib 10] [--family tcp|unix]
                                   [--two-process [--client-loop LOOP]]
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


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, total: int, chunk: int
) -> None:
    """Writes `total` bytes to `writer` while reading `total` bytes from `reader`."""
    payload = b"x" * chunk

    async def send() -> None:
        left = total
        while left > 0:
            writer.write(payload if left >= chunk else payload[:left])
            await writer.drain()
            left -= chunk

    async def receive() -> None:
        got = 0
        while got < total:
            data = await reader.read(chunk)
            if not data:
                raise RuntimeError(f"EOF after {got} of {total} bytes")
            got += len(data)

    await asyncio.gather(send(), receive())


async def serve_two_process(total: int, chunk: int, family: str, where: str) -> tuple[float, float]:
    """The server process: announces its address on stdout, serves one connection in both
    directions; returns (wall, cpu) seconds from its accept to the end of the transfer."""
    done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            await pump(reader, writer, total, chunk)
            result = (time.perf_counter() - wall0, time.process_time() - cpu0)
            # drain() returns with up to the low-water mark still buffered: flush it before
            # this process may exit, or the client sees EOF short of `total`.
            writer.close()
            await writer.wait_closed()
        except BaseException as e:
            done.set_exception(e)
            raise
        done.set_result(result)

    if family == "unix":
        server = await asyncio.start_unix_server(serve, where)
    else:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        where = str(server.sockets[0].getsockname()[1])
    gc.collect()
    print(where, flush=True)
    result = await done
    server.close()
    await server.wait_closed()
    return result


async def connect_two_process(
    total: int, chunk: int, family: str, where: str
) -> tuple[float, float]:
    """The client process: returns (wall, cpu) seconds from its connect to the end."""
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if family == "unix":
        reader, writer = await asyncio.open_unix_connection(where)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(where))
    await pump(reader, writer, total, chunk)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # As the server: what drain() left buffered must reach the server before the loop ends
    # (it once did not: "EOF after 2084480 of 2097152 bytes", on oxloop and on rloop alike).
    writer.close()
    await writer.wait_closed()
    return wall, cpu


def run_two_process(loop_name: str, args: argparse.Namespace) -> tuple[float, float, float] | None:
    """One two-process cell: (client wall, server cpu, client cpu); None when not installed."""
    client_loop = args.client_loop or loop_name
    tmp = tempfile.mkdtemp()
    try:
        common = [
            "--total-mib",
            str(args.total_mib),
            "--chunk-mib",
            str(args.chunk_mib),
            "--family",
            args.family,
            "--two-process",
        ]
        me = [sys.executable, os.path.abspath(__file__)]
        server = subprocess.Popen(
            [
                *me,
                "--cell",
                loop_name,
                *common,
                "--role",
                "server",
                "--where",
                os.path.join(tmp, "s"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        where = server.stdout.readline().strip()
        if not where:
            server.wait(timeout=60)
            if server.returncode == 3:
                return None
            raise SystemExit(f"{loop_name} server: {server.stderr.read().strip()[-500:]}")
        client = subprocess.run(
            [*me, "--cell", client_loop, *common, "--role", "client", "--where", where],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if client.returncode != 0:
            server.kill()  # it would wait for a connection forever
        out, err = server.communicate(timeout=600)
        if client.returncode == 3:
            return None
        if client.returncode != 0 or server.returncode != 0:
            raise SystemExit(
                f"{loop_name}: client {client.stderr.strip()[-500:]} server {err.strip()[-500:]}"
            )
        c_wall, c_cpu = map(float, client.stdout.split())
        _s_wall, s_cpu = map(float, out.split())
        return c_wall, s_cpu, c_cpu
    finally:
        # Some loops unlink the socket path when the server closes (3.13+ asyncio does too).
        shutil.rmtree(tmp, ignore_errors=True)


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
    ap.add_argument("--loops", default="oxloop,uvloop,rloop,rsloop,asyncio")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--total-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=float, default=10)
    ap.add_argument("--family", choices=("tcp", "unix"), default="tcp")
    ap.add_argument(
        "--two-process",
        action="store_true",
        help="server and client in two processes, TOTAL each way at once",
    )
    ap.add_argument(
        "--client-loop",
        metavar="LOOP",
        help="with --two-process: the client's loop (default: the loop under test)",
    )
    ap.add_argument("--cell", metavar="LOOP", help=argparse.SUPPRESS)
    ap.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    ap.add_argument("--where", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell and args.role:
        try:
            loop = micro.make_loop(args.cell)
        except ImportError:
            sys.exit(3)
        run = serve_two_process if args.role == "server" else connect_two_process
        try:
            wall, cpu = loop.run_until_complete(
                run(args.total_mib << 20, int(args.chunk_mib * (1 << 20)), args.family, args.where)
            )
        finally:
            loop.close()
        print(wall, cpu)
        return
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
    if args.two_process:
        two_process_table(loops, args)
        return
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


def two_process_table(loops: list[str], args: argparse.Namespace) -> None:
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name in list(loops):
            sample = run_two_process(name, args)
            if sample is None:
                print(f"{name}: n/a (not installed)", file=sys.stderr)
                loops.remove(name)
            else:
                samples[name].append(sample)
    client = f"client on {args.client_loop}" if args.client_loop else "client on the same loop"
    print(
        f"streams bulk, two processes, {args.total_mib} MiB each way at once in "
        f"{args.chunk_mib:g} MiB chunks, {args.family}, {client}, median of {args.rounds} "
        f"(Python {sys.version.split()[0]})"
    )
    print(f"{'loop':<10} {'wall s':>8} {'MiB/s':>8} {'srv cpu s':>10} {'cli cpu s':>10}")
    for name in loops:
        wall = statistics.median(s[0] for s in samples[name])
        s_cpu = statistics.median(s[1] for s in samples[name])
        c_cpu = statistics.median(s[2] for s in samples[name])
        print(f"{name:<10} {wall:8.3f} {args.total_mib / wall:8.0f} {s_cpu:10.3f} {c_cpu:10.3f}")


if __name__ == "__main__":
    main()

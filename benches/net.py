"""Network benchmarks: echo and HTTP servers on each loop, one Rust client for all of them.

Role: issue 3's "Speed" table. Every server runs in its own process
(`python benches/net.py --server KIND LOOP ADDR`, or the pure-Rust floor from benches/net/floor/)
and the same load generator drives each one: the `netfloor client` (an N-connection ping-pong
echo client that checks every echoed byte) for the echo rows, `wrk` for the HTTP rows. The table
shows, per row and loop, messages (or requests) per second and the server's CPU time per message,
with each loop's ratio to uvloop, plus the floor: what the same work costs with no Python at all.

Rows: echo on an asyncio Protocol, a BufferedProtocol, asyncio streams and the sock_* API
(loop.sock_recv / loop.sock_sendall), with 1, 10 or 100 KiB messages, 1, 10 or 100 connections,
over TCP or Unix sockets; and an HTTP/1.1 keep-alive hello-world on a Protocol, with and without
pipelining. The default is a subset (DEFAULT_ROWS); `--full` runs the whole matrix.
Connection churn (`churn-*` rows, issue 18): the same echo servers, but each of the client's
connections sends one 32-byte message, reads its echo and closes, and the client connects again:
a row's "message" is one whole connection (accept, transport set-up, one echo, close).

Loops: rsloop is an optional column (OPTIONAL_LOOPS): present when it imports, else left out of
the table with a note, unless named in --loops.

Invariants (the reasons the numbers can be trusted on a shared, noisy 2-core machine):
- Server CPU time is the figure to trust: it is read from the server process's own CPU clock
  (clock_getcpuclockid(3), all threads) while the server is idle, right before and right after
  the measured phase, so start-up, imports, the warm-up and connection set-up and tear-down are
  outside it. It does not count time spent waiting for a CPU another process holds.
- The client is the same process for every server of a row, and it validates the echo byte for
  byte (HTTP: the exact response is checked before wrk runs), so a broken server is a FAIL, never
  a fast cell. A server that cannot run a row (a loop without Unix servers, say) is n/a.
- Loops are interleaved within each round and rounds are the outer loop (as benches/micro.py);
  a cell's figure is the median over rounds.
- Every process this script starts dies with it: each cell kills its server and client in a
  `finally`, every child gets PR_SET_PDEATHSIG, and every wait has a timeout (TIMEOUT cell).
"""

from __future__ import annotations

# `python benches/net.py` puts benches/ first on sys.path, where a sibling script named like a
# stdlib module (a benches/subprocess.py, say) would shadow that module here and in every server
# child. So benches/ leaves sys.path before any other import, and micro.py is loaded by its path.
# ruff: noqa: E402
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import argparse
import asyncio
import ctypes
import fnmatch
import importlib.util
import json
import math
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def _load_micro() -> ModuleType:
    """benches/micro.py, for its loop construction, machine info and formatting helpers."""
    spec = importlib.util.spec_from_file_location("micro", os.path.join(HERE, "micro.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["micro"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


micro = _load_micro()

FLOOR_DIR = os.path.join(HERE, "net", "floor")
FLOOR_BIN = os.path.join(FLOOR_DIR, "target", "release", "netfloor")
LOOPS = ("asyncio", "uvloop", "rloop", "rsloop", "oxloop", "floor")
# Columns dropped (with a note) rather than shown as n/a when their loop does not import here:
# rsloop has no wheel for every Python, and is built from its sdist outside CI.
OPTIONAL_LOOPS = ("rsloop",)
BASELINE = "uvloop"
KINDS = ("protocol", "buffered", "streams", "sock")
SIZES_KIB = (1, 10, 100)
CONNS = (1, 10, 100)
FAMILIES = ("tcp", "unix")
# Requests per write in the pipelined row: the depth of the TechEmpower plaintext test.
PIPELINE_DEPTH = 16
HTTP_CONNS = 50
# Connection churn: concurrent connecting clients, and the bytes each connection echoes once.
CHURN_KINDS = ("protocol", "streams")
CHURN_CONNS = 10
CHURN_SIZE = 32
RECV_SIZE = 256 * 1024  # what asyncio's selector transports read per recv (max_size)

# The one response of every HTTP server here, the Rust floor's included (server.rs).
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
)

EXIT_NA = 3  # a server's exit status when its loop cannot run the row


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # protocol, buffered, streams, sock, http, http-pipelined
    family: str  # tcp or unix
    size: int = 0  # bytes per message (echo rows)
    conns: int = HTTP_CONNS
    churn: bool = False  # one message per connection: the client reconnects after each

    @property
    def is_http(self) -> bool:
        return self.kind.startswith("http")

    @property
    def label(self) -> str:
        if self.is_http:
            what = f"http pipelined x{PIPELINE_DEPTH}" if self.kind == "http-pipelined" else "http"
            return f"{what}, {self.conns} conns, {self.family}"
        if self.churn:
            return f"churn {self.kind} {self.size} B x{self.conns}, {self.family}"
        return f"{self.kind} {self.size // 1024} KiB x{self.conns}, {self.family}"


def all_rows() -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for family in FAMILIES:
        for kind in KINDS:
            for kib in SIZES_KIB:
                for conns in CONNS:
                    name = f"{kind}-{kib}k-{conns}c-{family}"
                    rows[name] = Row(name, kind, family, kib * 1024, conns)
    for family in FAMILIES:
        for kind in CHURN_KINDS:
            name = f"churn-{kind}-{family}"
            rows[name] = Row(name, kind, family, CHURN_SIZE, CHURN_CONNS, churn=True)
    # wrk speaks TCP only.
    for kind in ("http", "http-pipelined"):
        rows[f"{kind}-tcp"] = Row(f"{kind}-tcp", kind, "tcp")
    return rows


ROWS = all_rows()
DEFAULT_ROWS = [
    *(f"{k}-1k-10c-tcp" for k in KINDS),
    *(f"{k}-100k-10c-tcp" for k in KINDS),
    "protocol-1k-1c-tcp",
    "protocol-1k-100c-tcp",
    "protocol-1k-10c-unix",
    "streams-1k-10c-unix",
    "churn-protocol-tcp",
    "churn-streams-tcp",
    "http-tcp",
    "http-pipelined-tcp",
]
QUICK_ROWS = [
    "protocol-1k-1c-tcp",
    "protocol-1k-10c-tcp",
    "streams-1k-1c-tcp",
    "streams-1k-10c-tcp",
]


def select_rows(spec: str) -> list[Row]:
    """Comma-separated names or shell patterns (`protocol-*-tcp`), kept in the table's order."""
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in patterns if not fnmatch.filter(ROWS, p)]
    if unknown:
        raise SystemExit(f"no row matches {', '.join(unknown)} (see --list)")
    return [r for name, r in ROWS.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


# ---------------------------------------------------------------------------------------------
# Server side: `net.py --server KIND LOOP ADDR`
# ---------------------------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    """Reads into its own buffer and writes the filled part back without copying it.

    A transport may keep a reference to what it could not send at once (CPython 3.12+ queues a
    memoryview of the caller's data in selector_events.py's `write`), so when anything is left
    queued the buffer now belongs to the transport and the next read gets a fresh one.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.view = memoryview(bytearray(RECV_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(self.view[:nbytes])
        if self.transport.get_write_buffer_size():
            self.view = memoryview(bytearray(RECV_SIZE))


class HttpProtocol(asyncio.Protocol):
    """Answers each request head (up to a blank line) with HTTP_RESPONSE; keeps the connection.

    Pipelined heads that arrive together get their responses in one write, as a real server's
    batching would; benchmark requests (wrk's GETs) carry no body.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        count = buf.count(b"\r\n\r\n")
        if count:
            self.transport.write(HTTP_RESPONSE * count)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        self.pending = buf


async def streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RECV_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def sock_echo(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    try:
        while data := await loop.sock_recv(conn, RECV_SIZE):
            await loop.sock_sendall(conn, data)
    except ConnectionError:
        pass
    finally:
        conn.close()


async def sock_serve(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    tasks = set()  # strong references: the loop keeps only weak ones to tasks
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        if conn.family != socket.AF_UNIX:
            # What asyncio's transports do for every TCP socket (selector_events._set_nodelay).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(sock_echo(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def parse_addr(addr: str) -> tuple[str, Any]:
    if addr.startswith("tcp:"):
        host, _, port = addr[4:].rpartition(":")
        return "tcp", (host.strip("[]"), int(port))
    if addr.startswith("unix:"):
        return "unix", addr[5:]
    raise SystemExit(f"bad address {addr!r}: tcp:HOST:PORT or unix:PATH")


async def start_server(kind: str, loop: asyncio.AbstractEventLoop, addr: str) -> socket.socket:
    """Starts serving; returns the listening socket (for its bound address)."""
    family, where = parse_addr(addr)
    if kind == "sock":
        sock = socket.socket(socket.AF_INET if family == "tcp" else socket.AF_UNIX)
        if family == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(1024)
        sock.setblocking(False)
        loop.create_task(sock_serve(loop, sock))
        return sock
    if kind == "streams":
        if family == "tcp":
            server = await asyncio.start_server(streams_echo, *where, limit=RECV_SIZE)
        else:
            server = await asyncio.start_unix_server(streams_echo, where, limit=RECV_SIZE)
    else:
        factory = {
            "protocol": EchoProtocol,
            "buffered": EchoBufferedProtocol,
            "http": HttpProtocol,
        }[kind]
        if family == "tcp":
            server = await loop.create_server(factory, *where, backlog=1024)
        else:
            server = await loop.create_unix_server(factory, where, backlog=1024)
    return server.sockets[0]  # type: ignore[return-value]


def settle_malloc() -> None:
    """Puts glibc's malloc in the state a process reaches once it has freed one large block.

    glibc serves a request of 128 KiB or more with mmap(2) until the process first free(3)s
    such a block; the threshold then rises to that block's size (mallopt(3), M_MMAP_THRESHOLD:
    "dynamic" unless set). Stock asyncio reads each event with `sock.recv(256 KiB)`
    (selector_events.py `max_size`) and shrinks the bytes to the data: realloc mremap(2)s the
    mapping down, and its free munmap(2)s a block too small to raise the threshold. A server
    process whose history never freed a large block (which depends on what it imported and
    in which order) so pays an mmap, an mremap, a munmap and a page fault per read: its Protocol
    and streams rows came out 4x slower (26 us per 1 KiB message against 6.4, the same with
    MALLOC_MMAP_THRESHOLD_=131072), its buffered and sock rows unchanged. Every server here
    frees one 1 MiB block first, so no column depends on that history. (oxloop refills one bytes
    object per read and uvloop reads into its own buffer: neither allocates per read.)
    """
    block = bytearray(1 << 20)
    del block


def run_server(kind: str, loop_name: str, addr: str) -> int:
    """Server entry point: prints `ready ADDR` once listening, then serves until killed."""
    settle_malloc()
    try:
        loop = micro.make_loop(loop_name)
    except Exception as exc:
        print(f"n/a {type(exc).__name__}: {exc}", flush=True)
        return EXIT_NA
    asyncio.set_event_loop(loop)
    try:
        sock = loop.run_until_complete(start_server(kind, loop, addr))
    except NotImplementedError as exc:  # rloop has no Unix servers, for one
        print(
            f"n/a {kind} over {addr.split(':')[0]}: NotImplementedError {exc}".rstrip(), flush=True
        )
        return EXIT_NA
    name = sock.getsockname()
    bound = f"tcp:{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix:{name}"
    print(f"ready {bound}", flush=True)
    loop.run_forever()  # until SIGTERM/SIGKILL from the parent; its default action is fine
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side: processes, CPU clocks, one cell
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # preexec_fn, in the child between fork and exec: SIGKILL it if this script dies, so no
    # server outlives an interrupted run (prctl(2)).
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class CpuClock:
    """Another process's CPU time (user + system, all its threads, live or exited), in seconds.

    clock_getcpuclockid(3) gives a clock with nanosecond resolution; /proc/PID/stat's utime and
    stime are the fallback, in clock ticks (10 ms).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        cid = ctypes.c_int()
        self.clock = cid.value if _libc.clock_getcpuclockid(pid, ctypes.byref(cid)) == 0 else None

    def read(self) -> float:
        if self.clock is not None:
            return time.clock_gettime(self.clock)
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CellError(Exception):
    """Ends one cell with a status (FAIL, ERROR, TIMEOUT, n/a) and a reason."""

    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status


class LineReader:
    """Reads whole lines from a child's stdout with a deadline (no blocking readline)."""

    def __init__(self, proc: subprocess.Popen[bytes], who: str) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.proc = proc
        self.who = who
        self.buf = b""

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CellError("TIMEOUT", f"{self.who}: no output after {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    raise CellError("ERROR", f"{self.who} exited (status {code})")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").strip()


def stderr_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminates a child and reaps it; SIGKILL if it ignores SIGTERM for 2 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_command(row: Row, loop_name: str, addr: str) -> list[str]:
    if loop_name == "floor":
        return [FLOOR_BIN, "http-server" if row.is_http else "echo-server", addr]
    kind = "http" if row.is_http else row.kind
    return [sys.executable, os.path.abspath(__file__), "--server", kind, loop_name, addr]


@dataclass
class Settings:
    duration: float
    warmup: float
    timeout: float
    tmpdir: str


def run_cell(row: Row, loop_name: str, st: Settings, serial: int) -> dict[str, Any]:
    addr = "tcp:127.0.0.1:0" if row.family == "tcp" else f"unix:{st.tmpdir}/s{serial}.sock"
    err_path = os.path.join(st.tmpdir, f"server{serial}.err")
    server = None
    children: list[subprocess.Popen[bytes]] = []  # the client, stopped in `finally`
    try:
        with open(err_path, "wb") as err:
            server = subprocess.Popen(
                server_command(row, loop_name, addr),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                preexec_fn=_die_with_parent,
            )
        clock = CpuClock(server.pid)
        first = LineReader(server, "server").line(st.timeout)
        if first.startswith("n/a"):
            raise CellError("n/a", first[4:])
        if not first.startswith("ready "):
            raise CellError("ERROR", f"server said {first[:200]!r}")
        bound = first[len("ready ") :]
        if row.is_http:
            result = http_cell(row, bound, clock, st)
        else:
            result = echo_cell(row, bound, clock, st, children)
        if server.poll() is not None:
            raise CellError("ERROR", f"server exited (status {server.returncode})")
        return result
    except CellError as exc:
        why = str(exc)
        tail = stderr_tail(err_path)
        if tail and exc.status != "n/a":
            why += f"; server stderr: {tail}"
        return {"status": exc.status, "error": why}
    finally:
        for child in children:
            stop(child)
        stop(server)
        for path in (err_path, addr[5:] if addr.startswith("unix:") else ""):
            if path and os.path.exists(path):
                os.unlink(path)


def echo_cell(
    row: Row, bound: str, clock: CpuClock, st: Settings, children: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    cmd = [FLOOR_BIN, "client", bound, "--conns", str(row.conns), "--size", str(row.size)]
    cmd += ["--duration", str(st.duration), "--warmup", str(st.warmup)]
    if row.churn:
        cmd.append("--churn")
    client = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    children.append(client)
    assert client.stdin is not None
    try:
        out = LineReader(client, "client")
        first = json.loads(out.line(st.warmup + st.timeout))
        if first.get("status") == "FAIL":
            raise CellError("FAIL", first.get("error", "client failed in the warm-up"))
        cpu0 = clock.read()  # every connection idle: nothing in flight on either side
        client.stdin.write(b"go\n")
        client.stdin.flush()
        doc = json.loads(out.line(st.duration + st.timeout))
        cpu1 = clock.read()
    except (OSError, ValueError) as exc:  # broken pipe, unparsable line
        raise CellError("ERROR", f"client: {exc}") from exc
    if doc.get("status") != "ok":
        raise CellError("FAIL", doc.get("error", "client failed"))
    if doc["messages"] <= 0:
        raise CellError("FAIL", "no message completed")
    # Closing stdin lets the client exit and close its connections, outside the measurement.
    client.stdin.close()
    try:
        client.wait(timeout=st.timeout)
    except subprocess.TimeoutExpired:
        pass  # run_cell's `finally` kills it
    return {
        "status": "ok",
        "rate": doc["msgs_per_s"],
        "bytes_per_s": doc["bytes_per_s"],
        "count": doc["messages"],
        "seconds": doc["seconds"],
        "cpu_total": cpu1 - cpu0,
        "cpu_per": (cpu1 - cpu0) / doc["messages"],
    }


def check_http(bound: str, timeout: float) -> None:
    """Three pipelined GETs on one connection must get exactly three HTTP_RESPONSEs back."""
    _, (host, port) = parse_addr(bound)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    want = HTTP_RESPONSE * 3
    got = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(request * 3)
            while len(got) < len(want):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as exc:
        raise CellError("FAIL", f"HTTP check: {exc}") from exc
    if got != want:
        raise CellError("FAIL", f"HTTP check: wrong response {got[:120]!r}")


PIPELINE_LUA = """\
-- wrk script: each request is PIPELINE_DEPTH GETs in one write (wrk's scripts/pipeline.lua).
init = function(args)
  local r = {}
  for i = 1, %d do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
"""


def run_wrk(row: Row, bound: str, seconds: int, st: Settings) -> dict[str, Any]:
    _, (host, port) = parse_addr(bound)
    cmd = ["wrk", "-t", "1", "-c", str(row.conns), "-d", f"{seconds}s", "--timeout", "5s"]
    if row.kind == "http-pipelined":
        script = os.path.join(st.tmpdir, "pipeline.lua")
        with open(script, "w") as f:
            f.write(PIPELINE_LUA % PIPELINE_DEPTH)
        cmd += ["-s", script]
    cmd.append(f"http://{host}:{port}/")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + st.timeout,
            preexec_fn=_die_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise CellError("TIMEOUT", f"wrk: no result after {seconds + st.timeout:.0f} s") from exc
    out = proc.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if proc.returncode != 0 or m is None:
        raise CellError("ERROR", f"wrk: {(proc.stderr or out).strip()[-200:]}")
    count = int(m.group(1))
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    elapsed = float(m.group(2)) * scale
    # Any socket error or non-2xx response means the server misbehaved: the cell fails.
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        raise CellError("FAIL", f"wrk socket errors: {errors.group(1).strip()}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise CellError("FAIL", f"wrk: {bad.group(1)} non-2xx responses")
    if count <= 0:
        raise CellError("FAIL", "wrk completed no request")
    return {"count": count, "seconds": elapsed}


def http_cell(row: Row, bound: str, clock: CpuClock, st: Settings) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise CellError("n/a", "wrk is not installed (Debian: apt-get install wrk)")
    check_http(bound, st.timeout)
    # wrk takes whole seconds; the warm-up is one short run of its own.
    run_wrk(row, bound, max(1, round(st.warmup)), st)
    cpu0 = clock.read()
    res = run_wrk(row, bound, max(1, round(st.duration)), st)
    cpu1 = clock.read()
    return {
        "status": "ok",
        "rate": res["count"] / res["seconds"],
        "count": res["count"],
        "seconds": res["seconds"],
        "cpu_total": cpu1 - cpu0,
        "cpu_per": (cpu1 - cpu0) / res["count"],
    }


def build_floor() -> str | None:
    """Builds netfloor (release) if needed; returns why not when that fails."""
    try:
        proc = subprocess.run(
            [
                "cargo",
                "build",
                "--release",
                "--quiet",
                "--manifest-path",
                f"{FLOOR_DIR}/Cargo.toml",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cargo build failed: {exc}"
    if proc.returncode != 0 or not os.path.exists(FLOOR_BIN):
        tail = proc.stderr.strip().splitlines()[-1:] or ["no binary"]
        return f"cargo build failed: {tail[0][:200]}"
    return None


# ---------------------------------------------------------------------------------------------
# Aggregation and the table
# ---------------------------------------------------------------------------------------------


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of rate and CPU per message over the rounds; any failed sample fails the cell."""
    bad = [s for s in samples if s["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "error": bad[0].get("error", "")}
    out: dict[str, Any] = {"status": "ok"}
    for key in ("rate", "cpu_per"):
        values = [s[key] for s in samples]
        out[key] = statistics.median(values)
        out[key + "_spread"] = (max(values) - min(values)) / out[key] if out[key] > 0 else 0.0
    return out


def fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f}M/s"
    if r >= 1e3:
        return f"{r / 1e3:.1f}k/s" if r < 1e5 else f"{r / 1e3:.0f}k/s"
    return f"{r:.0f}/s"


def fmt_us(s: float) -> str:
    us = s * 1e6
    if us >= 100:
        return f"{us:.0f} us"
    if us >= 10:
        return f"{us:.1f} us"
    return f"{us:.2f} us"


def cell_text(res: dict[str, Any], metric: str) -> str:
    if res["status"] != "ok":
        return res["status"]
    return fmt_rate(res[metric]) if metric == "rate" else fmt_us(res[metric])


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def ratio_cells(per: dict[str, Any], loops: list[str], metric: str) -> list[str]:
    """One row's ratios to uvloop under its cells: "baseline", a ratio, or "" where not ok."""
    base = per.get(BASELINE, {"status": "n/a"})
    cells = []
    for n in loops:
        r = per[n]
        if n == BASELINE:
            cells.append("baseline" if r["status"] == "ok" else "")
        elif r["status"] != "ok" or base["status"] != "ok":
            cells.append("")
        elif metric == "rate":  # higher is better: invert for ratio_text
            cells.append(micro.ratio_text(base["rate"], r["rate"]))
        else:
            cells.append(micro.ratio_text(r[metric], base[metric]))
    return cells


def print_report(
    meta: dict[str, Any],
    loops: list[str],
    rows: list[Row],
    results: dict[str, dict[str, dict[str, Any]]],
) -> None:
    m = meta["machine"]
    print(f"oxloop network benchmarks ({meta['mode']} run)")
    if meta.get("oxloop_changed"):
        changed = ", ".join(meta["oxloop_changed"])
        print(
            "  WARNING : oxloop files changed during the run, its column may mix two builds:"
            f" {changed}"
        )
    print(f"  machine : {m['cpu']}, {m['cores']} cores; {m['platform']}")
    print(f"            load average at start {m['load_avg']}")
    print(f"  python  : {m['python']} ({m['executable']})")
    names = []
    for name in loops:
        p = meta["probes"][name]
        names.append(f"{name} {p['version']}" if p["ok"] else f"{name} n/a")
    print(f"  loops   : {', '.join(names)}")
    if "oxloop" in loops and meta["probes"]["oxloop"]["ok"]:
        built = meta["probes"]["oxloop"]["built"]
        print(f"  oxloop  : git {meta['git']}, native module built {built}")
    rounds = meta["rounds"]
    print(
        f"  method  : each server its own process, one Rust client (netfloor) or wrk for all;"
        f" {meta['duration']:g} s measured after {meta['warmup']:g} s warm-up;"
        f" median of {rounds} round{'s' if rounds != 1 else ''}, loops interleaved"
    )
    print("  rate    : echoed messages (HTTP: responses) per second; higher is better")
    print("  cpu/msg : the server's CPU time per message, all threads; lower is better;")
    print("            the figure to trust on a shared machine")
    if any(r.churn for r in rows):
        print("  churn   : a message is a whole connection: accept, one echo, close")
    for name, why in meta.get("skipped", {}).items():
        print(f"  skipped : {name} ({why}); name it in --loops for an n/a column")
    print(f"  ratios  : against {BASELINE} on the same row; floor = pure Rust (mio), no Python")
    print()

    label_w = max(len(r.label) for r in rows) + 2
    tag_w, col_w = 9, 14
    lead = label_w + tag_w
    header = " " * lead + "".join(f"{n:>{col_w}}" for n in loops)
    print(header)
    print("-" * len(header))
    for row in rows:
        per = results[row.name]
        for i, metric in enumerate(("rate", "cpu_per")):
            label = row.label if i == 0 else ""
            tag = "rate" if metric == "rate" else "cpu/msg"
            print(
                f"{label:<{label_w}}{tag:<{tag_w}}"
                + "".join(f"{cell_text(per[n], metric):>{col_w}}" for n in loops)
            )
            ratios = ratio_cells(per, loops, metric)
            print(" " * lead + "".join(f"{x:>{col_w}}" for x in ratios).rstrip())
    print()

    # Per challenger: CPU per message against uvloop (and oxloop against the floor).
    for name in loops:
        if name in (BASELINE, "asyncio", "floor"):
            continue
        if not meta["probes"][name]["ok"]:
            print(f"{name}: n/a ({meta['probes'][name]['why']})")
            continue
        print(f"{name}, server cpu per message:")
        vs_base: list[float] = []
        vs_floor: list[float] = []
        for row in rows:
            r, b = results[row.name][name], results[row.name].get(BASELINE)
            fl = results[row.name].get("floor")
            if r["status"] != "ok":
                print(f"  {row.label:<{label_w}}{r['status']}")
                continue
            parts = []
            if b and b["status"] == "ok":
                vs_base.append(b["cpu_per"] / r["cpu_per"])
                text = micro.ratio_text(r["cpu_per"], b["cpu_per"])
                parts.append(f"{text} than {BASELINE}".replace("same than", "the same as"))
            if fl and fl["status"] == "ok":
                vs_floor.append(r["cpu_per"] / fl["cpu_per"])
                parts.append(f"{r['cpu_per'] / fl['cpu_per']:.2f}x the floor's cpu")
            print(f"  {row.label:<{label_w}}{'; '.join(parts) or 'no ratio'}")
        if vs_base:
            g = geomean(vs_base)
            word = f"{g:.2f}x less" if g >= 1 else f"{1 / g:.2f}x more"
            print(f"  geometric mean: {word} cpu per message than {BASELINE}", end="")
            if vs_floor:
                print(f"; {geomean(vs_floor):.2f}x the floor's", end="")
            print()
        print()

    spreads = [
        (res["cpu_per_spread"], row.name, n)
        for row in rows
        for n, res in results[row.name].items()
        if res["status"] == "ok" and "cpu_per_spread" in res
    ]
    if rounds > 1 and spreads:
        worst = max(spreads)
        typical = statistics.median(s for s, _, _ in spreads)
        print(
            f"noise: cpu/msg (max-min)/median over rounds is {typical:.0%} typically, worst"
            f" {worst[0]:.0%} ({worst[1]} on {worst[2]});\n       a ratio within that is a tie"
        )
    notes = [
        f"  {n}: n/a: {meta['probes'][n]['why']}" for n in loops if not meta["probes"][n]["ok"]
    ]
    for row in rows:
        for n in loops:
            r = results[row.name][n]
            if r["status"] != "ok" and meta["probes"][n]["ok"]:
                notes.append(f"  {row.name} on {n}: {r['status']}: {r.get('error', '')}")
    if notes:
        print("notes:")
        print("\n".join(notes))


# ---------------------------------------------------------------------------------------------
# TLS echo (issue 18): benches/tls_echo.py's measurement, printed in this table's format
# ---------------------------------------------------------------------------------------------

# The rows of issue 18's TLS table: (kind, message size), 10 connections in ping-pong.
TLS_ROWS = (("protocol", 1024), ("protocol", 65536), ("streams", 1024), ("streams", 65536))
TLS_CONNS = 10
# Loops of this script that have no TLS: (name, why).
TLS_NA = {
    "rloop": "no TLS (create_server(ssl=...) raises NotImplementedError)",
}
# The floor (netfloor tls-echo-server) runs the Protocol rows only: on the streams rows it would
# be the same Rust echo again.
TLS_FLOOR_KINDS = ("protocol",)
TLS_FLOOR_STREAMS = "the floor is the same echo as on the Protocol rows"


def _load_tls_echo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tls_echo", os.path.join(HERE, "tls_echo.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tls_floor() -> dict[str, Any]:
    """Whether the TLS floor can run here (micro.probe's form): netfloor builds, this Python's
    `ssl` runs on a shared libssl (tls_echo.libssl_path), and netfloor can load and use it."""
    import ssl

    why = build_floor()
    libssl = _load_tls_echo().libssl_path() if why is None else None
    if why is None and libssl is None:
        why = "no shared libssl mapped by this Python's ssl module"
    if why is None:
        try:
            proc = subprocess.run(
                [FLOOR_BIN, "tls-probe", libssl], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"netfloor tls-probe: {exc}"
        else:
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or [f"status {proc.returncode}"]
                why = tail[0][:200]
    if why is None:
        return {"ok": True, "version": f"mio + {ssl.OPENSSL_VERSION}", "libssl": libssl}
    return {"ok": False, "version": "mio", "why": why}


def tls_columns(loops: list[str]) -> tuple[list[str], dict[str, Any] | None]:
    """The TLS table's columns: `loops`, less the floor when it cannot run (its probe then says
    why, for the table's note); and the floor's probe (None when not asked for)."""
    if "floor" not in loops:
        return loops, None
    floor = tls_floor()
    return (loops if floor["ok"] else [n for n in loops if n != "floor"]), floor


def run_tls_table(loops: list[str], rounds: int, messages: int) -> dict[str, Any]:
    """Server CPU per TLS echo message, per row and loop (median over interleaved rounds).

    The driver is tls_echo.py's client (one process, stock asyncio; the Rust netfloor client
    speaks no TLS): it verifies the server's certificate against its CA and the hostname. The
    figure is the server process's own CPU clock over the measured phase, as for the rows
    above, so the client's language changes the pace, not what is counted. The floor (when in
    `loops`: tls_columns) runs the Protocol rows.
    """
    tls_echo = _load_tls_echo()
    live = [n for n in loops if n not in TLS_NA]
    samples: dict[str, dict[str, list[float]]] = {
        f"{k}:{n}": {name: [] for name in live} for k, n in TLS_ROWS
    }
    errors: dict[str, dict[str, str]] = {key: {} for key in samples}
    with tempfile.TemporaryDirectory(prefix="oxloop-tls-") as certdir:
        tls_echo.make_certs(certdir)
        for _ in range(rounds):
            for kind, size in TLS_ROWS:
                key = f"{kind}:{size}"
                n = tls_echo.messages_for(size, messages, TLS_CONNS)
                for name in live:
                    if name in errors[key]:
                        continue
                    if name == "floor" and kind not in TLS_FLOOR_KINDS:
                        errors[key][name] = TLS_FLOOR_STREAMS
                        continue
                    print(f"TLS {key} on {name}", file=sys.stderr, flush=True)
                    try:
                        cpu = tls_echo.cell(kind, name, certdir, size, TLS_CONNS, n)
                    except Exception as exc:  # a loop that cannot serve TLS: n/a
                        errors[key][name] = f"{type(exc).__name__}: {exc}"
                        continue
                    samples[key][name].append(cpu)
    results: dict[str, Any] = {}
    for key in samples:
        results[key] = {}
        for name in loops:
            if name in TLS_NA:
                results[key][name] = {"status": "n/a", "error": TLS_NA[name]}
            elif name in errors[key] or not samples[key][name]:
                results[key][name] = {"status": "n/a", "error": errors[key].get(name, "")}
            else:
                v = samples[key][name]
                results[key][name] = {
                    "status": "ok",
                    "cpu_per": statistics.median(v),
                    "cpu_per_spread": (max(v) - min(v)) / statistics.median(v),
                    "samples": v,
                }
    return results


def tls_doc(
    loops: list[str], results: dict[str, Any], rounds: int, floor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The TLS table as a results file of its own (chart kind "tls"): tls.json and its chart.

    Its rows have the same shape as the echo rows' (a `cpu_per` per loop), so benches/chart.py
    draws it like the network table, the floor (Rust over the same OpenSSL; `floor` is its
    probe, tls_floor) as a tick on the Protocol rows; a floor that could not run is left out.
    """
    with_floor = "floor" in loops and floor is not None and floor["ok"]
    meta: dict[str, Any] = {
        "bench": "tls",
        "date": micro.utc_now(),
        "machine": micro.machine_info(),
        "git": micro.git_rev(),
        "rounds": rounds,
        "connections": TLS_CONNS,
        "client": "benches/tls_echo.py (Python, stock asyncio; verifies the CA and the hostname)",
        "probes": {name: probe(name) for name in loops if name != "floor"},
    }
    if with_floor:
        meta["probes"]["floor"] = floor
    rows = {}
    for key, per in results.items():
        kind, size = key.split(":")
        rows[f"tls-{kind}-{int(size) // 1024}k"] = {
            "label": f"TLS {kind} {int(size) // 1024} KiB x{TLS_CONNS}",
            "results": {n: r for n, r in per.items() if n != "floor" or with_floor},
        }
    return {"meta": meta, "baseline": BASELINE, "statistic": "median", "rows": rows}


def save_tls(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    """tls.json (and chart) beside net.json, or at --json when the TLS table runs alone."""
    if args.no_save:
        return
    if args.tls_only and args.json:
        path = args.json
    else:
        net_json = args.json or os.path.join(HERE, "results", "net.json")
        path = os.path.join(os.path.dirname(os.path.abspath(net_json)), "tls.json")
    micro.load_chart().save(doc, path, "tls", chart=not args.no_chart)


def print_tls_report(
    loops: list[str], results: dict[str, Any], rounds: int, floor: dict[str, Any] | None = None
) -> None:
    print(
        f"TLS echo, {TLS_CONNS} connections in ping-pong, server cpu per message"
        f" (median of {rounds} round{'s' if rounds != 1 else ''}, loops interleaved)"
    )
    print(
        "  method  : the client of benches/tls_echo.py (Python, stock asyncio; verifies the CA"
        " and the\n            hostname), not netfloor (no TLS); the server's own CPU clock"
    )
    if floor is not None and floor["ok"]:
        print(
            "  floor   : the same echo in Rust (netfloor tls-echo-server), no Python, over the"
            f" OpenSSL\n            this Python's ssl uses ({floor['libssl']}); Protocol rows"
        )
    label_w, tag_w, col_w = 20, 9, 14
    lead = label_w + tag_w
    header = " " * lead + "".join(f"{n:>{col_w}}" for n in loops)
    print(header)
    print("-" * len(header))
    for key, per in results.items():
        kind, size = key.split(":")
        label = f"tls {kind} {int(size) // 1024} KiB"
        print(
            f"{label:<{label_w}}{'cpu/msg':<{tag_w}}"
            + "".join(f"{cell_text(per[n], 'cpu_per'):>{col_w}}" for n in loops)
        )
        ratios = ratio_cells(per, loops, "cpu_per")
        print(" " * lead + "".join(f"{x:>{col_w}}" for x in ratios).rstrip())
    notes = sorted(
        {
            f"  {n}: n/a: {per[n]['error']}"
            for per in results.values()
            for n in loops
            if per[n]["status"] != "ok" and per[n].get("error")
        }
    )
    if floor is not None and not floor["ok"]:
        notes.append(f"  floor: left out: {floor['why']}")
    if notes:
        print("notes:")
        print("\n".join(notes))
    print()


def run_tls(args: argparse.Namespace, loops: list[str], rounds: int) -> None:
    """The TLS table: measured, printed, saved (tls.json and its chart)."""
    columns, floor = tls_columns(loops)
    results = run_tls_table(columns, rounds, args.tls_messages)
    print_tls_report(columns, results, rounds, floor)
    save_tls(args, tls_doc(columns, results, rounds, floor))


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def oxloop_fingerprint() -> dict[str, float]:
    """The mtime of each of oxloop's installed files, found without importing oxloop.

    The tree may be rebuilt while a long run goes on; comparing this before and after tells
    whether, and by which files, the oxloop column may mix two builds.
    """
    spec = importlib.util.find_spec("oxloop")
    if spec is None or not spec.submodule_search_locations:
        return {}
    return {
        entry.name: entry.stat().st_mtime
        for where in spec.submodule_search_locations
        for entry in os.scandir(where)
        if entry.is_file()
    }


def run_probe(name: str) -> int:
    """Probe child: construct the loop once; print its version (and oxloop's build time)."""
    from importlib import metadata

    micro.make_loop(name).close()
    print("stdlib" if name == "asyncio" else metadata.version(name))
    if name == "oxloop":
        # A failed rebuild leaves the previous native module in place: say when it was built.
        import oxloop._oxloop as ext

        print(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(ext.__file__))))
    return 0


def probe(name: str) -> dict[str, Any]:
    """Whether a loop (or the floor) can run here: its version, or why not (micro.probe's form)."""
    if name == "floor":
        why = build_floor()
        return {"ok": why is None, "version": "mio", "why": why or ""}
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--probe", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": "import timed out"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"ok": False, "why": tail[0][:200]}
    version, _, built = proc.stdout.strip().partition("\n")
    return {"ok": True, "version": version, "built": built}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 small rows, 1 round, 1 s: a smoke test")
    ap.add_argument("--full", action="store_true", help="every row of the matrix (long)")
    ap.add_argument("--rows", help="comma-separated row names or patterns (see --list)")
    ap.add_argument("--loops", help="comma-separated loops (default: all found)")
    ap.add_argument("--rounds", type=int, help="samples per cell (default 3; --quick 1)")
    ap.add_argument("--duration", type=float, help="measured seconds per cell (default 2)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.5)")
    ap.add_argument("--timeout", type=float, default=30.0, help="slack per wait, seconds")
    ap.add_argument(
        "--json",
        metavar="FILE",
        help="where to save every sample and median (default benches/results/net.json);"
        " the chart goes beside it (.png, .svg)",
    )
    ap.add_argument("--no-chart", action="store_true", help="save the JSON but draw no chart")
    ap.add_argument("--no-save", action="store_true", help="print the table only")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument(
        "--tls",
        action="store_true",
        help="also the TLS echo table (Protocol and streams, 1 and 64 KiB; benches/tls_echo.py)",
    )
    ap.add_argument("--tls-only", action="store_true", help="the TLS echo table alone")
    ap.add_argument(
        "--tls-messages", type=int, default=3000, help="messages per 1 KiB TLS cell (64 KiB: 1/10)"
    )
    ap.add_argument("--server", nargs=3, metavar=("KIND", "LOOP", "ADDR"), help=argparse.SUPPRESS)
    ap.add_argument("--probe", metavar="LOOP", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.server:
        return run_server(*args.server)
    if args.probe:
        return run_probe(args.probe)
    if args.list:
        for r in ROWS.values():
            mark = "*" if r.name in DEFAULT_ROWS else " "
            print(f"{mark} {r.name:<24} {r.label}")
        print("(* = in the default run)")
        return 0

    if args.rows:
        rows = select_rows(args.rows)
    elif args.full:
        rows = list(ROWS.values())
    else:
        rows = select_rows(",".join(QUICK_ROWS if args.quick else DEFAULT_ROWS))
    args.loops_given = args.loops is not None
    loops = micro.parse_list(args.loops or ",".join(LOOPS), LOOPS, "loop")
    rounds = args.rounds or (1 if args.quick else 3)
    if args.tls_only:
        run_tls(args, loops, rounds)
        return 0
    duration = args.duration or (1.0 if args.quick else 2.0)
    warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 0.5)

    floor_why = build_floor()  # the client is needed whatever the loops
    if floor_why:
        print(f"net.py: the Rust client is needed: {floor_why}", file=sys.stderr)
        return 1
    meta: dict[str, Any] = {
        "bench": "net",
        "date": micro.utc_now(),
        "machine": micro.machine_info(),
        "git": micro.git_rev(),
        "mode": "quick" if args.quick else "full" if args.full else "default",
        "rounds": rounds,
        "duration": duration,
        "warmup": warmup,
        "probes": {name: probe(name) for name in loops},
    }
    # An optional loop that does not import is left out of the table, unless asked for by name.
    asked = set(micro.parse_list(args.loops, LOOPS, "loop")) if args.loops_given else set()
    meta["skipped"] = {
        n: meta["probes"][n]["why"]
        for n in loops
        if n in OPTIONAL_LOOPS and n not in asked and not meta["probes"][n]["ok"]
    }
    loops = [n for n in loops if n not in meta["skipped"]]
    live = [n for n in loops if meta["probes"][n]["ok"]]
    fingerprint = oxloop_fingerprint() if "oxloop" in live else {}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        r.name: {n: [] for n in live} for r in rows
    }
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the cell's `finally` kills its children.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tty = sys.stderr.isatty()
    total = rounds * len(rows) * len(live)
    done = serial = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oxloop-net-") as tmpdir:
        st = Settings(duration, warmup, args.timeout, tmpdir)
        for rnd in range(rounds):
            for row in rows:
                for name in live:
                    done += 1
                    serial += 1
                    msg = f"[{done}/{total}] round {rnd + 1}/{rounds} {row.name} on {name}"
                    print(
                        f"\r\033[K{msg}" if tty else msg, end="" if tty else "\n", file=sys.stderr
                    )
                    sys.stderr.flush()
                    samples[row.name][name].append(run_cell(row, name, st, serial))
    elapsed = time.perf_counter() - started
    if tty:
        print("\r\033[K", end="", file=sys.stderr)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        results[row.name] = {
            n: aggregate(samples[row.name][n]) if n in live else {"status": "n/a"} for n in loops
        }
    if fingerprint:
        after = oxloop_fingerprint()
        meta["oxloop_changed"] = sorted(
            name
            for name in fingerprint.keys() | after.keys()
            if fingerprint.get(name) != after.get(name)
        )
    print_report(meta, loops, rows, results)
    print(f"({total} samples in {elapsed:.0f} s)")
    if args.tls:
        print()
        run_tls(args, loops, rounds)
    if not args.no_save:
        doc = {
            "meta": meta,
            "baseline": BASELINE,
            "statistic": "median",
            "rows": {
                r.name: {"label": r.label, "results": results[r.name], "samples": samples[r.name]}
                for r in rows
            },
        }
        micro.load_chart().save(doc, args.json, "net", chart=not args.no_chart)
    failed = any(
        res["status"] not in ("ok", "n/a") for per in results.values() for res in per.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

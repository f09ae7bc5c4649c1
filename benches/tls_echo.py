"""TLS echo: server CPU per message on each loop (issue 18's TLS table).

Role: measures what one TLS echo message costs the server, Protocol and streams, with a verifying
context (the client checks the CA and the hostname). The server runs in its own process on the
loop under test (``--server KIND LOOP CERTDIR``); one client process (stock asyncio) keeps N
connections in ping-pong. The figure is the server's CPU
time (its own process clock, read over a control pipe right before and after the measured phase)
divided by the messages echoed. Loops are interleaved inside each round; a cell is the median of
the rounds.

    python benches/tls_echo.py [--loops oxloop,uvloop,asyncio] [--rounds 3] [--messages 3000]

``--clock user`` / ``--clock system`` counts only that part of the server's CPU time
(getrusage). A loop ``LABEL=NAME`` shows NAME's column as LABEL. ``oxloop@DIR`` runs oxloop
from DIR (put first on PYTHONPATH: a saved copy of python/oxloop, for a before/after in one
interleaved run); ``oxloop-sslproto`` is oxloop with ``OXLOOP_NATIVE_TLS=0``; ``rsloop``
needs its wheel (rustls: it ignores the SSLContext's CA and settings).

``floor`` is the Rust TLS echo server of benches/net/floor (``netfloor tls-echo-server``,
built by ``cargo build --release`` there): the same echo, certificate and key over the OpenSSL
library this Python's ``ssl`` module uses (``libssl_path()``), with no Python; Protocol rows only.

``--callgrind`` counts instructions instead: each row's server runs under
``valgrind --tool=callgrind`` for M and then 2M messages, and (I(2M) - I(M)) / M is the
user-space cost of one more message, start-up and handshakes cancelled out (the figure
benches/net_callgrind.sh gives for plaintext). ``TOP=N`` also prints the N functions whose
self cost grew most per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK = "cpu"  # what the server's figure counts (--clock)
FLOOR_BIN = os.path.join(HERE, "net", "floor", "target", "release", "netfloor")


def libssl_path() -> str | None:
    """The libssl shared library this interpreter's ``ssl`` module runs on, or None.

    Read from /proc/self/maps (Linux) after ``import ssl``: the file the dynamic loader mapped
    for ``_ssl``, so the Rust floor loads the very same OpenSSL build. None where ``_ssl`` links
    OpenSSL statically or there is no /proc.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "/libssl" in line}
    except OSError:
        return None
    found = sorted(p for p in paths if os.path.basename(p).startswith("libssl.so"))
    return found[0] if found else None


def floor_command(certdir: str, libssl: str) -> list[str]:
    """The Rust TLS floor's command line: the Python servers' certificate and key (server.pem)."""
    pem = os.path.join(certdir, "server.pem")
    return [FLOOR_BIN, "tls-echo-server", "tcp:127.0.0.1:0", "--libssl", libssl, "--cert", pem]


def make_certs(d: str) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(os.path.join(d, "server.pem"))
    ca.cert_pem.write_to_path(os.path.join(d, "ca.pem"))


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "rsloop":
        import rsloop

        return rsloop.new_event_loop()
    if kind.startswith("oxloop"):
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)


async def stream_echo(reader, writer):
    try:
        while True:
            data = await reader.read(1 << 17)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def cpu() -> float:
    # --clock user / system: that part of the process's CPU time only (getrusage: the
    # kernel's split of the same time, in microseconds; os.times() counts 10 ms ticks).
    clock = os.environ.get("TLS_ECHO_CLOCK", "cpu")
    if clock != "cpu":
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime if clock == "user" else ru.ru_stime
    return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)


def server(kind: str, loop_kind: str, certdir: str) -> None:
    # The loop first: rsloop records certificates by patching load_cert_chain at import.
    loop = new_loop(loop_kind)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(certdir, "server.pem"))
    asyncio.set_event_loop(loop)

    async def main():
        if kind == "protocol":
            srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=ctx)
        else:
            srv = await asyncio.start_server(stream_echo, "127.0.0.1", 0, ssl=ctx)
        print(srv.sockets[0].getsockname()[1], flush=True)
        r = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
        while True:
            line = await r.readline()
            if not line or line.strip() == b"quit":
                break
            print(f"{cpu():.9f}", flush=True)

    loop.run_until_complete(main())


async def client(port: int, certdir: str, conns: int, size: int, messages: int, ctl) -> float:
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=os.path.join(certdir, "ca.pem")
    )
    payload = os.urandom(size)
    pairs = [
        await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        for _ in range(conns)
    ]

    async def pingpong(r, w, n):
        for _ in range(n):
            w.write(payload)
            got = await r.readexactly(size)
            if got != payload:
                raise SystemExit("echo mismatch")

    await asyncio.gather(*(pingpong(r, w, 20) for r, w in pairs))  # warm-up
    before = await ctl()
    await asyncio.gather(*(pingpong(r, w, messages // conns) for r, w in pairs))
    after = await ctl()
    for _, w in pairs:
        w.close()
    return (after - before) / (messages // conns * conns)


def cell(
    kind: str,
    loop_kind: str,
    certdir: str,
    size: int,
    conns: int,
    messages: int,
    wrap: list[str] = [],  # noqa: B006 (read only)
    command: list[str] | None = None,
) -> float:
    """Server CPU seconds per message of one run; `command` replaces the Python server (the
    floor), which speaks the same control protocol and prints ``ready tcp:HOST:PORT``."""
    env = dict(os.environ)
    env["TLS_ECHO_CLOCK"] = CLOCK
    if loop_kind == "oxloop-sslproto":
        env["OXLOOP_NATIVE_TLS"] = "0"  # asyncio's sslproto over oxloop's transport
    if "@" in loop_kind:  # oxloop@DIR: that copy of the package first on the path
        env["PYTHONPATH"] = loop_kind.split("@", 1)[1] + os.pathsep + env.get("PYTHONPATH", "")
    if command is None and loop_kind == "floor":
        libssl = libssl_path()
        if libssl is None:
            raise RuntimeError("no libssl mapped in this process (static OpenSSL?)")
        command = floor_command(certdir, libssl)
    if command is not None and CLOCK != "cpu":
        # The Rust floor answers `cpu` with its whole CPU time only.
        raise RuntimeError(f"--clock {CLOCK} is not available for the floor")
    p = subprocess.Popen(
        [*wrap, *(command or [sys.executable, __file__, "--server", kind, loop_kind, certdir])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = p.stdout.readline()
        if not first:
            raise RuntimeError(f"the server exited (status {p.wait(10)}) before listening")
        port = int(first.rsplit(":", 1)[-1])  # "PORT", or the floor's "ready tcp:HOST:PORT"

        async def ctl() -> float:
            p.stdin.write("cpu\n")
            p.stdin.flush()
            return float(await asyncio.to_thread(p.stdout.readline))

        return asyncio.run(client(port, certdir, conns, size, messages, ctl))
    finally:
        try:
            p.stdin.write("quit\n")
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def messages_for(size: int, messages: int, conns: int) -> int:
    return messages if size <= 4096 else max(conns * 20, messages // 10)


def callgrind(kind: str, loop_kind: str, certdir: str, size: int, conns: int, m: int) -> int:
    """User-space instructions of the server per message: (I(2M) - I(M)) / M."""
    out_dir = os.path.join(HERE, "results", "callgrind")
    os.makedirs(out_dir, exist_ok=True)
    name = loop_kind.replace("/", "_").replace("@", "-")
    counts = []
    for n in (m, 2 * m):
        out = os.path.join(out_dir, f"tls.{kind}.{size}.{name}.{n}.out")
        wrap = ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"]
        os.environ["PYTHONHASHSEED"] = "0"
        cell(kind, loop_kind, certdir, size, conns, n, wrap)
        with open(out) as f:
            total = next(int(x.split()[1]) for x in f if x.startswith(("summary:", "totals:")))
        counts.append(total)
    per = (counts[1] - counts[0]) // (m // conns * conns)
    top = int(os.environ.get("TOP", "0"))
    if top:
        stem = os.path.join(out_dir, f"tls.{kind}.{size}.{name}")
        a, b = self_cost(f"{stem}.{m}.out"), self_cost(f"{stem}.{2 * m}.out")
        grew = sorted(((k, v - a.get(k, 0)) for k, v in b.items()), key=lambda x: -x[1])
        for fn, delta in grew[:top]:
            print(f"  {delta * 1.0 / (m // conns * conns):8.0f}  {fn.split('/')[-1]}")
    return per


def self_cost(path: str) -> dict[str, int]:
    """Self cost per function of one callgrind profile (as benches/net_callgrind.sh's TOP)."""
    import re

    line = re.compile(r"^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(?!=>)(.+?)(?: \[.*\])?$")
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", path],
        capture_output=True,
        text=True,
    ).stdout
    cost: dict[str, int] = {}
    for text in out.splitlines():
        if (hit := line.match(text)) and hit[2] != "PROGRAM TOTALS":
            cost[hit[2]] = cost.get(hit[2], 0) + int(hit[1].replace(",", ""))
    return cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", nargs=3)
    ap.add_argument("--loops", default="asyncio,uvloop,oxloop")
    ap.add_argument("--rows", default="protocol:1024,protocol:65536,streams:1024,streams:65536")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--callgrind", action="store_true", help="instructions per message")
    ap.add_argument(
        "--clock",
        choices=["cpu", "user", "system"],
        default="cpu",
        help="the server's CPU time (default), or its user or system part only (getrusage)",
    )
    a = ap.parse_args()
    global CLOCK
    CLOCK = a.clock
    if a.server:
        server(*a.server)
        return
    labels = dict(reversed(x.split("=", 1)) if "=" in x else (x, x) for x in a.loops.split(","))
    loops = list(labels)
    with tempfile.TemporaryDirectory() as d:
        make_certs(d)
        if a.callgrind:
            print(f"TLS echo, {a.conns} connections, server user-space instructions per message")
            print(f"{'row':<18}" + "".join(f"{labels[k]:>16}" for k in loops))
            for row in a.rows.split(","):
                kind, size = row.split(":")
                n = messages_for(int(size), a.messages, a.conns)
                per = [callgrind(kind, k, d, int(size), a.conns, n) for k in loops]
                print(f"{kind + ' ' + size:<18}" + "".join(f"{x:>16,}" for x in per), flush=True)
            return
        what = {"cpu": "CPU", "user": "user CPU", "system": "system CPU"}[a.clock]
        rounds = f"median of {a.rounds}"
        print(f"TLS echo, {a.conns} connections, server {what} µs per message ({rounds})")
        print(f"{'row':<18}" + "".join(f"{labels[k]:>16}" for k in loops))
        for row in a.rows.split(","):
            kind, size = row.split(":")
            res: dict[str, list[float]] = {k: [] for k in loops}
            for _ in range(a.rounds):
                for k in loops:
                    n = messages_for(int(size), a.messages, a.conns)
                    res[k].append(cell(kind, k, d, int(size), a.conns, n))
            line = f"{kind + ' ' + size:<18}"
            line += "".join(f"{statistics.median(res[k]) * 1e6:>16.1f}" for k in loops)
            print(line, flush=True)


if __name__ == "__main__":
    main()

"""Runs programs on both loops in child processes, compares them and reports.

Each loop kind has one worker process (``fuzz/worker.py``) that runs program after program; a
worker that crashed (a signal, an abort, an exit) or hung (no answer within STEP_TIMEOUT) is
killed if needed and restarted for the next program, and the step it was running gets the
outcome ``("crash", how, stderr tail)`` or ``("hang",)``. A difference between the two loops'
outcomes is re-run twice on fresh workers' loops; one that does not come back the same is
reported as flaky (timing), not as a bug.
"""

from __future__ import annotations

import collections
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import allowlist
from .program import TARGETS, render_step, step_label

KINDS = ("asyncio", "oxloop")
PANIC = "PanicException"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No step takes this long on either loop (coroutines time out after 0.25 s): past it, a hang.
STEP_TIMEOUT = 10.0


class Worker:
    def __init__(self, kind: str, step_timeout: float = STEP_TIMEOUT) -> None:
        self.kind = kind
        self.step_timeout = step_timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("PYTHONASYNCIODEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fuzz.worker", self.kind],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        msg = self._recv(60.0)
        if not msg or msg[0] != "ready":
            raise RuntimeError(f"fuzz worker {self.kind} did not start: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-2000:]

    def _read(self, n: int, deadline: float) -> bytes | None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        hdr = self._read(4, deadline)
        if hdr is None:
            return None
        data = self._read(struct.unpack("<I", hdr)[0], deadline)
        return None if data is None else pickle.loads(data)

    def send(self, prog) -> bool:
        if self.proc is None:
            self._start()
        assert self.proc and self.proc.stdin
        data = pickle.dumps(prog)
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return False
        return True

    def collect(self, prog) -> tuple[list, list | None]:
        """The outcome of each step run (the last one a crash or hang if that happened) and
        the events, or None for them after a crash."""
        outs: list = []
        while True:
            try:
                msg = self._recv(self.step_timeout)
            except TimeoutError:
                outs.append(("hang",))
                self._kill()
                return outs, None
            if msg is None:
                outs.append(self._crashed())
                return outs, None
            if msg[0] == "step":
                outs.append(msg[2])
            elif msg[0] == "done":
                return outs, msg[1]
            else:  # worker-error: a bug of the fuzzer, reported like a crash
                outs.append(("worker-error", msg[1][-1500:]))
                self._kill()
                return outs, None

    def _crashed(self) -> tuple:
        assert self.proc
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self._kill()
            rc = None
        how = f"signal {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exit {rc}"
        tail = self._stderr_tail()
        self._release()
        self.restarts += 1
        return ("crash", how, tail)

    def _release(self) -> None:
        """Forget the ended worker, closing its pipes and stderr file (no ResourceWarning)."""
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:  # a broken pipe's unflushed data: the worker is gone
                        pass
            self.proc = None
        self.stderr.close()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # our own child, by its Popen
            self.proc.wait()
            self._release()
            self.restarts += 1

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._kill()
                return
            self._release()


def outcome_key(o: tuple) -> tuple:
    """The comparable part of an outcome (a crash's stderr is for the report only)."""
    return tuple(o[:2]) if o and o[0] == "crash" else tuple(o)


def diff_key(prog, diff) -> tuple:
    """What makes two differences the same kind."""
    if diff[0] == "step":
        _, i, a, o = diff
        return ("step", step_label(prog[i]), prog[i][0], outcome_key(a), outcome_key(o))
    _, ea, eo = diff
    only_a = sorted(set(map(tuple, ea)) - set(map(tuple, eo)), key=repr)
    only_o = sorted(set(map(tuple, eo)) - set(map(tuple, ea)), key=repr)
    return ("events", tuple(only_a), tuple(only_o))


@dataclass
class Finding:
    key: tuple
    program: tuple
    step: int | None
    asyncio: object
    oxloop: object
    status: str  # "new", "pending: ...", "allowed: ...", "flaky"
    count: int = 1


@dataclass
class Session:
    step_timeout: float = STEP_TIMEOUT
    workers: dict = field(default_factory=dict)
    programs: int = 0
    calls: dict = field(default_factory=lambda: {k: collections.Counter() for k in KINDS})
    outcomes: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    findings: dict = field(default_factory=dict)
    crashes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workers = {k: Worker(k, self.step_timeout) for k in KINDS}

    def run_both(self, prog) -> dict:
        for k in KINDS:
            if not self.workers[k].send(prog):
                self.workers[k]._crashed()
                self.workers[k].send(prog)
        return {k: self.workers[k].collect(prog) for k in KINDS}

    def compare(self, prog, res) -> tuple | None:
        """The first difference: ("step", i, a, o) or ("events", a, o); None when alike."""
        (oa, ea), (oo, eo) = res["asyncio"], res["oxloop"]
        for i in range(max(len(oa), len(oo))):
            a = oa[i] if i < len(oa) else ("not run",)
            o = oo[i] if i < len(oo) else ("not run",)
            if outcome_key(a) != outcome_key(o):
                return ("step", i, a, o)
        if ea is not None and eo is not None and ea != eo:
            return ("events", ea, eo)
        return None

    def run(self, prog) -> None:
        self.programs += 1
        res = self.run_both(prog)
        for k in KINDS:
            for i, out in enumerate(res[k][0]):
                if i >= len(prog):
                    continue  # a crash after the last step, while the program's loop ran down
                label = step_label(prog[i])
                if out[0] != "skip":
                    self.calls[k][label] += 1
                if k == "oxloop":
                    self.outcomes[label][out[0]] += 1
        for k in KINDS:
            outs, events = res[k]
            other = res["asyncio" if k == "oxloop" else "oxloop"][0]
            for i, out in enumerate(outs):
                # A Rust panic reaching Python is pyo3's PanicException: a crash that the
                # interpreter survived, counted with the crashes whatever asyncio did. A
                # worker-error is a bug of the fuzzer. A crash or hang on both loops alike is
                # the program's (a blocking call), not a loop's.
                same = i < len(other) and outcome_key(other[i]) == outcome_key(out)
                if (
                    out[0] == "worker-error"
                    or PANIC in out
                    or (out[0] in ("crash", "hang") and not same)
                ):
                    self.crashes.append((k, prog, i, out))
            if events and any(PANIC in e for e in events):
                self.crashes.append((k, prog, len(prog), ("panic in a callback", events)))
        diff = self.compare(prog, res)
        if diff is None:
            return
        key = diff_key(prog, diff)
        if diff[0] == "step":
            _, i, a, o = diff
            entry = allowlist.classify(prog[i], a, o)
            status = None
            if entry is not None:
                status = (
                    ("allowed: " + entry.row) if entry.row else ("pending: " + str(entry.pending))
                )
            elif allowlist.taint(prog, i):
                status = "allowed: " + str(allowlist.taint(prog, i))
            prog_shown, step_i = prog[: i + 1], i
        else:
            _, ea, eo = diff
            status = allowlist.classify_events(ea, eo)
            if status is None and allowlist.taint(prog):
                status = "allowed: " + str(allowlist.taint(prog))
            only_a = sorted(set(map(tuple, ea)) - set(map(tuple, eo)), key=repr)
            only_o = sorted(set(map(tuple, eo)) - set(map(tuple, ea)), key=repr)
            a, o = only_a, only_o
            prog_shown, step_i = prog, None
        if status is None:
            # Confirm on fresh loops: a difference that does not come back is timing.
            again = [self.compare(prog, self.run_both(prog)) for _ in range(2)]
            if any(d is None or diff_key(prog, d) != key for d in again):
                status = "flaky"
            else:
                status = "new"
        key = (status.split(":")[0],) + key
        old = self.findings.get(key)
        if old is None:
            self.findings[key] = Finding(key, prog_shown, step_i, a, o, status)
        else:
            old.count += 1
            if len(prog_shown) < len(old.program):
                old.program, old.step = prog_shown, step_i

    def close(self) -> None:
        for w in self.workers.values():
            w.close()

    def failed(self) -> bool:
        return bool(self.crashes) or any(f.status == "new" for f in self.findings.values())

    def report(self, out=sys.stdout, seed=None) -> None:
        w = out.write
        total = {k: sum(self.calls[k].values()) for k in KINDS}
        w(f"fuzz: Python {sys.version.split()[0]}, seed {seed}, {self.programs} programs\n")
        w(f"calls made: asyncio {total['asyncio']}, oxloop {total['oxloop']}")
        w(f" (worker restarts: {', '.join(f'{k} {self.workers[k].restarts}' for k in KINDS)})\n")
        w("\nper method: calls on asyncio, on oxloop; oxloop's outcome kinds\n")
        for label in sorted(set(self.calls["oxloop"]) | set(self.calls["asyncio"])):
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes[label].items()))
            n_a, n_o = self.calls["asyncio"][label], self.calls["oxloop"][label]
            w(f"  {label:40} {n_a:6} {n_o:6}  {kinds}\n")
        w("\ncoverage (methods called at least once, not skipped):\n")
        for cat, methods in TARGETS.items():
            done = [m for m in methods if self.calls["oxloop"][f"{cat}.{m}"]]
            missing = sorted(set(methods) - set(done))
            w(f"  {cat}: {len(done)}/{len(methods)}")
            w(f"; not exercised: {', '.join(missing)}\n" if missing else "\n")
        statuses = collections.Counter(f.status.split(":")[0] for f in self.findings.values())
        w(f"\ndifferences: {len(self.findings)} kinds ({dict(statuses)})\n")
        order = {"new": 0, "flaky": 1, "pending": 2, "allowed": 3}
        for f in sorted(self.findings.values(), key=lambda f: order[f.status.split(":")[0]]):
            w(f"\n[{f.status}] seen {f.count}x\n")
            if f.step is not None:
                w(f"  step {f.step}: {render_step(f.program[f.step])}\n")
                w(f"  asyncio: {f.asyncio}\n  oxloop:  {f.oxloop}\n")
            else:
                w(f"  events only on asyncio: {f.asyncio}\n  events only on oxloop: {f.oxloop}\n")
            w("  program:\n")
            for s in f.program:
                w(f"    {render_step(s)}\n")
            w(
                f"  reproducer: python -m fuzz --replay {getattr(f, 'file', 'FILE')}"
                "  # FILE holds:\n"
            )
            w(f"    {f.program!r}\n")
        w(f"\ncrashes and hangs: {len(self.crashes)}\n")
        for kind, prog, i, out in self.crashes[:20]:
            where = render_step(prog[i]) if i < len(prog) else "after the last step (the final run)"
            w(f"  {kind}: {out[:2]} at step {i}: {where}\n")
            if len(out) > 2:
                w("    " + str(out[2])[-800:].replace("\n", "\n    ") + "\n")
            w(f"  reproducer (a file holding this line, for --replay): {prog[: i + 1]!r}\n")

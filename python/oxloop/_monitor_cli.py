"""``python -m oxloop dump PID`` and ``python -m oxloop top PID``: clients of the monitor socket.

    python -m oxloop dump PID [--json] [--timeout S]
    python -m oxloop top PID [--interval S]

``dump`` prints the task tree of each monitored loop of process PID (the text of
``oxloop.dump_tasks``), or, for a stalled loop, says so and prints where its thread is stuck.
``top`` shows each loop's utilization, busy-time percentiles, callbacks/s, iterations/s and
task count, refreshed every interval (1 s) until Ctrl-C, which exits with status 0.

Invariants: exit status 0 on success, 1 when the process cannot be reached or a loop is
stalled (dump), 2 on a usage error; no traceback for expected failures or Ctrl-C. When the
reader of the output goes away (``top PID | head``), the command ends quietly as a Unix tool
does there: killed by SIGPIPE (the shell's status 141).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, NoReturn

from ._tasks import format_task_tree
from .monitor import Client, MonitorError

USAGE = """\
usage: python -m oxloop dump PID [--json] [--timeout SECONDS]
       python -m oxloop top PID [--interval SECONDS]
"""


def _usage_error(message: str) -> int:
    sys.stderr.write(f"python -m oxloop: {message}\n{USAGE}")
    return 2


def _options(args: list[str], allowed: dict[str, type]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        name = args[i]
        kind = allowed.get(name)
        if kind is None:
            return None
        if kind is bool:
            out[name] = True
            i += 1
            continue
        if i + 1 >= len(args):
            return None
        try:
            value = kind(args[i + 1])
        except ValueError:
            return None
        if value <= 0:
            return None
        out[name] = value
        i += 2
    return out


def _loop_title(entry: dict[str, Any], index: int) -> str:
    thread = f" in thread {entry['thread']!r}" if entry.get("thread") else ""
    return f"loop {index} ({entry['loop']}{thread})"


def dump(pid: int, args: list[str]) -> int:
    opts = _options(args, {"--json": bool, "--timeout": float})
    if opts is None:
        return _usage_error("bad arguments for dump")
    with Client(pid) as client:
        reply = client.request("dump", timeout=opts.get("--timeout", 2.0))
    if opts.get("--json"):
        print(json.dumps(reply, indent=1))
        return 0 if all("tree" in e for e in reply["loops"]) else 1
    status = 0
    loops = reply["loops"]
    if not loops:
        print(f"process {pid}: no monitored loop is open")
    for index, entry in enumerate(loops):
        if len(loops) > 1:
            print(f"== {_loop_title(entry, index)}")
        if "tree" in entry:
            sys.stdout.write(format_task_tree(entry["tree"]))
            continue
        status = 1
        if entry.get("error") == "stalled":
            print(f"process {pid}: {_loop_title(entry, index)} is stalled: {entry['message']}")
            print("its thread is at (most recent call last):")
            for fr in entry.get("stack", []):
                print(f"  {fr['file']}:{fr['line']} in {fr['function']}")
        else:
            print(f"process {pid}: {_loop_title(entry, index)}: {entry.get('error')}")
    return status


def _fmt_ns(ns: int) -> str:
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def _snapshot(d: dict[str, Any]) -> Any:
    from ._metrics import LoopMetrics

    names = {f.name for f in dataclasses.fields(LoopMetrics)}
    values = {k: v for k, v in d.items() if k in names}
    values["busy_histogram"] = tuple(values["busy_histogram"])
    return LoopMetrics(**values)


_HEADER = (
    f"{'loop':<5}{'thread':<14}{'util':>7}{'busy p50':>11}{'p90':>11}{'p99':>11}"
    f"{'callbacks/s':>13}{'iter/s':>10}{'tasks':>7}{'slow':>6}{'max stall':>11}"
)


def _row(index: int, entry: dict[str, Any], prev: Any) -> str:
    if "metrics" not in entry:
        return f"{index:<5}{str(entry.get('thread')):<14}  {entry.get('error')}"
    snap = _snapshot(entry["metrics"])
    if prev is None:
        # First sample: everything since the loop started; its running time is busy + idle.
        interval = snap
        seconds = (snap.busy_ns + snap.idle_ns) / 1e9
    else:
        interval = snap - prev
        seconds = interval.timestamp_ns / 1e9
    rate = (lambda n: f"{n / seconds:,.0f}") if seconds > 0 else (lambda n: "-")
    tasks = entry.get("tasks")
    thread = str(entry.get("thread"))[:13]
    return (
        f"{index:<5}{thread:<14}{interval.utilization * 100:>6.1f}%"
        f"{_fmt_ns(interval.busy_percentile(0.5)):>11}{_fmt_ns(interval.busy_percentile(0.9)):>11}"
        f"{_fmt_ns(interval.busy_percentile(0.99)):>11}{rate(interval.callbacks):>13}"
        f"{rate(interval.iterations):>10}{'-' if tasks is None else tasks:>7}"
        f"{interval.slow_iterations:>6}{_fmt_ns(interval.longest_stall_ns):>11}"
    )


def top(pid: int, args: list[str]) -> int:
    opts = _options(args, {"--interval": float})
    if opts is None:
        return _usage_error("bad arguments for top")
    every = opts.get("--interval", 1.0)
    tty = sys.stdout.isatty()
    previous: dict[int, Any] = {}
    try:
        with Client(pid) as client:
            if not tty:
                print(f"oxloop top: process {pid}, every {every:g} s")
                print(_HEADER, flush=True)
            while True:
                reply = client.request("metrics")
                rows = []
                current: dict[int, Any] = {}
                for index, entry in enumerate(reply["loops"]):
                    rows.append(_row(index, entry, previous.get(entry["loop_id"])))
                    if "metrics" in entry:
                        current[entry["loop_id"]] = _snapshot(entry["metrics"])
                previous = current
                if tty:
                    # Redraw in place: cursor home, clear screen (ECMA-48 CUP and ED).
                    sys.stdout.write("\x1b[H\x1b[2J")
                    print(f"oxloop top: process {pid}, every {every:g} s (Ctrl-C to quit)")
                    print(_HEADER)
                if not rows:
                    rows = ["(no monitored loop is open)"]
                print("\n".join(rows), flush=True)
                time.sleep(every)
    except KeyboardInterrupt:
        if tty:
            print()
        return 0


def main(command: str, pid: int, args: list[str]) -> int:
    """Run ``dump`` or ``top`` against process ``pid``; returns the exit status."""
    try:
        status = dump(pid, args) if command == "dump" else top(pid, args)
        # Inside the try: a reader that is gone is found here, not by the interpreter's own
        # flush at exit (which prints "Exception ignored ... BrokenPipeError", status 120).
        sys.stdout.flush()
        return status
    except MonitorError as exc:
        sys.stderr.write(f"python -m oxloop {command}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The monitor socket's errors are MonitorErrors (monitor.Client): this is stdout.
        _reader_gone()


def _reader_gone() -> NoReturn:
    """End as a Unix tool whose reader has gone away ends: killed by SIGPIPE, no message.

    Python ignores SIGPIPE and raises BrokenPipeError instead; what is still buffered for
    stdout goes to /dev/null so that the flush at exit does not fail again (the Python docs'
    "Note on SIGPIPE", library/signal.html). SIGPIPE's default action is restored only now,
    on the way out: left in place it would kill the process on any closed socket.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # not reached: the status a shell shows for SIGPIPE

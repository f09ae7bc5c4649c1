#!/usr/bin/env python3
"""Run CPython's own test.test_asyncio against oxloop and compare the outcome to expectations.

Role: the conformance gate. For each selected module of the running interpreter's
``test.test_asyncio`` it starts ``_child.py`` in a subprocess, which routes every event loop the
tests build to oxloop (see ``hook.py``) and reports each test as it starts and ends. This process
times each test, kills and restarts a module whose test hangs (skipping what already ran), then
prints a summary per module and judges every outcome against ``expectations.txt``.

Usage: ``$py conformance/run.py [MODULE ...] [--all] [--loop asyncio] [-k SUBSTR] [-j N]
[--timeout S] [--json FILE] [-v]``, with ``$py`` the venv python of any of 3.10-3.15
(``scripts/env.sh build 3.X`` prints it); see conformance/README.md.

Invariants:
- Exit status 0 only when the run matches the expectations: every failed, errored or hung test
  is listed, no listed test passed, and every module that ran tests created at least one loop
  through the hook (otherwise the run proved nothing about oxloop).
- ``--loop asyncio`` runs the same machinery with stock asyncio's loop and ignores the
  expectations file: every test must pass or be skipped there, which validates the runner.
- Test output never reaches this process's stdout; it goes to conformance/results/<tag>/, with
  every non-passing test's traceback.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

from expectations import Expectations, ExpectationsError

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "test.test_asyncio"  # --package replaces it, to test the runner itself

# Started first so that the longest modules do not end up alone on one worker at the end.
_SLOW_FIRST = ["test_events", "test_tasks", "test_subprocess", "test_streams", "test_ssl"]

FAILING = ("failed", "errored", "hung")
OUTCOMES = ("passed", "failed", "errored", "hung", "skipped")
_SEVERITY = ("passed", "skipped", "failed", "errored", "hung")


@dataclasses.dataclass
class TestRecord:
    id: str
    outcome: str
    detail: str = ""
    duration: float = 0.0
    loops: int = 0
    expected_reason: str | None = None  # set when an expectations entry matches
    verdict: str = "ok"  # ok / expected-failure / unexpected-failure / unexpected-pass


@dataclasses.dataclass
class ModuleResult:
    name: str
    tests: dict = dataclasses.field(default_factory=dict)  # id -> TestRecord, in run order
    loops: int = 0
    seconds: float = 0.0
    restarts: int = 0
    no_loop_reason: str | None = None  # the module is listed as creating no loop

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests.values() if t.outcome == outcome)

    @property
    def executed(self) -> int:
        return len(self.tests) - self.count("skipped")


def discover_modules() -> list[str]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{PACKAGE} is not installed with this interpreter ({sys.executable})")
    names = set()
    for location in spec.submodule_search_locations:
        for fn in os.listdir(location):
            if fn.startswith("test_") and fn.endswith(".py"):
                names.add(fn[:-3])
    return sorted(names)


class ModuleRunner:
    """Runs one module to completion in as many child processes as hangs and crashes need."""

    def __init__(self, name: str, args, results_dir: str, say) -> None:
        self.name = name
        self.qualname = f"{PACKAGE}.{name}"
        self.args = args
        self.log_path = os.path.join(results_dir, f"{name}.log")
        self.say = say
        self.result = ModuleResult(name)
        self.collected: list[str] | None = None

    def run(self) -> ModuleResult:
        t0 = time.monotonic()
        with open(self.log_path, "w"):
            pass  # truncate: one log per module per run
        while True:
            progress_before = len(self.result.tests)
            finished, stuck_where = self._run_child()
            if finished:
                break
            if stuck_where is None:
                # A test hung or crashed; it is recorded, so the restart skips it.
                self.result.restarts += 1
                continue
            # Stuck outside any test (import, setUpClass, tearDownModule...): restart while that
            # makes progress (each restart then records a new test, so this ends), else give
            # the rest up as not run.
            if len(self.result.tests) == progress_before or not self._remaining():
                for test_id in self._remaining():
                    self._record(
                        TestRecord(test_id, "errored", f"not run: module stuck ({stuck_where})")
                    )
                break
            self.result.restarts += 1
        self.result.seconds = time.monotonic() - t0
        return self.result

    def _remaining(self) -> list[str]:
        # Tests not reported yet, except those unittest will not run because the setUpClass or
        # setUpModule before them failed (that error is reported under the fixture's id).
        done = self.result.tests
        return [
            t
            for t in self.collected or ()
            if t not in done
            and f"{t.rpartition('.')[0]}.setUpClass" not in done
            and f"{self.qualname}.setUpModule" not in done
        ]

    def _record(self, rec: TestRecord) -> None:
        # A fixture error (e.g. tearDownClass) can arrive for an id already seen: keep the
        # worse outcome and both details.
        old = self.result.tests.get(rec.id)
        if old is not None:
            if _SEVERITY.index(rec.outcome) > _SEVERITY.index(old.outcome):
                old.outcome = rec.outcome
            old.detail = "\n".join(filter(None, [old.detail, rec.detail]))
            return
        self.result.tests[rec.id] = rec

    def _spawn(self, skip_file: str, report_w: int, log, cwd: str) -> subprocess.Popen:
        cmd = [
            sys.executable,
            os.path.join(HERE, "_child.py"),
            "--module",
            self.qualname,
            "--loop",
            self.args.loop,
            "--report-fd",
            str(report_w),
            "--timeout",
            str(self.args.timeout),
            "--skip-file",
            skip_file,
        ]
        for k in self.args.k:
            cmd += ["-k", k]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if env.get("PYTHONPATH"):
            # The child runs elsewhere (see _run_child): keep relative entries pointing here.
            env["PYTHONPATH"] = os.pathsep.join(
                os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep)
            )
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(report_w,),
            env=env,
            # A fresh working directory, as regrtest gives each test run: files a test writes
            # there (test_sendfile's data file, say) go away even when the child is killed.
            cwd=cwd,
            # Its own process group: a hung module is killed with everything it spawned.
            start_new_session=True,
        )

    def _run_child(self) -> tuple[bool, str | None]:
        """Run one child; returns (finished, where it got stuck outside a test, if it did)."""
        with tempfile.NamedTemporaryFile("w", suffix=".skip", delete=False) as f:
            f.write("\n".join(self.result.tests))
            skip_file = f.name
        report_r, report_w = os.pipe()
        try:
            with tempfile.TemporaryDirectory(
                prefix="conformance-", ignore_cleanup_errors=True
            ) as cwd:
                with open(self.log_path, "a") as log:
                    proc = self._spawn(skip_file, report_w, log, cwd)
                os.close(report_w)
                return self._follow(proc, report_r)
        finally:
            os.close(report_r)
            os.unlink(skip_file)

    def _follow(self, proc: subprocess.Popen, report_r: int) -> tuple[bool, str | None]:
        timeout = self.args.timeout
        deadline = time.monotonic() + timeout
        current = None  # test id between its start and end messages
        last_id = None
        total = 0  # loops created in this child so far
        done = False
        buf = b""
        exited = False
        while True:
            # Wake at least twice a second to notice a child that exited while forked
            # grandchildren still hold the report pipe open.
            wait = min(0.5, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select([report_r], [], [], wait)
            chunk = os.read(report_r, 1 << 16) if ready else b""
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                total = msg.get("total", total)
                ev = msg["ev"]
                if ev == "collected":
                    if self.collected is None:
                        self.collected = msg["ids"]
                elif ev == "start":
                    current = msg["id"]
                elif ev == "end":
                    self._record(
                        TestRecord(
                            msg["id"],
                            msg["outcome"],
                            msg.get("detail", ""),
                            msg.get("duration", 0.0),
                            msg.get("loops", 0),
                        )
                    )
                    if msg["id"] == current:
                        current = None
                    last_id = msg["id"]
                elif ev == "done":
                    done = True
                deadline = time.monotonic() + timeout
            if done or (ready and not chunk):
                break  # finished, or EOF: every holder of the pipe is gone
            if exited:
                break  # already drained what the exited child left in the pipe
            if proc.poll() is not None:
                exited = True
                continue
            if time.monotonic() >= deadline:
                self._kill(proc)
                self.result.loops += total
                where = current or f"after {last_id or 'import'}"
                if current is not None:
                    detail = f"hung: no result within {timeout:g}s; killed\n" + self._log_tail(
                        current
                    )
                    self._record(TestRecord(current, "hung", detail, timeout))
                    self.say(f"  HUNG {current} (>{timeout:g}s), restarting {self.name}")
                    return False, None
                self._record_stuck(f"hung outside a test, {where}", "hung")
                return False, where
        if done:
            # The module ran to its end; give interpreter shutdown a bounded time.
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                self.say(f"  note: {self.name} child did not exit after finishing; killed")
            self.result.loops += total
            return True, None
        rc = proc.wait() if proc.poll() is None else proc.returncode
        self.result.loops += total
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        if current is not None:
            detail = f"crashed: child process died ({how}) during this test\n" + self._log_tail(
                current
            )
            self._record(TestRecord(current, "errored", detail))
            self.say(f"  CRASH {current} ({how}), restarting {self.name}")
            return False, None
        where = f"after {last_id or 'import'}"
        self._record_stuck(f"child process died ({how}) outside a test, {where}", "errored")
        return False, where

    def _record_stuck(self, what: str, outcome: str) -> None:
        test_id = f"{self.qualname}.<module>"
        self.say(f"  {outcome.upper()} {self.name}: {what}")
        self._record(TestRecord(test_id, outcome, f"{what}\n{self._log_tail(None)}"))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def _log_tail(self, test_id: str | None, limit: int = 8000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        # From the start of the test, or else of the current child process.
        mark = text.rfind(f"=== START {test_id}" if test_id else "=== hook:")
        if mark >= 0:
            text = text[mark:]
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return "log:\n" + text


def judge(results: list[ModuleResult], expectations: Expectations, loop: str) -> None:
    for mod in results:
        # A module id in the expectations acknowledges a module that builds no event loop of
        # its own (e.g. it only uses test_utils.TestLoop): a fact about the test module, so it
        # holds on stock asyncio too.
        entry = expectations.lookup(f"{PACKAGE}.{mod.name}")
        mod.no_loop_reason = entry.reason if entry else None
        for rec in mod.tests.values():
            # Test entries describe oxloop; on stock asyncio everything must pass.
            entry = expectations.lookup(rec.id) if loop == "oxloop" else None
            rec.expected_reason = entry.reason if entry else None
            if rec.outcome == "skipped":
                rec.verdict = "ok"
            elif rec.outcome in FAILING:
                rec.verdict = "expected-failure" if entry else "unexpected-failure"
            else:
                rec.verdict = "unexpected-pass" if entry else "ok"


_COLUMNS = ("run", "passed", "failed", "errored", "hung", "skipped", "expect", "UNEXP", "loops")


def summarize(results: list[ModuleResult], args) -> bool:
    """Print the per-module table and the problems; returns True when the run is clean."""
    width = max([len(r.name) for r in results] + [6])
    header = f"{'module':<{width}} " + " ".join(f"{c:>7}" for c in _COLUMNS) + "    time"
    print()
    print(header)
    print("-" * len(header))
    totals = dict.fromkeys(_COLUMNS, 0)
    flagged, stale = [], []
    for mod in results:
        row = {
            "run": len(mod.tests),
            **{o: mod.count(o) for o in OUTCOMES if o != "passed"},
            "passed": mod.count("passed"),
            "expect": sum(t.verdict == "expected-failure" for t in mod.tests.values()),
            "UNEXP": sum(t.verdict.startswith("unexpected") for t in mod.tests.values()),
            "loops": mod.loops,
        }
        for c in _COLUMNS:
            totals[c] += row[c]
        note = ""
        if mod.executed and mod.loops == 0:
            if mod.no_loop_reason:
                note = "  (no loop: listed)"
            else:
                flagged.append(mod.name)
                note = f"  <- FLAGGED: no {args.loop} loop created"
        elif mod.loops and mod.no_loop_reason:
            stale.append(mod.name)
            note = "  <- listed as creating no loop, but did"
        if mod.restarts:
            note += f"  ({mod.restarts} restart{'s' * (mod.restarts > 1)})"
        cells = " ".join(f"{row[c]:>7}" for c in _COLUMNS)
        print(f"{mod.name:<{width}} {cells} {mod.seconds:6.0f}s{note}")
    print("-" * len(header))
    print(f"{'TOTAL':<{width}} " + " ".join(f"{totals[c]:>7}" for c in _COLUMNS))

    bad = [rec for mod in results for rec in mod.tests.values() if rec.verdict.startswith("unexp")]
    if bad:
        print(f"\n{len(bad)} unexpected outcome(s):")
        for rec in bad:
            if rec.verdict == "unexpected-pass":
                print(f"  UNEXPECTED PASS  {rec.id}  (listed: {rec.expected_reason})")
            else:
                first = _last_line(rec.detail)
                print(f"  {rec.outcome.upper():<8} {rec.id}\n             {first}")
                if args.verbose:
                    print("    " + rec.detail.replace("\n", "\n    "))
    if flagged:
        print(
            f"\nFLAGGED: no {args.loop} loop was created in {', '.join(flagged)}: the hook did "
            "not reach them (or list the module in the expectations with the reason it builds "
            "no loop)"
        )
    if stale:
        print(f"\nSTALE: listed as creating no loop, but created some: {', '.join(stale)}")
    # A -k filter may select only tests that build no loop: flags are informative then.
    clean = not bad and not stale and (not flagged or bool(args.k))
    print(f"\nresult: {'OK' if clean else 'FAILED'} ({args.loop}, Python {_pyver()})")
    return clean


def _report_unused(expectations: Expectations, results: list[ModuleResult], args) -> None:
    # Entries for modules that ran but matching nothing: tests renamed or gone in this version.
    # Informative only, since -k or a module list legitimately leaves entries unused.
    if args.k or args.loop != "oxloop":
        return
    ran = tuple(f"{PACKAGE}.{m.name}" for m in results)
    unused = [
        e
        for e in expectations.entries
        if e not in expectations.used and (e.pattern in ran or e.pattern.startswith(ran))
    ]
    if unused:
        print(f"\nnote: {len(unused)} expectation(s) matched nothing in this run:")
        for e in unused:
            print(f"  line {e.lineno}: {e.pattern}")


def _last_line(detail: str) -> str:
    # The exception line of a traceback is its last non-empty line (before any captured log).
    text = detail.split("\nlog:\n", 1)[0]
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:160]


def _pyver() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def write_reports(results: list[ModuleResult], results_dir: str) -> None:
    for mod in results:
        path = os.path.join(results_dir, f"{mod.name}.txt")
        with open(path, "w") as f:
            for rec in mod.tests.values():
                if rec.outcome in FAILING or rec.verdict != "ok":
                    f.write(f"==== {rec.outcome.upper()} [{rec.verdict}] {rec.id}\n")
                    if rec.expected_reason:
                        f.write(f"expected: {rec.expected_reason}\n")
                    f.write(rec.detail.rstrip() + "\n\n")


def write_json(results: list[ModuleResult], path: str, args) -> None:
    doc = {
        "python": _pyver(),
        "loop": args.loop,
        "timeout": args.timeout,
        "modules": {
            mod.name: {
                **{o: mod.count(o) for o in OUTCOMES},
                "run": len(mod.tests),
                "loops": mod.loops,
                "seconds": round(mod.seconds, 1),
                "restarts": mod.restarts,
            }
            for mod in results
        },
        "tests": {
            rec.id: {
                "outcome": rec.outcome,
                "verdict": rec.verdict,
                "expected_reason": rec.expected_reason,
                "duration": rec.duration,
                "loops": rec.loops,
                "detail": rec.detail,
            }
            for mod in results
            for rec in mod.tests.values()
        },
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Run CPython's test.test_asyncio against oxloop (see conformance/README.md)."
    )
    ap.add_argument("modules", nargs="*", help="test modules, e.g. test_tasks (default: all)")
    ap.add_argument(
        "--all", action="store_true", help="every module of test.test_asyncio (the default)"
    )
    ap.add_argument(
        "--loop",
        choices=("oxloop", "asyncio"),
        default="oxloop",
        help="loop under test; 'asyncio' validates the runner on the stock loop",
    )
    ap.add_argument("-k", action="append", default=[], help="only test ids containing SUBSTR")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="modules run in parallel")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per test before 'hung'")
    ap.add_argument("--json", metavar="FILE", help="write per-test outcomes as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="print unexpected tracebacks")
    ap.add_argument(
        "--expectations",
        default=os.path.join(HERE, "expectations.txt"),
        help="expectations file (with --loop asyncio only its module entries are used)",
    )
    ap.add_argument("--package", default=PACKAGE, help=argparse.SUPPRESS)  # runner self-tests
    ap.add_argument("--results-dir", help="logs and tracebacks (default conformance/results/TAG)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    global PACKAGE
    PACKAGE = args.package
    available = discover_modules()
    if args.all or not args.modules:
        wanted = available
    else:
        # Accept "tasks", "test_tasks" and "test.test_asyncio.test_tasks".
        wanted = [m.rpartition(".")[2] for m in args.modules]
        wanted = [m if m.startswith("test_") else f"test_{m}" for m in wanted]
        unknown = [m for m in wanted if m not in available]
        if unknown:
            sys.exit(f"no such module in {PACKAGE} of Python {_pyver()}: {', '.join(unknown)}")
    if not wanted:
        sys.exit(f"no test module selected (modules of {PACKAGE}: {', '.join(available)})")

    try:
        expectations = Expectations.load(args.expectations)
    except (OSError, ExpectationsError) as exc:
        sys.exit(f"error: {exc}")

    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}-{args.loop}"
    if PACKAGE != "test.test_asyncio":
        tag += f"-{PACKAGE}"  # keep a self-test's logs apart from the real ones
    results_dir = args.results_dir or os.path.join(HERE, "results", tag)
    os.makedirs(results_dir, exist_ok=True)

    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)

    slow = {m: i for i, m in enumerate(_SLOW_FIRST)}
    order = sorted(wanted, key=lambda m: slow.get(m, len(slow)))  # stable: the rest keep order
    say(
        f"Python {_pyver()} ({sys.executable}), loop={args.loop}, {len(order)} module(s), "
        f"-j {args.jobs}, timeout {args.timeout:g}s; logs in {os.path.relpath(results_dir)}"
    )
    t0 = time.monotonic()
    results = {}

    def run_one(name: str) -> ModuleResult:
        res = ModuleRunner(name, args, results_dir, say).run()
        say(
            f"  {name}: {len(res.tests)} run, {res.count('passed')} passed, "
            f"{sum(res.count(o) for o in FAILING)} not passing, {res.loops} loops "
            f"({res.seconds:.0f}s)"
        )
        return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, res in zip(order, pool.map(run_one, order), strict=True):
            results[name] = res
    # Report in the order the modules were asked for, not the order they finished in.
    ordered = [results[m] for m in wanted]
    judge(ordered, expectations, args.loop)
    write_reports(ordered, results_dir)
    if args.json:
        write_json(ordered, args.json, args)
    clean = summarize(ordered, args)
    _report_unused(expectations, ordered, args)
    print(f"wall time {time.monotonic() - t0:.0f}s")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

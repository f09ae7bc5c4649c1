"""Child process of the conformance runner: runs one test.test_asyncio module, reporting each test.

Role: ``run.py`` starts one of these per test module (and restarts it after a hang or a crash,
passing the ids already reported in ``--skip-file``). It installs the loop hook, imports the
module, adapts its loop seams, and runs the tests with unittest, reporting on ``--report-fd``.

Protocol (one JSON object per line on the report fd, written by this process only):
- ``{"ev": "start", "id": ID}`` before a test runs; the parent times the test from here;
- ``{"ev": "end", "id": ID, "outcome": O, "detail": TEXT, "duration": S, "loops": N}`` after
  it, O in passed/failed/errored/skipped; also sent without a "start" for errors unittest
  reports outside a test (setUpModule, setUpClass, tearDownClass, tearDownModule);
- ``{"ev": "collected", "ids": [...]}`` once, after the module is imported and filtered;
- ``{"ev": "done"}`` when the module finished; a child that exits without it crashed;
- every message also carries ``"total"``: loops created through the hook in this process so far.

Invariants: test output (stdout/stderr) never goes to the report fd, only to the log the parent
gave as stdout/stderr; "loops" counts loops created through the hook, so the parent can prove
the hook reached the module.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import sys
import time
import unittest

import hook


class _Reporter:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, **msg) -> None:
        # Every message carries the running total, so the parent keeps an exact count even when
        # it has to kill this process.
        msg["total"] = hook.loops_created
        data = (json.dumps(msg) + "\n").encode()
        # A blocking pipe may still accept a large write in pieces.
        while data:
            data = data[os.write(self._fd, data) :]


def _holder_id(test) -> str:
    # unittest reports fixture errors with an _ErrorHolder described as
    # "setUpClass (pkg.module.Class)"; turn it into "pkg.module.Class.setUpClass" so that
    # expectations can name it like a test.
    desc = test.id()
    if desc.endswith(")") and " (" in desc:
        what, _, where = desc[:-1].partition(" (")
        return f"{where}.{what}"
    return desc


class StreamingResult(unittest.TestResult):
    """Reports every test as it starts and ends; the worst outcome of a test wins."""

    _RANK = {"passed": 0, "skipped": 1, "failed": 2, "errored": 3}

    def __init__(self, reporter: _Reporter, timeout: float) -> None:
        super().__init__()
        self._reporter = reporter
        self._timeout = timeout
        self._current = None

    def startTest(self, test) -> None:
        super().startTest(test)
        self._current = {"outcome": "passed", "details": [], "t0": time.monotonic()}
        self._loops0 = hook.loops_created
        print(f"=== START {test.id()}", file=sys.stderr, flush=True)
        self._reporter.send(ev="start", id=test.id())
        self.arm_stack_dump()

    def arm_stack_dump(self) -> None:
        # Dump every thread's stack into the log shortly before the parent gives up waiting
        # (on a test, or on a fixture between tests), so a "hung" report says where it hung.
        # Re-arming replaces the previous timer.
        faulthandler.dump_traceback_later(max(self._timeout * 0.9, self._timeout - 3), exit=False)

    def stopTest(self, test) -> None:
        self.arm_stack_dump()
        super().stopTest(test)
        cur, self._current = self._current, None
        if cur is None:
            # 3.12.0-3.12.1 call stopTest without startTest for a test of a skipped class
            # (unittest/case.py TestCase.run); addSkip has already reported it.
            return
        self._reporter.send(
            ev="end",
            id=test.id(),
            outcome=cur["outcome"],
            detail="\n".join(cur["details"]),
            duration=round(time.monotonic() - cur["t0"], 3),
            loops=hook.loops_created - self._loops0,
        )
        print(f"=== END {test.id()}: {cur['outcome']}", file=sys.stderr, flush=True)

    def _note(self, test, outcome: str, detail: str) -> None:
        if self._current is None or not isinstance(test, unittest.TestCase):
            # Outside a test: a fixture (setUpModule, setUpClass...) failed.
            self._reporter.send(
                ev="end", id=_holder_id(test), outcome=outcome, detail=detail, loops=0
            )
            return
        if self._RANK[outcome] > self._RANK[self._current["outcome"]]:
            self._current["outcome"] = outcome
        if detail:
            self._current["details"].append(detail)

    def addError(self, test, err) -> None:
        super().addError(test, err)
        self._note(test, "errored", self._exc_info_to_string(err, test))

    def addFailure(self, test, err) -> None:
        super().addFailure(test, err)
        self._note(test, "failed", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason) -> None:
        super().addSkip(test, reason)
        self._note(test, "skipped", reason)

    def addSubTest(self, test, subtest, err) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._note(
                test,
                "failed" if failed else "errored",
                f"{subtest.id()}\n{self._exc_info_to_string(err, test)}",
            )

    def addExpectedFailure(self, test, err) -> None:
        # CPython marked the test @expectedFailure and it failed as CPython expects.
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test) -> None:
        super().addUnexpectedSuccess(test)
        self._note(test, "failed", "unexpected success of a test CPython marks @expectedFailure")


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--loop", required=True, choices=("oxloop", "asyncio"))
    ap.add_argument("--report-fd", type=int, required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--skip-file")
    ap.add_argument("-k", dest="filters", action="append", default=[])
    args = ap.parse_args()

    reporter = _Reporter(args.report_fd)
    # A runner started in the background by a non-interactive shell inherits SIGINT ignored,
    # and then Python installs no KeyboardInterrupt handler: asyncio.Runner skips its own, and
    # the interrupt tests of test_runners (which use _thread.interrupt_main) wait forever, on
    # every loop. The tests assume an interactive process's default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.enable()  # a crash of the loop under test leaves its stack in the log
    hook.install(args.loop)
    print(f"=== hook: {hook.describe()}", file=sys.stderr, flush=True)

    try:
        module = importlib.import_module(args.module)
    except unittest.SkipTest as exc:
        reporter.send(ev="collected", ids=[args.module])
        reporter.send(ev="end", id=args.module, outcome="skipped", detail=str(exc), loops=0)
        reporter.send(ev="done")
        return 0
    for change in hook.adapt_module(module):
        print(f"=== adapt: {change}", file=sys.stderr, flush=True)

    skip = set()
    if args.skip_file:
        with open(args.skip_file) as f:
            skip = {line.strip() for line in f if line.strip()}

    def wanted(test) -> bool:
        # After a restart, also leave out the tests of a class or module whose setUpClass or
        # setUpModule failed before: unittest does not run them, and their fixture error is
        # already reported.
        cls = f"{type(test).__module__}.{type(test).__qualname__}"
        if {test.id(), f"{cls}.setUpClass", f"{type(test).__module__}.setUpModule"} & skip:
            return False
        return all(k in test.id() for k in args.filters)

    tests = [
        t for t in _flatten(unittest.defaultTestLoader.loadTestsFromModule(module)) if wanted(t)
    ]
    reporter.send(ev="collected", ids=[t.id() for t in tests])

    # One flat TestSuite still runs setUpModule/setUpClass and their teardowns at the right
    # places: unittest tracks fixtures by the class and module of consecutive tests.
    result = StreamingResult(reporter, args.timeout)
    result.arm_stack_dump()  # covers setUpModule/setUpClass before the first test starts
    unittest.TestSuite(tests).run(result)
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
    sys.stderr.flush()
    reporter.send(ev="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

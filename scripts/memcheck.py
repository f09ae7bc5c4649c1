#!/usr/bin/env python3
"""Memory checks of the native code: tests under valgrind memcheck, and a verdict on its report.

`make memcheck` runs a chosen set of tests (timers, fd watching, TCP/Unix transports, sock_*,
streams, subprocess, pipes, UDP, cross-thread calls, tasks, servers, TLS, signals, GC) on oxloop
under valgrind memcheck, with `PYTHONMALLOC=malloc` so every Python object is a malloc block
valgrind can see; `make memcheck-ci` runs a subset that fits CI's budget. The extension is the
memcheck cargo profile's build (release code with line tables), from `scripts/env.sh memcheck`,
shadowing the release build through PYTHONPATH so the build the tests and benchmarks use is left
alone. Python 3.13 by default (--python): 3.11's own errors would drown oxloop's (memcheck.supp).

The verdict (exit 1 when any): every error valgrind reports anywhere in the process (invalid read
or write, use of an uninitialised value, bad free, bad syscall argument, ...), and every definite
leak whose allocation stack passes through `_oxloop`. CPython's own noise is suppressed by
scripts/memcheck.supp, each entry saying why. Test failures are reported but do not fail the run:
under valgrind a test runs some 30 times slower and a few timing assertions can miss; a crash or a
pytest that could not run does fail it.

    scripts/memcheck.py                # the full set
    scripts/memcheck.py --ci           # the CI subset
    scripts/memcheck.py --report DIR   # only read valgrind's XML files in DIR again
    scripts/memcheck.py -- tests/test_tcp.py -k eof   # any pytest selection
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPP = os.path.join(ROOT, "scripts", "memcheck.supp")
EXT = "_oxloop"

# Tests that fail under valgrind on both loops, for valgrind's sake: valgrind 3.19 does not know
# pidfd_open (syscall 434 answers ENOSYS: the tests of the pidfd watcher fail, and the watcher
# thread used instead races a test's own waitpid, as the test says), and a child's failed exec
# does not reach the parent as OSError under it.
VALGRIND_ONLY_FAILURES = [
    "test_missing_program",
    "test_permission_denied",
    "test_exit_watched_by_a_pidfd_in_the_poller",
    "test_loop_collected_without_close",
    "test_waitpid_error_releases_the_pidfd",
    "test_someone_else_reaps_the_child",
]
# Tests whose timing assertions miss under valgrind's slowdown (some 30 times), left out so that
# a clean run ends with every test passed.
VALGRIND_TOO_SLOW = [
    "test_cancel_timers_while_running",
    "test_call_at_mixed_with_call_later",
]
DESELECT = "oxloop and not (" + " or ".join(VALGRIND_ONLY_FAILURES + VALGRIND_TOO_SLOW) + ")"
# The full set: the native fast paths (timers, fd watching, transports, sock_*, streams, subprocess
# and pipes, UDP, call_soon_threadsafe, create_task and futures, servers, TLS over the transports,
# signals, the native types' GC support) on oxloop only (-k: the [asyncio] twins run no native
# code).
FULL = [
    "tests/test_timers.py",
    "tests/test_callbacks.py",
    "tests/test_io.py",
    "tests/test_tcp.py",
    "tests/test_unix.py",
    "tests/test_sock.py",
    "tests/test_streams.py",
    "tests/test_transport_fastpath.py",
    "tests/test_subprocess.py",
    "tests/test_pipes.py",
    "tests/test_udp.py",
    "tests/test_threadsafe.py",
    "tests/test_tasks.py",
    "tests/test_server.py",
    "tests/test_tls.py",
    "tests/test_signals.py",
    "tests/test_exceptions.py",
    "tests/test_gc.py",
    "-k",
    DESELECT,
]
# The CI subset (about five minutes on 2 cores): one file per native area.
CI = [
    "tests/test_timers.py",
    "tests/test_io.py",
    "tests/test_tcp.py",
    "tests/test_unix.py",
    "tests/test_sock.py",
    "tests/test_streams.py",
    "tests/test_transport_fastpath.py",
    "-k",
    DESELECT,
]
# Subprocess tests are in the full set only: each child interpreter is a fork of the valgrinded
# process until exec, which is slow, and the children themselves are not traced (stock CPython).

# Error kinds valgrind reports as leaks; every other kind is an error wherever it happens.
LEAK_DEFINITE = "Leak_DefinitelyLost"


def build(version: str) -> tuple[str, str]:
    """The venv's python and the directory holding the memcheck build of oxloop."""
    out = subprocess.run(
        [os.path.join(ROOT, "scripts", "env.sh"), "memcheck", version],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()
    return out[-2], out[-1]


def run(python: str, site: str, out: str, pytest_args: list[str], origins: bool) -> int:
    for f in glob.glob(os.path.join(out, "vg.*.xml")):
        os.unlink(f)
    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONPATH=site)
    cmd = [
        "valgrind",
        "--tool=memcheck",
        "--xml=yes",
        f"--xml-file={out}/vg.%p.xml",
        f"--suppressions={SUPP}",
        "--leak-check=full",
        "--show-leak-kinds=definite",
        "--errors-for-leak-kinds=definite",
        "--num-callers=50",
        # A forked child that has not yet exec'd would write into the parent's XML and break it;
        # what it runs there is _posixsubprocess's C code, not oxloop's.
        "--child-silent-after-fork=yes",
        # The text to add to memcheck.supp, should an error turn out to be CPython's own.
        "--gen-suppressions=all",
        *(["--track-origins=yes"] if origins else []),
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        # A ceiling for a test that hangs (those without a timeout mark of their own).
        "-o",
        "timeout=600",
        *pytest_args,
    ]
    print("memcheck:", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def frames(err: ET.Element) -> list[tuple[str, str, str]]:
    """(function, object file, file:line) of the error's first stack."""
    st = err.find("stack")
    if st is None:
        return []
    res = []
    for fr in st.findall("frame"):
        fn = fr.findtext("fn") or fr.findtext("ip") or "?"
        obj = os.path.basename(fr.findtext("obj") or "")
        where = f"{fr.findtext('dir') or ''}/{fr.findtext('file')}" if fr.findtext("file") else ""
        where = f"{where}:{fr.findtext('line')}" if where else ""
        res.append((fn, obj, where))
    return res


def telling(fr: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The frames worth reading: the first (where it happened), then none of valgrind's malloc,
    Rust's allocator and panic plumbing (library/alloc, core, std) or PyO3's trampolines."""
    keep = [
        f
        for i, f in enumerate(fr)
        if not f[1].startswith("vgpreload")
        and (i == 0 or not any(p in f[2] for p in ("/library/", "/impl_/trampoline.rs")))
    ]
    return keep or fr


def report(out: str, top: int = 12) -> int:
    """Prints the summary of the XML files in out; returns how many findings fail the run."""
    files = sorted(glob.glob(os.path.join(out, "vg.*.xml")))
    if not files:
        print(f"memcheck: no valgrind report in {out}")
        return 1
    groups: dict[tuple, list] = {}
    kinds: collections.Counter = collections.Counter()
    ignored_leaks = 0
    broken = []
    # pid -> parent pid, from each file's head (written first, so present even when truncated).
    parents = {}
    for path in files:
        with open(path, errors="replace") as f:
            head = f.read(4096)
        m = re.search(r"<pid>(\d+)</pid>\s*<ppid>(\d+)</ppid>", head)
        if m:
            parents[path] = (int(m[1]), int(m[2]))
    pids = {pid for pid, _ in parents.values()}
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            # valgrind writes the closing tags at exit. A forked child that exec'd (subprocess
            # tests; its report stays silent) leaves a truncated file, which is normal; the
            # test process itself (its parent is not in a report) must not, or it was killed or
            # valgrind failed.
            if parents.get(path, (0, 0))[1] not in pids:
                broken.append(path)
            continue
        main = parents.get(path, (0, 0))[1] not in pids
        states = [s.findtext("state") for s in root.findall("status")]
        if main and "FINISHED" not in states:
            # valgrind stopped before the program ran (a bad option or suppressions file).
            broken.append(path)
        # How many times each error happened (a leak record counts its blocks instead).
        counts = {
            p.findtext("unique"): int(p.findtext("count") or 1)
            for p in root.findall("errorcounts/pair")
        }
        for err in root.findall("error"):
            kind = err.findtext("kind") or "?"
            fr = frames(err)
            if kind == LEAK_DEFINITE and not any(EXT in obj for _, obj, _ in fr):
                ignored_leaks += 1
                continue
            if kind.startswith("Leak_") and kind != LEAK_DEFINITE:
                continue
            what = err.findtext("what") or err.findtext("xwhat/text") or ""
            n = int(err.findtext("xwhat/leakedblocks") or counts.get(err.findtext("unique"), 1))
            fr = telling(fr)
            key = (kind, tuple(f[0] for f in fr[:top]))
            g = groups.setdefault(key, [0, what, fr, path])
            g[0] += n
            kinds[kind] += n
    for path in broken:
        print(
            f"memcheck: FAIL: {path}: the test process's report is incomplete (killed, or "
            "valgrind failed: see its output above)"
        )
    if ignored_leaks:
        print(
            f"memcheck: {ignored_leaks} definite leak record(s) outside {EXT} not counted "
            "(CPython's, at exit)"
        )
    if not groups:
        print(
            f"memcheck: clean ({len(files)} report(s)): no memory error, no definite leak in {EXT}"
        )
        return len(broken)
    print(f"memcheck: FAIL: {sum(kinds.values())} finding(s):")
    for kind, n in kinds.most_common():
        print(f"  {n:6d}  {kind}")
    for (kind, _), (n, what, fr, path) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        times = "blocks" if kind.startswith("Leak_") else "times"
        print(f"\n== {kind}, {n} {times}: {what}  [{os.path.basename(path)}]")
        for fn, obj, where in fr[:top]:
            mark = "*" if EXT in obj else " "
            # A path from its source tree down: src/..., Objects/..., pyo3-x/src/...
            where = re.sub(r"^.*/(?=(src|Objects|Python|Modules|Include|library)/)", "", where)
            print(f"   {mark} {fn}  ({obj}{' ' + where if where else ''})")
    return len(groups) + len(broken)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--python", default="3.13", help="a native interpreter version (3.13)")
    ap.add_argument("--ci", action="store_true", help="the CI subset")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "memcheck", "out"))
    ap.add_argument("--report", metavar="DIR", help="only summarise the XML files in DIR")
    ap.add_argument(
        "--track-origins", action="store_true", help="where uninitialised values come from"
    )
    ap.add_argument("pytest_args", nargs="*", help="a pytest selection instead of the set")
    a = ap.parse_args()
    if a.report:
        return 1 if report(a.report) else 0
    if not shutil.which("valgrind"):
        print("memcheck: valgrind not found (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    t0 = time.monotonic()
    python, site = build(a.python)
    t1 = time.monotonic()
    args = a.pytest_args or (CI if a.ci else FULL)
    rc = run(python, site, a.out, args, a.track_origins)
    t2 = time.monotonic()
    print(f"\nmemcheck: build {t1 - t0:.0f} s, valgrind run {t2 - t1:.0f} s, pytest exit {rc}")
    failed = report(a.out)
    if rc == 1:
        print("memcheck: tests failed under valgrind (timing, most likely); not a memory error")
    elif rc != 0:
        # 2-4: interrupted, internal error, usage error; 5: nothing collected; <0: a signal.
        print(f"memcheck: FAIL: pytest did not run to the end (exit {rc})")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

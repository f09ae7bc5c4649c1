"""Helpers of the load and fault tests (tests/stress): the size knob, memory and fd figures, the
file-descriptor limit, and child interpreters."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

SIZE = os.environ.get("OXLOOP_STRESS", "ci") or "ci"
if SIZE not in ("ci", "full"):
    raise RuntimeError(f"OXLOOP_STRESS must be 'ci' or 'full', not {SIZE!r}")
FULL = SIZE == "full"

_PAGE = os.sysconf("SC_PAGE_SIZE")


def sized(ci, full):
    """The reduced (CI) or the full value, by OXLOOP_STRESS."""
    return full if FULL else ci


def stress_timeout(ci: float, full: float):
    """A hard per-test timeout covering setup and teardown as well (pytest-timeout's thread
    method: on expiry it dumps every thread's stack and ends the run, so a hang cannot outlive
    it even where a signal would be swallowed or a teardown would join a stuck thread)."""
    return pytest.mark.timeout(sized(ci, full), method="thread", func_only=False)


def rss_mib() -> float:
    """This process's resident set size now, in MiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + system) a running process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class nofile_limit:
    """Context manager: raise the soft RLIMIT_NOFILE to at least `need` (up to the hard limit;
    skips the test, with the reason, when the hard limit is lower) and restore it afterwards."""

    def __init__(self, need: int):
        self.need = need

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft, hard = self.saved
        if hard != resource.RLIM_INFINITY and hard < self.need:
            pytest.skip(f"needs RLIMIT_NOFILE >= {self.need}; the hard limit is {hard}")
        if soft != resource.RLIM_INFINITY and soft < self.need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.need, hard))
        return self

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_NOFILE, self.saved)


def child(code: str, *argv: str, **kw) -> subprocess.Popen:
    """`python -c code argv...` with this interpreter and environment, SIGINT at its default
    disposition (a background shell starts us with it ignored, and ignored stays ignored across
    exec), stdin/stdout/stderr pipes in text mode."""
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    kw.setdefault("stdin", subprocess.PIPE)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env=env,
        text=True,
        restore_signals=True,
        preexec_fn=_default_sigint,
        **kw,
    )


def _default_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

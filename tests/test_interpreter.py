"""Which interpreters oxloop runs on: a clear ImportError everywhere else, before native code.

`import oxloop` on a CPython version outside the verified list, or on a free-threaded build,
must raise ImportError naming the running and the supported versions (so the common
``try: import oxloop / except ImportError`` falls back to asyncio), unless
OXLOOP_ALLOW_UNSUPPORTED_PYTHON=1. The running interpreter is faked in a child process by
replacing ``sys.version_info`` / ``sys.abiflags`` before the import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from oxloop import _compat


def _import_with(fake: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import sys
        {fake}
        try:
            import oxloop
        except ImportError as e:
            print("ImportError:", e)
            print("native loaded:", "oxloop._oxloop" in sys.modules)
        else:
            print("imported; install:", hasattr(oxloop, "install"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != _compat.ALLOW_ENV}
    if allow:
        env[_compat.ALLOW_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


FUTURE = "sys.version_info = (3, 16, 0, 'final', 0)"
PAST = "sys.version_info = (3, 9, 18, 'final', 0)"
FREE_THREADED = "sys.abiflags = 't'"


@pytest.mark.parametrize(
    "fake,running",
    [(FUTURE, "CPython 3.16.0"), (PAST, "CPython 3.9.18"), (FREE_THREADED, "(free-threaded)")],
    ids=["3.16", "3.9", "free-threaded"],
)
def test_unsupported_interpreter_is_refused_before_native_code(fake, running):
    result = _import_with(fake)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    supported = "3.10, 3.11, 3.12, 3.13, 3.14, 3.15"
    assert first.startswith(f"ImportError: oxloop supports CPython {supported}")
    assert running in first
    assert "OXLOOP_ALLOW_UNSUPPORTED_PYTHON=1" in first
    assert second == "native loaded: False"


def test_the_environment_variable_lets_it_try_anyway():
    # On a faked 3.16 the package then follows 3.16's asyncio: no policies, so no install().
    result = _import_with(FUTURE, allow=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported; install: False"


def test_the_running_interpreter_is_supported():
    assert _compat.unsupported_reason() is None
    result = _import_with("")
    assert result.returncode == 0, result.stderr
    # -W error: importing oxloop warns about nothing on any supported version.
    assert result.stdout.strip() == "imported; install: True"


@pytest.mark.parametrize(
    "version,implementation,abiflags,refused",
    [
        ((3, 10, 0), "cpython", "", False),
        ((3, 15, 2), "cpython", "", False),
        ((3, 14, 0), "cpython", "d", False),  # a debug build is supported
        ((3, 14, 0), "cpython", "td", True),
        ((3, 13, 0), "cpython", "t", True),
        ((3, 16, 0), "cpython", "", True),
        ((4, 0, 0), "cpython", "", True),
        ((3, 11, 7), "pypy", "", True),
    ],
)
def test_unsupported_reason(version, implementation, abiflags, refused):
    reason = _compat.unsupported_reason(version, implementation, abiflags)
    assert (reason is not None) is refused

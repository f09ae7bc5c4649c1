"""Subprocess helpers for the CLI and seed tests: run a program under plain python and under
``python -m oxloop`` with the same interpreter, and compare what they print.

``normalize_stderr`` removes only what legitimately differs between two event loop
implementations, never a line of the program's own output:
- the DEBUG line stock asyncio logs when its loop picks a selector (``Using selector: ...``);
  oxloop has no selector;
- traceback frames inside the event loop itself (asyncio's base_events.py and events.py, and
  the oxloop package), e.g. ``run_until_complete`` between ``asyncio.run`` and a coroutine's
  frames; oxloop implements those methods in Rust. All other frames, asyncio's included, stay.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import oxloop

OXLOOP_DIR = os.path.dirname(os.path.abspath(oxloop.__file__)) + os.sep
_LOOP_FILES = (
    os.sep + os.path.join("asyncio", "base_events.py"),
    os.sep + os.path.join("asyncio", "events.py"),
)
_FRAME = re.compile(r'^(?P<indent>[ |]*)File "(?P<file>[^"]+)", line \d+, in ')
_SELECTOR = re.compile(r"^DEBUG:asyncio:Using selector: \w+$")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the variables that would change how asyncio behaves."""
    env = dict(os.environ)
    for name in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def run_python(
    args: list[str],
    *,
    cwd: str | Path | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python *args`` with this test run's interpreter; output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )


def run_both(
    args: list[str], **kwargs: object
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """(``python *args``, ``python -m oxloop *args``), one after the other."""
    plain = run_python(args, **kwargs)  # type: ignore[arg-type]
    ox = run_python(["-m", "oxloop", *args], **kwargs)  # type: ignore[arg-type]
    return plain, ox


def _loop_internal(path: str) -> bool:
    return path.startswith(OXLOOP_DIR) or path.endswith(_LOOP_FILES)


def normalize_stderr(text: str) -> str:
    """stderr with the loop-implementation details described in the module docstring removed."""
    out: list[str] = []
    skipping: str | None = None  # the indent of the frame being dropped
    for line in text.splitlines():
        m = _FRAME.match(line)
        if m is not None:
            skipping = m["indent"] if _loop_internal(m["file"]) else None
            if skipping is None:
                out.append(line)
            continue
        if skipping is not None and line.startswith(skipping + "  "):
            continue  # the dropped frame's source line and its ^^^ markers
        skipping = None
        if not _SELECTOR.match(line):
            out.append(line)
    return "\n".join(out)


def assert_same(
    plain: subprocess.CompletedProcess[str],
    ox: subprocess.CompletedProcess[str],
    *,
    stderr: bool = True,
) -> None:
    """Same exit status and stdout; same normalized stderr unless ``stderr`` is False."""
    assert ox.stdout == plain.stdout, f"stderr under oxloop:\n{ox.stderr}"
    if stderr:
        assert normalize_stderr(ox.stderr) == normalize_stderr(plain.stderr)
    assert ox.returncode == plain.returncode, ox.stderr

"""The CPython contract (src/cpython/mod.rs, python/oxloop/_contract.py): every probe passes on
the running version, and each fast path's tests pass with its probe forced to fail.

``OXLOOP_CONTRACT_FAIL=name`` makes one probe fail at import; the child process then runs that
fast path's tests (oxloop's side only: the fallback is what changes) and reports the status,
which must show the entry off. These are about oxloop's own machinery, so they run on oxloop
only; each child runs a small selection with ``-x -q`` to keep the file's runtime short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import child_env
from oxloop import _contract, _oxloop

ROOT = Path(__file__).resolve().parent.parent

# Each entry's fast path tests: what runs differently once its probe fails.
FAST_PATH_TESTS: dict[str, list[str]] = {
    "handle_slots": [
        "tests/test_callbacks.py",
        "tests/test_timers.py",
        "-k",
        "oxloop and (cancel or order or context or handle or threadsafe or when)",
    ],
    "gc_untrack": [
        "tests/test_gc.py",
        "tests/test_divergences.py::test_queued_handles_are_not_gc_tracked_on_oxloop",
        "-k",
        "oxloop",
    ],
    "transport_slots": [
        "tests/test_transport_fastpath.py",
        "tests/test_tls_native.py",
        "tests/test_tcp.py::test_transport_setup_leaves_asyncios_state",
        "tests/test_tcp.py::test_the_plain_transport_setup_is_native",
        "-k",
        "oxloop and (echo or subclass or buffered or write or eof or native or protocol or setup)",
    ],
    "bytes_reuse": [
        "tests/test_transport_fastpath.py",
        "tests/test_tcp.py",
        "-k",
        "oxloop and (echo or data_received or buffered or keep)",
    ],
    "socket_head": ["tests/test_sock.py", "-k", "oxloop and (recv or sendall or timeout)"],
    "socket_init": ["tests/test_server.py", "-k", "(oxloop and accept) or audit"],
    "get_method": [
        "tests/test_streams.py",
        "tests/test_divergences.py::test_stream_feed_frames_are_not_profiled_on_oxloop",
        "-k",
        "oxloop",
    ],
    "stream_fields": [
        "tests/test_streams.py",
        "tests/test_divergences.py::test_stream_feed_frames_are_not_profiled_on_oxloop",
        "-k",
        "oxloop",
    ],
    "asyncio_call_soon": [
        "tests/test_tasks.py",
        "-k",
        "oxloop and (done_callback or handle or step or wakeup or context)",
    ],
    "type_version_tag": ["tests/test_timers.py", "-k", "oxloop and (time or patch)"],
    "socket_transport": [
        "tests/test_tcp.py",
        "tests/test_divergences.py::test_stream_feed_frames_are_not_profiled_on_oxloop",
        "-k",
        "oxloop and (echo or extra or flow or eof or pause or stream)",
    ],
    "sock_methods": [
        "tests/test_sock.py",
        "-k",
        "oxloop and (recv or sendall or transport or cancel)",
    ],
}

if sys.version_info >= (3, 11):
    FAST_PATH_TESTS["ssl_protocol"] = [
        "tests/test_tls.py",
        "tests/test_tls_native.py",
        "-k",
        "oxloop",
    ]

# Entries whose fast path needs another's: forcing the key off turns these off too.
DEPENDENTS = {
    "handle_slots": {"gc_untrack"},
    "socket_head": {"socket_init"},
    "socket_transport": {"transport_slots"},
}

STATUS_SCRIPT = "import json, oxloop._contract as c; print(json.dumps(c.status()))"


def _child(args: list[str], forced: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env({_contract.FAIL_VAR: forced}),
        timeout=300,
    )


def test_every_entry_has_its_fast_path_tests():
    assert set(FAST_PATH_TESTS) == set(_oxloop.CONTRACT_ENTRIES) | set(_contract.FAST_PATHS)
    assert set(_contract.status()) == set(FAST_PATH_TESTS)


def test_every_probe_passes():
    assert _contract.status() == dict.fromkeys(FAST_PATH_TESTS, True)


@pytest.mark.parametrize("name", sorted(FAST_PATH_TESTS))
def test_forced_probe_turns_off_only_its_fast_path(name):
    status = _child(["-c", STATUS_SCRIPT], name)
    assert status.returncode == 0, status.stderr
    off = {name} | DEPENDENTS.get(name, set())
    assert json.loads(status.stdout) == {entry: entry not in off for entry in FAST_PATH_TESTS}
    tests = _child(
        ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *FAST_PATH_TESTS[name]], name
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout, tests.stdout[-2000:]


def test_unknown_entry_names_are_reported():
    proc = _child(["-c", "import oxloop._contract"], "no_such_entry")
    assert proc.returncode == 0, proc.stderr
    assert "unknown contract entries: no_such_entry" in proc.stderr

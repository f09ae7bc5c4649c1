"""The tutorial programs of /work/shared/seeds (tests/seeds/*.py) run on oxloop as on asyncio.

Each program runs twice with this interpreter, as ``python prog.py`` and as
``python -m oxloop prog.py``; stdout and the exit status must be identical and stderr too,
after ``_cli.normalize_stderr`` (loop-internal traceback frames, asyncio's selector DEBUG line).
The programs print no wall-clock times: where a tutorial prints one, the program prints
elapsed time in whole tutorial seconds (see each program's docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _cli import assert_same, normalize_stderr, run_both

SEEDS = Path(__file__).parent / "seeds"

# The pre-asyncio.run() programs start with asyncio.get_event_loop() and no loop set. Up to 3.13
# that makes the main thread's loop (3.12-3.13 with a DeprecationWarning); 3.14 raises
# RuntimeError instead, on stock asyncio as on oxloop, so they exit 1 there.
GET_EVENT_LOOP_STATUS = 1 if sys.version_info >= (3, 14) else 0
# What such a program needs on 3.14+: a current loop set before it starts (made by the policy,
# so an oxloop loop under `python -m oxloop`). Run as `-c`, with the program's path in argv.
WITH_A_CURRENT_LOOP = (
    "import asyncio, runpy, sys; asyncio.set_event_loop(asyncio.new_event_loop()); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)

# (program, extra arguments, minimum Python version, expected exit status)
PROGRAMS: list[tuple[str, list[str], tuple[int, int], int]] = [
    ("async_protocols.py", [], (3, 10), 0),
    ("display_date.py", [], (3, 10), 0),
    ("factorial_gather.py", [], (3, 10), 0),
    ("hello_world.py", [], (3, 10), 0),
    ("lato_async_hooks.py", [], (3, 10), 0),
    ("legacy_chain_coroutines.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("legacy_display_date.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("legacy_factorial.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("legacy_future.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("legacy_hello_world.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("many_tasks.py", [], (3, 10), GET_EVENT_LOOP_STATUS),
    ("run_in_executor.py", [], (3, 10), 0),
    ("run_inside_running_loop.py", [], (3, 10), 0),
    ("say_after_sequential.py", [], (3, 10), 0),
    ("say_after_tasks.py", [], (3, 10), 0),
    ("sleep_result.py", [], (3, 10), 0),
    ("task_group.py", [], (3, 11), 1),  # its last TaskGroup's ExceptionGroup is uncaught
    ("to_thread.py", [], (3, 10), 0),
    ("wait_and_print.py", [], (3, 10), 0),
    ("wait_for_timeout.py", [], (3, 10), 0),
]

# The tutorial's testoutput for lato_async_hooks.py (what it logs at INFO level).
LATO_EXPECTED = """\
INFO:toy.1:Connecting to database
INFO:toy.2:Connecting to database
INFO:toy.3:Connecting to database
INFO:toy.1:Connected
INFO:toy.1:Starting foo, x=1
INFO:toy.2:Connected
INFO:toy.2:Starting foo, x=2
INFO:toy.3:Connected
INFO:toy.3:Starting foo, x=3
INFO:toy.1:Finished foo
INFO:toy.1:Disconnecting from database
INFO:toy.2:Finished foo
INFO:toy.2:Disconnecting from database
INFO:toy.3:Finished foo
INFO:toy.3:Disconnecting from database
INFO:toy.1:Disconnected from database
INFO:toy.2:Disconnected from database
INFO:toy.3:Disconnected from database"""


def test_every_seed_program_is_listed():
    assert sorted(p.name for p in SEEDS.glob("*.py")) == sorted(p[0] for p in PROGRAMS)


@pytest.mark.parametrize(
    "program,args,min_version,status", PROGRAMS, ids=[p[0].removesuffix(".py") for p in PROGRAMS]
)
def test_seed_program(program, args, min_version, status):
    if sys.version_info < min_version:
        pytest.skip(f"needs Python {'.'.join(map(str, min_version))}")
    plain, ox = run_both([program, *args], cwd=SEEDS)
    assert plain.returncode == status, plain.stderr  # the program itself works on asyncio
    assert plain.stdout or plain.stderr
    assert_same(plain, ox)
    if status == GET_EVENT_LOOP_STATUS == 1 and "There is no current event loop" in plain.stderr:
        # 3.14+: the same program, given the current loop it expects, still runs the same.
        plain, ox = run_both(["-c", WITH_A_CURRENT_LOOP, program, *args], cwd=SEEDS)
        assert plain.returncode == 0, plain.stderr
        assert_same(plain, ox)


def test_lato_output_is_the_tutorials():
    plain, ox = run_both(["lato_async_hooks.py"], cwd=SEEDS)
    for result in (plain, ox):
        info = [line for line in result.stderr.splitlines() if line.startswith("INFO:")]
        assert "\n".join(info) == LATO_EXPECTED


def test_ten_thousand_tasks():
    # The tutorial's 10000-task run, without debug mode (whose slow-callback reports depend on
    # timing). The "done" lines come in deadline order (start time + pause); start times of
    # 10000 tasks spread over more than the smallest gaps between their pauses, so that order
    # varies from run to run on either loop: compare those lines as a set, all others exactly.
    args = ["many_tasks.py", "--task-count", "10000", "--no-debug"]
    if GET_EVENT_LOOP_STATUS:  # 3.14+: see WITH_A_CURRENT_LOOP
        args = ["-c", WITH_A_CURRENT_LOOP, *args]
    plain, ox = run_both(args, cwd=SEEDS)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        plain.stdout.splitlines()[0],
        "10000 async tasks validated: True.",
    ]
    assert "finished in" in plain.stdout and "+ seconds." in plain.stdout
    assert ox.stdout == plain.stdout
    assert ox.returncode == plain.returncode

    def split(stderr: str) -> tuple[list[str], list[str]]:
        lines = normalize_stderr(stderr).splitlines()
        done = sorted(line for line in lines if " - done with sleep for " in line)
        return [line for line in lines if " - done with sleep for " not in line], done

    plain_other, plain_done = split(plain.stderr)
    ox_other, ox_done = split(ox.stderr)
    assert len(plain_done) == 10000
    assert sum(" - await a sleep for " in line for line in plain_other) == 10000
    assert ox_other == plain_other
    assert ox_done == plain_done

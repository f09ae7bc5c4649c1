"""The differences the fuzzer does not report as bugs, each with where it is accounted for.

ALLOWED: deliberate divergences; each names its row of docs/compatibility.md by the start of
the row's first cell (tests/test_fuzz.py checks that the row exists).
PENDING: known bugs being fixed elsewhere (issue 15); temporary, removed once the fix merges.

An entry matches a step difference by the step's label (``loop.call_at``), optionally a
predicate on the step, and the two outcomes (asyncio's, oxloop's) as prefixes: ``("raise",)``
matches any exception, ``("raise", "TypeError")`` only that one; ``None`` matches anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    label: str
    asyncio: tuple | None
    oxloop: tuple | None
    why: str
    row: str | None = None  # docs/compatibility.md, the start of the row's first cell
    pending: str | None = None  # the issue-15 item fixing it
    when: Callable | None = None  # predicate on the step
    outcomes: Callable | None = None  # predicate on (asyncio's outcome, oxloop's)

    def matches(self, step, a, o) -> bool:
        from .program import step_label

        if step_label(step) != self.label:
            return False
        if self.asyncio is not None and tuple(a[: len(self.asyncio)]) != self.asyncio:
            return False
        if self.oxloop is not None and tuple(o[: len(self.oxloop)]) != self.oxloop:
            return False
        if self.outcomes is not None and not self.outcomes(a, o):
            return False
        return self.when is None or bool(self.when(step))


def _arg(step, i):
    args = step[4]
    return args[i] if len(args) > i else None


def _kwarg(step, name):
    return dict(step[5]).get(name)


def _not_a_number(step) -> bool:
    v = _arg(step, 0)
    return not (v and v[0] == "c" and isinstance(v[1], (int, float)) and not isinstance(v[1], bool))


ALLOWED = [
    Entry(
        "loop.call_at",
        None,  # accepted ("ok"), or the loop fails later ("driver-raise")
        ("raise", "TypeError"),
        "a deadline that is not a number is refused at call_at",
        row="`call_at(when)` with a `when` that is not a number",
        when=_not_a_number,
    ),
    Entry(
        "loop.call_later",
        None,
        ("raise", "TypeError"),
        "a delay that is not a number is refused at call_later (as call_at)",
        row="`call_at(when)` with a `when` that is not a number",
        when=_not_a_number,
    ),
]


ALLOWED.append(
    Entry(
        "loop.get_debug",
        ("ok",),
        ("ok",),
        "after set_debug of a non-bool, oxloop's get_debug returns bool(x), asyncio x",
        row="`get_debug()` after `set_debug(x)` with an `x` that is not a bool",
        outcomes=lambda a, o: o[1] in ("True", "False") and a[1] not in ("True", "False"),
    )
)

# A child's exit is seen when its pidfd turns readable in oxloop's own poller, where asyncio's
# child watcher (a waitpid thread on 3.10/3.11, its own pidfd callback on 3.12+) reports it a
# little later: a program that looks before the exit has settled (its loop closed right after
# subprocess_exec, say) sees the exit on oxloop and not yet on asyncio, or the other way round.
_CHILD_EXIT = "child processes' exit"
_EXIT_KINDS = {("ok", "None"), ("ok", "int"), ("raise", "ProcessLookupError")}
for _label in ("get_returncode", "kill", "terminate", "send_signal"):
    ALLOWED.append(
        Entry(
            "transport." + _label,
            None,
            None,
            "the child's exit seen at a different moment",
            row=_CHILD_EXIT,
            outcomes=lambda a, o: {tuple(a), tuple(o)} <= _EXIT_KINDS,
        )
    )

# Known bugs being fixed elsewhere: temporary entries (`pending=` names the issue item), removed
# once the fix lands. Empty: the issue-15 fixes have landed.
PENDING: list[Entry] = []


# A step after which the two loops' states differ by design, so that any later difference in
# the program is that row's: asyncio keeps a timer with a deadline that is not a number in its
# heap (heappush has appended it before the comparison raised), and its loop fails later.
TAINTS = [
    (
        lambda s: step_label(s) in ("loop.call_at", "loop.call_later") and _not_a_number(s),
        "`call_at(when)` with a `when` that is not a number",
    ),
    # asyncio keeps the object set_debug got (its _debug), oxloop only its truth: an object
    # kept alive on one loop only (a future whose exception was never retrieved, say) is
    # collected, and reported, on oxloop alone.
    (
        lambda s: (
            step_label(s) == "loop.set_debug"
            and (_arg(s, 0) or ("",)) not in (("c", True), ("c", False))
        ),
        "`get_debug()` after `set_debug(x)` with an `x` that is not a bool",
    ),
]


def step_label(s) -> str:
    from .program import step_label as label

    return label(s)


def classify(step, a, o) -> Entry | None:
    for e in ALLOWED + PENDING:
        if e.matches(step, a, o):
            return e
    return None


def taint(program, upto: int | None = None) -> str | None:
    """The row of a step, up to and including step ``upto``, after which the loops differ."""
    for s in program[: None if upto is None else upto + 1]:
        for pred, row in TAINTS:
            if pred(s):
                return row
    return None


# Differences in the events a program saw (callbacks, protocol callbacks, the exception
# handler): each entry names the events that may be missing from, or extra on, oxloop's side.
EVENT_PENDING: list[tuple[set, str]] = []


# Event differences that a row of docs/compatibility.md accounts for: predicate on one event.
EVENT_ALLOWED = [
    (
        lambda e: (
            e[0] == "sproto"
            and e[1] in ("process_exited", "connection_lost", "pipe_connection_lost")
        ),
        _CHILD_EXIT,
    ),
]


def classify_events(a: list, o: list) -> str | None:
    """ "pending: ..." or "allowed: <row>" for an events difference, or None."""
    diff = set(map(tuple, a)) ^ set(map(tuple, o))
    for events, why in EVENT_PENDING:
        if diff <= events:
            return "pending: " + why
    for pred, row in EVENT_ALLOWED:
        if all(pred(e) for e in diff):
            return "allowed: " + row
    return None

"""Parse conformance/expectations.txt and judge test outcomes against it.

Role: the list of tests that are not expected to pass on oxloop, each with its reason. The
runner asks ``Expectations.lookup(test_id)`` for every outcome it records.

Syntax (one entry a line; blank lines and lines starting with ``#`` are ignored):

    [VERSIONS] TEST_ID_OR_PATTERN  # reason

- ``[VERSIONS]`` is optional: a comma-separated list of ``3.12`` (that version), ``3.12+``
  (that version and later), ``3.10-3.11`` (inclusive range). Without it the entry applies to
  every version.
- ``TEST_ID_OR_PATTERN`` is a full unittest id, e.g.
  ``test.test_asyncio.test_events.EPollEventLoopTests.test_create_connection``; it may use
  ``fnmatch`` wildcards (``*``, ``?``, ``[...]``) to cover a family of tests.
- The reason is required: an entry without ``# reason`` is a syntax error.

Invariants: a test matched by an entry may fail, error or hang; if it passes, that is an
unexpected pass and fails the run (wildcards must therefore be exact about what they cover).
The first matching entry wins.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass

_VERSION = re.compile(r"^3\.(\d+)(\+)?(?:-3\.(\d+))?$")
_LINE = re.compile(r"^(?:\[(?P<versions>[^\]]*)\]\s*)?(?P<pattern>\S+)\s*#\s*(?P<reason>.*\S)\s*$")


class ExpectationsError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    pattern: str
    reason: str
    versions: str  # as written, "" for all versions
    lineno: int

    def matches(self, test_id: str) -> bool:
        if any(c in self.pattern for c in "*?["):
            return fnmatch.fnmatchcase(test_id, self.pattern)
        return test_id == self.pattern


def _version_applies(spec: str, minor: int, where: str) -> bool:
    for part in spec.split(","):
        m = _VERSION.match(part.strip())
        if not m:
            raise ExpectationsError(
                f"{where}: bad version {part.strip()!r} (use 3.12, 3.12+ or 3.10-3.11)"
            )
        lo = int(m.group(1))
        if m.group(2):
            hit = minor >= lo
        elif m.group(3):
            hit = lo <= minor <= int(m.group(3))
        else:
            hit = minor == lo
        if hit:
            return True
    return False


class Expectations:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.used: set[Entry] = set()

    @classmethod
    def load(cls, path: str, version: tuple[int, int] | None = None) -> Expectations:
        """Entries of ``path`` that apply to ``version`` (the running interpreter by default)."""
        major, minor = version or sys.version_info[:2]
        if major != 3:
            raise ExpectationsError("only Python 3 versions are supported")
        entries = []
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                m = _LINE.match(line)
                if not m:
                    raise ExpectationsError(
                        f"{path}:{lineno}: expected '[versions] test.id  # reason', got {line!r}"
                    )
                versions = (m.group("versions") or "").strip()
                if versions and not _version_applies(versions, minor, f"{path}:{lineno}"):
                    continue
                entries.append(Entry(m.group("pattern"), m.group("reason"), versions, lineno))
        return cls(entries)

    def lookup(self, test_id: str) -> Entry | None:
        for entry in self.entries:
            if entry.matches(test_id):
                self.used.add(entry)
                return entry
        return None

"""The running CPython as oxloop sees it: supported versions, and version-dependent asyncio names.

Role: one place for what oxloop's Python side assumes about the interpreter that differs between
versions, so a new CPython is checked here first. Imported by ``oxloop/__init__.py`` before the
extension, so ``check_interpreter`` refuses an unverified interpreter with an ImportError (what
the common ``try: import oxloop / except ImportError: use asyncio`` expects) instead of loading
native code built on assumptions that were never checked there.

Invariants:
- ``SUPPORTED`` lists exactly the versions on which CPython's own test.test_asyncio and the
  project's tests pass (conformance/run.py, ``make test``).
- A private asyncio name used here is looked up with a fallback, never assumed: each entry says
  the versions it was verified on and what is used where it is absent.
- Importing this module imports only ``os`` and ``sys`` at module level (it runs before the
  version check, and on every ``import oxloop``); asyncio names are resolved by functions.
"""

from __future__ import annotations

import os
import sys

# (major, minor) verified: test.test_asyncio of that version passes in full on oxloop, and so
# does tests/ on both loops.
SUPPORTED: tuple[tuple[int, int], ...] = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14), (3, 15))

# Set to 1 to import oxloop on an interpreter outside SUPPORTED, or a free-threaded build, anyway.
ALLOW_ENV = "OXLOOP_ALLOW_UNSUPPORTED_PYTHON"

# Policies: deprecated in 3.14 (the public names warn on every use), removed in 3.16.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)
POLICIES_REMOVED = sys.version_info >= (3, 16)


def _describe(version: tuple[int, ...], free_threaded: bool) -> str:
    name = "CPython" if sys.implementation.name == "cpython" else sys.implementation.name
    return f"{name} {'.'.join(map(str, version[:3]))}{' (free-threaded)' if free_threaded else ''}"


def unsupported_reason(
    version: tuple[int, ...] | None = None,
    implementation: str | None = None,
    abiflags: str | None = None,
) -> str | None:
    """Why oxloop cannot run on this interpreter, or None when it can. Arguments default to the
    running interpreter's (tests pass others)."""
    version = tuple(sys.version_info) if version is None else version
    implementation = sys.implementation.name if implementation is None else implementation
    abiflags = getattr(sys, "abiflags", "") if abiflags is None else abiflags
    # A free-threaded build has "t" in its ABI flags (PEP 703; "3.13t"); the extension needs the
    # GIL (it declares gil_used), and its loop state is not written for concurrent callers.
    free_threaded = "t" in abiflags
    supported = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED)
    running = _describe(version, free_threaded)
    if implementation != "cpython":
        return f"oxloop supports CPython {supported}; this is {running}"
    if tuple(version[:2]) not in SUPPORTED:
        return f"oxloop supports CPython {supported}; this is {running}"
    if free_threaded:
        return (
            f"oxloop supports CPython {supported} with the GIL; this is {running}, "
            "which it has not been made safe for"
        )
    return None


def check_interpreter(environ: os._Environ[str] | dict[str, str] | None = None) -> None:
    """Raise ImportError unless oxloop supports the running interpreter (or ALLOW_ENV is 1)."""
    reason = unsupported_reason()
    if reason is None:
        return
    environ = os.environ if environ is None else environ
    if environ.get(ALLOW_ENV) == "1":
        return
    raise ImportError(
        f"{reason}. Use asyncio's own event loop there, or set {ALLOW_ENV}=1 to try oxloop anyway."
    )


# ---- event loop policies ----------------------------------------------------------------------
# 3.14 deprecated the policy system: asyncio.get_event_loop_policy / set_event_loop_policy and
# the names asyncio.AbstractEventLoopPolicy / DefaultEventLoopPolicy warn (Lib/asyncio/events.py,
# Lib/asyncio/__init__.py __getattr__), but asyncio itself keeps using the policy underneath
# (asyncio.new_event_loop, get_event_loop, set_event_loop) through private twins that do not warn.
# oxloop's own machinery (python -m oxloop, the pytest plugin) uses those twins, so that it never
# warns on the user's behalf; what users call directly warns as asyncio's would.


def get_policy():
    """The current policy, without 3.14's deprecation warning.

    ``asyncio.events._get_event_loop_policy``: verified 3.14, 3.15. Absent before 3.14, where
    the public ``get_event_loop_policy`` does not warn."""
    import asyncio.events

    getter = getattr(asyncio.events, "_get_event_loop_policy", None)
    return (getter or asyncio.events.get_event_loop_policy)()


def set_policy(policy) -> None:
    """Set the current policy (None: the default), without 3.14's deprecation warning.

    ``asyncio.events._set_event_loop_policy``: verified 3.14, 3.15; public fallback before."""
    import asyncio.events

    setter = getattr(asyncio.events, "_set_event_loop_policy", None)
    (setter or asyncio.events.set_event_loop_policy)(policy)


def default_policy_class() -> type:
    """The platform's default policy class, reached without the deprecated public name.

    ``asyncio.unix_events._UnixDefaultEventLoopPolicy``: the class behind
    ``asyncio.DefaultEventLoopPolicy`` on 3.10-3.15 (verified on each)."""
    import asyncio.unix_events

    cls = getattr(asyncio.unix_events, "_UnixDefaultEventLoopPolicy", None)
    if cls is None:  # pragma: no cover - a version where the private name moved
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asyncio

            cls = asyncio.DefaultEventLoopPolicy
    return cls


def abstract_policy_class() -> type:
    """``AbstractEventLoopPolicy`` without 3.14's warning.

    ``asyncio.events._AbstractEventLoopPolicy`` on 3.14, 3.15 (verified), the public
    ``asyncio.events.AbstractEventLoopPolicy`` before."""
    import asyncio.events

    cls = getattr(asyncio.events, "_AbstractEventLoopPolicy", None)
    return cls if cls is not None else asyncio.events.AbstractEventLoopPolicy

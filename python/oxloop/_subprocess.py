"""Child processes on oxloop: asyncio's subprocess transport, oxloop's own exit watching.

``Loop._make_subprocess_transport`` delegates here. The transport is the running version's
``unix_events._UnixSubprocessTransport`` (so ``subprocess.Popen`` gets every argument the
version accepts, and base_subprocess's ordering of ``pipe_data_received``,
``pipe_connection_lost``, ``process_exited`` and ``connection_lost`` is asyncio's own); only the
way the loop learns that the child exited differs from stock asyncio:

* With ``os.pidfd_open`` (Linux 5.3+) the child's pidfd is registered in the loop's own poller
  through ``loop._add_reader``; when it turns readable the child is reaped with
  ``os.waitpid(pid, os.WNOHANG)`` on the loop thread. No thread, no signal.
* Without it (older kernel, seccomp policy, fd exhaustion) a daemon thread per child blocks in
  ``os.waitpid(pid, 0)`` and hands the status to the loop with ``call_soon_threadsafe``, as
  ``unix_events.ThreadedChildWatcher`` does; where that watcher leaves the reaping to the loop
  thread (3.14.7+, gh-127049), the thread waits with ``waitid(WNOWAIT)`` and the loop reaps.

Either way the status reaches ``transport._process_exited`` through the loop's inherited
``_child_watcher_callback`` (so the version's own scheduling of that call applies), no SIGCHLD
handler is installed (the user's disposition of SIGCHLD is never touched), the policy's child
watcher is never asked for (no DeprecationWarning on 3.12+), and only the pids this loop started
are waited for.

Invariants:

* Every child this loop started is reaped exactly once by this module, unless someone else
  reaped it first (then its status is the Popen's if it has one, else 255 with asyncio's
  warning), so no zombie is left behind.
* A loop that closes while children still run hands their pidfds to a reaper thread
  (``_reap_orphans``) that reaps each one when it exits; the transports are not told (their loop
  is gone), as asyncio's ThreadedChildWatcher does not tell them either. Children are not
  killed at close: closing or collecting the transport does that, as in asyncio. The same
  happens if a loop is garbage-collected without being closed.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import weakref
from asyncio import unix_events
from asyncio.log import logger

# Not `from typing import ...`: typing is not loaded by asyncio on 3.14+, and `import oxloop`
# must not pay for it (benches/import_time.py). Type checkers treat this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["loop_closing", "make_subprocess_transport"]

# os.pidfd_open (Linux, Python 3.9+), or None. A module attribute so tests can refuse it.
_pidfd_open = getattr(os, "pidfd_open", None)

# None until probed: whether os.pidfd_open works here (it may exist yet be refused by the kernel
# or a seccomp policy; unix_events.can_use_pidfd of 3.12+ probes the same way).
_pidfd_ok: bool | None = None


# gh-127049 (3.14.7+, 3.15): asyncio's threaded watcher waits for the child with
# waitid(WEXITED | WNOWAIT), which leaves it a zombie, and reaps it on the loop thread as it
# publishes the exit, so the pid cannot be recycled while the transport may still signal it
# (Process.kill() after the exit). Before, its thread reaped the child at once. oxloop's
# fallback thread follows the running version's watcher, recognised by its _reap_and_notify.
_stock_threaded = getattr(unix_events, "_ThreadedChildWatcher", None) or getattr(
    unix_events, "ThreadedChildWatcher", None
)
_REAP_ON_LOOP = hasattr(os, "waitid") and hasattr(_stock_threaded, "_reap_and_notify")


def _can_use_pidfd() -> bool:
    global _pidfd_ok
    if _pidfd_ok is None:
        opener = _pidfd_open
        ok = opener is not None
        if opener is not None:
            try:
                os.close(opener(os.getpid(), 0))
            except OSError:
                ok = False
        _pidfd_ok = ok
    return _pidfd_ok


def _status_of(pid: int, proc: subprocess.Popen[Any] | None) -> int | None:
    """Reap `pid` without blocking; its exit code, or None if it has not exited yet.

    If the Popen object already reaped it (``BaseSubprocessTransport.close`` calls
    ``proc.poll()``), that status is the truth. If somebody else reaped it (a SIGCHLD handler
    doing ``waitpid(-1)``, SIGCHLD ignored), the status is lost: report 255 with the warning
    asyncio's PidfdChildWatcher logs in the same case (unix_events.py).
    """
    if proc is not None and proc.returncode is not None:
        return proc.returncode
    try:
        wpid, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        logger.warning(
            "child process pid %d exit status already read:  will report returncode 255", pid
        )
        return 255
    if wpid == 0:
        return None
    return os.waitstatus_to_exitcode(status)


class _Child:
    """A watched child. Deliberately no reference to its transport (which references the
    loop): the loop's finalizer reaches this, and must not keep the loop alive. The transport
    travels in the pidfd reader's args (part of the loop's own reference graph) or in the
    waitpid thread's args (alive until the child exits, as with ThreadedChildWatcher)."""

    __slots__ = ("pid", "pidfd", "proc")

    def __init__(self, pid: int, pidfd: int, proc: subprocess.Popen[Any]) -> None:
        self.pid = pid
        self.pidfd = pidfd  # -1: watched by a waitpid thread
        self.proc = proc


class _LoopChildren:
    """The children one loop watches. Holds the loop weakly, so that a loop dropped without
    close() is still collected (its finalizer then hands the children to a reaper)."""

    def __init__(self, loop: Any) -> None:
        self._loop = weakref.ref(loop)
        self._children: dict[int, _Child] = {}
        self._closed = False
        self.finalizer = weakref.finalize(loop, self._orphan_all)
        # Not at interpreter exit: no thread may start then, and children outliving the
        # process are reparented to init(1), which reaps them.
        self.finalizer.atexit = False

    def watch(self, loop: Any, transp: Any) -> None:
        pid = transp.get_pid()
        proc = transp._proc
        child = _Child(pid, -1, proc)
        opener = _pidfd_open
        if opener is not None and _can_use_pidfd():
            try:
                child.pidfd = opener(pid, 0)
            except OSError:
                # ESRCH (already reaped: SIGCHLD ignored) or EMFILE/ENFILE: the thread's
                # waitpid reports both as asyncio's threaded watcher would.
                child.pidfd = -1
        self._children[pid] = child
        if child.pidfd >= 0:
            try:
                loop._add_reader(child.pidfd, self._pidfd_ready, pid, transp)
            except BaseException:
                del self._children[pid]
                os.close(child.pidfd)
                raise
        else:
            threading.Thread(
                target=_wait_in_thread,
                name=f"oxloop-waitpid-{pid}",
                args=(loop, self, pid, transp),
                daemon=True,
            ).start()

    def _pidfd_ready(self, pid: int, transp: Any) -> None:
        child = self._children.get(pid)
        if child is None:  # pragma: no cover - the reader is removed with the entry
            return
        try:
            returncode = _status_of(pid, child.proc)
        except BaseException:
            # An unexpected waitpid error still releases the pidfd, as _PidfdChildWatcher's
            # _do_wait does in 3.14 (its try/finally); the error goes to the exception handler
            # and the child is no longer watched.
            self._unwatch(pid, child)
            raise
        if returncode is None:
            # pidfd_open(2): readable once the process has exited; a not-yet-waitable status
            # cannot follow, but keep watching rather than lose the child.
            return
        loop = self._unwatch(pid, child)
        self._deliver(loop, pid, transp, returncode)

    def _unwatch(self, pid: int, child: _Child) -> Any:
        """Stops watching a pidfd child: its entry, reader and pidfd go. Returns the loop."""
        loop = self._loop()
        del self._children[pid]
        try:
            if loop is not None:
                loop._remove_reader(child.pidfd)
        finally:
            os.close(child.pidfd)
        return loop

    def _thread_done(self, pid: int, transp: Any, returncode: int | None) -> None:
        """On the loop thread: the waitpid thread saw `pid` exit. `returncode` None: the
        child is still to be reaped here (3.14.7+), or someone else reaped it first."""
        child = self._children.pop(pid, None)
        if child is None:  # pragma: no cover - one thread per pid
            return
        if returncode is None:
            returncode = _status_of(pid, child.proc)
        self._deliver(self._loop(), pid, transp, 255 if returncode is None else returncode)

    def _deliver(self, loop: Any, pid: int, transp: Any, returncode: int) -> None:
        if loop is None or loop.is_closed():  # pragma: no cover - close() detaches first
            return
        if loop.get_debug():
            logger.debug("process %s exited with returncode %s", pid, returncode)
        # The running version's own hop(s) to transp._process_exited (unix_events).
        loop._child_watcher_callback(pid, returncode, transp)

    def _orphan_all(self) -> None:
        """The loop is closing (or gone): reap the children still running in a thread."""
        self._closed = True
        loop = self._loop()
        orphans: dict[int, tuple[int, Any]] = {}
        for child in self._children.values():
            if child.pidfd < 0:
                if _REAP_ON_LOOP and child.proc is not None:
                    # Its thread may have seen the exit and handed the reaping to this loop,
                    # too late: reap a zombie now (Popen.poll absorbs ECHILD). A child still
                    # running is reaped by its thread, which sees _closed.
                    child.proc.poll()
                continue  # its waitpid thread reaps it and drops the result
            if loop is not None and not loop.is_closed():
                loop._remove_reader(child.pidfd)
            orphans[child.pidfd] = (child.pid, child.proc)
        self._children.clear()
        if orphans:
            try:
                threading.Thread(
                    target=_reap_orphans, name="oxloop-reaper", args=(orphans,), daemon=True
                ).start()
            except RuntimeError:
                # "can't create new thread at interpreter shutdown" (a loop closed while the
                # interpreter finalizes): the process is about to exit, and init(1) reaps
                # the children it leaves behind.
                pass


def _wait_in_thread(loop: Any, children: _LoopChildren, pid: int, transp: Any) -> None:
    """Fallback watcher thread (as unix_events.ThreadedChildWatcher._do_waitpid)."""
    if _REAP_ON_LOOP:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped elsewhere: the loop thread's waitpid finds out
        if not children._closed:
            try:
                # _thread_done reaps it (None: not reaped yet) and publishes the exit.
                loop.call_soon_threadsafe(children._thread_done, pid, transp, None)
                return
            except RuntimeError:  # pragma: no cover - the loop closed after the check
                pass
        # The loop is closed: reap the zombie here, nobody to tell. _orphan_all may have
        # reaped it already.
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return
    returncode: int | None
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        returncode = None  # reaped elsewhere (Popen.poll in transport.close, or the user)
    else:
        returncode = os.waitstatus_to_exitcode(status)
    if children._closed:
        return  # the loop closed meanwhile: the child is reaped, nobody to tell
    try:
        loop.call_soon_threadsafe(children._thread_done, pid, transp, returncode)
    except RuntimeError:  # pragma: no cover - the loop closed between the check and the call
        pass


def _reap_orphans(orphans: dict[int, tuple[int, Any]]) -> None:
    """Reaper thread for the children of a closed loop: {pidfd: (pid, Popen)}."""
    poller = select.poll()
    for pidfd in orphans:
        poller.register(pidfd, select.POLLIN)
    while orphans:
        for pidfd, _ in poller.poll():
            pid, proc = orphans.pop(pidfd)
            poller.unregister(pidfd)
            try:
                # Through the Popen, under its lock, so its returncode is set and a later
                # kill() on the transport cannot signal a recycled pid (Popen.send_signal
                # polls first). ECHILD (reaped elsewhere) is absorbed by Popen.
                if proc is not None:
                    proc.poll()
                else:  # pragma: no cover - transports always have a Popen here
                    os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover
                pass
            finally:
                os.close(pidfd)


_loops: weakref.WeakKeyDictionary[Any, _LoopChildren] = weakref.WeakKeyDictionary()


def _children_of(loop: Any) -> _LoopChildren:
    children = _loops.get(loop)
    if children is None:
        children = _loops[loop] = _LoopChildren(loop)
    return children


def loop_closing(loop: Any) -> None:
    """Called by Loop.close() while the loop can still unregister fds."""
    children = _loops.pop(loop, None)
    if children is not None:
        children.finalizer()


async def make_subprocess_transport(
    loop: Any,
    protocol: Any,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    bufsize: int,
    extra: Any = None,
    **kwargs: Any,
) -> Any:
    """unix_events._UnixSelectorEventLoop._make_subprocess_transport (3.10-3.13) without the
    child watcher: start the child, watch its exit, wait for its pipes to be connected."""
    waiter = loop.create_future()
    # Popen errors (FileNotFoundError, PermissionError, bad arguments) propagate from here
    # exactly as in asyncio: the transport closes itself and re-raises.
    transp = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=waiter,
        extra=extra,
        **kwargs,
    )
    try:
        _children_of(loop).watch(loop, transp)
    except BaseException:
        # Nothing watches this child (e.g. no thread could be started): stop it rather than
        # leave it running unwatched. asyncio would leave it to the transport's __del__.
        transp.close()
        raise
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp

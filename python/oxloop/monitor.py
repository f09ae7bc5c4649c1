"""The monitor: a Unix socket through which ``python -m oxloop dump/top PID`` reads a process.

Opt-in only: ``oxloop.monitor.enable(loop)``, or ``OXLOOP_MONITOR=1`` in the environment, which
an oxloop loop checks each time it starts running (``Loop.run_forever`` calls ``_autostart``).
No signal is reserved.

Where: ``$XDG_RUNTIME_DIR/oxloop/<pid>.sock``, or ``/tmp/oxloop-<uid>/<pid>.sock`` without a
runtime dir. The directory is created mode 0700 and must be owned by this user and not be a
symlink (a directory another user prepared is refused); the socket is chmod 0600, and a peer
whose SO_PEERCRED uid is neither ours nor root is disconnected.

Protocol: one JSON object per line each way. Requests ``{"cmd": "dump" | "metrics" | "info",
"timeout": seconds}``; replies ``{"ok": true, "pid", "loops": [...]}`` with one entry per
monitored loop, or ``{"ok": false, "error": text}``.
- ``dump`` builds ``task_tree(loop)`` on the loop's own thread (``call_soon_threadsafe``,
  waited for with a timeout, 2 s by default). A loop that does not answer in time is stalled:
  its entry says so and carries the loop thread's current Python stack
  (``sys._current_frames()``), which is where it is stuck.
- ``metrics`` reads ``loop.metrics().as_dict()`` from the server thread (the core publishes
  its counters for other threads once per iteration, without a lock) and the live task count;
  a stalled loop still answers.

Invariants: the server runs in one daemon thread (plus one per client connection), never on a
loop's thread, and touches a loop only through ``call_soon_threadsafe``, ``metrics()``,
``is_running``/``is_closed`` and ``asyncio.all_tasks`` (which asyncio makes safe to call from
another thread by retrying its copy of the task set; ``_tasks.live_tasks`` adds 3.14's Python
task registry, retried the same way). The socket file exists exactly while at
least one monitored loop is open: the server removes it when the last one closes (checked every
``_POLL_S``), on ``disable()``, and at process exit; a forked child starts with no monitor.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import stat
import struct
import sys
import threading
import traceback
import weakref
from asyncio import AbstractEventLoop, events
from typing import Any

from ._tasks import live_tasks, task_tree

__all__ = ["disable", "enable", "socket_path"]

ENV_VAR = "OXLOOP_MONITOR"
_POLL_S = 0.2  # how often the server notices closed loops
_DUMP_TIMEOUT_S = 2.0
_MAX_REQUEST = 64 * 1024


def socket_dir() -> str:
    """The directory of monitor sockets for this user (not created here)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "oxloop")
    return os.path.join("/tmp", f"oxloop-{os.getuid()}")


def socket_path(pid: int | None = None) -> str:
    """Path of the monitor socket of process ``pid`` (default: this process)."""
    return os.path.join(socket_dir(), f"{os.getpid() if pid is None else pid}.sock")


def _private_dir(path: str) -> None:
    """Create ``path`` mode 0700, or check that the existing one is ours and private."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _peer_uid(conn: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):  # pragma: no cover - Linux has it
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _thread_name(ident: int | None) -> str | None:
    if ident is None:
        return None
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return None


class _Server:
    def __init__(self, path: str, loop: AbstractEventLoop) -> None:
        self.path = path
        # Set before the thread starts: it stops as soon as it sees no open loop.
        self.loops: list[weakref.ref[AbstractEventLoop]] = [weakref.ref(loop)]
        self.lock = threading.Lock()
        _private_dir(os.path.dirname(path))
        try:
            os.unlink(path)  # a stale socket of a dead process that had our pid
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
            os.chmod(path, 0o600)
            self.sock.listen(8)
        except BaseException:
            self.sock.close()
            raise
        self.stat = os.stat(path)
        self.wake_r, self.wake_w = os.pipe()
        self.closing = False
        self.thread = threading.Thread(target=self._serve, name="oxloop-monitor", daemon=True)
        self.thread.start()

    # -- lifetime ---------------------------------------------------------------------------

    def add(self, loop: AbstractEventLoop) -> None:
        with self.lock:
            if not any(ref() is loop for ref in self.loops):
                self.loops.append(weakref.ref(loop))

    def live_loops(self) -> list[AbstractEventLoop]:
        with self.lock:
            alive = [lp for lp in (ref() for ref in self.loops) if lp is not None]
            alive = [lp for lp in alive if not lp.is_closed()]
            self.loops = [weakref.ref(lp) for lp in alive]
            return alive

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass
        if threading.current_thread() is not self.thread:
            self.thread.join(5)
        self._remove_file()

    def _remove_file(self) -> None:
        # Only our own socket: another process may have taken the path since (pid reuse).
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == (self.stat.st_dev, self.stat.st_ino):
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        try:
            while not self.closing:
                listen_fd = self.sock.fileno()
                ready, _, _ = select.select([listen_fd, self.wake_r], [], [], _POLL_S)
                if listen_fd in ready:
                    try:
                        conn, _ = self.sock.accept()
                    except OSError:
                        continue
                    threading.Thread(
                        target=self._client, args=(conn,), name="oxloop-monitor-client", daemon=True
                    ).start()
                if not self.live_loops():
                    break
        finally:
            self.closing = True
            self.sock.close()
            self._remove_file()
            os.close(self.wake_r)
            os.close(self.wake_w)
            _forget(self)

    # -- requests ---------------------------------------------------------------------------

    def _client(self, conn: socket.socket) -> None:
        with conn:
            uid = _peer_uid(conn)
            if uid is not None and uid not in (os.getuid(), 0):
                return
            rfile = conn.makefile("rb")
            while not self.closing:
                line = rfile.readline(_MAX_REQUEST)
                if not line:
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    reply = self.handle(request)
                except Exception as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                try:
                    conn.sendall(json.dumps(reply, default=repr).encode() + b"\n")
                except OSError:
                    return

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        timeout = float(request.get("timeout", _DUMP_TIMEOUT_S))
        loops = self.live_loops()
        if cmd == "dump":
            entries = [self._dump(lp, timeout) for lp in loops]
        elif cmd == "metrics":
            entries = [self._metrics(lp) for lp in loops]
        elif cmd == "info":
            entries = [_describe(lp) for lp in loops]
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        return {"ok": True, "pid": os.getpid(), "loops": entries}

    def _dump(self, loop: AbstractEventLoop, timeout: float) -> dict[str, Any]:
        entry = _describe(loop)
        if not loop.is_running():
            entry["error"] = "the loop is not running"
            return entry
        done = threading.Event()
        result: list[Any] = []

        def build() -> None:
            try:
                result.append(("tree", task_tree(loop)))
            except BaseException as exc:  # reported to the client, not to the loop
                result.append(("error", "".join(traceback.format_exception_only(exc)).strip()))
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(build)
        except RuntimeError as exc:  # closed meanwhile
            entry["error"] = str(exc)
            return entry
        if not done.wait(timeout):
            entry["error"] = "stalled"
            entry["message"] = (
                f"the loop did not run a callback within {timeout:g} s: "
                "it is blocked in a callback or a task step"
            )
            entry["stack"] = _thread_stack(getattr(loop, "_thread_id", None))
            return entry
        kind, value = result[0]
        entry[kind] = value
        return entry

    def _metrics(self, loop: AbstractEventLoop) -> dict[str, Any]:
        entry = _describe(loop)
        metrics = getattr(loop, "metrics", None)
        if metrics is None:
            entry["error"] = f"{type(loop).__name__} has no metrics()"
        else:
            entry["metrics"] = metrics().as_dict()
        try:
            entry["tasks"] = len(live_tasks(loop))
        except RuntimeError:  # the task set kept changing under us; asyncio gives up too
            entry["tasks"] = None
        return entry


def _describe(loop: AbstractEventLoop) -> dict[str, Any]:
    ident = getattr(loop, "_thread_id", None)
    return {
        "loop_id": id(loop),
        "loop": type(loop).__name__,
        "running": loop.is_running(),
        "thread": _thread_name(ident),
    }


def _thread_stack(ident: int | None) -> list[dict[str, Any]]:
    frame = sys._current_frames().get(ident) if ident is not None else None
    stack = traceback.extract_stack(frame) if frame is not None else []
    return [{"function": f.name, "file": f.filename, "line": f.lineno} for f in stack]


_server: _Server | None = None
_server_lock = threading.Lock()


def _forget(server: _Server) -> None:
    global _server
    with _server_lock:
        if _server is server:
            _server = None


def enable(loop: AbstractEventLoop | None = None) -> str:
    """Serve ``loop`` (default: the running loop) on this process's monitor socket, starting
    the server if needed; returns the socket's path. Enabling a loop twice is harmless."""
    global _server
    if loop is None:
        loop = events._get_running_loop()
        if loop is None:
            raise RuntimeError("no running event loop: pass the loop to monitor")
    if loop.is_closed():
        raise RuntimeError("Event loop is closed")
    with _server_lock:
        if _server is None or _server.closing:
            _server = _Server(socket_path(), loop)
        else:
            _server.add(loop)
        return _server.path


def disable() -> None:
    """Stop the monitor of this process and remove its socket (no-op when not enabled)."""
    with _server_lock:
        server = _server
    if server is not None:
        server.close()
        _forget(server)


def _autostart(loop: AbstractEventLoop) -> None:
    """Called by ``Loop.run_forever``: enable the monitor when ``OXLOOP_MONITOR`` asks for it."""
    if os.environ.get(ENV_VAR, "") in ("", "0"):
        return
    server = _server
    if server is not None and not server.closing and any(r() is loop for r in server.loops):
        return
    try:
        enable(loop)
    except OSError as exc:
        # The program runs on without a monitor; say why once per loop start.
        sys.stderr.write(f"oxloop: {ENV_VAR} is set but the monitor could not start: {exc}\n")


def _reset_after_fork() -> None:
    # The server thread does not exist in the child, and the socket is the parent's: the
    # child closes its copies of the fds (the parent's stay open) and starts without a monitor.
    global _server, _server_lock
    if _server is not None:
        for close in (
            _server.sock.close,
            lambda: os.close(_server.wake_r),
            lambda: os.close(_server.wake_w),
        ):
            try:
                close()
            except OSError:
                pass
    _server = None
    _server_lock = threading.Lock()


atexit.register(disable)
os.register_at_fork(after_in_child=_reset_after_fork)


# -- client side (python -m oxloop dump/top) -------------------------------------------------


class MonitorError(Exception):
    """The monitored process could not be reached or refused the request."""


class Client:
    """A connection to the monitor socket of process ``pid``."""

    def __init__(self, pid: int, timeout: float = 10.0) -> None:
        self.pid = pid
        path = socket_path(pid)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise MonitorError(
                f"no oxloop monitor for process {pid} (no socket at {path}): start the program "
                f"with {ENV_VAR}=1 or call oxloop.monitor.enable()"
            ) from exc
        self.rfile = self.sock.makefile("rb")

    def request(self, cmd: str, **params: Any) -> dict[str, Any]:
        try:
            self.sock.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
            line = self.rfile.readline()
        except OSError as exc:
            raise MonitorError(f"process {self.pid}: {exc}") from exc
        if not line:
            raise MonitorError(f"process {self.pid} closed the monitor connection")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise MonitorError(f"process {self.pid}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

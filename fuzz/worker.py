"""The fuzzer's child process: runs programs on one loop kind and reports each step's outcome.

``python -m fuzz.worker oxloop|asyncio``. The driver writes pickled programs (``fuzz/program.py``)
to stdin, length-prefixed; for each, this process builds a fresh loop and the resources the
program names (sockets, pipes, fds, callbacks, protocol factories, all made lazily), runs every
step and writes back ``("step", i, outcome)`` as soon as the step ends, so that after a crash the
driver knows which call took the process down; then ``("done", events)``, the sorted set of
callback, protocol and exception-handler events seen. An outcome is one of
``("ok", type name)``, ``("raise", exception type name)``, ``("timeout",)`` (a coroutine that did
not finish within COROUTINE_TIMEOUT, the same on both loops for an operation that waits for a
peer), ``("skip", why)``; crashes and hangs are seen by the driver.

Everything here must give the same answer on both loops for the same behaviour, so what differs
between two processes is normalised away: fd numbers are never reported; every named socket,
pipe and file sits at the same fd number in both workers, low numbers are /dev/null in both and
a "closed fd" is a high number that nothing reopens; each worker has a network namespace of its
own (a port one binds is free for the other); host names other than numeric ones and
``localhost`` fail at once (no DNS); a child that exits at once is waited for; and a result is
reported by the first class of its MRO outside oxloop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import fcntl
import gc
import logging
import os
import pickle
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from typing import Any

# A coroutine method gets this long to finish; one waiting for a peer that never comes times
# out on both loops alike. Short, because many generated calls wait.
COROUTINE_TIMEOUT = 0.25
# run_forever / run_until_complete are called with a stop() due after this long.
RUN_WATCHDOG = 0.25
# A closed fd number: a pipe is dup2'ed there and closed, and nothing opens that many fds.
CLOSED_FD = 900
# The end of a program runs the loop this long: the callbacks due by then run on both loops
# (the generated timer delays are 0, 0.001 or far beyond it).
FLUSH = 0.01
# Every named socket, pipe and file gets the same fd number in both workers (the loops' own fds
# differ in number, so the lowest free fd would too): generated calls use fd numbers as signal
# numbers, sizes or delays as well, where a different number is a different call.
FIXED_FD = {
    name: 600 + i
    for i, name in enumerate(
        "pair_a pair_b blocking blocking_peer listener tcp connected accepted udp unix_listener"
        " subclass subclass_peer pipe_r pipe_w file fileobj_pipe_r fileobj_pipe_w".split()
    )
}
# fds below this are /dev/null in both workers (see main()); the protocol's pipe is above them.
LOW_FDS = 128
PROTOCOL_FD = 590
# Thread-mode calls are joined for this long (a call that blocks longer is a "thread-hang").
THREAD_JOIN = 5.0


def type_name(x: Any) -> str:
    """The first class of x's MRO defined outside oxloop: oxloop's subclasses of asyncio's
    transports report as asyncio's."""
    for cls in type(x).__mro__:
        if not cls.__module__.startswith("oxloop"):
            return cls.__name__
    return type(x).__name__  # pragma: no cover - object is always last


def result_kind(r: Any) -> tuple:
    if r is None or isinstance(r, bool):
        return ("ok", repr(r))
    if isinstance(r, tuple) and len(r) <= 3:
        return ("ok", "tuple(" + ",".join(type_name(x) for x in r) + ")")
    return ("ok", type_name(r))


_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, port, *args, **kwargs):
    # No DNS: a generated host name would query the network (slow, and not the same answer
    # twice). Numeric hosts, None and localhost resolve as usual.
    h = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    if isinstance(h, str) and h not in ("localhost", ""):
        try:
            import ipaddress

            ipaddress.ip_address(h.partition("%")[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return _real_getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    return asyncio.SelectorEventLoop()


class CountingSocket(socket.socket):
    """A socket subclass whose recv/send are overridden (a wrapper that counts I/O)."""

    def recv(self, n, *a):
        _current.events.add(("subclass-recv",))
        return super().recv(n, *a)

    def send(self, data, *a):
        _current.events.add(("subclass-send",))
        return super().send(data, *a)


class RecordingProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        _current.events.add(("proto", "connection_made"))

    def data_received(self, data):
        _current.events.add(("proto", "data_received"))

    def eof_received(self):
        _current.events.add(("proto", "eof_received"))

    def connection_lost(self, exc):
        _current.events.add(("proto", "connection_lost", type_name(exc)))

    def pause_writing(self):
        _current.events.add(("proto", "pause_writing"))

    def resume_writing(self):
        _current.events.add(("proto", "resume_writing"))


class RecordingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(64)

    def connection_made(self, transport):
        _current.events.add(("bproto", "connection_made"))

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        _current.events.add(("bproto", "buffer_updated"))

    def eof_received(self):
        _current.events.add(("bproto", "eof_received"))

    def connection_lost(self, exc):
        _current.events.add(("bproto", "connection_lost", type_name(exc)))


class RecordingDatagramProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        _current.events.add(("dproto", "connection_made"))

    def datagram_received(self, data, addr):
        _current.events.add(("dproto", "datagram_received"))

    def error_received(self, exc):
        _current.events.add(("dproto", "error_received", type_name(exc)))

    def connection_lost(self, exc):
        _current.events.add(("dproto", "connection_lost", type_name(exc)))


class RecordingSubprocessProtocol(asyncio.SubprocessProtocol):
    def connection_made(self, transport):
        _current.events.add(("sproto", "connection_made"))

    def pipe_data_received(self, fd, data):
        _current.events.add(("sproto", "pipe_data_received", fd))

    def pipe_connection_lost(self, fd, exc):
        _current.events.add(("sproto", "pipe_connection_lost", fd, type_name(exc)))

    def process_exited(self):
        _current.events.add(("sproto", "process_exited"))

    def connection_lost(self, exc):
        _current.events.add(("sproto", "connection_lost", type_name(exc)))


class RaisingProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        raise ValueError("connection_made")

    def data_received(self, data):
        raise ValueError("data_received")


def _raising_factory():
    raise ValueError("factory")


PROTOCOL_FACTORIES = {
    "proto": RecordingProtocol,
    "buffered": RecordingBufferedProtocol,
    "datagram": RecordingDatagramProtocol,
    "subprocess": RecordingSubprocessProtocol,
    "raising": RaisingProtocol,
    "factory_raises": _raising_factory,
    "returns_none": lambda: None,
}


class BytesSub(bytes):
    pass


class BytearraySub(bytearray):
    pass


def weird_buffer(name: str):
    """Buffers the native paths must refuse or handle as socket.send / recv_into do."""
    import array

    if name == "strided":
        return memoryview(bytearray(b"abcdefgh" * 4))[::2]
    if name == "2d":
        return memoryview(bytearray(16)).cast("B", (4, 4))
    if name == "ints":
        return memoryview(array.array("i", [1, 2, 3]))
    if name == "released":
        m = memoryview(bytearray(8))
        m.release()
        return m
    if name == "bytes_sub":
        return BytesSub(b"data")
    if name == "bytearray_sub":
        return BytearraySub(16)
    if name == "array":
        return array.array("b", [1, 2, 3, 4])
    raise KeyError(name)  # pragma: no cover


_current: Env


class Env:
    """One program's world: its loop, the resources its values name, and what was seen."""

    def __init__(self, kind: str) -> None:
        global _current
        _current = self
        self.kind = kind
        self.loop = new_loop(kind)
        self.loop.set_exception_handler(self._on_exception)
        self.events: set[tuple] = set()
        self.pool: dict[str, list] = {
            "transport": [],
            "server": [],
            "handle": [],
            "future": [],
            "socket": [],
            "protocol": [],
        }
        self.res: dict[tuple, Any] = {}
        self.closers: list = []
        self.tmp: str | None = None
        # A loop.stop() called from another thread while the loop runs lands in whichever
        # iteration the thread's timing gives it (see finish()).
        self.thread_stop = False

    # -- events --------------------------------------------------------------------------
    def _on_exception(self, loop, context):
        self.events.add(("exception-handler", type_name(context.get("exception"))))

    def _fn(self, name: str):
        ev = self.events
        loop = self.loop

        def noop(*args):
            ev.add(("fn", "noop", len(args)))

        def raises(*args):
            ev.add(("fn", "raise"))
            raise ValueError("callback")

        def stop(*args):
            ev.add(("fn", "stop"))
            loop.stop()

        def close(*args):
            ev.add(("fn", "close"))
            loop.close()

        def returns(*args):
            ev.add(("fn", "returns"))
            return 42

        def abort(*args):  # not generated: the driver's own tests crash a worker with it
            os.abort()

        def hang(*args):  # not generated: the driver's own tests hang a worker with it
            import time

            time.sleep(3600)

        async def coro_fn(*args):
            ev.add(("fn", "coro_fn"))

        return {
            "noop": noop,
            "raise": raises,
            "stop": stop,
            "close": close,
            "returns": returns,
            "coro_fn": coro_fn,
            "print": print,  # a builtin
            "abort": abort,
            "hang": hang,
        }[name]

    # -- resources -------------------------------------------------------------------------
    def _tmpdir(self) -> str:
        if self.tmp is None:
            self.tmp = tempfile.mkdtemp(prefix="oxfuzz-")
        return self.tmp

    def _own(self, obj):
        self.closers.append(obj)
        return obj

    def _fixed(self, s: socket.socket, name: str) -> socket.socket:
        """s, moved to fd FIXED_FD[name] (s is closed)."""
        fd = os.dup2(s.fileno(), FIXED_FD[name], inheritable=False)
        moved = type(s)(s.family, s.type, s.proto, fileno=fd)
        moved.settimeout(s.gettimeout())
        s.close()
        return self._own(moved)

    def _fixed_fd(self, fd: int, name: str) -> int:
        new = os.dup2(fd, FIXED_FD[name], inheritable=False)
        os.close(fd)
        self.closers.append(new)
        return new

    def sock(self, name: str) -> socket.socket:
        key = ("sock", name)
        if key in self.res:
            return self.res[key]
        if name in ("pair_a", "pair_b"):
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self.res[("sock", "pair_a")] = self._fixed(a, "pair_a")
            self.res[("sock", "pair_b")] = self._fixed(b, "pair_b")
            return self.res[key]
        if name == "blocking":
            # Blocking, as asyncio's debug mode refuses, but with a timeout: a sock_* call
            # on it blocks the loop's thread (on both loops), for a bounded time.
            a, b = socket.socketpair()
            a.settimeout(0.05)
            self._fixed(b, "blocking_peer")
            s = a
        elif name == "listener":
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            s.setblocking(False)
        elif name == "tcp":
            s = socket.socket()
            s.setblocking(False)
        elif name == "connected":
            lst = self.sock("listener")
            s = socket.create_connection(lst.getsockname())
            s.setblocking(False)
            self.res[("sock", "accepted")] = None  # accepted lazily below
        elif name == "accepted":
            self.sock("connected")
            lst = self.sock("listener")
            lst.setblocking(True)
            s = lst.accept()[0]
            lst.setblocking(False)
            s.setblocking(False)
        elif name == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        elif name == "unix_listener":
            s = socket.socket(socket.AF_UNIX)
            s.bind(os.path.join(self._tmpdir(), "listener.sock"))
            s.listen(16)
            s.setblocking(False)
        elif name == "closed":
            s = socket.socket()
            s.close()
            self.res[key] = s
            return s
        elif name == "subclass":
            a, b = socket.socketpair()
            s = CountingSocket(a.family, a.type, fileno=a.detach())
            s.setblocking(False)
            b.send(b"ping")
            self._fixed(b, "subclass_peer")
        else:  # pragma: no cover - a generator bug
            raise KeyError(name)
        s = self.res[key] = self._fixed(s, name)
        return s

    def fd(self, name: str) -> int:
        if name in ("pipe_r", "pipe_w"):
            if ("fd", "pipe_r") not in self.res:
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self.res[("fd", "pipe_r")] = self._fixed_fd(r, "pipe_r")
                self.res[("fd", "pipe_w")] = self._fixed_fd(w, "pipe_w")
            return self.res[("fd", name)]
        if name == "closed":
            r, w = os.pipe()
            os.dup2(r, CLOSED_FD)
            for f in (r, w, CLOSED_FD):
                os.close(f)
            return CLOSED_FD
        if name == "file":
            if ("fd", "file") not in self.res:
                path = os.path.join(self._tmpdir(), "data")
                with open(path, "wb") as f:
                    f.write(b"x" * 1000)
                self.res[("fd", "file")] = self._fixed_fd(os.open(path, os.O_RDONLY), "file")
            return self.res[("fd", "file")]
        return self.sock(name).fileno()

    def fileobj(self, name: str):
        if name in ("pipe_r", "pipe_w"):
            key = ("fileobj", name)
            if key not in self.res:
                fd = os.dup2(self.fd(name), FIXED_FD["fileobj_" + name], inheritable=False)
                self.res[key] = self._own(open(fd, "rb" if name == "pipe_r" else "wb", buffering=0))
            return self.res[key]
        if name in ("file_rb", "file_text"):
            self.fd("file")
            f = open(os.path.join(self._tmpdir(), "data"), "rb" if name == "file_rb" else "r")
            return self._own(f)
        if name == "closed_file":
            f = open(os.devnull, "rb")
            f.close()
            return f
        raise KeyError(name)  # pragma: no cover

    def addr(self, name: str):
        if name == "listener":
            return self.sock("listener").getsockname()
        if name == "udp":
            return self.sock("udp").getsockname()
        if name == "unix":
            return self.sock("unix_listener").getsockname()
        if name == "unix_fresh":
            return os.path.join(self._tmpdir(), f"s{len(self.closers)}.sock")
        if name == "nowhere":
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            a = s.getsockname()
            s.close()
            return a
        raise KeyError(name)  # pragma: no cover

    def resolve(self, v):
        tag = v[0]
        if tag == "c":
            return v[1]
        if tag == "loop":
            if v[1] == "self":
                return self.loop
            lp = new_loop(self.kind)
            self.closers.append(lp)
            if v[1] == "closed":
                lp.close()
            return lp
        if tag == "sock":
            return self.sock(v[1])
        if tag == "fd":
            return self.fd(v[1])
        if tag == "fileobj":
            return self.fileobj(v[1])
        if tag == "addr":
            return self.addr(v[1])
        if tag == "port":
            return self.addr(v[1])[1]
        if tag == "fn":
            return self._fn(v[1])
        if tag == "proto":
            return PROTOCOL_FACTORIES[v[1]]
        if tag == "protoinst":
            return PROTOCOL_FACTORIES[v[1]]()
        if tag == "coro":
            return self.coro(v[1])
        if tag == "fut":
            return self.future(v[1])
        if tag == "pool":
            items = self.pool[v[1]]
            if not items:
                raise LookupError("empty pool")
            return items[v[2] % len(items)]
        if tag == "buf":
            return bytearray(v[1])
        if tag == "memview":
            return memoryview(bytearray(v[1]))
        if tag == "robuf":
            return memoryview(b"x" * v[1])
        if tag == "weirdbuf":
            return weird_buffer(v[1])
        if tag == "list":
            return [self.resolve(x) for x in v[1]]
        if tag == "tuple":
            return tuple(self.resolve(x) for x in v[1])
        if tag == "dict":
            return {k: self.resolve(x) for k, x in v[1]}
        if tag == "obj":
            return object()
        if tag == "exc":
            return ValueError("generated")
        if tag == "ctx":
            return contextvars.copy_context()
        if tag == "executor":
            ex = concurrent.futures.ThreadPoolExecutor(1)
            self.closers.append(ex)
            if v[1] == "shutdown":
                ex.shutdown()
            return ex
        if tag == "sslctx":
            if v[1] == "client":
                return ssl.create_default_context()
            return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if tag == "exe":
            return {
                "true": shutil.which("true") or "/bin/true",
                "cat": shutil.which("cat") or "/bin/cat",
                "python": sys.executable,
                "missing": "/nonexistent/program",
            }[v[1]]
        if tag == "pipeconst":
            return {
                "PIPE": subprocess.PIPE,
                "DEVNULL": subprocess.DEVNULL,
                "STDOUT": subprocess.STDOUT,
            }[v[1]]
        raise KeyError(tag)  # pragma: no cover - a generator bug

    def coro(self, name: str):
        loop = self.loop

        async def value():
            return 1

        async def raises():
            raise ValueError("coro")

        async def sleep0():
            await asyncio.sleep(0)

        async def forever():
            await loop.create_future()

        if name == "sock_recv":
            return loop.sock_recv(self.sock("pair_a"), 100)
        if name == "sock_accept":
            return loop.sock_accept(self.sock("listener"))
        if name == "sock_sendall_big":  # fills the socket buffer, then waits for the peer
            return loop.sock_sendall(self.sock("pair_b"), b"x" * (4 << 20))
        return {"value": value, "raise": raises, "sleep0": sleep0, "forever": forever}[name]()

    def future(self, name: str):
        if name == "foreign":
            lp = new_loop(self.kind)
            self.closers.append(lp)
            return lp.create_future()
        f = self.loop.create_future()
        if name == "done":
            f.set_result(1)
        elif name == "cancelled":
            f.cancel()
        elif name == "exc":
            f.set_exception(ValueError("fut"))
        return f

    # -- running a step ----------------------------------------------------------------
    def pool_add(self, r) -> None:
        for x in r if isinstance(r, tuple) else (r,):
            if isinstance(x, asyncio.BaseTransport):
                self.pool["transport"].append(x)
            elif isinstance(x, asyncio.AbstractServer):
                self.pool["server"].append(x)
            elif isinstance(x, asyncio.Handle):
                self.pool["handle"].append(x)
            elif asyncio.isfuture(x):
                self.pool["future"].append(x)
            elif isinstance(x, socket.socket):
                self._own(x)
                self.pool["socket"].append(x)
            elif isinstance(x, asyncio.BaseProtocol):
                self.pool["protocol"].append(x)

    def step(self, step) -> tuple:
        mode, target, method, kind, args, kwargs = step
        if target[0] == "pool" and not self.pool[target[1]]:
            return ("skip", "empty pool")
        loop = self.loop
        if mode in ("running", "thread_running") and (loop.is_closed() or loop.is_running()):
            return ("skip", "loop closed")
        try:
            obj = self.resolve(target)
            a = [self.resolve(x) for x in args]
            kw = {k: self.resolve(x) for k, x in kwargs}
        except Exception as e:
            return ("skip", "resolve " + type_name(e))

        if mode in ("thread", "thread_running") and method == "stop":
            self.thread_stop = True

        def call():
            attr = getattr(obj, method)
            return attr if kind == "attr" else attr(*a, **kw)

        watchdog = None
        if (
            method in ("run_forever", "run_until_complete")
            and not loop.is_closed()
            and not loop.is_running()
        ):
            try:
                watchdog = loop.call_later(RUN_WATCHDOG, loop.stop)
            except Exception as e:  # asyncio's heap holds a non-number deadline (call_at)
                return ("driver-raise", type_name(e))
        try:
            if mode == "direct":
                out = self._settle_direct(call)
                if method.startswith("subprocess_") and ("exe", "true") in args and out[0] == "ok":
                    self._settle_exit()
                return out
            if mode == "running":
                return self._run(self._settle_running(call))
            return self._thread(call, running=mode == "thread_running")
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _settle_exit(self) -> None:
        """Run the loop until the child that exits at once (``true``) has been seen to exit:
        oxloop's pidfd notices an exit sooner than asyncio's child watcher, and a program that
        closes its loop next would otherwise see the exit on one loop only."""
        loop = self.loop
        tr = self.pool["transport"][-1] if self.pool["transport"] else None
        if tr is None or not hasattr(tr, "get_returncode") or loop.is_closed():
            return
        try:
            for _ in range(200):
                if tr.get_returncode() is not None:
                    break
                loop.run_until_complete(asyncio.sleep(0.005))
            loop.run_until_complete(asyncio.sleep(0.01))
        except BaseException as e:  # a generated task factory or stop(): as the final run
            self.events.add(("flush-raise", type_name(e)))

    def _run(self, coro) -> tuple:
        try:
            task = self.loop.create_task(coro)
        except BaseException as e:
            coro.close()
            return ("driver-raise", type_name(e))
        try:
            return self.loop.run_until_complete(task)
        except BaseException as e:
            # The loop stopped first (a generated stop()): the task is cancelled, and the
            # final run lets it end. (A generated task factory may have returned anything.)
            if asyncio.isfuture(task):
                task.cancel()
            else:
                coro.close()
            return ("driver-raise", type_name(e))

    def _settle_direct(self, call) -> tuple:
        try:
            r = call()
        except BaseException as e:
            return ("raise", type_name(e))
        if asyncio.iscoroutine(r):
            loop = self.loop
            if loop.is_closed() or loop.is_running():
                r.close()
                return ("ok", "coroutine (loop closed)")
            return self._run(self._await(r))
        self.pool_add(r)
        return result_kind(r)

    async def _await(self, r) -> tuple:
        try:
            res = await asyncio.wait_for(r, COROUTINE_TIMEOUT)
        except asyncio.TimeoutError:
            return ("timeout",)
        except BaseException as e:
            return ("raise", type_name(e))
        self.pool_add(res)
        return result_kind(res)

    async def _settle_running(self, call) -> tuple:
        try:
            r = call()
        except BaseException as e:
            return ("raise", type_name(e))
        if asyncio.iscoroutine(r):
            return await self._await(r)
        self.pool_add(r)
        return result_kind(r)

    def _thread(self, call, running: bool) -> tuple:
        box: list = []

        def body():
            try:
                r = call()
            except BaseException as e:
                box.append(("raise", type_name(e)))
                return
            if asyncio.iscoroutine(r):
                r.close()
                box.append(("ok", "coroutine (from a thread)"))
                return
            self.pool_add(r)
            box.append(result_kind(r))

        th = threading.Thread(target=body, daemon=True)
        if running:

            async def host():
                th.start()
                for _ in range(int(THREAD_JOIN / 0.005)):
                    if not th.is_alive():
                        break
                    await asyncio.sleep(0.005)

            outcome = self._run(host())
            if th.ident is None:  # the loop stopped before the host coroutine started it
                return outcome
        else:
            th.start()
        th.join(THREAD_JOIN)
        if th.is_alive():
            return ("thread-hang",)
        return box[0]

    def finish(self) -> list:
        """Let ready callbacks and short timers run, then release everything."""
        loop = self.loop
        if not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(asyncio.sleep(FLUSH))
            except RuntimeError as e:
                # After a stop() from another thread, whether a stop is still pending here is
                # timing on either loop: when the thread's stop() lands in the iteration where
                # the host coroutine ends, the run that hosted it leaves its
                # _run_until_complete_cb (a loop.stop()) queued, and this run picks it up and
                # ends at once. That run consumed it: flush again, and count what happens then.
                if not self.thread_stop:
                    self.events.add(("flush-raise", type_name(e)))
                else:
                    try:
                        loop.run_until_complete(asyncio.sleep(FLUSH))
                    except BaseException as e:
                        self.events.add(("flush-raise", type_name(e)))
            except BaseException as e:
                self.events.add(("flush-raise", type_name(e)))
        events = sorted(self.events, key=repr)
        for tr in self.pool["transport"]:
            try:
                tr.abort() if hasattr(tr, "abort") else tr.close()
            except BaseException:
                pass
        for srv in self.pool["server"]:
            try:
                srv.close()
            except BaseException:
                pass
        if not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(asyncio.sleep(0))
            except BaseException:
                pass
        try:
            loop.close()
        except BaseException:
            pass
        for c in reversed(self.closers):
            try:
                if isinstance(c, int):
                    os.close(c)
                elif isinstance(c, concurrent.futures.Executor):
                    c.shutdown(wait=False)
                else:
                    c.close()
            except BaseException:
                pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return events


def isolate_network() -> None:
    """A network namespace of this process's own, with its loopback up, where the kernel
    allows it (root): the two workers run at once, and a generated port number would otherwise
    be bound by one of them and busy for the other. Nothing here can reach another host."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET (sched.h)
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # SIOCGIFFLAGS / SIOCSIFFLAGS on "lo" with IFF_UP (netdevice(7)).
        ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))


def main() -> None:
    kind = sys.argv[1]
    isolate_network()
    warnings.simplefilter("ignore")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    inp = sys.stdin.buffer
    out = os.fdopen(fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, PROTOCOL_FD), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    # Low fd numbers are the same file in both workers: the loops' own fds (asyncio's epoll
    # and self-pipe, oxloop's epoll and eventfd) come after these, so that a generated small
    # int names /dev/null in both, never one loop's internal fd.
    for fd in range(3, LOW_FDS):
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if new != fd:
                os.dup2(new, fd, inheritable=False)
                os.close(new)
    # A generated add_signal_handler(SIGINT, ...) and friends must not stop this process.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)

    def send(obj) -> None:
        data = pickle.dumps(obj)
        out.write(struct.pack("<I", len(data)) + data)
        out.flush()

    send(("ready", kind, sys.version))
    while True:
        hdr = inp.read(4)
        if len(hdr) < 4:
            return
        prog = pickle.loads(inp.read(struct.unpack("<I", hdr)[0]))
        env = Env(kind)
        try:
            for i, step in enumerate(prog):
                send(("step", i, env.step(step)))
            send(("done", env.finish()))
        except BaseException:
            send(("worker-error", traceback.format_exc()))
            return
        del env
        gc.collect()


if __name__ == "__main__":
    main()

"""Subprocesses: subprocess_exec/subprocess_shell, asyncio.subprocess.Process, the transport.

Every test runs on stock asyncio and on oxloop (conftest). Covered: the Popen argument matrix
(stdin/stdout/stderr as PIPE, DEVNULL, STDOUT, an fd, a file object; cwd, env, pass_fds,
close_fds, start_new_session, process_group, user/group/extra_groups, umask, preexec_fn,
restore_signals, pipesize); communicate/wait/send_signal/terminate/kill/returncode and stdin
write/drain/close; the subprocess transport and protocol (methods, callback order, close);
faults (missing program, permission denied, killed by a signal, stdin closed early by the child,
hundreds of MB of output with bounded memory, 1,000 children at once, cancelled spawn, loop
closed with children running); the user's SIGCHLD disposition left alone; no DeprecationWarning;
a loop in a worker thread; oxloop's fallback without pidfds.

The single behaviour that differs (a child still running when the loop closes is reaped by
oxloop, while stock asyncio 3.12+ leaves a zombie) is asserted per loop, as in
test_divergences.py, and listed in docs/compatibility.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import inspect
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
from _helpers import PY

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix subprocesses")

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
PYTHON = sys.executable
# How many children the "many at once" test starts (the issue asks for 1,000; it takes about a
# second per loop on 2 cores).
MANY = int(os.environ.get("OXLOOP_TEST_CHILDREN", "1000"))


def py(code: str, *args: str) -> tuple[str, ...]:
    """argv running `code` in this interpreter, isolated from the user's site and env hooks."""
    return (PYTHON, "-I", "-c", code, *args)


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat ('Z' for a zombie), None once the pid is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def my_children() -> set[int]:
    """Pids of this process's children (of all its threads), from /proc."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


def wait_state(pid: int, want: set[str | None], timeout: float = 10.0) -> str | None:
    """Poll /proc until the child's state is in `want` (the reaper is a thread: no event to
    wait on); returns the last state seen."""
    deadline = time.monotonic() + timeout
    state = proc_state(pid)
    while state not in want and time.monotonic() < deadline:
        time.sleep(0.002)
        state = proc_state(pid)
    return state


async def output_of(*argv: str, **kw) -> tuple[bytes, int]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=PIPE, **kw)
    out, _ = await proc.communicate()
    return out, proc.returncode


# -- the Process API -------------------------------------------------------------------------


def test_communicate_round_trip(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert proc.returncode is None
        out, err = await proc.communicate(b"hello\n" * 1000)
        return out, err, proc.returncode

    assert run(main()) == (b"hello\n" * 1000, b"", 0)


def test_exit_codes_and_stderr(run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stderr.write('oops'); sys.exit(7)"), stderr=PIPE
        )
        _, err = await proc.communicate()
        return err, proc.returncode, await proc.wait()

    assert run(main()) == (b"oops", 7, 7)


def test_shell(run):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo $OX_VAR; exit 3", stdout=PIPE, env={"OX_VAR": "from-env"}
        )
        out, _ = await proc.communicate()
        return out, proc.returncode

    assert run(main()) == (b"from-env\n", 3)


def test_stdin_write_drain_close_and_readline(run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)"),
            stdin=PIPE,
            stdout=PIPE,
        )
        got = []
        for word in (b"one", b"two", b"three"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            got.append(await proc.stdout.readline())
        proc.stdin.close()
        await proc.stdin.wait_closed()
        assert await proc.stdout.read() == b""  # EOF once the child saw stdin's EOF
        return got, await proc.wait()

    assert run(main()) == ([b"ONE\n", b"TWO\n", b"THREE\n"], 0)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("send_signal", -signal.SIGUSR1),
        ("terminate", -signal.SIGTERM),
        ("kill", -signal.SIGKILL),
    ],
)
def test_signals_to_the_child(run, how, expected):
    async def main():
        # The child says when it runs, so the signal cannot arrive before Python's startup
        # has finished (and reset dispositions).
        proc = await asyncio.create_subprocess_exec(
            *py("import sys, time; print('up', flush=True); time.sleep(60)"), stdout=PIPE
        )
        assert await proc.stdout.readline() == b"up\n"
        if how == "send_signal":
            proc.send_signal(signal.SIGUSR1)
        else:
            getattr(proc, how)()
        return await proc.wait(), proc.returncode

    assert run(main()) == (expected, expected)


def test_killed_by_a_signal_it_sends_itself(run):
    async def main():
        proc = await asyncio.create_subprocess_shell("kill -SEGV $$")
        return await proc.wait()

    assert run(main()) == -signal.SIGSEGV


def test_wait_many_times_and_after_exit(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sh", "-c", "exit 4")
        first = await asyncio.gather(proc.wait(), proc.wait(), proc.wait())
        return first, await proc.wait()

    assert run(main()) == ([4, 4, 4], 4)


def test_signal_after_exit(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        # The transport drops its Popen in _call_connection_lost, which _process_exited
        # schedules with call_soon (base_subprocess). wait() returns at once when the exit was
        # already seen, before that callback ran (on either loop, depending on timing): one
        # turn of the loop runs it (the queue is FIFO).
        await asyncio.sleep(0)
        with pytest.raises(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            proc.kill()
        return proc.returncode

    assert run(main()) == 0


# -- the Popen arguments ---------------------------------------------------------------------


def test_devnull_and_stderr_to_stdout(run):
    code = "import sys; print(sys.stdin.read() == ''); print('err', file=sys.stderr)"

    async def main():
        return await output_of(*py(code), stdin=DEVNULL, stderr=STDOUT)

    out, rc = run(main())
    assert rc == 0
    assert sorted(out.split()) == [b"True", b"err"]


def test_stdout_to_devnull_has_no_reader(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("echo", "x", stdout=DEVNULL, stderr=DEVNULL)
        assert proc.stdout is None and proc.stderr is None and proc.stdin is None
        return await proc.wait()

    assert run(main()) == 0


def test_fds_and_file_objects(run, tmp_path):
    r, w = os.pipe()
    src = tmp_path / "in.txt"
    src.write_bytes(b"from a file\n")
    dst = tmp_path / "out.txt"

    async def main():
        # stdin from a file object, stdout to an fd (the write end of a pipe).
        with open(src, "rb") as fin:
            proc = await asyncio.create_subprocess_exec("cat", stdin=fin, stdout=w)
        os.close(w)
        rc1 = await proc.wait()
        # stdin from an fd, stdout to a file object, stderr to the same file via STDOUT.
        with open(dst, "wb") as fout:
            proc = await asyncio.create_subprocess_exec(
                *py("import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('E')"),
                stdin=r,
                stdout=fout,
                stderr=STDOUT,
            )
            rc2 = await proc.wait()
        os.close(r)
        return rc1, rc2

    assert run(main()) == (0, 0)
    assert dst.read_bytes() == b"from a file\nE"


def test_cwd_env_umask(run, tmp_path):
    code = "import os; print(os.getcwd()); print(os.environ['OX']); print(oct(os.umask(0)))"

    async def main():
        return await output_of(*py(code), cwd=tmp_path, env={"OX": "yes"}, umask=0o027)

    out, rc = run(main())
    assert rc == 0
    assert out.decode().split() == [str(tmp_path.resolve()), "yes", "0o27"]


def test_pass_fds_and_close_fds(run):
    r, w = os.pipe()
    write = "import os, sys; os.write(int(sys.argv[1]), b'via pass_fds')"
    probe = (
        "import os, sys\n"
        "try: os.fstat(int(sys.argv[1]))\n"
        "except OSError: print('closed')\n"
        "else: print('open')"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(write, str(w)), pass_fds=(w,))
        rc = await proc.wait()
        got = os.read(r, 100)
        # Not passed: closed in the child (close_fds=True is the default).
        os.set_inheritable(w, True)
        closed = await output_of(*py(probe, str(w)))
        # close_fds=False: an inheritable fd stays open.
        kept = await output_of(*py(probe, str(w)), close_fds=False)
        return rc, got, closed, kept

    try:
        assert run(main()) == (0, b"via pass_fds", (b"closed\n", 0), (b"open\n", 0))
    finally:
        os.close(r)
        os.close(w)


def test_start_new_session(run):
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"

    async def main():
        return await output_of(*py(code), start_new_session=True)

    assert run(main()) == (b"True True\n", 0)


@pytest.mark.skipif(PY < (3, 11), reason="Popen(process_group=) is new in 3.11")
def test_process_group(run):
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"

    async def main():
        return await output_of(*py(code), process_group=0)

    assert run(main()) == (b"False True\n", 0)


def test_preexec_fn_runs_in_the_child(run):
    async def main():
        with warnings.catch_warnings():
            # 3.12+ warns about preexec_fn when other threads run (the stock loop's watcher).
            warnings.simplefilter("ignore", DeprecationWarning)
            return await output_of("pwd", preexec_fn=lambda: os.chdir("/"))

    assert run(main()) == (b"/\n", 0)


def test_preexec_fn_failure(run):
    def fail():
        raise ValueError("in the child")

    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(subprocess.SubprocessError):
                await asyncio.create_subprocess_exec("true", preexec_fn=fail)

    run(main())


@pytest.mark.parametrize("restore", [True, False])
def test_restore_signals(run, restore):
    # Python ignores SIGPIPE; Popen(restore_signals=True) gives the child the default back.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN

    async def main():
        out, _ = await output_of("grep", "SigIgn", "/proc/self/status", restore_signals=restore)
        return int(out.split()[1], 16) & (1 << (signal.SIGPIPE - 1)) != 0

    assert run(main()) is (not restore)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user and groups needs root")
def test_user_group_extra_groups(run):
    async def main():
        return await output_of(
            "sh", "-c", "id -u; id -g; id -G", user=65534, group=65534, extra_groups=[65533]
        )

    out, rc = run(main())
    assert rc == 0
    uid, gid, groups = out.decode().splitlines()
    assert (uid, gid, sorted(groups.split())) == ("65534", "65534", ["65533", "65534"])


def test_pipesize(run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=PIPE, stdout=PIPE, pipesize=1 << 20
        )
        popen = proc._transport.get_extra_info("subprocess")
        size = fcntl.fcntl(popen.stdout.fileno(), 1032)  # F_GETPIPE_SZ
        proc.stdin.close()
        await proc.wait()
        return size

    assert run(main()) == 1 << 20


@pytest.mark.parametrize(
    "kw",
    [
        {"universal_newlines": True},
        {"text": True},
        {"encoding": "utf-8"},
        {"errors": "strict"},
        {"bufsize": 1},
        {"shell": True},
    ],
)
def test_rejected_arguments(run, kw):
    # base_events.subprocess_exec checks these before anything starts.
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec("true", **kw)

    run(main())


def test_shell_rejects_a_list(run, loop):
    async def main():
        with pytest.raises(ValueError, match="cmd must be a string"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])

    run(main())


# -- faults -----------------------------------------------------------------------------------


def test_missing_program(run):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/oxloop-no-such-program")
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("true", cwd="/nonexistent/dir")

    run(main())


def test_permission_denied(run, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # no x bit: EACCES even for root (execve(2))

    async def main():
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(script))
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(tmp_path))

    run(main())


def test_child_closes_stdin_early(run):
    async def main():
        # The child closes its stdin, says so, then lingers until we kill it.
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "exec 0<&-; echo closed; exec sleep 60", stdin=PIPE, stdout=PIPE
        )
        assert await proc.stdout.readline() == b"closed\n"
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(64):
                proc.stdin.write(b"x" * 65536)
                await proc.stdin.drain()
        proc.kill()
        return await proc.wait()

    assert run(main()) == -signal.SIGKILL


def test_communicate_ignores_a_child_that_does_not_read(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("true", stdin=PIPE, stdout=PIPE)
        # asyncio's _feed_stdin swallows BrokenPipeError / ConnectionResetError.
        out, _ = await proc.communicate(b"x" * (4 << 20))
        return out, proc.returncode

    assert run(main()) == (b"", 0)


def test_hundreds_of_megabytes_with_bounded_memory(run):
    total = 256 << 20

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "head", "-c", str(total), "/dev/zero", stdout=PIPE
        )
        got = 0
        peak = 0
        while True:
            # The StreamReader pauses the pipe above 2 * limit (64 KiB); one read is at most
            # max_size (256 KiB): what sits in the buffer stays small however fast the child is.
            peak = max(peak, len(proc.stdout._buffer))
            chunk = await proc.stdout.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        return got, peak, await proc.wait()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got, peak, rc = run(main())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert (got, rc) == (total, 0)
    assert peak <= 1 << 20
    assert grown_kib < 64 * 1024  # nowhere near the 256 MiB that went through


def test_many_children_at_once(run):
    async def main():
        procs = await asyncio.gather(
            *(asyncio.create_subprocess_exec("sh", "-c", f"exit {i % 7}") for i in range(MANY))
        )
        return await asyncio.gather(*(p.wait() for p in procs)), procs

    codes, procs = run(main())
    assert codes == [i % 7 for i in range(MANY)]
    assert all(proc_state(p.pid) is None for p in procs)  # all reaped


def test_cancelled_while_connecting_pipes_kills_and_reaps(run, loop):
    # As test_subprocess.test_cancel_make_subprocess_transport_exec: the child has started
    # when the spawn is cancelled; asyncio closes (kills) it and waits for its exit.
    async def main():
        before = my_children()
        task = asyncio.ensure_future(
            loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "60", stdout=PIPE)
        )
        await asyncio.sleep(0)  # the task's first step ran Popen; it now awaits the pipes
        started = my_children() - before
        assert len(started) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return started.pop()

    pid = run(main())
    assert proc_state(pid) is None  # killed and reaped before the CancelledError came out


def test_no_sigchld_handler_and_the_users_is_kept(run):
    seen = []
    previous = signal.signal(signal.SIGCHLD, lambda n, f: seen.append(n))
    try:
        mine = signal.getsignal(signal.SIGCHLD)

        async def main():
            out = await output_of("echo", "hi")
            return out, signal.getsignal(signal.SIGCHLD)

        assert run(main()) == ((b"hi\n", 0), mine)
        assert seen  # the user's handler still receives SIGCHLD
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_no_deprecation_warning(run):
    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return await output_of("echo", "quiet")

    assert run(main()) == (b"quiet\n", 0)


def test_loop_in_a_worker_thread(loop_factory):
    result = []

    def worker():
        lp = loop_factory()
        try:
            result.append(lp.run_until_complete(output_of("echo", "thread")))
        finally:
            lp.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join(30)
    assert result == [(b"thread\n", 0)]


# -- the transport and the protocol --------------------------------------------------------


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self, done: asyncio.Future) -> None:
        self.events: list[tuple] = []
        self.done = done

    def connection_made(self, transport):
        self.events.append(("connection_made",))

    def pipe_data_received(self, fd, data):
        if self.events[-1][:2] == ("data", fd):
            self.events[-1] = ("data", fd, self.events[-1][2] + data)
        else:
            self.events.append(("data", fd, data))

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited",))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", exc))
        self.done.set_result(None)


def test_transport_and_protocol(run, loop):
    async def main():
        done = loop.create_future()
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(done),
            *py("import sys; d = sys.stdin.read(); print(d); sys.stderr.write('e'); sys.exit(5)"),
        )
        pid = transport.get_pid()
        assert isinstance(pid, int) and pid > 0
        assert transport.get_returncode() is None
        popen = transport.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen) and popen.pid == pid
        assert transport.get_extra_info("nothing", "dflt") == "dflt"
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
        assert isinstance(transport.get_pipe_transport(2), asyncio.ReadTransport)
        assert transport.get_pipe_transport(3) is None
        stdin.write(b"ping")
        stdin.close()
        await done
        assert transport.get_returncode() == 5
        assert not transport.is_closing()
        transport.close()
        assert transport.is_closing()
        return proto.events

    events = run(main())
    assert events[0] == ("connection_made",)
    assert events[-1] == ("connection_lost", None)
    middle = events[1:-1]
    assert ("data", 1, b"ping\n") in middle and ("data", 2, b"e") in middle
    assert {e for e in middle if e[0] != "data"} == {
        ("pipe_lost", 0, None),
        ("pipe_lost", 1, None),
        ("pipe_lost", 2, None),
        ("exited",),
    }
    # Data on a pipe comes before that pipe's loss.
    assert middle.index(("data", 1, b"ping\n")) < middle.index(("pipe_lost", 1, None))


def test_transport_close_kills_a_running_child(run, loop):
    async def main():
        done = loop.create_future()
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(done), "sleep", "60", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL
        )
        transport.close()
        await done
        return transport.get_returncode(), proto.events

    rc, events = run(main())
    assert rc == -signal.SIGKILL
    assert events == [("connection_made",), ("exited",), ("connection_lost", None)]


def test_close_after_exit_does_not_signal(run, loop):
    async def main():
        done = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: Recorder(done),
            "sh",
            "-c",
            "exit 9",
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=DEVNULL,
        )
        await done
        transport.close()
        return transport.get_returncode()

    assert run(main()) == 9


# -- exit watching: loop close, fallback -----------------------------------------------------


def test_loop_closed_with_a_child_running(loop, loop_kind):
    """oxloop reaps a child that outlives its loop; stock asyncio 3.12+ (PidfdChildWatcher:
    the pidfd goes away with the selector) leaves it a zombie while its Popen lives, and 3.10
    and 3.11 (ThreadedChildWatcher: a thread per child) reap it."""
    r, w = os.pipe()

    async def main():
        # cat exits when we close the write end of its stdin.
        return await asyncio.create_subprocess_exec("cat", stdin=r, stdout=DEVNULL)

    proc = loop.run_until_complete(main())
    os.close(r)
    loop.close()
    assert proc_state(proc.pid) not in (None, "Z")
    os.close(w)
    if loop_kind == "asyncio" and PY >= (3, 12):
        assert wait_state(proc.pid, {"Z"}) == "Z"
        os.waitpid(proc.pid, 0)  # reap it ourselves
    else:
        assert wait_state(proc.pid, {None}) is None
    assert proc.returncode is None  # the closed loop could not tell the Process
    proc._transport.close()  # finds the child gone (Popen.poll): no kill, no ResourceWarning


def test_closed_loop_does_not_leave_zombies_after_kill(loop, loop_kind):
    """Same, with the child killed after close (as a transport's __del__ would)."""
    if loop_kind == "asyncio" and PY >= (3, 12):
        pytest.skip("stock asyncio 3.12+ leaves a zombie here (see the test above)")
    procs = loop.run_until_complete(
        asyncio.gather(*(asyncio.create_subprocess_exec("sleep", "60") for _ in range(5)))
    )
    loop.close()
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    assert [wait_state(p.pid, {None}) for p in procs] == [None] * 5
    for p in procs:
        p._transport.close()


def watchers_while_running(loop) -> tuple[int, set[str]]:
    """Start a child that waits for its stdin; while it runs, count the pidfds the loop polls
    and name the threads that appeared; then let it exit. Returns (pidfds, new thread names)."""
    r, w = os.pipe()

    async def main():
        threads_before = set(threading.enumerate())
        proc = await asyncio.create_subprocess_exec("sh", "-c", "read x; exit 6", stdin=r)
        pidfds = sum(
            os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
            for fd in loop._selector.get_map()
        )
        names = {t.name for t in set(threading.enumerate()) - threads_before}
        os.write(w, b"go\n")
        assert await proc.wait() == 6
        return pidfds, names

    try:
        return loop.run_until_complete(main())
    finally:
        os.close(r)
        os.close(w)


def test_exit_watched_by_a_pidfd_in_the_poller(loop, loop_kind):
    pidfds, names = watchers_while_running(loop)
    if loop_kind == "asyncio" and PY < (3, 12):
        assert (pidfds, len(names)) == (0, 1)  # ThreadedChildWatcher
    else:
        assert (pidfds, names) == (1, set())  # oxloop; stock PidfdChildWatcher on 3.12+


def test_exit_watching_without_pidfd(loop, loop_kind, monkeypatch):
    """oxloop's fallback (a waitpid thread per child, as ThreadedChildWatcher) where
    pidfd_open is missing or refused; stock asyncio is unaffected by the patch."""
    from oxloop import _subprocess

    monkeypatch.setattr(_subprocess, "_pidfd_ok", False)
    pidfds, names = watchers_while_running(loop)
    if loop_kind == "oxloop":
        assert pidfds == 0 and len(names) == 1 and names.pop().startswith("oxloop-waitpid-")

    async def main():
        out = await output_of("sh", "-c", "echo fallback; exit 2")
        procs = await asyncio.gather(*(asyncio.create_subprocess_exec("true") for _ in range(50)))
        return out, await asyncio.gather(*(p.wait() for p in procs))

    assert loop.run_until_complete(main()) == ((b"fallback\n", 2), [0] * 50)


def test_pidfd_open_failure_falls_back(run, monkeypatch):
    """pidfd_open can fail per call (EMFILE): that child gets a waitpid thread on oxloop."""
    from oxloop import _subprocess

    def refuse(pid, flags=0):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_subprocess, "_pidfd_open", refuse)
    monkeypatch.setattr(_subprocess, "_pidfd_ok", True)

    async def main():
        return await output_of("sh", "-c", "echo still; exit 1")

    assert run(main()) == (b"still\n", 1)


def test_someone_else_reaps_the_child(run, loop_kind, caplog):
    """A child reaped behind the loop's back (here by a blocking waitpid on the loop thread)
    has lost its status: the loop reports 255 and logs asyncio's warning."""
    if loop_kind == "asyncio" and PY < (3, 12):
        pytest.skip("ThreadedChildWatcher's thread races the test's waitpid")

    r, w = os.pipe()

    async def main():
        # The child exits only once told to, so the loop cannot see it exit early.
        proc = await asyncio.create_subprocess_exec("sh", "-c", "read x; exit 3", stdin=r)
        os.close(r)
        os.write(w, b"go\n")
        _, status = os.waitpid(proc.pid, 0)  # blocks the loop: it cannot reap first
        assert os.waitstatus_to_exitcode(status) == 3
        return await proc.wait()

    try:
        assert run(main()) == 255
    finally:
        os.close(w)
    assert any("returncode 255" in r.getMessage() for r in caplog.records)


def test_loop_collected_without_close(loop_factory, loop_kind):
    """A loop dropped without close() while its child runs. oxloop: the loop and the transport
    are collected (the transport's __del__ kills the child, as asyncio's does) and the loop's
    finalizer hands the child to the reaper."""
    if loop_kind == "asyncio" and PY >= (3, 12):
        pytest.skip("stock asyncio 3.12+ leaves a zombie here (see test_loop_closed_...)")
    lp = loop_factory()
    proc = lp.run_until_complete(asyncio.create_subprocess_exec("sleep", "60"))
    pid = proc.pid
    # Keep the Popen: its own __del__ would otherwise poll, and maybe reap, the killed child.
    popen = proc._transport.get_extra_info("subprocess")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # unclosed loop and transport
        del lp, proc
        gc.collect()
    if loop_kind == "asyncio":
        # ThreadedChildWatcher's thread holds the transport (hence the loop): nothing was
        # collected, the child still runs; once it exits, the thread reaps it.
        assert proc_state(pid) not in (None, "Z")
        os.kill(pid, signal.SIGKILL)
    assert wait_state(pid, {None}) is None
    if loop_kind == "oxloop":
        # The pid is gone from /proc as soon as waitpid returns; the reaper thread sets the
        # Popen's returncode just after, then ends.
        for t in threading.enumerate():
            if t.name == "oxloop-reaper":
                t.join(10)
    assert popen.returncode == (-signal.SIGKILL if loop_kind == "oxloop" else None)


# Keywords asyncio itself takes or checks (subprocess_exec / _make_subprocess_transport).
ASYNCIO_OWN = {
    "self",
    "args",
    "bufsize",
    "stdin",
    "stdout",
    "stderr",
    "shell",
    "universal_newlines",
    "text",
    "encoding",
    "errors",
}


def test_every_popen_keyword_passes_through(run):
    """Each keyword of this version's subprocess.Popen, given explicitly with its default,
    reaches Popen (an unknown keyword would raise TypeError from there)."""
    params = inspect.signature(subprocess.Popen.__init__).parameters
    kwargs = {
        name: p.default
        for name, p in params.items()
        if name not in ASYNCIO_OWN and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    assert {"cwd", "env", "pass_fds", "umask", "preexec_fn"} <= set(kwargs)
    if PY >= (3, 11):
        assert "process_group" in kwargs

    async def main():
        proc = await asyncio.create_subprocess_exec("true", **kwargs)
        return await proc.wait()

    assert run(main()) == 0


def test_executable_replaces_the_program(run):
    async def main():
        return await output_of("argv0-only", "via executable", executable="/bin/echo")

    assert run(main()) == (b"via executable\n", 0)


def test_debug_mode(run, loop, caplog):
    loop.set_debug(True)

    async def main():
        return await output_of("echo", "debug")

    with caplog.at_level("DEBUG", logger="asyncio"):
        assert run(main()) == (b"debug\n", 0)
    # base_subprocess logs the start; base_events logs the exec request.
    assert any("process 'echo' created: pid" in r.getMessage() for r in caplog.records)


def test_communicate_large_both_ways(run):
    """8 MiB in and 8 MiB out at once: communicate() feeds stdin while draining stdout, so a
    child that blocks on a full stdout pipe cannot deadlock against a parent blocked on stdin."""
    data = os.urandom(1 << 20) * 8

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(data)
        return out == data, proc.returncode

    assert run(main()) == (True, 0)


def test_two_loops_in_two_threads_reap_their_own(loop_factory):
    results: dict[str, list[int]] = {}

    def worker(name: str, code: int) -> None:
        lp = loop_factory()
        try:

            async def main():
                procs = await asyncio.gather(
                    *(asyncio.create_subprocess_exec("sh", "-c", f"exit {code}") for _ in range(50))
                )
                return await asyncio.gather(*(p.wait() for p in procs))

            results[name] = lp.run_until_complete(main())
        finally:
            lp.close()

    threads = [threading.Thread(target=worker, args=(n, c)) for n, c in (("a", 3), ("b", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {"a": [3] * 50, "b": [5] * 50}


@pytest.fixture
def threaded_exit_watcher(loop_kind, monkeypatch):
    """Exit watching by a thread per child: oxloop's fallback without pidfds, stock asyncio's
    threaded child watcher (3.14+: chosen by unix_events.can_use_pidfd at loop creation;
    before: the policy's child watcher, set here)."""
    from asyncio import unix_events

    if loop_kind == "oxloop":
        from oxloop import _subprocess

        monkeypatch.setattr(_subprocess, "_pidfd_ok", False)
        yield
        return
    if PY >= (3, 14):
        monkeypatch.setattr(unix_events, "can_use_pidfd", lambda: False)
        yield
        return
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers, 3.12-3.13
        policy.set_child_watcher(unix_events.ThreadedChildWatcher())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(None)


@pytest.mark.timeout(30)
def test_exit_watching_thread_leaves_the_reaping_to_the_loop(loop_factory, threaded_exit_watcher):
    """With exit watching by a thread, 3.14.7+ (gh-127049): the thread waits without reaping
    (waitid WNOWAIT) and the loop thread reaps the child as it publishes the exit, so until
    then the pid stays the child's (a zombie) and kill() cannot reach a recycled pid. Before
    3.14.7 the thread reaped the child at once."""
    lp = loop_factory()
    threads_before = set(threading.enumerate())
    r, w = os.pipe()

    async def main():
        # The child exits once told to, after its watcher thread has been found.
        proc = await asyncio.create_subprocess_exec("sh", "-c", "read x", stdin=r)
        (watcher,) = [t for t in set(threading.enumerate()) - threads_before if "waitpid" in t.name]
        os.write(w, b"go\n")
        watcher.join(10)  # blocks the loop, which so cannot publish the exit meanwhile
        assert not watcher.is_alive()
        assert proc.returncode is None
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            unreaped = True
        except ChildProcessError:
            unreaped = False
        return unreaped, await proc.wait()

    try:
        assert lp.run_until_complete(main()) == (sys.version_info >= (3, 14, 7), 0)
    finally:
        lp.close()
        os.close(r)
        os.close(w)


def _open_pidfds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:  # the listing's own fd, gone already
            pass
    return n


@pytest.mark.timeout(30)
def test_waitpid_error_releases_the_pidfd(loop, loop_kind):
    """waitpid failing with an unexpected error while the loop reaps a child: the error goes to
    the exception handler and the child is no longer watched. oxloop closes the child's pidfd;
    so does stock asyncio 3.14+ (a try/finally in _PidfdChildWatcher._do_wait), while its
    3.12-3.13 watcher leaves the pidfd open; 3.10-3.11 watch with a thread and no pidfd."""
    from unittest import mock

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("exception")))
    real_waitpid = os.waitpid
    failed = threading.Event()

    def failing_waitpid(pid, options):
        failed.set()
        raise OSError("unexpected")

    async def main():
        before = _open_pidfds()
        proc = await asyncio.create_subprocess_exec("sh", "-c", "read x; exit 0", stdin=PIPE)
        with mock.patch.object(os, "waitpid", side_effect=failing_waitpid):
            proc.stdin.close()
            while not failed.is_set() and proc.returncode is None:
                await asyncio.sleep(0)
        if failed.is_set():
            # As CPython's test: the status is lost; reap the child and report it by hand.
            real_waitpid(proc.pid, 0)
            proc._transport._process_exited(0)
        assert await proc.wait() == 0
        return failed.is_set(), _open_pidfds() - before

    outcome = loop.run_until_complete(main())
    if loop_kind == "asyncio" and PY < (3, 12):
        # The watcher thread was already blocked in the real waitpid: it reports the exit.
        assert (outcome, errors) == ((False, 0), [])
    elif loop_kind == "asyncio" and PY < (3, 14):
        assert (outcome, [type(e) for e in errors]) == ((True, 1), [OSError])
    else:
        assert (outcome, [type(e) for e in errors]) == ((True, 0), [OSError])

"""oxloop.monitor and ``python -m oxloop dump/top PID``.

In-process tests run a loop of each kind (the monitor serves stock asyncio loops too, without
metrics) and talk to its socket from a worker thread; subprocess tests start a program with
OXLOOP_MONITOR=1 under ``python -m oxloop`` (autostart is oxloop's) and drive the CLI against
it. Every socket lives in a private runtime dir made for the test (XDG_RUNTIME_DIR).
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import oxloop
import pytest
from _cli import child_env
from oxloop import monitor

HAS_METRICS = hasattr(oxloop.Loop, "metrics")


@pytest.fixture
def runtime_dir(monkeypatch):
    # Short, private path: AF_UNIX paths are limited to 107 bytes.
    path = tempfile.mkdtemp(prefix="oxm-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    monkeypatch.delenv("OXLOOP_MONITOR", raising=False)
    try:
        yield path
    finally:
        monitor.disable()
        shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


async def sleeper() -> None:
    await asyncio.sleep(100)


def in_thread(func):
    """Run func() in a worker thread while the loop runs; returns its result."""
    return asyncio.get_running_loop().run_in_executor(None, func)


def test_socket_and_directory_permissions(loop, runtime_dir):
    path = loop.run_until_complete(_enable())
    assert (
        path == os.path.join(runtime_dir, "oxloop", f"{os.getpid()}.sock") == monitor.socket_path()
    )
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    # Closing the last monitored loop removes the socket.
    loop.close()
    assert wait_until(lambda: not os.path.exists(path))


async def _enable() -> str:
    path = monitor.enable()
    assert monitor.enable() == path  # twice: same server
    return path


def test_existing_directory_is_made_private(loop, runtime_dir):
    os.mkdir(os.path.join(runtime_dir, "oxloop"), 0o755)
    path = loop.run_until_complete(_enable())
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_symlinked_directory_is_refused(loop, runtime_dir):
    elsewhere = os.path.join(runtime_dir, "elsewhere")
    os.mkdir(elsewhere, 0o700)
    os.symlink(elsewhere, os.path.join(runtime_dir, "oxloop"))
    with pytest.raises(PermissionError, match="not a directory owned by"):
        loop.run_until_complete(_enable())
    assert os.listdir(elsewhere) == []


def test_enable_needs_a_loop(runtime_dir):
    with pytest.raises(RuntimeError, match="no running event loop"):
        monitor.enable()
    closed = oxloop.new_event_loop()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        monitor.enable(closed)


def test_dump_over_the_socket(loop, runtime_dir):
    async def main():
        monitor.enable()
        task = asyncio.ensure_future(sleeper())
        task.set_name("sleeping")
        await asyncio.sleep(0)

        def ask():
            with monitor.Client(os.getpid()) as client:
                return client.request("dump"), client.request("info")

        try:
            return await in_thread(ask)
        finally:
            task.cancel()

    dump, info = loop.run_until_complete(main())
    assert dump["ok"] and dump["pid"] == os.getpid()
    [entry] = dump["loops"]
    assert entry["loop"] == type(loop).__name__
    assert entry["thread"] == threading.current_thread().name
    names = {node["name"]: node for node in entry["tree"]["roots"]}
    sleeping = names["sleeping"]
    assert sleeping["waiting_on"][0]["kind"] == "timer"
    assert sleeping["stack"][0]["function"] == "sleeper"
    assert info["loops"] == [{k: entry[k] for k in ("loop_id", "loop", "running", "thread")}]


def test_stalled_loop_is_reported_with_its_stack(loop, runtime_dir):
    release = threading.Event()
    replies = []

    def ask():
        with monitor.Client(os.getpid()) as client:
            replies.append(client.request("dump", timeout=0.2))
        release.set()

    def blocking_callback():
        threading.Thread(target=ask).start()
        release.wait(30)  # the loop's thread is stuck here until the client has its answer

    async def main():
        monitor.enable()
        blocking_callback()

    loop.run_until_complete(main())
    [entry] = replies[0]["loops"]
    assert entry["error"] == "stalled"
    assert "did not run a callback within 0.2 s" in entry["message"]
    functions = [f["function"] for f in entry["stack"]]
    i = functions.index("blocking_callback")
    assert functions[i - 1 : i + 2] == ["main", "blocking_callback", "wait"]
    assert entry["stack"][i]["file"] == __file__


def test_metrics_over_the_socket(loop, loop_kind, runtime_dir):
    async def main():
        monitor.enable()
        task = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)

        def ask():
            with monitor.Client(os.getpid()) as client:
                return client.request("metrics")

        try:
            return await in_thread(ask)
        finally:
            task.cancel()

    [entry] = loop.run_until_complete(main())["loops"]
    assert entry["tasks"] == 2  # main and the sleeper
    if loop_kind == "asyncio" or not HAS_METRICS:
        assert entry["error"].endswith("has no metrics()")
        return
    m = entry["metrics"]
    assert m["iterations"] > 0 and m["callbacks"] > 0
    assert len(m["busy_histogram"]) == 40 and 0.0 <= m["utilization"] <= 1.0
    assert m["busy_p50_ns"] <= m["busy_p99_ns"]


def test_bad_requests(loop, runtime_dir):
    async def main():
        monitor.enable()

        def ask():
            with monitor.Client(os.getpid()) as client:
                with pytest.raises(monitor.MonitorError, match="unknown command 'nope'"):
                    client.request("nope")
                client.sock.sendall(b"[1, 2]\n")
                bad = client.rfile.readline()
                client.sock.sendall(b"not json\n")
                worse = client.rfile.readline()
                return bad, worse, client.request("info")  # the connection still works

        return await in_thread(ask)

    bad, worse, info = loop.run_until_complete(main())
    assert b"a request is a JSON object" in bad and b'"ok": false' in worse
    assert info["ok"]


def test_disable_removes_the_socket(loop, runtime_dir):
    path = loop.run_until_complete(_enable())
    monitor.disable()
    assert not os.path.exists(path)
    monitor.disable()  # no-op
    with pytest.raises(monitor.MonitorError, match="no oxloop monitor for process"):
        monitor.Client(os.getpid())


# -- a monitored process ------------------------------------------------------------------

PROGRAM = textwrap.dedent(
    """\
    import asyncio, os, sys

    async def worker(n):
        await asyncio.sleep(100 + n)

    async def main():
        await asyncio.sleep(0)
        print("READY", flush=True)
        await asyncio.gather(worker(1), worker(2))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    """
)


@pytest.fixture
def monitored(tmp_path, runtime_dir):
    """A ``python -m oxloop`` program with OXLOOP_MONITOR=1, ready and serving."""
    script = tmp_path / "served.py"
    script.write_text(PROGRAM)
    env = child_env({"XDG_RUNTIME_DIR": runtime_dir, "OXLOOP_MONITOR": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxloop", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline() == "READY\n", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def cli(*args: str, runtime_dir: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"XDG_RUNTIME_DIR": runtime_dir})
    return subprocess.run(
        [sys.executable, "-m", "oxloop", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_env_var_starts_the_monitor_and_exit_cleans_up(monitored, runtime_dir):
    path = monitor.socket_path(monitored.pid)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monitored.send_signal(signal.SIGINT)
    out, err = monitored.communicate(timeout=30)
    assert out == "INTERRUPTED\n", err
    assert not os.path.exists(path)


def test_cli_dump(monitored, runtime_dir):
    result = cli("dump", str(monitored.pid), runtime_dir=runtime_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 task(s) on Loop at loop time ")
    assert lines[1] == "Task 'Task-1' main() pending"
    assert "served.py:9 in main" in lines[2]
    assert "├── [gather] Task 'Task-2' worker() pending" in lines
    assert "└── [gather] Task 'Task-3' worker() pending" in lines
    assert sum("waits on timer due in 10" in line for line in lines) == 2
    as_json = cli("dump", str(monitored.pid), "--json", runtime_dir=runtime_dir)
    assert as_json.returncode == 0 and '"tree"' in as_json.stdout


def test_cli_without_monitor(runtime_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for command in ("dump", "top"):
            result = cli(command, str(proc.pid), runtime_dir=runtime_dir)
            assert result.returncode == 1
            assert result.stdout == ""
            assert result.stderr == (
                f"python -m oxloop {command}: no oxloop monitor for process {proc.pid} "
                f"(no socket at {monitor.socket_path(proc.pid)}): start the program with "
                "OXLOOP_MONITOR=1 or call oxloop.monitor.enable()\n"
            )
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args", [["--bogus"], ["--timeout"], ["--timeout", "-1"]])
def test_cli_usage_errors(args, runtime_dir):
    result = cli("dump", "1", *args, runtime_dir=runtime_dir)
    assert result.returncode == 2
    assert "usage: python -m oxloop dump PID" in result.stderr


@pytest.mark.parametrize("name", ["dump", "top"])
def test_scripts_named_like_the_commands_still_run(tmp_path, name, runtime_dir):
    (tmp_path / name).write_text("import sys\nprint('script ran', sys.argv)\n")
    result = subprocess.run(
        [sys.executable, "-m", "oxloop", name, "notapid"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"script ran ['{name}', 'notapid']\n"


def test_no_socket_without_opt_in(tmp_path, runtime_dir):
    script = tmp_path / "plain.py"
    script.write_text("import asyncio, os\nasyncio.run(asyncio.sleep(0))\nprint(os.getpid())\n")
    result = cli(str(script), runtime_dir=runtime_dir)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(os.path.join(runtime_dir, "oxloop"))


@pytest.mark.skipif(not HAS_METRICS, reason="loop.metrics() is not built in")
def test_cli_top_refreshes_until_ctrl_c(monitored, runtime_dir):
    env = child_env({"XDG_RUNTIME_DIR": runtime_dir})
    top = subprocess.Popen(
        [sys.executable, "-m", "oxloop", "top", str(monitored.pid), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        title = top.stdout.readline()
        header = top.stdout.readline()
        first = top.stdout.readline()
        second = top.stdout.readline()  # one refresh
        top.send_signal(signal.SIGINT)
        out, err = top.communicate(timeout=30)
    finally:
        if top.poll() is None:
            top.kill()
    assert title == f"oxloop top: process {monitored.pid}, every 0.2 s\n"
    assert header.split() == [
        "loop", "thread", "util", "busy", "p50", "p90", "p99",
        "callbacks/s", "iter/s", "tasks", "slow", "max", "stall",
    ]  # fmt: skip
    for row in (first, second):
        fields = row.split()
        assert fields[:2] == ["0", "MainThread"], row
        assert fields[2].endswith("%") and 0.0 <= float(fields[2][:-1]) <= 100.0
        # Every time is "<number> <unit>": tasks come before slow and the max stall.
        assert fields[-4] == "3", row
    assert top.returncode == 0
    assert err == ""


# 3.12+ warn on fork() with threads running (the monitor's); the child only reads two
# module globals and leaves with os._exit, so no lock can be left held.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_starts_without_monitor(loop, runtime_dir):
    path = loop.run_until_complete(_enable())
    pid = os.fork()
    if pid == 0:  # the child: no server, the parent's socket untouched
        os._exit(0 if monitor._server is None and os.path.exists(path) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)

    def info():
        with monitor.Client(os.getpid()) as client:
            return client.request("info")

    async def ask():
        return await in_thread(info)

    assert loop.run_until_complete(ask())["ok"]


@pytest.mark.skipif(not HAS_METRICS, reason="loop.metrics() is not built in")
def test_cli_top_redraws_on_a_terminal(monitored, runtime_dir):
    import pty

    master, slave = pty.openpty()
    env = child_env({"XDG_RUNTIME_DIR": runtime_dir})
    top = subprocess.Popen(
        [sys.executable, "-m", "oxloop", "top", str(monitored.pid), "--interval", "0.2"],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    screen = b""
    try:
        # Each redraw starts with cursor-home + clear-screen: the third one completes two.
        deadline = time.monotonic() + 30
        while screen.count(b"\x1b[H\x1b[2J") < 3:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"top stopped redrawing: {screen!r}"
            screen += os.read(master, 4096)
        top.send_signal(signal.SIGINT)
        _, err = top.communicate(timeout=30)
    finally:
        if top.poll() is None:
            top.kill()
        os.close(master)
    assert top.returncode == 0
    assert err == b""
    frames = screen.decode().split("\x1b[H\x1b[2J")[1:3]
    for frame in frames:
        lines = frame.splitlines()
        assert lines[0] == f"oxloop top: process {monitored.pid}, every 0.2 s (Ctrl-C to quit)"
        assert lines[1].split()[:3] == ["loop", "thread", "util"]
        assert lines[2].split()[:2] == ["0", "MainThread"]


@pytest.mark.parametrize(
    "args",
    [
        ["dump"],
        pytest.param(
            ["top", "--interval", "0.2"],
            marks=pytest.mark.skipif(not HAS_METRICS, reason="loop.metrics() is not built in"),
        ),
    ],
    ids=["dump", "top"],
)
def test_cli_ends_quietly_when_its_reader_is_gone(monitored, runtime_dir, args):
    # `python -m oxloop top PID | head`: once head exits, every write fails with EPIPE. A Unix
    # tool dies of SIGPIPE there, silently; so does the CLI (no BrokenPipeError traceback).
    command, *options = args
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: deterministic EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "oxloop", command, str(monitored.pid), *options],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env({"XDG_RUNTIME_DIR": runtime_dir}),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == -signal.SIGPIPE

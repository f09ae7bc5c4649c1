"""3.14's task surface, on oxloop exactly as on stock asyncio.

- ``loop.create_task(coro, eager_start=...)`` (gh-128307), and 3.14's passing of every
  ``create_task`` keyword on to ``Task`` or to the task factory (gh-128308); 3.10-3.13 reject
  ``eager_start``. oxloop builds tasks in Rust (src/loop_core/factories.rs) for the default
  factory, and calls asyncio's method otherwise: both paths are exercised.
- ``asyncio.graph`` (``capture_call_graph``, ``format_call_graph``, ``print_call_graph``): the
  "awaited by" edges that asyncio's Task, gather and TaskGroup record with
  ``futures.future_add_to_awaited_by``, on tasks and futures the loop created (in Rust on
  oxloop), compared as a structure of names and frames (never addresses).
- ``python -m asyncio ps PID`` / ``pstree PID`` (gh-91048): a child program on each loop, its
  tasks blocked on an event, read from outside through the interpreter's per-thread task list.

A test for an API the running version lacks skips with the version that has it.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import re
import select
import subprocess
import sys
import textwrap

import pytest
from _cli import child_env

PY314 = sys.version_info >= (3, 14)
HAS_GRAPH = hasattr(asyncio, "capture_call_graph")
needs_314 = pytest.mark.skipif(not PY314, reason="create_task(eager_start=) is 3.14+")
needs_graph = pytest.mark.skipif(not HAS_GRAPH, reason="asyncio.graph is 3.14+")

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def _value(x):
    return x


# -- create_task(eager_start=) ----------------------------------------------------------------


def test_eager_start_keyword_per_version(loop):
    # 3.14+: create_task(coro, **kwargs) hands eager_start to Task, which runs the first step
    # inside the call when the loop runs. 3.10-3.13: not a create_task keyword (3.12's Task has
    # it, but create_task's signature is name/context), with or without a task factory.
    log = []

    async def body():
        log.append("body")
        return "r"

    async def main():
        t = loop.create_task(body(), eager_start=True)
        log.append("after")
        return t

    if PY314:
        task = loop.run_until_complete(main())
        assert log == ["body", "after"]
        assert task.done() and task.result() == "r"
        return
    for factory in (None, getattr(asyncio, "eager_task_factory", None)):
        loop.set_task_factory(factory)
        coro = body()
        with pytest.raises(TypeError, match="eager_start"):
            loop.create_task(coro, eager_start=True)
        coro.close()
    assert log == []


@needs_314
@pytest.mark.parametrize("eager_start", [True, 1, "yes"], ids=repr)
def test_eager_start_runs_first_step_inside_create_task(loop, eager_start):
    log = []

    async def body():
        me = asyncio.current_task()
        log.append(("start", me.get_name(), me in asyncio.all_tasks()))
        await asyncio.sleep(0)
        log.append("resumed")
        return 7

    async def main():
        t = loop.create_task(body(), eager_start=eager_start, name="eager")
        log.append("after-create")
        assert not t.done()  # suspended in its first await, then scheduled as usual
        assert t in asyncio.all_tasks()
        return await t

    assert loop.run_until_complete(main()) == 7
    assert log == [("start", "eager", True), "after-create", "resumed"]


@needs_314
def test_eager_task_that_finishes_in_its_first_step(loop):
    ctx = contextvars.Context()
    ctx.run(VAR.set, "given")

    async def body():
        return VAR.get(), asyncio.current_task().get_name()

    async def main():
        t = loop.create_task(body(), eager_start=True, name="quick", context=ctx)
        # Done inside create_task, and never registered as a pending task.
        assert t.done() and t not in asyncio.all_tasks()
        assert asyncio.current_task() is not t
        return t.result(), t.get_name(), t.get_context() is ctx

    assert loop.run_until_complete(main()) == (("given", "quick"), "quick", True)


@needs_314
def test_eager_start_needs_a_running_loop(loop):
    # Task.__init__: "if eager_start and self._loop.is_running()"; otherwise scheduled.
    log = []

    async def body():
        log.append("ran")

    task = loop.create_task(body(), eager_start=True)
    assert log == [] and not task.done()
    loop.run_until_complete(task)
    assert log == ["ran"]


@needs_314
@pytest.mark.parametrize("eager_start", [False, None, 0], ids=repr)
def test_false_eager_start_schedules_the_task(loop, eager_start):
    log = []
    ctx = contextvars.Context()
    ctx.run(VAR.set, "ctx")

    async def body():
        log.append(VAR.get())
        return asyncio.current_task().get_name()

    async def main():
        t = loop.create_task(body(), eager_start=eager_start, name="lazy", context=ctx)
        log.append("after-create")
        return await t

    assert loop.run_until_complete(main()) == "lazy"
    assert log == ["after-create", "ctx"]


@needs_314
def test_eager_start_with_eager_task_factory(loop):
    # eager_task_factory(loop, coro, *, eager_start=True, **kwargs): the keyword overrides it.
    loop.set_task_factory(asyncio.eager_task_factory)
    log = []

    async def body(tag):
        log.append(tag)

    async def main():
        default = loop.create_task(body("default"), name="d")
        log.append("after-default")
        lazy = loop.create_task(body("lazy"), eager_start=False, name="l")
        log.append("after-lazy")
        await asyncio.gather(default, lazy)
        return default.get_name(), lazy.get_name()

    # 3.14 passes name on to the factory, so an eager task has its name from the start.
    assert loop.run_until_complete(main()) == ("d", "l")
    assert log == ["default", "after-default", "after-lazy", "lazy"]


@needs_314
def test_task_factory_receives_every_keyword(loop):
    received = []

    def factory(lp, coro, **kwargs):
        received.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()

    async def main():
        t = loop.create_task(_value(1), eager_start=True, name="n", context=ctx)
        assert t.done()
        return t.result()

    assert loop.run_until_complete(main()) == 1
    # run_until_complete's own task first: ensure_future calls create_task(coro).
    assert received == [{}, {"eager_start": True, "name": "n", "context": ctx}]


@needs_314
def test_asyncio_create_task_and_task_group_pass_eager_start(loop):
    log = []

    async def body(tag):
        log.append(tag)
        await asyncio.sleep(0)

    async def main():
        t = asyncio.create_task(body("create_task"), eager_start=True)
        log.append("a")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(body("taskgroup"), eager_start=True, name="g")
            log.append("b")
        await t

    loop.run_until_complete(main())
    assert log == ["create_task", "a", "taskgroup", "b"]


@needs_314
def test_eager_start_unknown_keyword_and_closed_loop(loop_factory):
    lp = loop_factory()
    try:
        coro = _value(1)
        with pytest.raises(TypeError, match="bogus"):
            lp.create_task(coro, eager_start=False, bogus=1)
        lp.set_task_factory(asyncio.eager_task_factory)
        with pytest.raises(TypeError, match="bogus"):
            lp.create_task(coro, bogus=1)
        lp.close()
        with pytest.raises(RuntimeError, match="closed"):
            lp.create_task(coro, eager_start=True)
        coro.close()
    finally:
        lp.close()


@needs_314
def test_eager_start_in_debug_mode_trims_create_task_frame(loop):
    loop.set_debug(True)

    async def main():
        t = loop.create_task(_value(1), eager_start=True)
        return t, t._source_traceback

    task, tb = loop.run_until_complete(main())
    assert task.result() == 1
    assert tb and tb[-1].name == "main"


# -- asyncio.graph ----------------------------------------------------------------------------


def _shape(graph):
    """A FutureCallGraph as nested tuples of names: (("task", name) or ("future",), the
    call stack's qualified function names innermost first, awaiters sorted)."""
    fut = graph.future
    label = ("task", fut.get_name()) if isinstance(fut, asyncio.Task) else ("future",)
    stack = tuple(entry.frame.f_code.co_qualname for entry in graph.call_stack)
    return (label, stack, tuple(sorted((_shape(g) for g in graph.awaited_by), key=repr)))


def _normalize(text: str) -> str:
    """format_call_graph's text without what differs between runs: addresses, line numbers,
    and directories."""
    text = re.sub(r"id=0x[0-9a-f]+", "id=ID", text)
    text = re.sub(r"File '[^']*[/\\]([^/\\']+)', line \d+", r"File '\1', line N", text)
    return text


async def _settle(n: int = 5) -> None:
    # Each sleep(0) is one loop iteration: enough for every task below to reach its wait.
    for _ in range(n):
        await asyncio.sleep(0)


@needs_graph
def test_graph_of_the_current_task_through_awaited_tasks(loop):
    async def leaf():
        return asyncio.capture_call_graph(), asyncio.format_call_graph()

    async def middle():
        return await loop.create_task(leaf(), name="leaf")

    async def outer():
        return await loop.create_task(middle(), name="middle")

    async def main():
        return await loop.create_task(outer(), name="outer")

    graph, text = loop.run_until_complete(main())
    main_task = ("task", graph.awaited_by[0].awaited_by[0].awaited_by[0].future.get_name())
    assert _shape(graph) == (
        ("task", "leaf"),
        ("test_graph_of_the_current_task_through_awaited_tasks.<locals>.leaf",),
        (
            (
                ("task", "middle"),
                ("test_graph_of_the_current_task_through_awaited_tasks.<locals>.middle",),
                (
                    (
                        ("task", "outer"),
                        ("test_graph_of_the_current_task_through_awaited_tasks.<locals>.outer",),
                        (
                            (
                                main_task,
                                (
                                    "test_graph_of_the_current_task_through_awaited_tasks.<locals>.main",
                                ),
                                (),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    prefix = "test_graph_of_the_current_task_through_awaited_tasks.<locals>"
    assert _normalize(text) == textwrap.dedent(
        f"""\
        * Task(name='leaf', id=ID)
          + Call stack:
          |   File 'test_py314.py', line N, in async {prefix}.leaf()
          + Awaited by:
            * Task(name='middle', id=ID)
              + Call stack:
              |   File 'test_py314.py', line N, in async {prefix}.middle()
              + Awaited by:
                * Task(name='outer', id=ID)
                  + Call stack:
                  |   File 'test_py314.py', line N, in async {prefix}.outer()
                  + Awaited by:
                    * Task(name='{main_task[1]}', id=ID)
                      + Call stack:
                      |   File 'test_py314.py', line N, in async {prefix}.main()"""
    )


TG = ("tg-a", "tg-b")


@needs_graph
def test_graph_of_suspended_tasks_gather_taskgroup_and_shared_future(loop):
    async def leaf(event):
        await event.wait()

    async def gatherer(a, b):
        await asyncio.gather(a, b)

    async def group(event):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(event), name="tg-a")
            tg.create_task(leaf(event), name="tg-b")

    async def waiter(fut):
        await fut

    async def main():
        event = asyncio.Event()
        fut = loop.create_future()  # Rust-built on oxloop
        named = {}
        for name in ("g-a", "g-b"):
            named[name] = loop.create_task(leaf(event), name=name)
        named["gatherer"] = loop.create_task(gatherer(named["g-a"], named["g-b"]), name="gatherer")
        named["group"] = loop.create_task(group(event), name="group")
        for i in range(3):
            named[f"w{i}"] = loop.create_task(waiter(fut), name=f"w{i}")
        await _settle()
        # The TaskGroup's children, created inside the group task.
        named.update({t.get_name(): t for t in asyncio.all_tasks() if t.get_name() in TG})
        graphs = {name: asyncio.capture_call_graph(t) for name, t in named.items()}
        graphs["fut"] = asyncio.capture_call_graph(fut)
        graphs["gathering"] = asyncio.capture_call_graph(named["gatherer"]._fut_waiter)
        text = asyncio.format_call_graph(named["g-a"])
        buf = io.StringIO()
        asyncio.print_call_graph(named["g-a"], file=buf)
        shapes = {name: _shape(g) for name, g in graphs.items()}
        limited = _shape(asyncio.capture_call_graph(named["tg-a"], limit=1))
        event.set()
        fut.set_result(None)
        await asyncio.gather(*named.values())
        # Once done, nothing is recorded as awaiting them any more.
        after = _shape(asyncio.capture_call_graph(fut))
        return shapes, limited, text, buf.getvalue(), after

    shapes, limited, text, printed, after = loop.run_until_complete(main())
    p = "test_graph_of_suspended_tasks_gather_taskgroup_and_shared_future.<locals>"
    by_gatherer = (("task", "gatherer"), (f"{p}.gatherer",), ())
    by_group = (
        ("task", "group"),
        ("TaskGroup._aexit", "TaskGroup.__aexit__", f"{p}.group"),
        (),
    )
    blocked = ("Event.wait", f"{p}.leaf")
    assert shapes["g-a"] == (("task", "g-a"), blocked, (by_gatherer,))
    assert shapes["g-b"] == (("task", "g-b"), blocked, (by_gatherer,))
    assert shapes["gatherer"] == by_gatherer
    assert shapes["gathering"] == (("future",), (), (by_gatherer,))
    assert shapes["group"] == by_group
    for name in TG:
        assert shapes[name] == (("task", name), blocked, (by_group,))
    waiters = tuple(((("task", f"w{i}"), (f"{p}.waiter",), ())) for i in range(3))
    assert shapes["fut"] == (("future",), (), waiters)
    for i in range(3):
        assert shapes[f"w{i}"] == waiters[i]
    # limit=1 of a future that is not the current task keeps the outermost frame of each
    # stack (graph.py slices before reversing).
    assert limited == (
        ("task", "tg-a"),
        (f"{p}.leaf",),
        ((("task", "group"), (f"{p}.group",), ()),),
    )
    assert after == (("future",), (), ())
    assert _normalize(text) == textwrap.dedent(
        f"""\
        * Task(name='g-a', id=ID)
          + Call stack:
          |   File 'locks.py', line N, in async Event.wait()
          |   File 'test_py314.py', line N, in async {p}.leaf()
          + Awaited by:
            * Task(name='gatherer', id=ID)
              + Call stack:
              |   File 'test_py314.py', line N, in async {p}.gatherer()"""
    )
    assert printed == text + "\n"


@needs_graph
def test_graph_of_a_socket_wait(loop):
    # oxloop's sock_recv builds its future in Rust (src/sock.rs); the task awaiting it is
    # recorded on it as on asyncio's.
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def reader():
        return await loop.sock_recv(a, 10)

    async def main():
        t = loop.create_task(reader(), name="reader")
        await _settle()
        waited = t._fut_waiter
        shape = _shape(asyncio.capture_call_graph(waited))
        b.send(b"x")
        return shape, await t

    try:
        shape, data = loop.run_until_complete(main())
    finally:
        a.close()
        b.close()
    assert data == b"x"
    [(label, stack, awaiters)] = shape[2]
    assert shape[:2] == (("future",), ())
    # The innermost frame is the loop's own sock_recv (asyncio's or oxloop's class).
    assert label == ("task", "reader") and awaiters == ()
    assert stack[0].endswith(".sock_recv")
    assert stack[1:] == ("test_graph_of_a_socket_wait.<locals>.reader",)


@needs_graph
@pytest.mark.parametrize("how", ["eager_start", "eager_task_factory"])
def test_graph_inside_an_eager_first_step(loop, how):
    # The eager step runs inside create_task: the task's stack must stop at its own coroutine,
    # as under asyncio's create_task frame, not run on into the caller's.
    if how == "eager_task_factory":
        loop.set_task_factory(asyncio.eager_task_factory)
    kwargs = {"eager_start": True} if how == "eager_start" else {}

    async def body():
        return _shape(asyncio.capture_call_graph())

    async def main():
        t = loop.create_task(body(), name="eager", **kwargs)
        assert t.done()
        return t.result()

    assert loop.run_until_complete(main()) == (
        ("task", "eager"),
        ("test_graph_inside_an_eager_first_step.<locals>.body",),
        (),
    )


# -- oxloop's task dumps ----------------------------------------------------------------------


@needs_314
def test_task_tree_during_an_eager_step(loop):
    # 3.14 swaps the current task for the eager step and keeps the task in its eager set until
    # the step ends (tasks.py __eager_start, _asyncio): the dump shows it running, its creator
    # pending.
    import oxloop

    async def body():
        return oxloop.task_tree(loop)

    async def main():
        t = loop.create_task(body(), eager_start=True, name="eager")
        return t.result()

    tree = loop.run_until_complete(main())
    states = {root["name"]: root["state"] for root in tree["roots"]}
    assert states.pop("eager") == "running"
    assert list(states.values()) == ["pending"]  # main, whose create_task call is under way
    assert tree["tasks"] == 2


def test_task_tree_sees_python_class_tasks(loop):
    # tasks._PyTask registers where asyncio.all_tasks() on 3.14+ does not look; oxloop's dump,
    # task counts and deadlock report find it on every version.
    import oxloop
    from oxloop._tasks import live_tasks

    async def main():
        t = asyncio.tasks._PyTask(asyncio.sleep(3600), loop=loop, name="py-task")
        await asyncio.sleep(0)
        names = {n["name"] for n in oxloop.task_tree(loop)["roots"]}
        count = len(live_tasks(loop))
        report = oxloop.testing.describe_tasks(loop)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        return names, count, report

    names, count, report = loop.run_until_complete(main())
    assert "py-task" in names
    assert count == 2
    assert "  py-task: " in report


# -- python -m asyncio ps / pstree ------------------------------------------------------------

CHILD = textwrap.dedent(
    """\
    import asyncio
    import functools
    import sys

    async def leaf(event):
        await event.wait()

    async def gatherer(a, b):
        await asyncio.gather(a, b)

    async def group(event):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(event), name="tg-a")
            tg.create_task(leaf(event), name="tg-b")

    async def waiter(fut):
        await fut

    async def main():
        asyncio.current_task().set_name("main")
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        fut = loop.create_future()
        a = loop.create_task(leaf(event), name="g-a")
        b = loop.create_task(leaf(event), name="g-b")
        loop.create_task(gatherer(a, b), name="gatherer")
        loop.create_task(group(event), name="group")
        loop.create_task(waiter(fut), name="waiter")
        for _ in range(5):
            await asyncio.sleep(0)
        # Printed from a callback that runs once main waits too: every task is suspended.
        loop.call_soon(functools.partial(print, "ready", flush=True))
        await event.wait()

    if sys.argv[1] == "oxloop":
        import oxloop
        factory = oxloop.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop
    asyncio.run(main(), loop_factory=factory)
    """
)

PS_ROWS = sorted(
    [
        "main Event.wait -> main",
        "g-a Event.wait -> leaf gatherer gatherer gatherer",
        "g-b Event.wait -> leaf gatherer gatherer gatherer",
        "gatherer gatherer",
        "group TaskGroup._aexit -> TaskGroup.__aexit__ -> group",
        "tg-a Event.wait -> leaf TaskGroup._aexit -> TaskGroup.__aexit__ -> group group group",
        "tg-b Event.wait -> leaf TaskGroup._aexit -> TaskGroup.__aexit__ -> group group group",
        "waiter waiter",
    ]
)

PSTREE = """\
└── (T) main
    └──  main child.py
        └──  Event.wait locks.py
└── (T) gatherer
    └──  gatherer child.py
        ├── (T) g-a
        │   └──  leaf child.py
        │       └──  Event.wait locks.py
        └── (T) g-b
            └──  leaf child.py
                └──  Event.wait locks.py
└── (T) group
    └──  group child.py
        └──  TaskGroup.__aexit__ taskgroups.py
            └──  TaskGroup._aexit taskgroups.py
                ├── (T) tg-a
                │   └──  leaf child.py
                │       └──  Event.wait locks.py
                └── (T) tg-b
                    └──  leaf child.py
                        └──  Event.wait locks.py
└── (T) waiter
    └──  waiter child.py"""

_PERMISSION = "insufficient permissions"


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def _asyncio_cli(command: str, pid: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "asyncio", command, str(pid)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    out = result.stdout + result.stderr
    if result.returncode != 0 and _PERMISSION in out:
        # tools.exit_with_permission_help_text: the OS refused the remote read (ptrace scope,
        # a seccomp filter without process_vm_readv).
        pytest.skip(f"the OS refused the remote memory read of python -m asyncio {command}")
    assert result.returncode == 0, out
    return result.stdout


def _ps_rows(table: str) -> list[str]:
    """`ps` rows with the thread id dropped, task ids replaced by the tasks' names (0x0: none)
    and the column padding collapsed."""
    rows = [line for line in table.splitlines()[2:] if line.strip()]
    names = {"0x0": ""}
    for row in rows:
        _tid, task_id, name = row.split()[:3]
        names[task_id] = name
    out = []
    for row in rows:
        fields = row.split(None, 2)[2]
        fields = re.sub(r"\b0x[0-9a-f]+\b", lambda m: names.get(m.group(), "?"), fields)
        out.append(" ".join(fields.split()))
    return sorted(out)


def _pstree_text(text: str) -> str:
    # "leaf /tmp/.../child.py:5" -> "leaf child.py"
    return "\n".join(
        re.sub(r" (?:\S*/)?([^/\s]+):\d+$", r" \1", line.rstrip())
        for line in text.splitlines()
        if line.strip()
    )


@pytest.mark.skipif(not PY314, reason="python -m asyncio ps/pstree are 3.14+")
def test_asyncio_ps_and_pstree_of_a_running_program(loop_kind, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), loop_kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        line = _readline(proc, 60)
        assert line == "ready\n", proc.stderr.read() if proc.poll() is not None else line
        assert _ps_rows(_asyncio_cli("ps", proc.pid)) == PS_ROWS
        assert _pstree_text(_asyncio_cli("pstree", proc.pid)) == PSTREE
    finally:
        proc.kill()
        proc.communicate()

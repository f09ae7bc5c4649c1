"""oxloop.dump_tasks / oxloop.task_tree: the tree of live tasks, on both loops.

Each test builds a known shape of tasks (gather, TaskGroup, wait_for, shield, plain awaits,
nested coroutines, sleeps, socket waits), lets every task reach its await, takes the tree from
inside the loop, then cancels everything. Timers are 100 s away and never fire.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import sys

import oxloop
import pytest

LONG = 100.0


async def settle(n: int = 5) -> None:
    """Let every task created so far run up to its first real wait."""
    for _ in range(n):
        await asyncio.sleep(0)


async def sleeper() -> None:
    await asyncio.sleep(LONG)  # SLEEPER_LINE


SLEEPER_LINE = sleeper.__code__.co_firstlineno + 1


def line_of(func, marker: str) -> int:
    import inspect

    lines, start = inspect.getsourcelines(func)
    return start + next(i for i, text in enumerate(lines) if marker in text)


def find(tree: dict, name: str) -> dict:
    """The (non-ref) node named ``name`` anywhere in the tree."""
    stack = list(tree["roots"])
    while stack:
        node = stack.pop()
        if node["kind"] != "ref" and node.get("name") == name:
            return node
        stack.extend(node.get("children", ()))
    raise AssertionError(f"no node {name!r} in {json.dumps(tree, indent=1)}")


def child_names(node: dict) -> list[tuple[str, str]]:
    return [(c["via"], c["name"]) for c in node["children"]]


def timers(node: dict) -> list[dict]:
    return [w for w in node["waiting_on"] if w["kind"] == "timer"]


async def tree_then_cancel(*tasks: asyncio.Future) -> dict:
    await settle()
    tree = oxloop.task_tree()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tree


def assert_sleeping(node: dict) -> None:
    """The node is a sleeper blocked in asyncio.sleep(LONG), with the timer it waits for."""
    assert node["state"] == "pending"
    assert node["coro"] == "sleeper"
    assert node["stack"][0] == {"function": "sleeper", "file": __file__, "line": SLEEPER_LINE}
    assert node["stack"][-1]["function"] == "sleep"
    [timer] = timers(node)
    assert LONG - 5 < timer["due_in"] <= LONG
    assert timer["callback"] == "_set_result_unless_cancelled"


def test_gather_children(run):
    async def parent():
        await asyncio.gather(  # GATHER
            asyncio.ensure_future(sleeper()), asyncio.ensure_future(sleeper())
        )

    async def main():
        p = asyncio.get_running_loop().create_task(parent(), name="parent")
        await settle()
        for i, child in enumerate(p._fut_waiter._children):
            child.set_name(f"child-{i}")
        return await tree_then_cancel(p)

    tree = run(main())
    node = find(tree, "parent")
    assert node["state"] == "pending"
    [frame] = node["stack"]
    assert frame["function"].endswith("parent") and frame["file"] == __file__
    assert frame["line"] == line_of(test_gather_children, "# GATHER")
    assert child_names(node) == [("gather", "child-0"), ("gather", "child-1")]
    for child in node["children"]:
        assert_sleeping(child)
    assert node["waiting_on"] == []
    # The parent is the only root besides the test's main task (running).
    roots = {(r["name"], r["state"]) for r in tree["roots"]}
    assert ("parent", "pending") in roots
    assert not any(r["name"].startswith("child-") for r in tree["roots"])
    json.dumps(tree)  # plain data


def test_gather_of_a_plain_future(run):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        g = asyncio.gather(fut)

        async def waiter():
            await g

        w = loop.create_task(waiter(), name="w")
        tree = await tree_then_cancel(w)
        fut.cancel()
        await asyncio.gather(g, return_exceptions=True)
        return tree

    node = find(run(main()), "w")
    # gather() of a plain future: the child is that future, which nothing in the loop resolves.
    [inner] = node["children"]
    assert (inner["via"], inner["kind"], inner["state"]) == ("gather", "future", "pending")
    assert inner["repr"].startswith("<Future pending")
    assert [w["kind"] for w in inner["waiting_on"]] == ["future"]


def test_plain_await_and_nested_coroutines(run):
    async def inner():
        await sleeper()  # INNER

    async def outer():
        await inner()  # OUTER

    async def parent(t):
        await t  # AWAIT_TASK

    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(outer(), name="child")
        p = loop.create_task(parent(child), name="parent")
        return await tree_then_cancel(p, child)

    tree = run(main())
    node = find(tree, "parent")
    assert node["stack"][-1]["line"] == line_of(test_plain_await_and_nested_coroutines, "# AWAIT")
    [child] = node["children"]
    assert (child["via"], child["name"]) == ("await", "child")
    assert child["coro"].endswith("<locals>.outer")
    funcs = [f["function"].rsplit(".", 1)[-1] for f in child["stack"]]
    assert funcs == ["outer", "inner", "sleeper", "sleep"]
    lines = [f["line"] for f in child["stack"][:3]]
    here = test_plain_await_and_nested_coroutines
    assert lines == [line_of(here, "# OUTER"), line_of(here, "# INNER"), SLEEPER_LINE]
    assert timers(child)[0]["due_in"] > LONG - 5
    # A task awaited by another is not a root.
    assert "child" not in [r["name"] for r in tree["roots"]]


def test_wait_for(run, loop_kind):
    async def parent(t):
        await asyncio.wait_for(t, LONG * 2)

    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(sleeper(), name="child")
        p = loop.create_task(parent(child), name="parent")
        return await tree_then_cancel(p, child)

    node = find(run(main()), "parent")
    [child] = node["children"]
    assert child["name"] == "child"
    # 3.10/3.11: wait_for waits on a future that the child's done-callback releases, with a
    # timeout TimerHandle in its frame; 3.12+: it awaits the task inside asyncio.timeout().
    assert child["via"] == ("wait_for" if sys.version_info < (3, 12) else "await")
    assert_sleeping(child)
    timeouts = timers(node)
    if sys.version_info < (3, 12) or loop_kind == "asyncio":
        # The stock loop lists its timers (_scheduled); oxloop's are in the Rust heap and the
        # 3.12+ Timeout's handle is in no frame local.
        [timeout] = timeouts
        assert LONG * 2 - 5 < timeout["due_in"] <= LONG * 2
    else:
        assert timeouts == []


def test_shield(run):
    async def parent(t):
        await asyncio.shield(t)

    async def main():
        loop = asyncio.get_running_loop()
        child = loop.create_task(sleeper(), name="child")
        p = loop.create_task(parent(child), name="parent")
        return await tree_then_cancel(p, child)

    node = find(run(main()), "parent")
    assert child_names(node) == [("shield", "child")]
    assert node["waiting_on"] == []
    assert_sleeping(node["children"][0])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is new in 3.11")
def test_taskgroup(run):
    async def parent(started):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper(), name="tg-a")
            tg.create_task(sleeper(), name="tg-b")
            await started.wait()  # BODY

    async def main():
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        p = loop.create_task(parent(started), name="parent")
        await settle()
        # While the body runs, and once it waits in __aexit__, the children are the group's.
        body = oxloop.task_tree()
        started.set()
        exiting = await tree_then_cancel(p)
        return body, exiting

    body, exiting = run(main())
    for tree in (body, exiting):
        node = find(tree, "parent")
        assert child_names(node) == [("taskgroup", "tg-a"), ("taskgroup", "tg-b")]
        for child in node["children"]:
            assert_sleeping(child)
    assert find(body, "parent")["stack"][0]["line"] == line_of(test_taskgroup, "# BODY")


def test_sock_recv_waits_on_fd_readable(run):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        loop = asyncio.get_running_loop()
        t = loop.create_task(loop.sock_recv(a, 100), name="recv")
        return await tree_then_cancel(t)

    try:
        node = find(run(main()), "recv")
        assert {"kind": "fd", "fd": a.fileno(), "event": "read"} in node["waiting_on"]
    finally:
        a.close()
        b.close()


def test_sock_sendall_waits_on_fd_writable(run):
    a, b = socket.socketpair()
    a.setblocking(False)
    payload = b"x" * (64 * 1024 * 1024)  # more than both socket buffers hold

    async def main():
        loop = asyncio.get_running_loop()
        t = loop.create_task(loop.sock_sendall(a, payload), name="send")
        return await tree_then_cancel(t)

    try:
        node = find(run(main()), "send")
        assert {"kind": "fd", "fd": a.fileno(), "event": "write"} in node["waiting_on"]
    finally:
        a.close()
        b.close()


def test_stream_read_waits_on_its_socket(run):
    a, b = socket.socketpair()

    async def main():
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(sock=a)
        t = loop.create_task(reader.read(10), name="read")
        tree = await tree_then_cancel(t)
        writer.close()
        await writer.wait_closed()
        return tree, writer

    try:
        tree, _ = run(main())
        node = find(tree, "read")
        fds = [w for w in node["waiting_on"] if w["kind"] == "fd"]
        assert fds == [{"kind": "fd", "fd": fds[0]["fd"], "event": "read"}]
        assert node["stack"][-1]["function"].endswith("_wait_for_data")
    finally:
        b.close()


def test_running_task_and_done_tasks(run):
    async def quick():
        return 1

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_task(quick(), name="done")
        await done
        asyncio.current_task().set_name("main")
        return oxloop.task_tree()

    tree = run(main())
    assert tree["tasks"] == 1
    [root] = tree["roots"]
    assert (root["name"], root["state"], root["waiting_on"]) == ("main", "running", [])
    assert root["stack"][-1]["file"] == __file__


def test_text_output_and_limit(run):
    async def parent():
        await asyncio.gather(asyncio.ensure_future(sleeper()))

    async def main():
        p = asyncio.get_running_loop().create_task(parent(), name="parent")
        await settle()
        full, short = io.StringIO(), io.StringIO()
        oxloop.dump_tasks(file=full)
        oxloop.dump_tasks(asyncio.get_running_loop(), file=short, limit=1)
        p.cancel()
        await asyncio.gather(p, return_exceptions=True)
        return full.getvalue(), short.getvalue()

    full, short = run(main())
    lines = full.splitlines()
    assert "task(s) on " in lines[0]
    i = next(i for i, line in enumerate(lines) if line.startswith("Task 'parent' test_text"))
    assert "<locals>.parent() " in lines[i]
    assert lines[i].endswith(" pending")
    assert lines[i + 1].startswith("│   at " + __file__ + ":")
    assert "└── [gather] Task 'Task-" in full and " sleeper() pending" in full
    assert f"at {__file__}:{SLEEPER_LINE} in sleeper" in full
    [due] = re.findall(
        r"waits on timer due in (\d+\.\d{3}) s \(_set_result_unless_cancelled\)", full
    )
    assert LONG - 5 < float(due) <= LONG
    # limit=1: only the innermost frame of each task (asyncio.sleep's for the sleeper).
    assert f"{__file__}:{SLEEPER_LINE}" not in short
    assert "in sleep" in short


def test_dump_to_stderr_by_default(run, capsys):
    async def main():
        oxloop.dump_tasks()

    run(main())
    out, err = capsys.readouterr()
    assert out == ""
    assert "Task " in err and " running" in err


def test_requires_a_loop():
    with pytest.raises(RuntimeError, match="no running event loop"):
        oxloop.dump_tasks()


def test_stopped_loop_can_be_dumped(loop):
    # From the loop's thread while it is not running (e.g. in a debugger between two runs).
    t = loop.create_task(sleeper(), name="idle")
    loop.run_until_complete(settle())
    text = io.StringIO()
    oxloop.dump_tasks(loop, file=text)
    assert "Task 'idle' sleeper() pending" in text.getvalue()
    t.cancel()
    loop.run_until_complete(asyncio.gather(t, return_exceptions=True))


def test_pure_python_tasks(loop):
    # asyncio's Python Task class (tasks._PyTask), as a task factory may install it.
    def factory(loop, coro, **kwargs):
        return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)

    async def parent():
        await asyncio.gather(sleeper(), asyncio.shield(loop.create_task(sleeper())))

    async def main():
        p = loop.create_task(parent(), name="parent")
        return await tree_then_cancel(p)

    node = find(loop.run_until_complete(main()), "parent")
    assert node["kind"] == "task"
    assert [c["via"] for c in node["children"]] == ["gather", "gather"]
    first, second = node["children"]
    assert_sleeping(first)
    # gather wrapped shield's outer future, which the shielded task resolves.
    assert (second["kind"], second["children"][0]["via"]) == ("future", "shield")
    assert_sleeping(second["children"][0])


def test_waits_on_synchronisation_primitives(run):
    async def main():
        loop = asyncio.get_running_loop()
        event, queue, lock = asyncio.Event(), asyncio.Queue(), asyncio.Lock()
        await lock.acquire()
        waiting = [
            loop.create_task(event.wait(), name="event"),
            loop.create_task(queue.get(), name="queue"),
            loop.create_task(lock.acquire(), name="lock"),
        ]
        tree = await tree_then_cancel(*waiting)
        return tree, {"event": event, "queue": queue, "lock": lock}

    tree, objects = run(main())
    for name, obj in objects.items():
        node = find(tree, name)
        [wait] = node["waiting_on"]
        assert wait["kind"] == "primitive"
        assert wait["type"] == type(obj).__qualname__
        assert type(obj).__name__ in wait["repr"] and hex(id(obj))[2:] in wait["repr"]

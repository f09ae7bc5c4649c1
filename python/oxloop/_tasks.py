"""Task dumps: the tree of a loop's live tasks, who awaits whom, and what each one waits on.

``task_tree(loop)`` builds a plain-dict description (JSON-serialisable: the monitor sends it
over its socket); ``dump_tasks(loop)`` prints it; ``format_task_tree(tree)`` turns a tree,
possibly received from another process, into the text ``dump_tasks`` prints.

Edges come from what asyncio's own objects hold, on 3.10-3.15, on C and Python tasks alike, on
oxloop and on stock loops:
- ``task._fut_waiter`` is the future a suspended task waits on. A Task there is a plain
  ``await task``; a ``tasks._GatheringFuture`` lists its children in ``_children``.
- Otherwise the waiter is resolved by a done-callback of some other task: ``wait_for`` (3.10,
  3.11) adds ``partial(_release_waiter, waiter)`` to the inner task, ``shield`` adds a closure
  over its outer future. A task whose callbacks reference the waiter (as a partial's argument,
  a bound method's ``__self__`` or a closure cell) is a child of the waiting task.
- A TaskGroup (3.11+) adds its bound ``_on_task_done`` to each child task; its
  ``_parent_task`` is the parent, whatever the parent is doing meanwhile.
What the loop knows a leaf waits on: a TimerHandle that is a local of a frame in the task's
await chain (``asyncio.sleep``'s ``h``, ``wait_for``'s ``timeout_handle`` on 3.10/3.11) or, on
loops that keep their timers in ``_scheduled`` (stock asyncio), a timer whose arguments are the
waiter; an fd whose reader or writer handle in ``loop._selector.get_map()`` has the waiter
among its arguments or whose callback is oxloop's ``SockWaiter`` for the waiter, or named by a
``_sock_read_done`` / ``_sock_write_done`` callback.

Invariants: read-only (nothing here changes a task, a future or the loop); call it on the
loop's thread (``all_tasks`` and the futures' callback lists are not thread-safe), which the
monitor does through ``call_soon_threadsafe``. Objects not understood are reported by repr,
never an error: a dump must work on whatever the program runs.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import types
from asyncio import events, futures, tasks
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ._oxloop import SockWaiter

__all__ = ["dump_tasks", "format_task_tree", "task_tree"]

_GatheringFuture = getattr(tasks, "_GatheringFuture", None)
# The generator frame of a pure-Python Future's __await__ only says "yield self" (skipped in
# stacks). Probed: present on 3.10-3.15; without it such frames just show.
_FUTURE_AWAIT_CODE = getattr(
    getattr(getattr(futures, "_PyFuture", None), "__await__", None), "__code__", None
)
_MAX_CHAIN = 200  # await chains deeper than this are cut (recursion in user code).


_TASK_TYPES = (asyncio.Task, getattr(tasks, "_PyTask", asyncio.Task))

# 3.14 keeps C tasks in per-thread linked lists that ``_asyncio.all_tasks`` / ``current_task``
# read (Modules/_asynciomodule.c; part of the external task inspection of gh-91048), while the
# Python Task class (``tasks._PyTask``, as a task factory may install it) still registers in
# ``tasks._scheduled_tasks`` and ``tasks._current_tasks``, which only the Python twins
# ``tasks._py_all_tasks`` / ``_py_current_task`` read: asyncio's own ``all_tasks()`` misses
# such tasks there. On 3.10-3.13 both classes share one registry (``_py_all_tasks`` does not
# exist; ``_py_current_task`` reads the dict the C one reads). Probed by name; without them
# the dump shows what asyncio's functions show.
_PY_ALL_TASKS = getattr(tasks, "_py_all_tasks", None)
_PY_CURRENT_TASK = getattr(tasks, "_py_current_task", None)


def live_tasks(loop: asyncio.AbstractEventLoop) -> set[Any]:
    """``asyncio.all_tasks(loop)`` plus, on 3.14+, the Python-class tasks it does not see.

    Callable from another thread as asyncio's is: a registry changed mid-copy raises
    RuntimeError after a few tries, as ``all_tasks`` does on 3.10-3.13."""
    found = set(tasks.all_tasks(loop))
    if _PY_ALL_TASKS is not None and _PY_ALL_TASKS is not tasks.all_tasks:
        for attempt in range(100):
            try:
                found |= _PY_ALL_TASKS(loop)
                break
            except RuntimeError:  # "Set changed size during iteration": another thread
                if attempt == 99:
                    raise
    return found


def _current_task(loop: asyncio.AbstractEventLoop) -> Any:
    current = tasks.current_task(loop)
    if current is None and _PY_CURRENT_TASK is not None:
        current = _PY_CURRENT_TASK(loop)
    return current


def _is_task(obj: Any) -> bool:
    # asyncio.Task is the C class; its Python twin (tasks._PyTask) is not a subclass, and task
    # factories may return other Future subclasses with the Task API.
    return isinstance(obj, _TASK_TYPES) or (
        futures.isfuture(obj) and callable(getattr(obj, "get_coro", None))
    )


def _resolve_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None:
        return loop
    running = events._get_running_loop()
    if running is None:
        raise RuntimeError("no running event loop: pass the loop to dump")
    return running


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    if isinstance(name, str):
        return name
    code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
    if code is not None:
        return getattr(code, "co_qualname", code.co_name)
    return type(obj).__name__


def _callback_name(cb: Any) -> str:
    while isinstance(cb, functools.partial):
        cb = cb.func
    return _qualname(getattr(cb, "__func__", cb))


def _await_chain(coro: Any) -> Iterator[types.FrameType]:
    """Frames of a coroutine and of what it awaits, outermost first."""
    depth = 0
    while coro is not None and depth < _MAX_CHAIN:
        depth += 1
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None and frame.f_code is not _FUTURE_AWAIT_CODE:
            yield frame
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            nxt = getattr(coro, "gi_yieldfrom", None)
        if nxt is None:
            nxt = getattr(coro, "ag_await", None)
        coro = nxt


def _frame_locals(frame: types.FrameType) -> Iterable[Any]:
    try:
        return list(frame.f_locals.values())
    except Exception:  # a frame being torn down; nothing to learn from it
        return ()


def _callbacks(fut: Any) -> list[Any]:
    try:
        cbs = fut._callbacks
    except AttributeError:
        return []
    # Python futures keep (callback, context) pairs since 3.7, C futures return the same.
    return [c[0] if isinstance(c, tuple) else c for c in (cbs or ())]


def _referents(cb: Any) -> Iterator[Any]:
    """The objects a done-callback holds: partial arguments, a bound method's self, closures."""
    seen = 0
    stack = [cb]
    while stack and seen < 32:
        seen += 1
        obj = stack.pop()
        if isinstance(obj, functools.partial):
            stack.append(obj.func)
            yield from obj.args
            yield from (obj.keywords or {}).values()
            continue
        self_ = getattr(obj, "__self__", None)
        if self_ is not None and not isinstance(self_, types.ModuleType):
            yield self_
        func = getattr(obj, "__func__", obj)
        for cell in getattr(func, "__closure__", None) or ():
            try:
                yield cell.cell_contents
            except ValueError:  # an empty cell
                pass


def _holds_waiter(obj: Any, waiter: Any) -> bool:
    """Whether ``obj`` is a synchronisation primitive queueing ``waiter``: asyncio's Lock,
    Event, Condition and Semaphore keep waiting futures in ``_waiters``, Queue in ``_getters``
    and ``_putters`` (locks.py, queues.py)."""
    if obj is waiter or isinstance(obj, (type, types.ModuleType)):
        return False
    for attr in ("_waiters", "_getters", "_putters"):
        queue = getattr(obj, attr, None)
        if queue is not None and not isinstance(queue, (str, bytes, dict)):
            try:
                if any(w is waiter for w in queue):
                    return True
            except TypeError:  # not iterable
                continue
    return False


def _via_of(cb: Any) -> str:
    name = _callback_name(cb)
    if name.endswith("_release_waiter"):
        return "wait_for"
    if "shield" in name:
        return "shield"
    if "gather" in name:
        return "gather"
    return "callback"


def _frame_info(frame: types.FrameType) -> dict[str, Any]:
    code = frame.f_code
    return {
        "function": getattr(code, "co_qualname", code.co_name),
        "file": code.co_filename,
        "line": frame.f_lineno,
    }


class _Builder:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = loop.time()
        self.tasks = list(live_tasks(loop))
        current = _current_task(loop)
        if current is not None and current not in self.tasks:
            self.tasks.append(current)
        self.current = current
        # waiter future id -> [(feeder future, via)]: who resolves a future by a callback.
        self.feeds: dict[int, list[tuple[Any, str]]] = {}
        # parent task id -> child tasks of its TaskGroups.
        self.group_children: dict[int, list[Any]] = {}
        for t in self.tasks:
            self._index(t)
        self.fd_waits = self._fd_handles()
        self.visited: set[int] = set()

    def _index(self, fut: Any) -> None:
        for cb in _callbacks(fut):
            if _callback_name(cb).endswith("wakeup"):
                # Task.__wakeup / C task_wakeup: the task awaiting ``fut``, already its parent
                # through ``_fut_waiter``.
                continue
            owner = getattr(cb, "__self__", None)
            parent = getattr(owner, "_parent_task", None)
            if parent is not None and _callback_name(cb).endswith("_on_task_done"):
                self.group_children.setdefault(id(parent), []).append(fut)
                continue
            for ref in _referents(cb):
                if futures.isfuture(ref) and ref is not fut:
                    self.feeds.setdefault(id(ref), []).append((fut, _via_of(cb)))

    def _fd_handles(self) -> list[tuple[int, str, Any]]:
        """(fd, "read"|"write", handle) of the loop's registrations, where it exposes them."""
        selector = getattr(self.loop, "_selector", None)
        out: list[tuple[int, str, Any]] = []
        try:
            keys = list(selector.get_map().values()) if selector is not None else []
        except Exception:
            return out
        for key in keys:
            data = key.data
            if not (isinstance(data, tuple) and len(data) == 2):
                continue
            for event, handle in zip(("read", "write"), data, strict=True):
                if handle is not None:
                    out.append((key.fd, event, handle))
        return out

    # -- what a leaf waits on ---------------------------------------------------------------

    def _timer(self, handle: events.TimerHandle, why: str) -> dict[str, Any]:
        return {
            "kind": "timer",
            "due_in": round(handle.when() - self.now, 6),
            "callback": _callback_name(handle._callback),  # type: ignore[attr-defined]
            "why": why,
        }

    def waits(self, task: Any, waiter: Any, frames: list[types.FrameType]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        seen_handles: set[int] = set()
        fds: set[tuple[int, str]] = set()
        for frame in frames:
            for value in _frame_locals(frame):
                if (
                    isinstance(value, events.TimerHandle)
                    and not value.cancelled()
                    and id(value) not in seen_handles
                ):
                    seen_handles.add(id(value))
                    found.append(self._timer(value, "local of " + frame.f_code.co_name))
                elif waiter is not None and _holds_waiter(value, waiter):
                    if id(value) not in seen_handles:
                        seen_handles.add(id(value))
                        found.append(
                            {
                                "kind": "primitive",
                                "type": type(value).__qualname__,
                                "repr": _short_repr(value),
                            }
                        )
                elif waiter is not None and self._is_stream_waiter(value, waiter):
                    fd = self._transport_fd(value._transport)
                    if fd is not None:
                        fds.add((fd, "read"))
        if waiter is None:
            found.extend({"kind": "fd", "fd": fd, "event": event} for fd, event in sorted(fds))
            return found
        # Stock loops keep their timers in a heap list (base_events.BaseEventLoop._scheduled).
        scheduled = getattr(self.loop, "_scheduled", None)
        if isinstance(scheduled, list):
            for handle in scheduled:
                if id(handle) in seen_handles or handle.cancelled():
                    continue
                if any(r is waiter for r in handle._args or ()):
                    seen_handles.add(id(handle))
                    found.append(self._timer(handle, "resolves the future"))
                elif getattr(getattr(handle._callback, "__self__", None), "_task", None) is task:
                    # asyncio.timeout() (3.11+, and wait_for on 3.12+): Timeout._on_timeout.
                    seen_handles.add(id(handle))
                    found.append(self._timer(handle, "timeout"))
        for fd, event, handle in self.fd_waits:
            if any(r is waiter for r in handle._args or ()) or (
                # oxloop's sock_recv / sock_recv_into / sock_sendall (src/sock.rs).
                isinstance(handle._callback, SockWaiter) and handle._callback.future is waiter
            ):
                fds.add((fd, event))
        for cb in _callbacks(waiter):
            name = _callback_name(cb)
            if isinstance(cb, functools.partial) and cb.args and isinstance(cb.args[0], int):
                if name.endswith("_sock_read_done"):
                    fds.add((cb.args[0], "read"))
                elif name.endswith("_sock_write_done"):
                    fds.add((cb.args[0], "write"))
        found.extend({"kind": "fd", "fd": fd, "event": event} for fd, event in sorted(fds))
        plain = not _is_task(waiter) and not (
            _GatheringFuture is not None and isinstance(waiter, _GatheringFuture)
        )
        if not found and plain and not self.feeds.get(id(waiter)):
            found.append({"kind": "future", "repr": _short_repr(waiter)})
        return found

    @staticmethod
    def _is_stream_waiter(value: Any, waiter: Any) -> bool:
        return isinstance(value, asyncio.StreamReader) and (
            getattr(value, "_waiter", None) is waiter
        )

    @staticmethod
    def _transport_fd(transport: Any) -> int | None:
        try:
            sock = transport.get_extra_info("socket")
            return sock.fileno() if sock is not None else None
        except Exception:
            return None

    # -- nodes ------------------------------------------------------------------------------

    def node(self, fut: Any, via: str | None) -> dict[str, Any]:
        if id(fut) in self.visited:
            return {"kind": "ref", "id": id(fut), "name": _name(fut), "via": via}
        self.visited.add(id(fut))
        if not _is_task(fut):
            return self._future_node(fut, via)
        coro = fut.get_coro()
        frames = list(_await_chain(coro))
        waiter = getattr(fut, "_fut_waiter", None)
        if fut is self.current:
            state = "running"
        elif fut.done():
            state = "done"
        elif hasattr(fut, "cancelling") and fut.cancelling():
            state = "cancelling"
        else:
            state = "pending"
        children = [self.node(c, v) for c, v in self._children_of(fut, waiter)]
        return {
            "kind": "task",
            "id": id(fut),
            "name": fut.get_name(),
            "coro": _qualname(coro),
            "state": state,
            "via": via,
            "stack": [_frame_info(f) for f in frames],
            "waiting_on": [] if state != "pending" else self.waits(fut, waiter, frames),
            "children": children,
        }

    def _future_node(self, fut: Any, via: str | None) -> dict[str, Any]:
        return {
            "kind": "future",
            "id": id(fut),
            "name": _name(fut),
            "repr": _short_repr(fut),
            "state": "done" if fut.done() else "pending",
            "via": via,
            "stack": [],
            "waiting_on": [] if fut.done() else self.waits(None, fut, []),
            "children": [self.node(c, v) for c, v in self._children_of(fut, fut)],
        }

    def _children_of(self, owner: Any, waiter: Any) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        ids: set[int] = set()

        def add(child: Any, via: str) -> None:
            if id(child) not in ids and child is not owner:
                ids.add(id(child))
                out.append((child, via))

        if waiter is not None and waiter is not owner:
            if _GatheringFuture is not None and isinstance(waiter, _GatheringFuture):
                for child in getattr(waiter, "_children", ()) or ():
                    add(child, "gather")
            elif _is_task(waiter):
                add(waiter, "await")
            elif futures.isfuture(waiter):
                for child, via in self.feeds.get(id(waiter), ()):
                    add(child, via)
        if owner is waiter and _GatheringFuture is not None and isinstance(owner, _GatheringFuture):
            for child in getattr(owner, "_children", ()) or ():
                add(child, "gather")
        elif owner is waiter:
            for child, via in self.feeds.get(id(owner), ()):
                add(child, via)
        for child in sorted(self.group_children.get(id(owner), ()), key=_task_order):
            if not child.done():
                add(child, "taskgroup")
        return out

    def build(self) -> dict[str, Any]:
        # Roots: tasks nobody awaits. Found by building every task's subtree from a scratch
        # pass and taking the tasks that no other subtree reached.
        reached: set[int] = set()
        for t in self.tasks:
            waiter = getattr(t, "_fut_waiter", None)
            stack = [c for c, _ in self._children_of(t, waiter)]
            while stack:
                c = stack.pop()
                if id(c) in reached:
                    continue
                reached.add(id(c))
                if not _is_task(c):
                    stack.extend(x for x, _ in self._children_of(c, c))
        ordered = sorted(self.tasks, key=_task_order)
        roots = [self.node(t, None) for t in ordered if id(t) not in reached]
        # Tasks only reachable from a cycle (none in asyncio's own patterns) still show.
        roots += [self.node(t, None) for t in ordered if id(t) not in self.visited]
        return {
            "loop": type(self.loop).__name__,
            "time": self.now,
            "tasks": sum(1 for t in self.tasks if not t.done()),
            "roots": roots,
        }


def _task_order(task: Any) -> tuple[int, str]:
    # Tasks named "Task-N" in creation order; others by name.
    name = task.get_name()
    if name.startswith("Task-") and name[5:].isdigit():
        return (int(name[5:]), "")
    return (sys.maxsize, name)


def _name(fut: Any) -> str:
    get_name = getattr(fut, "get_name", None)
    return get_name() if get_name is not None else type(fut).__name__


def _short_repr(obj: Any, limit: int = 120) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the dump
        text = f"<{type(obj).__name__} (repr failed: {exc!r})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def task_tree(loop: asyncio.AbstractEventLoop | None = None) -> dict[str, Any]:
    """The tree of ``loop``'s live tasks as plain dicts (JSON-serialisable).

    ``{"loop": class name, "time": loop.time(), "tasks": live task count, "roots": [node]}``;
    a node is ``{"kind": "task"|"future"|"ref", "id", "name", "coro", "state", "via",
    "stack": [{"function", "file", "line"}] (outermost first), "waiting_on": [...],
    "children": [node]}``. ``via`` says how the parent waits on the node ("await", "gather",
    "taskgroup", "wait_for", "shield", "callback"; None for a root). ``waiting_on`` holds
    ``{"kind": "timer", "due_in": s, "callback", "why"}``, ``{"kind": "fd", "fd", "event":
    "read"|"write"}``, ``{"kind": "primitive", "type", "repr"}`` (an asyncio Lock, Event,
    Condition, Semaphore or Queue queueing the task) or ``{"kind": "future", "repr"}``. A
    task reached a second time is a ``ref`` node. ``loop`` defaults to the running loop; call
    on the loop's thread.
    """
    return _Builder(_resolve_loop(loop)).build()


def _describe_wait(w: dict[str, Any]) -> str:
    if w["kind"] == "timer":
        return f"timer due in {w['due_in']:.3f} s ({w['callback']})"
    if w["kind"] == "fd":
        return f"fd {w['fd']} {'readable' if w['event'] == 'read' else 'writable'}"
    if w["kind"] == "primitive":
        return w["repr"]
    return f"future {w.get('repr', '?')}"


def format_task_tree(tree: dict[str, Any], *, limit: int | None = None) -> str:
    """The text of ``dump_tasks`` for a tree from ``task_tree`` (here or in another process).

    ``limit``: at most that many await frames per task, the innermost ones (where it is
    blocked), as ``traceback``'s ``limit`` keeps the most recent entries.
    """
    lines = [f"{tree['tasks']} task(s) on {tree['loop']} at loop time {tree['time']:.3f}"]

    def emit(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        via = f"[{node['via']}] " if node.get("via") else ""
        if node["kind"] == "ref":
            lines.append(f"{prefix}{branch}{via}(task {node['name']!r}, shown above)")
            return
        if node["kind"] == "task":
            head = f"Task {node['name']!r} {node['coro']}() {node['state']}"
        else:
            head = f"{node['repr']} {node['state']}"
        lines.append(f"{prefix}{branch}{via}{head}")
        inner = prefix + ("" if top else ("    " if last else "│   "))
        children = node.get("children") or []
        bar = "│   " if children else "    "
        stack = node.get("stack") or []
        if limit is not None:
            stack = stack[-limit:] if limit > 0 else []
        for fr in stack:
            lines.append(f"{inner}{bar}at {fr['file']}:{fr['line']} in {fr['function']}")
        for w in node.get("waiting_on") or []:
            lines.append(f"{inner}{bar}waits on {_describe_wait(w)}")
        for i, child in enumerate(children):
            emit(child, inner, i == len(children) - 1, False)

    for root in tree["roots"]:
        emit(root, "", True, True)
    return "\n".join(lines) + "\n"


def dump_tasks(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    file: IO[str] | None = None,
    limit: int | None = None,
) -> None:
    """Print the tree of ``loop``'s live tasks (default: the running loop) to ``file``
    (default ``sys.stderr``, as ``Task.print_stack``): each task's name, coroutine, the
    file:line of each await frame (at most ``limit``, the innermost), what it waits on (a
    timer due in N s, an fd readable or writable) and, indented under it, the tasks it awaits
    through gather, TaskGroup, wait_for, shield or a plain await."""
    text = format_task_tree(task_tree(loop), limit=limit)
    (sys.stderr if file is None else file).write(text)

"""What ``import oxloop`` loads, and that the public API is whole when parts load on first use.

``import oxloop`` loads what running a loop needs and nothing else (issue 17: scripts, CLIs and
cold starts pay for the import on every run; benches/import_time.py has the time beside uvloop's).
``oxloop.testing``, ``oxloop.monitor``, the task tree, metrics snapshots and slow-callback
reports load on first use (PEP 562 ``__getattr__`` in oxloop/__init__.py, or inside the method
that needs them). Each check runs in a fresh interpreter: this test process has loaded them all.
These are about oxloop's own package, so they run on oxloop only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from _cli import child_env

# The modules a loop needs: the package, its entry points and the loop class with its core.
LOOP_MODULES = {
    "oxloop",
    "oxloop._api",
    "oxloop._compat",
    "oxloop._contract",
    "oxloop._loop",
    "oxloop._oxloop",
    "oxloop._pipes",
    "oxloop._subprocess",
    "oxloop._signals",
    "oxloop._transports",
}
# Besides those, all `import oxloop` may add to what `import asyncio` loaded: `from __future__
# import annotations` is an import of __future__, and gc is built into the interpreter.
ALLOWED_EXTRA = {"__future__", "gc"}


def run_fresh(source: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        env=child_env({"OXLOOP_MONITOR": "", "OXLOOP_SLOW_CALLBACKS": "", **(env or {})}),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_loads_only_what_a_loop_needs():
    out = run_fresh(
        """
        import asyncio, json, sys
        before = set(sys.modules)
        import oxloop
        imported = set(sys.modules) - before
        oxloop.run(asyncio.sleep(0))  # running a loop loads nothing more either
        ran = set(sys.modules) - before - imported
        print(json.dumps([sorted(imported), sorted(ran)]))
        """
    )
    imported, ran = (set(names) for names in json.loads(out))
    assert {m for m in imported if m.startswith("oxloop")} == LOOP_MODULES
    # Neither heavy stdlib modules (typing on 3.14+, json, dataclasses, ipaddress) nor oxloop's
    # testing, monitor, task tree, metrics or insight modules.
    assert imported - LOOP_MODULES <= ALLOWED_EXTRA, sorted(imported - LOOP_MODULES)
    assert ran == set()


def test_public_api_is_whole_and_loads_on_first_use():
    out = run_fresh(
        """
        import json, sys
        import oxloop

        report = {}
        lazy = ["testing", "monitor", "dump_tasks", "task_tree", "LoopMetrics",
                "SlowCallbackReport"]
        report["not_loaded"] = sorted(m for m in ("oxloop.testing", "oxloop.monitor",
            "oxloop._tasks", "oxloop._metrics", "oxloop._insight") if m in sys.modules)
        report["in_dir"] = sorted(set(oxloop.__all__ + lazy) - set(dir(oxloop)))
        namespace = {}
        exec("from oxloop import *", namespace)
        report["star"] = sorted(set(oxloop.__all__) - set(namespace))
        from oxloop import LoopMetrics, SlowCallbackReport, dump_tasks, task_tree, testing
        from oxloop import monitor
        import oxloop._insight, oxloop._metrics, oxloop._tasks
        report["same"] = [
            testing is sys.modules["oxloop.testing"] is oxloop.testing,
            monitor is sys.modules["oxloop.monitor"] is oxloop.monitor,
            dump_tasks is oxloop._tasks.dump_tasks is oxloop.dump_tasks,
            task_tree is oxloop._tasks.task_tree,
            LoopMetrics is oxloop._metrics.LoopMetrics is oxloop.LoopMetrics,
            SlowCallbackReport is oxloop._insight.SlowCallbackReport,
            oxloop.testing.VirtualClock.__module__ == "oxloop.testing",
        ]
        try:
            oxloop.no_such_name
        except AttributeError as e:
            report["unknown"] = str(e)
        print(json.dumps(report))
        """
    )
    report = json.loads(out)
    assert report["not_loaded"] == []
    assert report["in_dir"] == []
    assert report["star"] == []
    assert all(report["same"]), report["same"]
    assert report["unknown"] == "module 'oxloop' has no attribute 'no_such_name'"


def test_loop_features_load_what_they_need_on_first_use():
    # metrics() and slow-callback reports import their modules when first used; so does
    # getaddrinfo's numeric-host shortcut (ipaddress).
    out = run_fresh(
        """
        import asyncio, json, sys
        import oxloop

        async def main():
            loop = asyncio.get_running_loop()
            loop.enable_slow_callback_reports()
            loop.disable_slow_callback_reports()
            infos = await loop.getaddrinfo("127.0.0.1", 80)
            return type(loop.metrics()).__name__, len(infos) > 0

        print(json.dumps(oxloop.run(main())))
        """
    )
    assert json.loads(out) == ["LoopMetrics", True]

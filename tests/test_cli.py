"""``python -m oxloop``: runs programs exactly as ``python`` does, on oxloop loops.

Every behaviour is compared with plain ``python`` running the same program (same interpreter,
subprocesses): stdout, exit status and stderr (normalized by ``_cli.normalize_stderr``). The
loop class is the one thing that must differ; programs print it on a line of its own.
"""

from __future__ import annotations

import signal
import sys
import textwrap

import oxloop
import pytest
from _cli import assert_same, normalize_stderr, run_both, run_python

# Prints what a program can see of how it was started, then which loop asyncio.run() gives.
PROBE = textwrap.dedent(
    """\
    import asyncio, os, sys
    import __main__
    print("argv", sys.argv)
    print("name", __name__, __main__.__dict__ is globals())
    print("path0", sys.path[0])
    print("file", globals().get("__file__"), globals().get("__cached__", "-"))
    print("spec", getattr(__spec__, "name", None), __package__)
    print("main keys", sorted(k for k in globals() if k.startswith("__")))

    async def main():
        return asyncio.get_running_loop()

    if __name__ == "__main__":
        loop = asyncio.run(main())
        import oxloop
        print("LOOP", isinstance(loop, oxloop.Loop))
    """
)


def split_loop_line(stdout: str) -> tuple[str, list[str]]:
    lines = stdout.splitlines()
    loop_lines = [line for line in lines if line.startswith("LOOP ")]
    return "\n".join(line for line in lines if not line.startswith("LOOP ")), loop_lines


def test_help():
    result = run_python(["-m", "oxloop", "--help"])
    assert result.returncode == 0
    assert "usage: python -m oxloop" in result.stdout
    assert "-m module" in result.stdout
    assert result.stderr == ""
    assert run_python(["-m", "oxloop", "-h"]).stdout == result.stdout


def test_version():
    result = run_python(["-m", "oxloop", "--version"])
    assert result.returncode == 0
    assert result.stdout.startswith(f"oxloop {oxloop.__version__} ")
    assert run_python(["-m", "oxloop", "-V"]).stdout == result.stdout


@pytest.mark.parametrize("args", [[], ["-m"], ["-c"], ["--bogus", "x.py"], ["--"]])
def test_usage_errors(args):
    result = run_python(["-m", "oxloop", *args])
    assert result.returncode == 2
    assert "usage: python -m oxloop" in result.stderr
    assert result.stdout == ""


def test_script_with_args(tmp_path):
    (tmp_path / "sub").mkdir()
    script = tmp_path / "sub" / "probe.py"
    script.write_text(PROBE)
    plain, ox = run_both(["sub/probe.py", "a", "-m", "--x"], cwd=tmp_path)
    assert plain.returncode == ox.returncode == 0, ox.stderr
    assert ox.stderr == plain.stderr == ""
    plain_out, plain_loop = split_loop_line(plain.stdout)
    ox_out, ox_loop = split_loop_line(ox.stdout)
    assert ox_out == plain_out
    assert f"path0 {tmp_path / 'sub'}" in ox_out
    assert "argv ['sub/probe.py', 'a', '-m', '--x']" in ox_out
    assert (plain_loop, ox_loop) == (["LOOP False"], ["LOOP True"])


def test_script_through_symlink(tmp_path):
    # python puts the real script's directory in sys.path[0], and keeps the link in __file__.
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "probe.py").write_text(PROBE)
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "probe.py")
    plain, ox = run_both(["link.py"], cwd=tmp_path)
    assert split_loop_line(ox.stdout)[0] == split_loop_line(plain.stdout)[0]
    assert f"path0 {tmp_path / 'real'}" in ox.stdout


def test_script_imports_its_neighbours(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 'from helper'\n")
    (tmp_path / "prog.py").write_text("import helper\nprint(helper.VALUE)\n")
    plain, ox = run_both([str(tmp_path / "prog.py")])
    assert ox.stdout == plain.stdout == "from helper\n"


def test_module(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text(PROBE)
    plain, ox = run_both(["-m", "pkg.probe", "arg1", "arg2"], cwd=tmp_path)
    assert plain.returncode == ox.returncode == 0, ox.stderr
    assert ox.stderr == plain.stderr == ""
    plain_out, plain_loop = split_loop_line(plain.stdout)
    ox_out, ox_loop = split_loop_line(ox.stdout)
    assert ox_out == plain_out
    assert "spec pkg.probe pkg" in ox_out
    assert (plain_loop, ox_loop) == (["LOOP False"], ["LOOP True"])


def test_module_joined_option(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    plain, ox = run_both(["-mprobe", "x"], cwd=tmp_path)
    assert split_loop_line(ox.stdout)[0] == split_loop_line(plain.stdout)[0]
    assert ox.returncode == 0


def test_package_main(tmp_path):
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(PROBE)
    plain, ox = run_both(["-m", "app", "x"], cwd=tmp_path)
    assert split_loop_line(ox.stdout) == (split_loop_line(plain.stdout)[0], ["LOOP True"])


def test_directory_with_main(tmp_path):
    (tmp_path / "appdir").mkdir()
    (tmp_path / "appdir" / "__main__.py").write_text(PROBE)
    plain, ox = run_both(["appdir", "x"], cwd=tmp_path)
    assert ox.returncode == plain.returncode == 0, ox.stderr
    assert split_loop_line(ox.stdout) == (split_loop_line(plain.stdout)[0], ["LOOP True"])


def test_missing_module():
    plain, ox = run_both(["-m", "oxloop_no_such_module"])
    assert_same(plain, ox)
    assert plain.returncode == 1
    assert "No module named oxloop_no_such_module" in ox.stderr


def test_missing_script(tmp_path):
    plain, ox = run_both(["no_such_script.py"], cwd=tmp_path)
    assert_same(plain, ox)
    assert plain.returncode == 2


def test_command():
    code = PROBE.replace('if __name__ == "__main__":', "if True:")
    plain, ox = run_both(["-c", code, "arg"])
    assert plain.returncode == ox.returncode == 0, ox.stderr
    assert split_loop_line(ox.stdout) == (split_loop_line(plain.stdout)[0], ["LOOP True"])
    assert "argv ['-c', 'arg']" in ox.stdout


def test_stdin():
    plain, ox = run_both(["-", "arg"], input=PROBE)
    assert plain.returncode == ox.returncode == 0, ox.stderr
    assert split_loop_line(ox.stdout) == (split_loop_line(plain.stdout)[0], ["LOOP True"])


@pytest.mark.parametrize(
    "body",
    [
        "sys.exit(3)",
        "sys.exit(0)",
        "sys.exit()",
        "sys.exit('fatal: message on stderr')",
        "raise SystemExit(7)",
        "os._exit(5)",
    ],
)
def test_exit_status(tmp_path, body):
    (tmp_path / "prog.py").write_text(f"import os, sys\nprint('before', flush=True)\n{body}\n")
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert_same(plain, ox)


def test_exit_inside_asyncio_run(tmp_path):
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import asyncio, sys

            async def main():
                await asyncio.sleep(0)
                sys.exit(4)

            asyncio.run(main())
            """
        )
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert_same(plain, ox)
    assert ox.returncode == 4


UNCAUGHT = textwrap.dedent(
    """\
    def inner():
        try:
            {{}}["key"]
        except KeyError as e:
            raise ValueError("boom") from e

    def outer():
        inner()

    print("started")
    outer()
    """
)


def test_uncaught_exception_traceback(tmp_path):
    (tmp_path / "prog.py").write_text(UNCAUGHT.replace("{{}}", "{}"))
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert plain.returncode == 1
    assert "The above exception was the direct cause" in plain.stderr
    # Byte for byte: no oxloop or runpy frame in front of the program's own.
    assert ox.stderr == plain.stderr
    assert ox.stdout == plain.stdout
    assert ox.returncode == plain.returncode


def test_uncaught_exception_traceback_module(tmp_path):
    (tmp_path / "prog.py").write_text(UNCAUGHT.replace("{{}}", "{}"))
    plain, ox = run_both(["-m", "prog"], cwd=tmp_path)
    assert plain.returncode == 1
    assert (ox.stdout, ox.stderr, ox.returncode) == (plain.stdout, plain.stderr, 1)


def test_uncaught_exception_traceback_command():
    plain, ox = run_both(["-c", "print('x')\n1/0"])
    assert (ox.stdout, ox.stderr, ox.returncode) == (plain.stdout, plain.stderr, 1)


def test_syntax_error(tmp_path):
    (tmp_path / "prog.py").write_text("print('never')\nx = (\n")
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert (ox.stdout, ox.stderr, ox.returncode) == (plain.stdout, plain.stderr, 1)


def test_custom_excepthook_sees_clean_traceback(tmp_path):
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import sys, traceback

            def hook(etype, value, tb):
                print("hook:", etype.__name__, value)
                print("".join(traceback.format_tb(tb)), end="")

            sys.excepthook = hook
            raise RuntimeError("handled by hook")
            """
        )
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert "hook: RuntimeError handled by hook" in plain.stdout
    assert_same(plain, ox)


def test_exception_inside_asyncio_run(tmp_path):
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import asyncio

            async def fail():
                await asyncio.sleep(0)
                raise ValueError("inside the loop")

            async def main():
                await asyncio.gather(fail())

            asyncio.run(main())
            """
        )
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert plain.returncode == 1
    assert 'in fail\n    raise ValueError("inside the loop")' in plain.stderr
    assert_same(plain, ox)


def test_keyboard_interrupt_uncaught(tmp_path):
    (tmp_path / "prog.py").write_text(
        "import atexit\natexit.register(print, 'atexit ran')\nraise KeyboardInterrupt\n"
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    # python re-kills itself with SIGINT after finalizing, so the parent sees the signal.
    assert plain.returncode == -signal.SIGINT
    assert (ox.stdout, ox.stderr, ox.returncode) == (plain.stdout, plain.stderr, -signal.SIGINT)
    assert ox.stdout == "atexit ran\n"


def test_sigint_during_asyncio_run(tmp_path):
    # A real SIGINT while asyncio.run() waits: KeyboardInterrupt out of asyncio.run (on 3.11+
    # through Runner's handler, which cancels the main task), then death by SIGINT.
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import asyncio, os, signal

            async def main():
                loop = asyncio.get_running_loop()
                start = loop.time()
                loop.call_later(0.01, os.kill, os.getpid(), signal.SIGINT)
                try:
                    await asyncio.sleep(5)
                finally:
                    print("main unwound", "at once" if loop.time() - start < 4 else "too late")

            asyncio.run(main())
            """
        )
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert plain.returncode == -signal.SIGINT
    assert plain.stdout == "main unwound at once\n"
    assert plain.stderr.rstrip().endswith("KeyboardInterrupt")
    assert_same(plain, ox)


ALL_THE_WAYS = textwrap.dedent(
    """\
    import asyncio, sys, threading, warnings
    import oxloop

    def kind(loop):
        return "oxloop" if isinstance(loop, oxloop.Loop) else type(loop).__name__

    async def running():
        return asyncio.get_running_loop()

    def deprecated(call):
        # The program's own use of what 3.14 deprecates (policies) warns as it does without
        # oxloop; what is tested is that oxloop adds no warning of its own.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return call()

    print("policy is default policy", deprecated(lambda: isinstance(
        asyncio.get_event_loop_policy(), asyncio.DefaultEventLoopPolicy)))
    try:
        # 3.12-3.13 warn here that no loop was set, and make one; 3.14+ raise instead.
        loop = deprecated(asyncio.get_event_loop)
    except RuntimeError as e:
        print("get_event_loop", e)
    else:
        print("get_event_loop", kind(loop))
        loop.close()
    asyncio.set_event_loop(None)
    print("asyncio.run", kind(asyncio.run(running())))
    loop = asyncio.new_event_loop()
    print("new_event_loop", kind(loop))
    loop.close()
    loop = deprecated(asyncio.get_event_loop_policy).new_event_loop()
    print("policy.new_event_loop", kind(loop))
    loop.close()
    if sys.version_info >= (3, 11):
        with asyncio.Runner() as runner:
            print("Runner", kind(runner.run(running())))
    else:
        print("Runner", "oxloop")
    result = []
    thread = threading.Thread(target=lambda: result.append(kind(asyncio.run(running()))))
    thread.start()
    thread.join()
    print("asyncio.run in a thread", result[0])
    loop = asyncio.SelectorEventLoop()
    print("explicit SelectorEventLoop", kind(loop))
    loop.close()
    """
)


def test_every_default_loop_is_oxloop(tmp_path):
    (tmp_path / "prog.py").write_text(ALL_THE_WAYS)
    # -W error: setting the policy must not warn into the program (and nothing else may).
    result = run_python(["-W", "error", "-m", "oxloop", "prog.py"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "policy is default policy True",
        "get_event_loop There is no current event loop in thread 'MainThread'."
        if sys.version_info >= (3, 14)
        else "get_event_loop oxloop",
        "asyncio.run oxloop",
        "new_event_loop oxloop",
        "policy.new_event_loop oxloop",
        "Runner oxloop",
        "asyncio.run in a thread oxloop",
        "explicit SelectorEventLoop _UnixSelectorEventLoop",
    ]
    plain = run_python(["-W", "error", "prog.py"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "asyncio.run _UnixSelectorEventLoop" in plain.stdout


def test_deprecation_warnings_reach_the_program_as_under_python(tmp_path):
    # The default filters show DeprecationWarnings raised by __main__ code; they must keep doing
    # so (the program's module must be __main__ to the warnings machinery too).
    (tmp_path / "prog.py").write_text(
        "import warnings\nwarnings.warn('old stuff', DeprecationWarning)\nprint('done')\n"
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert "DeprecationWarning: old stuff" in plain.stderr
    assert_same(plain, ox)


def test_future_import_does_not_leak(tmp_path):
    # oxloop/__main__.py uses `from __future__ import annotations`; the program must not.
    (tmp_path / "prog.py").write_text("def f(x: int) -> None: pass\nprint(f.__annotations__)\n")
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert_same(plain, ox)
    assert "<class 'int'>" in ox.stdout


def test_process_pool_from_main_script(tmp_path):
    # Worker processes must find functions defined in the program's __main__.
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import asyncio, concurrent.futures

            def square(x):
                return x * x

            async def main():
                loop = asyncio.get_running_loop()
                with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
                    print(await asyncio.gather(*(loop.run_in_executor(pool, square, i)
                                                 for i in range(5))))

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    plain, ox = run_both(["prog.py"], cwd=tmp_path)
    assert plain.stdout == "[0, 1, 4, 9, 16]\n"
    assert_same(plain, ox)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="-P is new in 3.11")
def test_safe_path_flag(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "probe.py").write_text("import sys\nprint(sys.path[0])\n")
    plain = run_python(["-P", "sub/probe.py"], cwd=tmp_path)
    ox = run_python(["-P", "-m", "oxloop", "sub/probe.py"], cwd=tmp_path)
    assert ox.stdout == plain.stdout
    assert normalize_stderr(ox.stderr) == normalize_stderr(plain.stderr)

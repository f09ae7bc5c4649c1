"""``python -m oxloop``: run an unmodified asyncio program on oxloop.

    python -m oxloop script.py [args ...]
    python -m oxloop -m module [args ...]
    python -m oxloop -c "code" [args ...]
    python -m oxloop dump PID | top PID   (see _monitor_cli.py)

Role: make every loop the program gets from asyncio's defaults an oxloop loop, then run the
program the way ``python`` itself would have run it.

Invariants:
- The only change to asyncio is the event loop policy: ``oxloop.EventLoopPolicy`` (asyncio's
  default policy with oxloop's loop factory) is set before the program starts, without a
  warning (on 3.14+, where policies are deprecated, through asyncio's own non-warning
  setter). On every supported version ``asyncio.run()``, ``asyncio.Runner()``,
  ``asyncio.new_event_loop()`` and ``asyncio.get_event_loop()`` reach the policy's
  ``new_event_loop()``, so no asyncio function needs patching. Loops the program builds
  explicitly (``asyncio.SelectorEventLoop()``, ``loop_factory=...``) are left alone.
- What the program sees is what ``python`` gives it: a fresh ``__main__`` module with the same
  attributes, ``sys.argv`` (``[script, *args]``, ``["-c", *args]``, or the module's path for
  ``-m``), ``sys.path[0]`` (the script's real directory, ``''`` for ``-c``, the working
  directory for ``-m``; untouched under ``-P``/``-I``).
- How it ends is what ``python`` gives: the exit status of ``sys.exit()``, 1 and a traceback
  for an uncaught exception, death by SIGINT after the traceback for an uncaught
  ``KeyboardInterrupt``. Tracebacks start where python's start: oxloop's own frames are cut off
  before ``sys.excepthook`` sees them (``-m`` keeps runpy's frames, as ``python -m`` shows them).
"""

from __future__ import annotations

import builtins
import importlib.machinery
import linecache
import os
import pkgutil
import runpy
import sys
import types
from collections.abc import Callable
from typing import NoReturn

import oxloop
from oxloop import _api, _compat

USAGE = """\
usage: python -m oxloop [-h] [-V] (script | -m module | -c command | -) [args ...]

Run an asyncio program on oxloop: asyncio.run(), asyncio.Runner(), asyncio.new_event_loop()
and the default event loop policy all give oxloop loops.

  script       run a Python file (or a directory or zip file with __main__.py)
  -m module    run a library module as a script, like python -m
  -c command   run a program passed as a string, like python -c
  -            read the program from standard input
  -h, --help   show this help and exit
  -V, --version
               print oxloop's version and exit
  args         passed to the program in sys.argv[1:]

  dump PID     print the task tree of process PID (started with OXLOOP_MONITOR=1)
  top PID      show the loop metrics of process PID every second, until Ctrl-C
"""


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"python -m oxloop: {message}\n{USAGE}")
    sys.exit(2)


def _parse(argv: list[str]) -> tuple[str, str, list[str]]:
    """(mode, target, program args) from our own arguments; python's option syntax."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if arg in ("-V", "--version"):
            print(f"oxloop {oxloop.__version__} (Python {sys.version.split()[0]})")
            sys.exit(0)
        if arg == "--":
            if i + 1 >= len(argv):
                _usage_error("a script is required after --")
            return "script", argv[i + 1], argv[i + 2 :]
        if arg == "-":
            return "stdin", "-", argv[i + 1 :]
        if arg[:2] in ("-m", "-c"):
            # python accepts both "-m mod" and "-mmod".
            if len(arg) > 2:
                return arg[1], arg[2:], argv[i + 1 :]
            if i + 1 >= len(argv):
                _usage_error(f"argument expected for the {arg} option")
            return arg[1], argv[i + 1], argv[i + 2 :]
        if arg.startswith("-"):
            _usage_error(f"unknown option {arg}")
        return "script", arg, argv[i + 1 :]
    _usage_error("nothing to run")


def _install_policy() -> None:
    # Not oxloop.install(): that warns on 3.12+, and the warning is for people who write the
    # call, not for the programs run here. _compat.set_policy is asyncio's own non-warning
    # setter on 3.14+ (the public one warns there), so no filter has to be touched.
    _compat.set_policy(_api.EventLoopPolicy())


def _fresh_main(**attrs: object) -> types.ModuleType:
    """A new ``__main__`` module with the attributes python's own has, installed in sys.modules.

    Our own code runs in the ``__main__`` python made for ``-m oxloop``; the program must not
    see our globals, so it gets a module of its own.
    """
    module = types.ModuleType("__main__")
    ns = module.__dict__
    ns.update(__package__=None, __spec__=None, __builtins__=builtins)
    if sys.version_info < (3, 14):
        ns["__annotations__"] = {}
    ns.update(attrs)
    sys.modules["__main__"] = module
    return module


def _set_path0(value: str) -> None:
    # python -P / -I (safe_path, 3.11+) put neither the script's directory nor the working
    # directory in front of sys.path; python -m oxloop then has not put one there either.
    if getattr(sys.flags, "safe_path", False):
        return
    sys.path[0] = value


def _run_file(path: str, args: list[str]) -> None:
    if pkgutil.get_importer(path) is not None:
        # A directory or zip file: python puts it in front of sys.path and runs its __main__
        # module with runpy (Modules/main.c, pymain_run_python); so do we.
        sys.argv = [path, *args]
        _set_path0(os.path.abspath(path))
        _fresh_main()
        runpy._run_module_as_main("__main__", alter_argv=False)  # type: ignore[attr-defined]
        return
    abspath = os.path.abspath(path)
    try:
        with open(abspath, "rb") as f:
            source = f.read()
    except OSError as e:
        # python's own message and status for a script it cannot open.
        sys.stderr.write(
            f"{sys.orig_argv[0]}: can't open file {abspath!r}: [Errno {e.errno}] {e.strerror}\n"
        )
        sys.exit(2)
    sys.argv = [path, *args]
    # python resolves symlinks for sys.path[0] but keeps __file__ as the link's absolute path.
    _set_path0(os.path.dirname(os.path.realpath(abspath)))
    module = _fresh_main(
        __file__=abspath,
        **_NO_CACHED,
        __loader__=importlib.machinery.SourceFileLoader("__main__", abspath),
    )
    # dont_inherit: our own `from __future__ import annotations` must not leak into the program.
    code = compile(source, abspath, "exec", dont_inherit=True)
    exec(code, module.__dict__)


# python sets __main__.__cached__ = None for a script or stdin up to 3.14; 3.15 sets no
# __cached__ there at all (its module attributes now come from __spec__ alone).
_NO_CACHED: dict[str, None] = {"__cached__": None} if sys.version_info < (3, 15) else {}


def _run_source(source: str, filename: str, argv0: str, args: list[str]) -> None:
    sys.argv = [argv0, *args]
    _set_path0("")
    module = _fresh_main(__loader__=importlib.machinery.BuiltinImporter)
    if filename == "<stdin>":
        # python runs stdin as a file named <stdin>, -c code as no file at all.
        module.__dict__.update(__file__=filename, **_NO_CACHED)
    elif sys.version_info >= (3, 13):
        # python 3.13 keeps the -c source in linecache, so its tracebacks show the lines.
        lines = [line + "\n" for line in source.splitlines()]
        linecache.cache[filename] = (len(source), None, lines, filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, module.__dict__)


def _run_module(name: str, args: list[str]) -> None:
    # runpy._run_module_as_main is what `python -m` itself calls: the same lookup, the same
    # errors ("No module named ..."), the same sys.argv[0] and the same traceback frames.
    sys.argv = ["-m", *args]
    _fresh_main()
    runpy._run_module_as_main(name, alter_argv=True)  # type: ignore[attr-defined]


def _run_as_python_would(target: Callable[[], None]) -> None:
    """Run ``target``; let an uncaught exception end the process as it would under python."""
    own_file = _run_as_python_would.__code__.co_filename
    try:
        target()
    except SystemExit:
        raise  # exit status and message are the interpreter's business, as under python.
    except BaseException as exc:
        # Re-raise so the interpreter does what it does for an uncaught exception (exit status
        # 1, or SIGINT after a KeyboardInterrupt, once atexit handlers and threads are done),
        # but let whatever sys.excepthook is current print the traceback without our frames.
        error = exc  # `exc` is unbound when the except block ends; the hook runs after that.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == own_file:
            tb = tb.tb_next
        hook = sys.excepthook

        def excepthook(etype: type[BaseException], value: BaseException, vtb: object) -> None:
            sys.excepthook = hook
            if value is error:
                # The default hook prints value.__traceback__, not its third argument.
                vtb = tb
                value.__traceback__ = tb
            hook(etype, value, vtb)  # type: ignore[arg-type]

        sys.excepthook = excepthook
        raise


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m oxloop``; ``argv`` defaults to ``sys.argv[1:]``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] in ("dump", "top") and argv[1].isdigit():
        # Only with a PID after it: a program file named "dump" or "top" still runs.
        from . import _monitor_cli

        sys.exit(_monitor_cli.main(argv[0], int(argv[1]), argv[2:]))
    mode, target, args = _parse(argv)
    _install_policy()
    if mode == "script":
        _run_as_python_would(lambda: _run_file(target, args))
    elif mode == "m":
        _run_as_python_would(lambda: _run_module(target, args))
    elif mode == "c":
        _run_as_python_would(lambda: _run_source(target, "<string>", "-c", args))
    else:
        _run_as_python_would(lambda: _run_source(sys.stdin.read(), "<stdin>", "-", args))


if __name__ == "__main__":
    main()

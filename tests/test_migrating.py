"""docs/migrating.md ("Coming from uvloop"), checked on uvloop and on oxloop.

Each public name of uvloop and its oxloop equivalent, and each behaviour that differs between
the two, runs on both (the uvloop cases skip where uvloop is not installed; it is in
requirements-dev.txt). Where oxloop's behaviour is stock asyncio's, asyncio's own loop runs
beside them as the reference, so each test states what asyncio, uvloop and oxloop do.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import sys
import threading
import warnings
from types import ModuleType

import oxloop
import pytest

PY = sys.version_info[:2]
POLICIES_DEPRECATED = PY >= (3, 14)
HAS_CHILD_WATCHERS = PY < (3, 14)  # asyncio removed child watchers in 3.14

pytestmark = [
    # 3.14 deprecates policies; the tests below use them on purpose.
    pytest.mark.filterwarnings(r"ignore:'asyncio\..*' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(r"ignore:'oxloop.EventLoopPolicy' is deprecated:DeprecationWarning"),
]


@pytest.fixture(params=["uvloop", "oxloop"])
def lib(request) -> ModuleType:
    """uvloop or oxloop: the module whose public names are compared."""
    if request.param == "uvloop":
        return pytest.importorskip("uvloop")
    return oxloop


@pytest.fixture(params=["asyncio", "uvloop", "oxloop"])
def kind(request) -> str:
    """A loop implementation: stock asyncio (the reference), uvloop or oxloop."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return oxloop.new_event_loop()


@pytest.fixture
def new(kind):
    """A fresh loop of `kind`, closed after the test."""
    loops: list[asyncio.AbstractEventLoop] = []

    def make() -> asyncio.AbstractEventLoop:
        loops.append(new_loop(kind))
        return loops[-1]

    yield make
    for lp in loops:
        if not lp.is_closed():
            lp.close()


@pytest.fixture(autouse=True)
def clean_policy():
    """Each test starts and ends with asyncio's default policy and no current loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(None)
        yield
        asyncio.set_event_loop(None)
        asyncio.set_event_loop_policy(None)


def policy_class(lib: ModuleType) -> type:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return lib.EventLoopPolicy


# -- the public names --------------------------------------------------------------------------


def test_run(lib):
    # uvloop.run(main(), debug=...) -> oxloop.run(main(), debug=...)
    async def main():
        loop = asyncio.get_running_loop()
        return type(loop), loop.get_debug()

    assert lib.run(main()) == (lib.Loop, False)
    assert lib.run(main(), debug=True) == (lib.Loop, True)

    class Sub(lib.Loop):
        pass

    assert lib.run(main(), loop_factory=Sub)[0] is Sub


def test_run_main_task_and_foreign_factories(lib):
    # uvloop.run wraps main() in a coroutine of its own, which checks that the running loop
    # is a uvloop.Loop; oxloop.run is asyncio.run with oxloop's factory: the main task runs
    # main() itself, and any loop factory is accepted.
    async def main():
        return asyncio.current_task().get_coro().__qualname__, type(asyncio.get_running_loop())

    name, _ = lib.run(main())
    coro = main()
    if lib is oxloop:
        assert name == "test_run_main_task_and_foreign_factories.<locals>.main"
        assert lib.run(coro, loop_factory=asyncio.SelectorEventLoop)[1] is asyncio.SelectorEventLoop
    else:
        assert name == "run.<locals>.wrapper"
        with pytest.raises(TypeError, match=r"uvloop.run\(\) uses a non-uvloop event loop"):
            lib.run(coro, loop_factory=asyncio.SelectorEventLoop)
        coro.close()


def test_run_rejects_a_non_coroutine(lib):
    # oxloop.run raises what asyncio.run raises; uvloop.run (3.11+) awaits it in its wrapper.
    with pytest.raises((TypeError, ValueError)) as ox:
        lib.run(42)
    with pytest.raises((TypeError, ValueError)) as stock:
        asyncio.run(42)
    if lib is oxloop or PY < (3, 11):
        assert (type(ox.value), str(ox.value)) == (type(stock.value), str(stock.value))
    else:
        assert type(ox.value) is TypeError and "await" in str(ox.value)


def test_new_event_loop(lib):
    # uvloop.new_event_loop() -> oxloop.new_event_loop(): a new loop, not made current.
    loop = lib.new_event_loop()
    try:
        assert type(loop) is lib.Loop
        assert asyncio.events._get_running_loop() is None
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()
    if PY >= (3, 11):
        with asyncio.Runner(loop_factory=lib.new_event_loop) as runner:
            assert type(runner.get_loop()) is lib.Loop


def test_loop_class(lib):
    # uvloop.Loop -> oxloop.Loop. oxloop's loop is asyncio's own selector loop class with a
    # Rust core: code that checks isinstance(loop, asyncio.SelectorEventLoop) or
    # asyncio.BaseEventLoop accepts it; uvloop's derives from AbstractEventLoop only.
    loop = lib.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        is_oxloop = lib is oxloop
        assert isinstance(loop, asyncio.BaseEventLoop) is is_oxloop
        assert isinstance(loop, asyncio.SelectorEventLoop) is is_oxloop
    finally:
        loop.close()


def test_install(lib):
    # uvloop.install() -> oxloop.install(): set the policy; both warn from 3.12 on with the
    # same message, and on 3.14+ asyncio's own set_event_loop_policy warning follows.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib.install()
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    name = lib.__name__
    own = f"{name}.install() is deprecated in favor of {name}.run() starting with Python 3.12."
    assert (own in messages) is (PY >= (3, 12))
    assert any("set_event_loop_policy" in m for m in messages) is POLICIES_DEPRECATED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.new_event_loop()
    try:
        assert type(loop) is lib.Loop
    finally:
        loop.close()


def test_policy_class(lib):
    # uvloop.EventLoopPolicy -> oxloop.EventLoopPolicy. oxloop's is asyncio's default policy
    # with oxloop's loop factory; uvloop's is a policy of its own (see the behaviours below).
    # 3.14+: oxloop.EventLoopPolicy warns on every access, as asyncio.DefaultEventLoopPolicy
    # does; uvloop's warns once, when it defines the class (subclassing asyncio's deprecated
    # AbstractEventLoopPolicy), then never again.
    policy_class(lib)  # defined
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls = lib.EventLoopPolicy
    warned = [w for w in caught if w.category is DeprecationWarning]
    assert bool(warned) is (POLICIES_DEPRECATED and lib is oxloop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert issubclass(cls, asyncio.DefaultEventLoopPolicy) is (lib is oxloop)
    loop = cls().new_event_loop()
    try:
        assert type(loop) is lib.Loop
    finally:
        loop.close()


# -- behaviours that differ --------------------------------------------------------------------


def test_policy_get_event_loop_without_a_loop(lib):
    # uvloop's policy never makes a loop implicitly: get_event_loop() with none set raises
    # RuntimeError on every version. oxloop's does what asyncio's default policy does: on
    # 3.10-3.13 it makes one in the main thread (3.12 and 3.13 warn), on 3.14+ it raises.
    def outcome(policy):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                loop = policy.get_event_loop()
            except RuntimeError as e:
                return "RuntimeError", str(e), [str(w.message) for w in caught]
        loop.close()
        return type(loop).__name__, None, [str(w.message) for w in caught]

    got = outcome(policy_class(lib)())
    if lib is oxloop:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            stock = outcome(asyncio.DefaultEventLoopPolicy())
        assert got[1:] == stock[1:]
        assert got[0] == ("RuntimeError" if PY >= (3, 14) else "Loop")
    else:
        assert got == (
            "RuntimeError",
            "There is no current event loop in thread 'MainThread'.",
            [],
        )


def test_policy_child_watcher(lib):
    # Neither loop uses asyncio's child watchers for its own subprocesses (uvloop: libuv;
    # oxloop: a pidfd per child, docs/usage.md). The policy API differs on 3.10-3.13: uvloop's
    # policy raises NotImplementedError, so asyncio.get_child_watcher() fails under it;
    # oxloop's gives asyncio's watcher (3.12-3.13 warn, as asyncio does). 3.14 removed them.
    policy = policy_class(lib)()
    if not HAS_CHILD_WATCHERS:
        assert not hasattr(policy, "get_child_watcher")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if lib is oxloop:
            watcher = policy.get_child_watcher()
            stock = asyncio.DefaultEventLoopPolicy().get_child_watcher()
            assert type(watcher) is type(stock)
            watcher.close()
            stock.close()
        else:
            with pytest.raises(NotImplementedError):
                policy.get_child_watcher()
    deprecated = [w for w in caught if "get_child_watcher" in str(w.message)]
    assert bool(deprecated) is (lib is oxloop and PY >= (3, 12))


def test_sigchld_is_not_reserved(kind, new):
    # uvloop reserves SIGCHLD for its child processes: add_signal_handler(SIGCHLD) raises.
    # oxloop, as asyncio, lets the program handle it, and its children are still waited for.
    loop = new()

    async def main():
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGCHLD, lambda: got.done() or got.set_result(True))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(3)")
        status = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(got, 60)  # the child's exit sent us SIGCHLD
        loop.remove_signal_handler(signal.SIGCHLD)
        return status

    if kind == "uvloop":
        with pytest.raises(RuntimeError, match="cannot add a signal handler for SIGCHLD"):
            loop.add_signal_handler(signal.SIGCHLD, lambda: None)
        return
    if kind == "asyncio" and PY < (3, 12):
        # asyncio's own subprocess support needs an attached child watcher there.
        asyncio.set_event_loop(loop)
    assert loop.run_until_complete(main()) == 3


def test_protocol_callbacks_run_in_a_copy_of_the_context(kind, new):
    # Before 3.15, asyncio and oxloop run each connection's protocol callbacks in copies of the
    # context current at create_server(), one per connection and kind of event: a ContextVar
    # set in connection_made is not seen by data_received, nor by another connection. On 3.15
    # each connection has one context of its own (a copy of the server's): what
    # connection_made sets, that connection's data_received sees, the next connection does
    # not. uvloop runs every callback of every connection of a server in one shared context:
    # what one sets, the next callback and the other connections see.
    loop = new()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[tuple[str, int, str]] = []

    async def main():
        data_seen = [loop.create_future(), loop.create_future()]

        class Proto(asyncio.Protocol):
            count = 0

            def connection_made(self, transport):
                Proto.count += 1
                self.n = Proto.count
                seen.append(("made", self.n, var.get()))
                var.set(f"made{self.n}")

            def data_received(self, data):
                seen.append(("data", self.n, var.get()))
                var.set(f"data{self.n}")
                data_seen[self.n - 1].set_result(None)

        var.set("server")
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        var.set("after")
        port = server.sockets[0].getsockname()[1]
        writers = []
        for n in (0, 1):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            writers.append(writer)
            await data_seen[n]
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    if kind == "uvloop":
        expected = [("made", 1, "server"), ("data", 1, "made1"), ("made", 2, "data1")]
        expected.append(("data", 2, "made2"))
    elif sys.version_info >= (3, 15):
        expected = [("made", 1, "server"), ("data", 1, "made1")]
        expected += [("made", 2, "server"), ("data", 2, "made2")]
    else:
        expected = [("made", 1, "server"), ("data", 1, "server")]
        expected += [("made", 2, "server"), ("data", 2, "server")]
    assert seen == expected


def test_debug_mode(kind, new, caplog):
    # Debug mode gives the same checks on every loop: a source traceback on each handle, the
    # non-thread-safe call check, slow-callback warnings. On oxloop it runs asyncio's own
    # Python debug paths instead of the Rust fast paths, which costs more than uvloop's debug
    # mode (docs/migrating.md has figures); oxloop's slow-callback reports need no debug mode.
    loop = new()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.0  # every callback is "slow"
    handle = loop.call_soon(lambda: None)
    assert handle._source_traceback  # where the handle was made
    errors: list[str] = []

    def from_another_thread():
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as e:
            errors.append(str(e))

    async def main():
        thread = threading.Thread(target=from_another_thread)
        thread.start()
        thread.join()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(main())
    assert errors == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]
    assert any(r.getMessage().startswith("Executing <") for r in caplog.records)
    assert hasattr(loop, "enable_slow_callback_reports") is (kind == "oxloop")

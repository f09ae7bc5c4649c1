"""oxloop.run(), oxloop.install() and oxloop.EventLoopPolicy, in process.

run() must behave as the running interpreter's asyncio.run() does (its checks, errors and
shutdown sequence), on an oxloop loop; where that behaviour is observable, asyncio.run() is
run beside it as the reference.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings

import oxloop
import pytest

WARNS_ON_INSTALL = sys.version_info >= (3, 12)
# 3.14 deprecates policies: the public policy names and functions of asyncio warn on every use,
# and so does oxloop.EventLoopPolicy. The tests below use them on purpose; where the warnings are
# the subject, they are recorded with simplefilter("always"), which overrides these filters.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:'asyncio\..*' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(r"ignore:'oxloop.EventLoopPolicy' is deprecated:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def clean_policy():
    """Each test starts and ends with asyncio's default policy and no current loop."""
    asyncio.set_event_loop_policy(None)
    yield
    asyncio.set_event_loop(None)
    asyncio.set_event_loop_policy(None)


async def current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_public_names():
    assert {"run", "install", "new_event_loop", "Loop"} <= set(oxloop.__all__)
    # Like asyncio's own policy names, EventLoopPolicy leaves `import *` when it starts to warn.
    assert ("EventLoopPolicy" in oxloop.__all__) is not POLICIES_DEPRECATED
    assert hasattr(oxloop, "EventLoopPolicy")


def test_policy_class_access_warns_from_3_14_as_asyncios_does():
    with warnings.catch_warnings(record=True) as ox:
        warnings.simplefilter("always")
        oxloop.EventLoopPolicy  # noqa: B018
    with warnings.catch_warnings(record=True) as stock:
        warnings.simplefilter("always")
        asyncio.DefaultEventLoopPolicy  # noqa: B018
    assert [w.category for w in ox] == [w.category for w in stock]
    if POLICIES_DEPRECATED:
        assert str(ox[0].message).startswith(
            "'oxloop.EventLoopPolicy' is deprecated and slated for removal in Python 3.16"
        )
        assert ox[0].filename == __file__  # attributed to the caller


def test_run_returns_the_result():
    async def main():
        await asyncio.sleep(0)
        return 42

    assert oxloop.run(main()) == 42


def test_run_uses_an_oxloop_loop_and_closes_it():
    loop = oxloop.run(current_loop())
    assert isinstance(loop, oxloop.Loop)
    assert loop.is_closed()


def test_run_makes_a_new_loop_each_time():
    assert oxloop.run(current_loop()) is not oxloop.run(current_loop())


def test_run_propagates_exceptions():
    async def main():
        await asyncio.sleep(0)
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        oxloop.run(main())


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug(debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert oxloop.run(main(), debug=debug) is debug
    assert asyncio.run(main(), debug=debug) is debug


def test_run_debug_default_is_the_loops():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert oxloop.run(main()) == asyncio.run(main())


def test_run_loop_factory():
    class MyLoop(oxloop.Loop):
        pass

    loop = oxloop.run(current_loop(), loop_factory=MyLoop)
    assert type(loop) is MyLoop


def test_run_unknown_keyword():
    coro = current_loop()
    try:
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            oxloop.run(coro, bogus=1)
    finally:
        coro.close()


def test_nested_run_raises_like_asyncio():
    async def inner():
        return None

    async def outer(runner):
        coro = inner()
        try:
            runner(coro)
        except RuntimeError as e:
            return str(e)
        finally:
            coro.close()
        return "no error"

    expected = asyncio.run(outer(asyncio.run))
    assert expected == "asyncio.run() cannot be called from a running event loop"
    assert oxloop.run(outer(oxloop.run)) == expected
    assert asyncio.run(outer(oxloop.run)) == expected
    assert oxloop.run(outer(asyncio.run)) == expected


@pytest.mark.parametrize("main", [42, None, current_loop], ids=["int", "None", "function"])
def test_run_rejects_non_coroutines_like_asyncio(main):
    def outcome(runner):
        with pytest.raises(Exception) as e:
            runner(main)
        return type(e.value), str(e.value)

    expected = outcome(asyncio.run)
    assert outcome(oxloop.run) == expected
    if sys.version_info >= (3, 14):
        # 3.14's asyncio.run accepts any awaitable (Runner.run checks it).
        assert expected[0] is TypeError and "awaitable is required" in expected[1]
    else:
        assert expected[0] is ValueError and "a coroutine was expected" in expected[1]


def test_run_leaves_no_current_loop():
    # 3.10: set as the current loop while it runs, unset after (as 3.10's asyncio.run does);
    # 3.11+: never set, as with asyncio.run(loop_factory=...).
    seen: list[object] = []

    async def main():
        seen.append(asyncio.get_event_loop_policy()._local._loop)
        return asyncio.get_running_loop()

    loop = oxloop.run(main())
    assert seen == [loop if sys.version_info < (3, 11) else None]
    assert asyncio.get_event_loop_policy()._local._loop is None
    assert asyncio.events._get_running_loop() is None


@pytest.mark.parametrize("runner", [asyncio.run, oxloop.run], ids=["asyncio", "oxloop"])
def test_run_cancels_leftover_tasks(runner):
    events: list[str] = []

    async def background():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        return "done"

    assert runner(main()) == "done"
    assert events == ["cancelled"]


@pytest.mark.parametrize("runner", [asyncio.run, oxloop.run], ids=["asyncio", "oxloop"])
def test_run_reports_leftover_task_failing_at_shutdown(runner):
    contexts: list[dict] = []

    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ValueError("refused to be cancelled") from None

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)

    runner(main())
    assert [c["message"] for c in contexts] == ["unhandled exception during asyncio.run() shutdown"]
    assert isinstance(contexts[0]["exception"], ValueError)


@pytest.mark.parametrize("runner", [asyncio.run, oxloop.run], ids=["asyncio", "oxloop"])
def test_run_finalizes_async_generators(runner):
    events: list[str] = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("agen closed")

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        main.gen = gen  # keep it alive and suspended past main()

    runner(main())
    assert events == ["agen closed"]


@pytest.mark.parametrize("runner", [asyncio.run, oxloop.run], ids=["asyncio", "oxloop"])
def test_run_shuts_down_the_default_executor(runner):
    threads: list[threading.Thread] = []

    async def main():
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: threads.append(threading.current_thread())
        )

    runner(main())
    assert len(threads) == 1
    assert not threads[0].is_alive()  # joined by shutdown_default_executor()


def test_run_in_a_thread():
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(oxloop.run(current_loop())))
    thread.start()
    thread.join()
    assert isinstance(result[0], oxloop.Loop)


def test_install_sets_the_policy():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oxloop.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, oxloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
    finally:
        loop.close()
    assert isinstance(asyncio.run(current_loop()), oxloop.Loop)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    if WARNS_ON_INSTALL:
        # 3.14+: then asyncio's own, from the set_event_loop_policy() that install() calls.
        assert len(deprecations) == (2 if POLICIES_DEPRECATED else 1)
        warning = deprecations[0]
        assert str(warning.message) == (
            "oxloop.install() is deprecated in favor of oxloop.run() starting with Python 3.12."
        )
        assert warning.filename == __file__  # attributed to the caller
        if POLICIES_DEPRECATED:
            assert str(deprecations[1].message) == (
                "'asyncio.set_event_loop_policy' is deprecated and slated for removal in "
                "Python 3.16"
            )
    else:
        assert deprecations == []


@pytest.mark.skipif(not WARNS_ON_INSTALL, reason="install() warns from Python 3.12 on")
def test_install_warning_matches_uvloop():
    uvloop = pytest.importorskip("uvloop")
    with pytest.warns(DeprecationWarning) as uv:
        uvloop.install()
    with pytest.warns(DeprecationWarning) as ox:
        oxloop.install()
    # uvloop 0.22+ defines its policy class on first access of uvloop.install, subclassing
    # asyncio.AbstractEventLoopPolicy, which warns on 3.14+; that one is an artefact of its
    # module layout (oxloop's module imports nothing deprecated), not of install().
    uv_messages = [
        str(w.message).replace("uvloop", "oxloop")
        for w in uv
        if "'asyncio.AbstractEventLoopPolicy'" not in str(w.message)
    ]
    assert [str(w.message) for w in ox] == uv_messages


def test_policy_is_asyncios_default_policy():
    policy_class = oxloop.EventLoopPolicy  # 3.14+: warns on access (see above)
    assert issubclass(policy_class, asyncio.DefaultEventLoopPolicy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = policy_class()  # no warning for making one, as with uvloop
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        policy.set_event_loop(loop)
        assert policy.get_event_loop() is loop
    finally:
        policy.set_event_loop(None)
        loop.close()


def test_policy_get_event_loop_without_a_loop_as_asyncios():
    # 3.10-3.13: the policy makes a loop implicitly in the main thread (3.12+ warn as they do);
    # 3.14: no implicit loop, RuntimeError. oxloop's policy does what asyncio's does, with its loop.
    def outcome(policy):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                loop = policy.get_event_loop()
            except RuntimeError as e:
                return "raised", str(e), [str(w.message) for w in caught]
        try:
            assert policy.get_event_loop() is loop
            return type(loop), None, [str(w.message) for w in caught]
        finally:
            loop.close()

    kind, error, warned = outcome(oxloop.EventLoopPolicy())
    stock_kind, stock_error, stock_warned = outcome(asyncio.DefaultEventLoopPolicy())
    assert (error, warned) == (stock_error, stock_warned)
    if sys.version_info >= (3, 14):
        assert kind == stock_kind == "raised"
        assert error == "There is no current event loop in thread 'MainThread'."
    else:
        assert kind is oxloop.Loop


def test_policy_in_other_threads():
    asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())
    result: list[object] = []

    def worker():
        result.append(asyncio.run(current_loop()))
        try:
            asyncio.get_event_loop()
        except RuntimeError as e:
            result.append(str(e))

    thread = threading.Thread(target=worker, name="worker")
    thread.start()
    thread.join()
    assert isinstance(result[0], oxloop.Loop)
    assert result[1] == "There is no current event loop in thread 'worker'."

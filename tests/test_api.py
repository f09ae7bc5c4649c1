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
    assert {"run", "install", "EventLoopPolicy", "new_event_loop", "Loop"} <= set(oxloop.__all__)


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
    with pytest.raises(ValueError) as expected:
        asyncio.run(main)
    with pytest.raises(ValueError) as got:
        oxloop.run(main)
    assert str(got.value) == str(expected.value)
    assert "a coroutine was expected" in str(got.value)


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
        assert len(deprecations) == 1
        warning = deprecations[0]
        assert str(warning.message) == (
            "oxloop.install() is deprecated in favor of oxloop.run() starting with Python 3.12."
        )
        assert warning.filename == __file__  # attributed to the caller
    else:
        assert deprecations == []


@pytest.mark.skipif(not WARNS_ON_INSTALL, reason="install() warns from Python 3.12 on")
def test_install_warning_matches_uvloop():
    uvloop = pytest.importorskip("uvloop")
    with pytest.warns(DeprecationWarning) as uv:
        uvloop.install()
    with pytest.warns(DeprecationWarning) as ox:
        oxloop.install()
    assert str(ox[0].message) == str(uv[0].message).replace("uvloop", "oxloop")


def test_policy_is_asyncios_default_policy():
    assert issubclass(oxloop.EventLoopPolicy, asyncio.DefaultEventLoopPolicy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = oxloop.EventLoopPolicy()  # no warning for making one, as with uvloop
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        policy.set_event_loop(loop)
        assert policy.get_event_loop() is loop
    finally:
        policy.set_event_loop(None)
        loop.close()


def test_policy_get_event_loop_makes_an_oxloop_loop():
    policy = oxloop.EventLoopPolicy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop = policy.get_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        assert policy.get_event_loop() is loop
    finally:
        loop.close()
    # The implicit loop creation warns exactly when asyncio's own default policy does.
    with warnings.catch_warnings(record=True) as reference:
        warnings.simplefilter("always")
        asyncio.DefaultEventLoopPolicy().get_event_loop().close()
    assert [str(w.message) for w in caught] == [str(w.message) for w in reference]


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

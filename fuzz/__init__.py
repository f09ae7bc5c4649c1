"""The differential fuzzer: oxloop against stock asyncio, on generated calls.

Hypothesis (``fuzz/program.py``) generates programs: a few steps, each a call of a public method
of the event loop, of a transport, server or handle an earlier step made, with generated
arguments (wrong types, huge and negative numbers, NaN, closed and foreign fds and sockets, a
closed loop, a call from another thread...). ``fuzz/driver.py`` runs every program on both
loops, each in its own child process (``fuzz/worker.py``, restarted after a crash or a hang),
and compares the outcome kind of every step: the result's type or the exception's type. A
difference is a bug unless ``fuzz/allowlist.py`` points at its row in docs/compatibility.md.

Entry points: ``python -m fuzz --seconds N [--seed S]`` (``make fuzz``, ``make fuzz-ci``) and
``tests/test_fuzz.py`` (a few programs, in the ordinary suite).
"""

"""Signal handling for oxloop's loop, with asyncio's semantics (Lib/asyncio/unix_events.py).

``SignalHandlers`` is a base of ``oxloop.Loop`` (before ``LoopCore`` and asyncio's
``_UnixSelectorEventLoop``, whose methods of the same names it replaces): ``add_signal_handler``
and ``remove_signal_handler`` as unix_events has them, over the core's signal wake-up. How a
signal reaches a handler: Python's C-level handler writes the signal number to the wake-up fd
(``signal.set_wakeup_fd``), the write end of a socket pair the engine owns
(``engine/src/signal.rs``, handed out by ``LoopCore._signal_wakeup_fd``); the core polls the read
end, and in the iteration after it is readable it runs Python's own signal handlers
(``PyErr_CheckSignals``: the default SIGINT handler raises KeyboardInterrupt there) and hands the
numbers read to ``_process_signals`` (``src/loop_core/signals.rs``), which queues each signal's
handle as asyncio's ``_handle_signal`` does.

Invariants: ``_signal_handlers`` is the loop's (set by ``Loop.__init__``); the wake-up fd is set
while at least one handler is registered and cleared with the last one; only the main thread
can register (``set_wakeup_fd`` raises ValueError elsewhere, reported as RuntimeError).
"""

from __future__ import annotations

import errno
import signal
from asyncio import coroutines, events
from asyncio.log import logger

TYPE_CHECKING = False  # as _loop.py: typing is not loaded on 3.14+
if TYPE_CHECKING:
    from typing import Any

# 3.14 deprecates asyncio.iscoroutinefunction (it warns on every call); asyncio's own
# add_signal_handler calls the silent private one there (Lib/asyncio/unix_events.py).
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", coroutines.iscoroutinefunction)


def _sighandler_noop(signum: int, frame: Any) -> None:
    """Installed for signals with an add_signal_handler callback: Python writes the signal
    number to the wakeup fd, and the loop reads it from there."""


class SignalHandlers:
    """add_signal_handler / remove_signal_handler for ``oxloop.Loop`` (see the module)."""

    __slots__ = ()

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        """Add a handler for a signal. UNIX only.

        Raise ValueError if the signal number is invalid or uncatchable.
        Raise RuntimeError if there is a problem setting up the handler.
        """
        if coroutines.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError outside the main thread, so a loop running in another thread
            # cannot take over signals.
            signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            # Python's C-level handler writes the signal number to the wakeup fd; the Python
            # handler itself has nothing to do.
            signal.signal(sig, _sighandler_noop)
            # SA_RESTART, as asyncio sets it, to limit EINTR in other code.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove a handler for a signal. UNIX only.

        Return True if a signal handler was removed, False if not.
        """
        self._check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        # asyncio restores the default disposition, not whatever was there before.
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise
        if not self._signal_handlers:
            self._clear_wakeup_fd()
        return True

    def _clear_wakeup_fd(self) -> None:
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    def _handle_signal(self, sig: int) -> None:
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # removed meanwhile
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self._add_callback_signalsafe(handle)

    def _process_signals(self, data: bytes) -> None:
        """Signal numbers read from the wakeup socket by the core."""
        for signum in data:
            if signum:
                self._handle_signal(signum)

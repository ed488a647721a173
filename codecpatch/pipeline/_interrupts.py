"""SIGINT/SIGTERM during a run: raised as ``Interrupted`` in the main thread, so the runner can commit what
finished, stop Ray and exit with a documented status (128 + signal number) instead of a stack dump."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the run; what finished before it is committed. ``exit_status`` is the
    conventional 128 + signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.signal_name = signal.Signals(signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum, _frame) -> None:
    raise Interrupted(signum)


_interrupt_depth = 0


@contextmanager
def interrupts_raise():
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` in the main thread (restored after)."""
    global _interrupt_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    _interrupt_depth += 1
    try:
        yield
    finally:
        _interrupt_depth -= 1
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def reclaim_signals() -> None:
    """Ray's init installs its own SIGTERM handler (a C++ stack dump, then exit 1 or 15): take it back."""
    if _interrupt_depth and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _raise_interrupted)

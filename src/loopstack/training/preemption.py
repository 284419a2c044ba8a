"""Spot preemption: SIGTERM asks the loop to checkpoint and stop at the next step boundary.

Cloud providers send SIGTERM some seconds to minutes before reclaiming a spot
machine (and Kubernetes does before killing a pod). Saving inside the signal
handler could catch the model halfway through an optimizer step, so the
handler only sets a flag; the training loop checks it after each step, saves
a checkpoint and raises `Preempted`, a ``SystemExit`` with status 143 (128 +
SIGTERM), so the process ends as a terminated one would.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(SystemExit):
    """Training stopped on SIGTERM after saving a checkpoint at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(EXIT_STATUS)
        self.step = step


class PreemptionGuard:
    """Catch SIGTERM (and optionally SIGINT) while active and remember that it came.

    Outside the main thread signals cannot be caught, so the guard is inert
    there (``installed`` is False) and the default handling applies.

    Examples
    --------
    >>> import os, signal
    >>> with PreemptionGuard() as guard:
    ...     os.kill(os.getpid(), signal.SIGTERM)
    ...     guard.requested
    True
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.requested = False
        self.installed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            self.installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self.installed = False

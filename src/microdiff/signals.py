"""SIGINT/SIGTERM during training: finish the step, save a checkpoint, stop with one line."""

from __future__ import annotations

import signal
import threading

from .distributed import World
from .errors import UserError


class Interrupted(UserError):
    """SIGINT (Ctrl-C) or SIGTERM stopped training after saving a checkpoint."""


class StopSignals:
    """While active, SIGINT and SIGTERM only set :attr:`received`: the training loop saves a
    checkpoint after the step in progress and stops. A second signal acts at once (the
    previous handlers are back). Does nothing outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def any_rank(self, world: World) -> bool:
        """Whether any rank received a signal (a collective in a multi-process run)."""
        here = self.received is not None
        return world.mean_dict({"stop": float(here)})["stop"] > 0 if world.distributed else here

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "a signal to another rank"

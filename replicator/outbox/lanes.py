"""Lanes: threads that each run one kind of the worker's work, a piece at a time.

A lane lives as long as the worker, so what its thread keeps (its SQLite
connection to the outbox file, the HTTP connections of a sink) serves every run,
and a run costs no new thread. Invariants: a lane runs at most one piece of work
at a time (:meth:`Lane.give` refuses while it is busy); whatever the work
raises is logged and never ends the lane; ``done()`` is called after each piece.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Lane:
    """A thread named after ``name`` that runs the work it is given, one piece at
    a time, and calls ``done()`` after each, until :meth:`close`."""

    def __init__(self, name: str, done: Callable[[], None]) -> None:
        self.name = name
        self._done = done
        self._cond = threading.Condition()
        self._work: Callable[[], None] | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"replicator-outbox {name}", daemon=True
        )
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a piece of work waits or runs."""
        with self._cond:
            return self._work is not None

    def give(self, work: Callable[[], None]) -> bool:
        """Run ``work`` next; False (and nothing given) while the lane is busy or
        closed."""
        with self._cond:
            if self._work is not None or self._closed:
                return False
            self._work = work
            self._cond.notify_all()
            return True

    def idle(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until no work runs; whether it is so."""
        with self._cond:
            return self._cond.wait_for(lambda: self._work is None, max(0.0, timeout))

    def close(self) -> None:
        """End the thread once the work that runs (if any) is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._work is not None or self._closed)
                work = self._work
            if work is None:
                return
            try:
                work()
            except Exception:  # a lane outlives any one failure
                log.exception("outbox %s failed", self.name)
            finally:
                with self._cond:
                    self._work = None
                    self._cond.notify_all()
                self._done()

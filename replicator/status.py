"""SyncStatus: where a device's sync stands, as one frozen value, and who is told.

:attr:`Replicator.status <replicator.Replicator.status>` is a :class:`SyncStatus`:
whether a sync runs and in which phase, how far that phase is (a fraction, when
its size is known), when the device last synced, the last error with its hint
and whether retrying helps, how many local changes wait for upload, and whether
continuous sync (:meth:`Replicator.start <replicator.Replicator.start>`) runs.

A :class:`StatusBoard` holds the current value. Every change makes a new value
(the old one is never modified: hand it to another thread freely) and is told to
the subscribers, in order, on the thread that made it (the syncing thread,
mostly): keep a subscriber quick, or hand the value to your UI's thread. An
asyncio app iterates :meth:`StatusBoard.stream` instead: the values arrive on
its event loop; a slow consumer gets the latest value, not a backlog.

The pending count is read when a sync starts and ends, and, while continuous
sync runs, after the app's writes: one count on partial indexes that hold only
the pending rows, so its cost follows the changes, not the database's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs

from .errors import ReplicatorError
from .report import Phase, Progress

log = logging.getLogger(__name__)


@attrs.frozen
class LastError:
    """The error that ended the last sync: its kind (the class name in
    :mod:`replicator.errors`), message, hint (what to do), whether running the same
    sync again may succeed, and when it happened."""

    kind: str
    message: str
    hint: str
    retryable: bool
    at: _dt.datetime

    @classmethod
    def of(cls, exc: BaseException, at: _dt.datetime) -> LastError:
        """The error ``exc``, as a value; one that is not a ``ReplicatorError`` (a bug)
        is not retryable."""
        if isinstance(exc, ReplicatorError):
            return cls(type(exc).__name__, exc.message, exc.hint, exc.retryable, at)
        hint = "report it with the log; set REPLICATOR_DEBUG=1 to see the traceback"
        return cls(type(exc).__name__, str(exc), hint, False, at)


@attrs.frozen
class SyncStatus:
    """Where a device's sync stands (see the module's docstring)."""

    #: a sync (or a restore, ``phase`` ``"restore"``) runs now
    syncing: bool = False
    #: the phase of the running sync (or restore), once it reported progress
    phase: Phase | None = None
    #: the collection the phase works on, when it works on one
    collection: str | None = None
    #: how far the phase is, from 0.0 to 1.0, when its size is known
    fraction: float | None = None
    #: when the last successful sync ended (aware, UTC), on this device ever
    last_synced_at: _dt.datetime | None = None
    #: whether this device ever completed a sync
    has_synced: bool = False
    #: the error that ended the last sync; None once a sync succeeds
    last_error: LastError | None = None
    #: local rows and deletes waiting for upload
    pending: int = 0
    #: continuous sync (``start()``) runs
    running: bool = False

    @property
    def activity(self) -> str:
        """One word: ``"syncing"``, ``"idle"`` (continuous sync waits for its next
        sync), ``"stopped"`` (no continuous sync) or ``"failing"`` (continuous sync
        retries after an error)."""
        if self.syncing:
            return "syncing"
        if not self.running:
            return "stopped"
        return "failing" if self.last_error is not None else "idle"


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def parse_time(text: str | None) -> _dt.datetime | None:
    """A time the device recorded (ISO 8601), aware; None when none was or it is not one."""
    if not text:
        return None
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.timezone.utc)


class StatusBoard:
    """The current :class:`SyncStatus` and its subscribers."""

    def __init__(self, initial: SyncStatus, pending: Callable[[], int]) -> None:
        self._value = initial
        self._pending = pending
        self._listeners: list[Callable[[SyncStatus], None]] = []
        # held while a change is made and told, so subscribers see the changes in order
        self._lock = threading.RLock()

    @property
    def value(self) -> SyncStatus:
        return self._value

    def update(self, **changes: Any) -> None:
        """Make the status ``changes`` to the current one and tell the subscribers, unless
        nothing changed."""
        with self._lock:
            new = attrs.evolve(self._value, **changes)
            if new == self._value:
                return
            self._value = new
            for listener in tuple(self._listeners):
                try:
                    listener(new)
                except Exception:
                    log.exception("a status subscriber raised; it stays subscribed")

    def subscribe(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        """Tell ``listener`` every later status; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def progress(self, progress: Progress) -> None:
        fraction = None
        if progress.total:
            fraction = min(1.0, max(0.0, progress.done / progress.total))
        self.update(phase=progress.phase, collection=progress.collection, fraction=fraction)

    def refresh_pending(self) -> None:
        """Count the pending changes again (cheap: see the module's docstring)."""
        with contextlib.suppress(ReplicatorError):
            self.update(pending=self._pending())

    @contextlib.contextmanager
    def syncing(self) -> Iterator[None]:
        """Around one sync: syncing, then its outcome (a ``stopped`` sync, which ended at
        a safe point because continuous sync was stopped, is no error)."""
        self.update(syncing=True, phase=None, collection=None, fraction=None)
        try:
            yield
        except BaseException as exc:
            error = None if getattr(exc, "stopped", False) else LastError.of(exc, now())
            self._ended(last_error=error or self._value.last_error)
            raise
        at = now()
        self._ended(last_synced_at=at, has_synced=True, last_error=None)

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Around a restore: busy, then its error if it failed (a restore is no sync:
        ``last_synced_at`` stays)."""
        self.update(syncing=True, phase="restore", collection=None, fraction=None)
        try:
            yield
        except BaseException as exc:
            self._ended(last_error=LastError.of(exc, now()))
            raise
        self._ended()

    def _ended(self, **changes: Any) -> None:
        try:
            pending = self._pending()
        except ReplicatorError:
            pending = self._value.pending
        self.update(
            syncing=False, phase=None, collection=None, fraction=None, pending=pending, **changes
        )

    async def stream(self) -> AsyncIterator[SyncStatus]:
        """The current status, then each change of it, on the running event loop.

        Values reach the loop from whichever thread made them; a consumer slower than
        the changes gets the latest one (never a stale backlog). Leave the ``async
        for`` with ``break`` and close the iterator (``contextlib.aclosing``) to
        unsubscribe at once; otherwise it unsubscribes when collected.
        """
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def told(_: SyncStatus) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: no one listens
                loop.call_soon_threadsafe(changed.set)

        unsubscribe = self.subscribe(told)
        try:
            last = self._value
            yield last
            while True:
                await changed.wait()
                changed.clear()
                if self._value != last:
                    last = self._value
                    yield last
        finally:
            unsubscribe()

"""Continuous sync, status and closing: what a Replicator does between two syncs.

:class:`Continuous` is mixed into :class:`~replicator.Replicator`.
``start(interval=…)`` runs syncs in a background thread: one at once, then one
every ``interval`` seconds, and, with ``after_writes=…``, one soon after the app's
local writes (debounced: ``after_writes`` seconds after the last of a burst,
never later than the interval's). A retryable error (offline, busy) is retried
after a jittered, growing delay (the ``backoff`` pair: first delay, longest
delay; the outbox's formula; a ``TransientError``'s ``retry_after`` is honoured); an error retrying
cannot mend (configuration, access, sign-in) stops continuous sync, and it shows
in :attr:`~Continuous.status`.

``stop()`` asks a sync in flight to end at its next safe point (after a committed
page of the download or a confirmed batch of the upload: the sync's steps are
made so a crash between them loses nothing, and the next sync picks up there)
and waits for the thread to end. ``close()`` stops it and closes the calling
thread's database connection; a Replicator is a context manager that closes.

Local writes are noticed without a trigger of ours nor any scan: SQLite's
``PRAGMA data_version`` on the sync thread's own connection changes exactly when
another connection (the app's) commits, and costs no I/O to read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import peewee

from .errors import ConfigurationError, ReplicatorError
from .outbox.config import Retry as Backoff
from .report import Progress
from .status import LastError, StatusBoard, SyncStatus, now, parse_time

if TYPE_CHECKING:
    from .local import LocalState
    from .report import SyncReport

log = logging.getLogger(__name__)

#: seconds between two looks at ``PRAGMA data_version`` while waiting
POLL = 0.1


class SyncStopped(ReplicatorError):
    """A sync of continuous sync ended at a safe point because ``stop()`` asked; it
    never reaches the app."""

    retryable = True
    stopped = True
    default_hint = "the next sync picks up where this one stopped; nothing was lost"


class Continuous:
    """Status, continuous sync and closing, for :class:`~replicator.Replicator`."""

    database: peewee.SqliteDatabase
    local: LocalState
    on_progress: Callable[[Progress], None] | None
    _board: StatusBoard
    _runner: Runner | None = None

    if TYPE_CHECKING:

        def sync(self, *, timeout: float | None = None) -> SyncReport: ...
        def pending_count(self) -> int: ...
        def _check_file(self, what: str) -> None: ...

    def _open_status(self) -> None:
        """The status as the database tells it (called once the database is open)."""
        last = parse_time(self.local.last_sync)
        first = SyncStatus(last_synced_at=last, has_synced=last is not None)
        self._board = StatusBoard(first, self.pending_count)
        self._board.refresh_pending()

    @property
    def status(self) -> SyncStatus:
        """Where this device's sync stands now (a frozen :class:`SyncStatus`)."""
        return self._board.value

    def on_status(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        """Tell ``listener`` each later :class:`SyncStatus`, on the thread that changed it
        (keep it quick); returns a function that unsubscribes. Any thread may subscribe
        or unsubscribe; a listener that raises is logged and stays subscribed."""
        return self._board.subscribe(listener)

    def statuses(self) -> AsyncIterator[SyncStatus]:
        """``async for status in replicator.statuses():`` the current status, then each
        change, on the running event loop (a slow consumer gets the latest)."""
        return self._board.stream()

    def _told(self, progress: Progress) -> None:
        """A sync's progress: into the status, to the app's ``on_progress``, and, on
        continuous sync's thread once ``stop()`` asked, the end of the sync (a
        progress report is made between two committed steps)."""
        self._board.progress(progress)
        runner = self._runner
        if (
            runner is not None
            and progress.phase in ("download", "upload")  # told between committed steps
            and runner.stopping_here()
        ):
            raise SyncStopped("stop() asked the sync to end")
        if self.on_progress is not None:
            self.on_progress(progress)

    def start(
        self,
        interval: float = 60.0,
        *,
        after_writes: float | None = None,
        timeout: float | None = None,
        backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        """Sync in a background thread: now, then every ``interval`` seconds, and
        ``after_writes`` seconds after the app's last local write (None: only on the
        interval). ``timeout`` bounds each sync (as :meth:`sync`'s). ``backoff`` is the
        first and the longest delay after a retryable error (jittered, doubling).
        Starting it again while it runs changes nothing; the database must be a file."""
        self._check_file("start()")
        if interval <= 0 or (after_writes is not None and after_writes < 0):
            raise ConfigurationError(
                f"interval must be positive and after_writes ≥ 0, got {interval}, {after_writes}"
            )
        if not 0 < backoff[0] <= backoff[1]:
            raise ConfigurationError(f"backoff must be (first, longest) > 0, got {backoff}")
        if self._runner is not None and self._runner.alive():
            return
        self._runner = Runner(self, interval, after_writes, timeout, backoff)
        self._board.update(running=True, last_error=None)
        self._runner.begin()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop continuous sync: a sync in flight ends at its next safe point. Waits up to
        ``timeout`` seconds (None: as long as it takes) and tells whether it ended.
        Called from the sync's own callbacks it asks and returns at once."""
        runner = self._runner
        if runner is None:
            return True
        return runner.stop(timeout)

    def close(self) -> None:
        """Stop continuous sync, then close this thread's database connection."""
        self.stop()
        self.database.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """Continuous sync's thread (see the module's docstring)."""

    def __init__(
        self,
        rep: Continuous,
        interval: float,
        after_writes: float | None,
        timeout: float | None,
        backoff: tuple[float, float],
    ) -> None:
        self.rep, self.interval, self.after_writes = rep, interval, after_writes
        self.timeout, self.backoff = timeout, backoff
        self._stop = threading.Event()
        self._seen = 0  # the database's data_version when last looked
        self._thread = threading.Thread(target=self._run, name="replicator-sync", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def stopping_here(self) -> bool:
        return self._stop.is_set() and threading.current_thread() is self._thread

    def stop(self, timeout: float | None) -> bool:
        self._stop.set()
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        board = self.rep._board
        try:
            self._loop(board)
        except BaseException as exc:  # a bug: shown in the status, not lost in a thread
            log.exception("continuous sync ended by an unexpected error")
            board.update(last_error=LastError.of(exc, now()))
        finally:
            if self.rep._runner is self:  # not a later start()'s, while this one ended
                board.update(running=False)
            with contextlib.suppress(Exception):
                self.rep.database.close()  # this thread's connection

    def _loop(self, board: StatusBoard) -> None:
        failures = 0
        due = time.monotonic()
        self._seen = self._data_version()
        while self._wait(due, retrying=failures > 0):
            # read before the sync: an app's commit after this point, even one landing
            # as the sync ends, is seen as a change afterwards (its rows may still wait)
            before = self._data_version()
            try:
                self.rep.sync(timeout=self.timeout)
            except SyncStopped:
                return
            except ReplicatorError as exc:
                if not exc.retryable:
                    log.warning("continuous sync stopped: %s", type(exc).__name__)
                    return
                failures += 1
                due = time.monotonic() + self.delay(failures, exc)
                continue
            failures = 0
            self._seen = before
            due = time.monotonic() + self.interval

    def delay(self, failures: int, exc: ReplicatorError) -> float:
        """Seconds before the ``failures``-th retry: the outbox's backoff (``Retry``):
        doubling from the first delay up to the longest, each scaled by a random factor
        in [0.5, 1] (devices that failed together do not retry together), or the wait a
        store asked for (``TransientError.retry_after``, at most the longest)."""
        first, longest = self.backoff
        return Backoff(base=first, cap=longest).delay(failures, getattr(exc, "retry_after", None))

    def _wait(self, due: float, *, retrying: bool) -> bool:
        """Wait until ``due``, or sooner after local writes (each write of a burst pushes
        the sync back, never past ``due``); False once stopped."""
        latest = due
        while not self._stop.wait(max(0.0, min(POLL, due - time.monotonic()))):
            version = self._data_version()
            if version != self._seen:
                self._seen = version
                self.rep._board.refresh_pending()
                if self.after_writes is not None and not retrying and self.rep.status.pending:
                    due = min(latest, time.monotonic() + self.after_writes)
            if time.monotonic() >= due:
                return True
        return False

    def _data_version(self) -> int:
        try:
            row = self.rep.database.execute_sql("PRAGMA data_version").fetchone()
        except peewee.DatabaseError:
            return self._seen
        return int(row[0])

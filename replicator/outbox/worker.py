"""The outbox's background worker: one thread that runs every automatic sync.

Per outbox type with ``autoSync`` it syncs when ``threshold`` events wait, every
``frequency`` minutes while anything waits, and at once after a start when
anything was left from before; a requested sync (:meth:`Outbox.request_sync`)
runs until it succeeds. After a failure the type waits its backoff (kept in the
outbox file, so a restart keeps it too). Jobs given to :meth:`Outbox.schedule`
(a ``Replicator``'s ``sync``, for one) run on the same thread at their interval.
Types due together go highest pending priority first. The app's threads only
save; nothing here runs on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ..errors import ReplicatorError

if TYPE_CHECKING:
    from .outbox import Outbox

log = logging.getLogger(__name__)

#: the longest the worker sleeps without looking again (a clock change, another process)
MAX_NAP = 30.0


@attrs.define
class Job:
    """A job of :meth:`Outbox.schedule` and how it fared."""

    name: str
    run: Callable[[], object]
    interval: float
    next_run: float = 0.0
    failures: int = 0
    last_success: float | None = None
    last_error: str | None = None


class Worker(threading.Thread):
    def __init__(self, outbox: Outbox) -> None:
        super().__init__(name="replicator-outbox", daemon=True)
        self.outbox = outbox
        self.jobs: list[Job] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._allowed: dict[str, float] = {}
        # a type holding events from before the start is due at once; the others
        # count their frequency from now
        now = time.time()
        self._last_run: dict[str, float] = {
            t: now for t in outbox.configurations if not outbox.pending(t)
        }

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def add_job(self, name: str, run: Callable[[], object], interval: float) -> None:
        self.jobs.append(Job(name, run, interval, next_run=time.time()))
        self.wake()

    def stop(self, timeout: float) -> None:
        self._deadline = time.time() + max(0.0, timeout)
        self._stopping.set()
        self.wake()
        if self.is_alive():
            self.join(max(0.0, timeout) + 1.0)
            if self.is_alive():
                log.warning("outbox worker still busy after %.1f s; left behind", timeout)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                nap = self._pass()
            except Exception:  # the worker must outlive any one failure
                log.exception("outbox worker pass failed")
                nap = 1.0
            self._wake.wait(max(0.0, min(nap, MAX_NAP)))
        self._flush()

    def _pass(self) -> float:
        """Run what is due; return the seconds until something may be due."""
        now = time.time()
        nap = MAX_NAP
        due: list[tuple[int, str]] = []
        states = self._states()
        for type_, config in self.outbox.configurations.items():
            next_attempt, requested = states.get(type_, (None, 0))
            auto = config.auto_sync
            if auto is None and not requested:
                continue
            if next_attempt is not None and now < next_attempt:
                nap = min(nap, next_attempt - now)
                continue
            pending = self.outbox.pending(type_)
            if requested:
                due.append((self._priority(type_), type_))
                continue
            assert auto is not None
            if not pending:
                if auto.frequency:  # look again when the period ends
                    period = auto.frequency * 60.0
                    when = self._last_run.get(type_, now) + period
                    nap = min(nap, when - now if when > now else period)
                continue
            if auto.threshold and pending >= auto.threshold:
                due.append((self._priority(type_), type_))
                continue
            last = self._last_run.get(type_)
            if last is None:
                due.append((self._priority(type_), type_))  # left from before the start
            elif auto.frequency:
                when = last + auto.frequency * 60.0
                if now >= when:
                    due.append((self._priority(type_), type_))
                else:
                    nap = min(nap, when - now)
        for _, type_ in sorted(due, key=lambda d: (-d[0], d[1])):
            if self._stopping.is_set():
                break
            self._sync(type_)
            nap = 0.0  # look again at once: events may have come in meanwhile
        for job in self.jobs:
            if self._stopping.is_set():
                break
            if time.time() >= job.next_run:
                self._run_job(job)
            nap = min(nap, job.next_run - time.time())
        return nap

    def _states(self) -> dict[str, tuple[float | None, int]]:
        conn = self.outbox._conn()
        rows = conn.execute("SELECT type, next_attempt, requested FROM outbox_state").fetchall()
        return {t: (n, r) for t, n, r in rows}

    def _priority(self, type_: str) -> int:
        conn = self.outbox._conn()
        row = conn.execute(
            "SELECT MAX(p) FROM (SELECT MAX(priority) AS p FROM events WHERE type = ?"
            " UNION ALL SELECT MAX(priority) FROM processed_sync_data WHERE type = ?)",
            (type_, type_),
        ).fetchone()
        return int(row[0] or 0)

    def _sync(self, type_: str) -> None:
        self._last_run[type_] = time.time()
        config = self.outbox.configurations.get(type_)
        bandwidth = config.auto_sync.bandwidth if config and config.auto_sync else None
        try:
            self.outbox._deliver(
                type_,
                automatic=True,
                should_stop=self._stopping.is_set,
                pace=(lambda n: self._pace(type_, n, bandwidth)) if bandwidth else None,
            )
        except ReplicatorError as exc:
            # recorded (last error, next attempt) by the outbox; nothing more to do here
            log.debug("automatic sync of %s failed: %s", type_, type(exc).__name__)

    def _pace(self, type_: str, sent: int, kib_per_second: float) -> None:
        """Hold automatic syncs to ``bandwidth``: after ``sent`` bytes, wait until the
        average rate is back under the cap (or the worker stops)."""
        now = time.time()
        allowed = max(self._allowed.get(type_, now), now) + sent / (kib_per_second * 1024.0)
        self._allowed[type_] = allowed
        if allowed > now:
            self._stopping.wait(allowed - now)

    def _run_job(self, job: Job) -> None:
        try:
            job.run()
        except Exception as exc:
            job.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if isinstance(exc, ReplicatorError) and exc.retryable:
                job.failures += 1
                wait = self.outbox.retry.delay(job.failures)
                log.warning(
                    "scheduled %s failed (%s), failure %d in a row; again in %.1f s",
                    job.name,
                    type(exc).__name__,
                    job.failures,
                    wait,
                )
                job.next_run = time.time() + min(wait, job.interval)
                return
            log.error("scheduled %s failed: %s", job.name, type(exc).__name__)
        else:
            job.failures = 0
            job.last_success = time.time()
        job.next_run = time.time() + job.interval

    def _flush(self) -> None:
        """On stop: one last try at the automatic types, until the deadline."""

        def late() -> bool:
            return time.time() >= self._deadline

        for type_, config in self.outbox.configurations.items():
            if late():
                return
            if config.auto_sync is None or not self.outbox.pending(type_):
                continue
            try:
                self.outbox._deliver(type_, automatic=True, should_stop=late)
            except Exception as exc:
                log.info("final flush of %s stopped: %s", type_, type(exc).__name__)

"""The outbox's background worker: a thread that decides what is due, and one
thread per piece of work it runs.

Per outbox type with ``autoSync`` it syncs when ``threshold`` events wait, every
``frequency`` minutes while anything waits, and at once after a start when
anything was left from before; a requested sync (:meth:`Outbox.request_sync`)
runs until it succeeds. After a failure the type waits its backoff (kept in the
outbox file, so a restart keeps it too). Jobs given to :meth:`Outbox.schedule`
(a ``Replicator``'s ``sync``, for one) run at their interval. The app's threads
only save; nothing here runs on them.

Each type's syncs, and each job, run on a lane of their own (a thread of the
worker's, ``lanes``), at most one run per lane at a time: a slow receiver (each request
bounded by its deadline) holds up its own type only, never the other types nor
the jobs. Types due together start highest pending priority first, and each
waits for those started before it in the same pass, at most
:data:`HEAD_START` seconds: priority orders what goes first when all goes well,
and costs a slow type's neighbours that much at most.

The worker knows the outbox only through :class:`Deliveries`, given at
construction: it reads configurations, pending counts and per type state, and asks
for deliveries; it never touches the file itself.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from ..errors import ReplicatorError
from .config import AutoSync, Retry, SyncConfiguration
from .lanes import Lane

log = logging.getLogger(__name__)

#: the longest the worker sleeps without looking again (a clock change, another process)
MAX_NAP = 30.0
#: what :meth:`Worker._wait` says of a type due now (any other wait is positive)
DUE = 0.0
#: the longest a type due waits for the types of higher priority due with it
HEAD_START = 1.0


class Deliveries(Protocol):
    """What the worker needs of an outbox."""

    #: the backoff of scheduled jobs that failed in a way that can pass
    retry: Retry

    def configurations(self) -> Mapping[str, SyncConfiguration]:
        """The configured types, by name."""
        ...

    def pending(self, type_: str) -> int:
        """Events of ``type_`` not yet delivered; cheap (a row read at most)."""
        ...

    def schedule_states(self) -> Mapping[str, tuple[float | None, int]]:
        """Per type: its next attempt after a failure (or ``None``), and 1 when a
        sync was requested until one succeeds."""
        ...

    def top_priority(self, type_: str) -> int:
        """The highest priority among the undelivered events of ``type_``."""
        ...

    def deliver(
        self,
        type_: str,
        *,
        automatic: bool,
        should_stop: Callable[[], bool] = ...,
        pace: Callable[[int], None] | None = None,
    ) -> object:
        """Send what waits of ``type_`` until nothing is left or ``should_stop()``;
        ``pace(bytes)`` after each message. A failure that can pass is recorded
        (last error, next attempt after a backoff) before it is raised."""
        ...


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
    """The outbox's thread: decides what is due per ``autoSync``, requests and job
    intervals, and runs each on its lane."""

    def __init__(self, deliveries: Deliveries) -> None:
        super().__init__(name="replicator-outbox", daemon=True)
        self.deliveries = deliveries
        self.jobs: list[Job] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._allowed: dict[str, float] = {}
        self._lanes: dict[str, Lane] = {}
        self._lanes_lock = threading.Lock()
        # a type holding events from before the start is due at once; the others
        # count their frequency from now
        now = time.time()
        self._last_run: dict[str, float] = {
            t: now for t in deliveries.configurations() if not deliveries.pending(t)
        }

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def add_job(self, name: str, run: Callable[[], object], interval: float) -> None:
        self.jobs.append(Job(name, run, interval, next_run=time.time()))
        self.wake()

    def stop(self, timeout: float) -> None:
        """Stop deciding, give the automatic types ``timeout`` seconds to flush,
        and wait for the lanes that long (and one more second, for a request in
        flight); a lane still busy then is left behind, what it did not send stays."""
        end = time.time() + max(0.0, timeout) + 1.0
        self._deadline = time.time() + max(0.0, timeout)
        self._stopping.set()
        self.wake()
        if self.is_alive():
            self.join(max(0.0, end - time.time()))
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        busy = [lane for lane in lanes if not lane.idle(end - time.time())]
        for lane in lanes:
            lane.close()
        if self.is_alive() or busy:
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
        """Start what is due on its lane; return the seconds until something else
        may be due (a lane that ends wakes the loop)."""
        due, nap = self._due(time.time())
        ahead: list[Lane] = []
        start = time.monotonic()
        for type_ in due:
            self._last_run[type_] = time.time()
            before = list(ahead)

            def sync(type_: str = type_, before: list[Lane] = before) -> None:
                for lane in before:  # higher priority first, briefly
                    lane.idle(start + HEAD_START - time.monotonic())
                self._sync(type_, self._stopping.is_set)

            lane = self._launch(f"type {type_}", sync)
            if lane is not None:
                ahead.append(lane)
        for job in self.jobs:
            if self._busy(f"job {job.name}"):
                continue
            if time.time() >= job.next_run:
                self._launch(f"job {job.name}", functools.partial(self._run_job, job))
                continue
            nap = min(nap, job.next_run - time.time())
        return nap

    def _launch(self, name: str, work: Callable[[], None]) -> Lane | None:
        """Run ``work`` on the lane ``name`` (made on first use) unless that lane is
        busy; the loop wakes when it ends."""
        with self._lanes_lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane(name, self.wake)
        return lane if lane.give(work) else None

    def _busy(self, name: str) -> bool:
        with self._lanes_lock:
            lane = self._lanes.get(name)
        return lane is not None and lane.busy

    def _due(self, now: float) -> tuple[list[str], float]:
        """The types due ``now`` whose lane is free, highest pending priority first
        (then by name), and the seconds until another may be due."""
        nap = MAX_NAP
        due: list[tuple[int, str]] = []
        states = self.deliveries.schedule_states()
        for type_, config in self.deliveries.configurations().items():
            if self._busy(f"type {type_}"):
                continue
            wait = self._wait(type_, config.auto_sync, states.get(type_, (None, 0)), now)
            if wait == DUE:
                due.append((self.deliveries.top_priority(type_), type_))
            elif wait is not None:
                nap = min(nap, wait)
        due.sort(key=lambda d: (-d[0], d[1]))
        return [type_ for _, type_ in due], nap

    def _wait(
        self, type_: str, auto: AutoSync | None, state: tuple[float | None, int], now: float
    ) -> float | None:
        """The seconds until ``type_`` is due (:data:`DUE`: now), or ``None`` when
        only a save or a request can make it due. ``state`` is its next attempt
        after a failure and whether a sync was requested."""
        next_attempt, requested = state
        if auto is None and not requested:
            return None
        if next_attempt is not None and now < next_attempt:
            return next_attempt - now  # backing off after a failure
        if requested:
            return DUE
        assert auto is not None
        pending = self.deliveries.pending(type_)
        if not pending:
            if auto.frequency:  # look again when the period ends
                period = auto.frequency * 60.0
                when = self._last_run.get(type_, now) + period
                return when - now if when > now else period
            return None
        if auto.threshold and pending >= auto.threshold:
            return DUE
        last = self._last_run.get(type_)
        if last is None:
            return DUE  # left from before the start
        if auto.frequency:
            when = last + auto.frequency * 60.0
            return DUE if now >= when else when - now
        return None

    def _sync(self, type_: str, should_stop: Callable[[], bool]) -> None:
        config = self.deliveries.configurations().get(type_)
        bandwidth = config.auto_sync.bandwidth if config and config.auto_sync else None
        try:
            self.deliveries.deliver(
                type_,
                automatic=True,
                should_stop=should_stop,
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
                wait = self.deliveries.retry.delay(job.failures)
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
        """On stop: one last try at the automatic types whose lane is free, each on
        its lane, until the deadline (:meth:`stop` waits for them)."""

        def late() -> bool:
            return time.time() >= self._deadline

        for type_, config in self.deliveries.configurations().items():
            if late():
                return
            if config.auto_sync is None or not self.deliveries.pending(type_):
                continue
            self._launch(f"type {type_}", functools.partial(self._sync, type_, late))

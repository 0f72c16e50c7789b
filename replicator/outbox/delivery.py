"""Delivering a type's events: messages compiled from waiting events, sent
through the type's sink, acknowledged, retried, set aside or dead-lettered.

Invariants:

* one delivery of a type runs at a time in a process (a lock per type): an
  explicit sync during an automatic one waits its turn and sends only what is
  left. Processes on one file may deliver a type at once: a message may then go
  twice, always under its one ``msg_id`` (see ``messages`` and ``store``);
* a delivery sends only the events saved before it began, so a type that keeps
  saving cannot keep it going forever;
* a message is compiled (its events moved from ``events`` into
  ``processed_sync_data``) in the transaction that deletes those events, and is
  deleted only after the sink acknowledged it; the acknowledgement is written in
  the transaction that compiles the next message.

What a failure does, by kind:

* :class:`~replicator.errors.DeliveryRejected` (refused for good): the message
  goes to the dead letters and the delivery goes on;
* :class:`~replicator.errors.OfflineError` (the receiver cannot be reached): the
  delivery stops and the type backs off; the message is not to blame;
* any other failure that can pass (:class:`~replicator.errors.TransientError`:
  busy, throttled, no answer within the deadline): an explicit sync tries the
  message :attr:`Retry.attempts` times; then the message counts a failure (it
  goes after the others next time), the delivery stops and the type backs off;
* any other failure (a sink's error that cannot pass by itself, any exception of
  an app's sink): a fault of that message. It counts a failure, is set aside for
  the rest of this delivery, which goes on with the next message; after
  :attr:`Retry.attempts` faults it is dead-lettered (status 0, the error as its
  response).

Every failure is recorded in the file (``status().last_error``, and the next
attempt after a backoff, which the worker waits), so no failure makes the worker
try again at once, and one message never keeps the rest of its type from going.
An explicit sync raises the error once it sent what it could.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs

from ..errors import DeliveryRejected, OfflineError, RemoteError, ReplicatorError
from ..stores.base import Delivery, Sink
from .config import Retry, SyncConfiguration
from .messages import Message, acknowledge, build, insert, take_next, unchanged
from .setup import Setup
from .store import OutboxFile

log = logging.getLogger(__name__)

#: how long a message taken for sending stays claimed, in the outbox's timeouts (the
#: deadline of one request): time for an attempt or two; a claim that runs out early
#: costs at most the message sent twice under its msg_id
CLAIM = 2.0


@attrs.frozen
class OutboxReport:
    """What one :meth:`Outbox.sync` of a type did and left."""

    type: str
    events_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    dead_lettered: int = 0
    pending_events: int = 0
    pending_messages: int = 0


@attrs.define
class _Run:
    """What one delivery of ``type`` has sent so far, the message it sent last
    (acknowledged by the sink, deleted with the next compile), the messages it set
    aside after a fault, and the faults of those still in line."""

    type: str
    events: int = 0
    messages: int = 0
    bytes: int = 0
    dead: int = 0
    done: Message | None = None
    skipped: set[str] = attrs.field(factory=set)
    faults: list[ReplicatorError] = attrs.field(factory=list)

    def sent(self, message: Message) -> None:
        self.done = message
        self.events += message.event_count
        self.messages += 1
        self.bytes += len(message.body)

    def log(self) -> None:
        if self.messages or self.dead:
            log.info(
                "outbox %s: sent %d event(s) in %d message(s), %d byte(s); %d dead-lettered",
                self.type,
                self.events,
                self.messages,
                self.bytes,
                self.dead,
            )


class Dispatcher:
    """Delivers the events of ``file`` per the types of ``setup``: messages of up to
    ``batch_events`` events and ``batch_bytes`` bytes of event JSON for a batched
    type, one event otherwise, retried per ``retry``.

    It also answers what the worker asks before it delivers (configurations,
    pending events, per type state and priority)."""

    def __init__(
        self,
        file: OutboxFile,
        setup: Setup,
        *,
        retry: Retry,
        batch_events: int,
        batch_bytes: int,
    ) -> None:
        self.file = file
        self.setup = setup
        self.retry = retry
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self._type_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- what the worker reads -------------------------------------------------------------

    def configurations(self) -> dict[str, SyncConfiguration]:
        return self.setup.configurations

    def pending(self, type_: str) -> int:
        """Events of ``type_`` not yet delivered (waiting or in messages), with what
        other processes delivered taken off; one row read."""
        self.file.refresh(type_)
        return self.file.counts.get(type_)[0]

    def schedule_states(self) -> dict[str, tuple[float | None, int]]:
        return self.file.schedule_states()

    def top_priority(self, type_: str) -> int:
        return self.file.top_priority(type_)

    # -- delivery ------------------------------------------------------------------------

    def deliver(
        self,
        type_: str,
        *,
        automatic: bool,
        should_stop: Callable[[], bool] = lambda: False,
        pace: Callable[[int], None] | None = None,
    ) -> OutboxReport:
        """Send the events of ``type_`` saved before now, message by message, until
        none is left or ``should_stop()``; ``pace(bytes)`` is called after each
        message sent. An automatic delivery tries each message once, an explicit one
        :attr:`Retry.attempts` times when the failure can pass."""
        sink = self.setup.sink(type_)
        config = self.setup.config(type_)
        run = _Run(type_)
        with self._lock(type_):
            try:
                with self.file.mapped("read the outbox"):
                    upto = self.file.conn().execute("SELECT MAX(_id) FROM events").fetchone()[0]
                self._drain(run, config, sink, upto or 0, automatic, should_stop, pace)
            except ReplicatorError as exc:
                self._failed(type_, exc)
                raise
            finally:
                if run.done is not None:
                    self._step(config, 0, run, take=False, claimed_too=False)
                run.log()
            if run.faults:
                raise run.faults[0]  # recorded when it happened; the backoff stands
            self.file.record_success(type_)
        status = self.file.status(type_, self.setup.configurations)[type_]
        return OutboxReport(
            type=type_,
            events_sent=run.events,
            messages_sent=run.messages,
            bytes_sent=run.bytes,
            dead_lettered=run.dead,
            pending_events=status.pending_events,
            pending_messages=status.messages,
        )

    def _lock(self, type_: str) -> threading.Lock:
        with self._locks_lock:
            return self._type_locks.setdefault(type_, threading.Lock())

    def _drain(
        self,
        run: _Run,
        config: SyncConfiguration,
        sink: Sink,
        upto: int,
        automatic: bool,
        should_stop: Callable[[], bool],
        pace: Callable[[int], None] | None,
    ) -> None:
        """Compile and send one message after the other; the last one sent stays in
        ``run.done`` for the caller to forget."""
        attempts = 1 if automatic else self.retry.attempts
        while not should_stop():
            message = self._step(config, upto, run, take=True, claimed_too=not automatic)
            if message is None:
                break
            try:
                self._send(sink, message, attempts)
            except DeliveryRejected as exc:
                self._dead_letter(run, message, exc.status, exc.response)
                continue
            except OfflineError:
                self.file.release(message.msg_id)  # the receiver is gone: no one to blame
                raise
            except ReplicatorError as exc:
                if exc.retryable:
                    self.file.count_failure(message.msg_id, fault=False)
                    raise
                self._fault(run, message, exc)
                continue
            run.sent(message)
            if pace is not None:
                pace(len(message.body))

    def _step(
        self, config: SyncConfiguration, upto: int, run: _Run, *, take: bool, claimed_too: bool
    ) -> Message | None:
        """In one transaction: forget ``run.done`` (acknowledged by the sink); if no
        message of the type that never failed is ready, move waiting events saved
        before the sync began (``_id <= upto``) into one; with ``take``, take (and
        claim) the next message in line, which is returned. One commit per message.

        The message is built and compressed before the write transaction, so saves
        on other threads wait only for the insert and the delete; inside it, the
        events are checked to be as they were read (a save under the same key, or
        another process, may have changed them meanwhile) and the message is rebuilt
        if not."""
        done = run.done.msg_id if run.done is not None else None
        now = time.time()
        limits = {"batch_events": self.batch_events, "batch_bytes": self.batch_bytes}
        with self.file.mapped("read the outbox"):
            built = build(
                self.file.conn(), config, upto, done=done, skipped=run.skipped, now=now, **limits
            )
        totals = message = None
        with self.file.transaction("compile a message") as conn:
            if run.done is not None:
                merged = self.setup.merge(config.type) is not None
                totals = acknowledge(conn, run.done, merged=merged)
            if built is not None and not unchanged(conn, built.rows):
                built = build(conn, config, upto, done=done, skipped=run.skipped, now=now, **limits)
            if built is not None:
                insert(conn, config.type, built)
            if take:
                message = take_next(
                    conn,
                    config.type,
                    config.should_batch,
                    run.skipped,
                    now=now,
                    until=now + CLAIM * self.file.timeout,
                    claimed_too=claimed_too,
                )
        run.done = None
        if totals is not None:
            self.file.counts.removed(config.type, totals)
        return message

    def _send(self, sink: Sink, message: Message, attempts: int) -> None:
        delivery = Delivery(
            message.msg_id,
            message.type,
            message.body,
            message.gzipped,
            message.event_count,
            message.key,
        )
        for attempt in range(1, attempts + 1):
            try:
                sink.deliver(delivery)
                return
            except ReplicatorError as exc:
                if not exc.retryable or isinstance(exc, DeliveryRejected) or attempt == attempts:
                    raise
                wait = self.retry.delay(attempt, getattr(exc, "retry_after", None))
                log.warning(
                    "outbox %s: message failed (%s), attempt %d of %d: retrying in %.2f s",
                    message.type,
                    type(exc).__name__,
                    attempt,
                    attempts,
                    wait,
                )
                time.sleep(wait)
            except Exception as exc:  # an app's own sink failed: say so, keep the message
                raise RemoteError(
                    f"the sink of {message.type} failed on message {message.msg_id}:"
                    f" {type(exc).__name__}: {exc}",
                    hint="the message stays in line (dead-lettered after Retry.attempts"
                    " such failures); fix the sink and sync again",
                    orig=exc,
                ) from exc

    def _fault(self, run: _Run, message: Message, exc: ReplicatorError) -> None:
        """A failure of ``message`` that no wait will cure: count it, set the
        message aside for this run, dead-letter it after ``Retry.attempts``."""
        faults = self.file.count_failure(message.msg_id, fault=True)
        run.skipped.add(message.msg_id)
        self._failed(run.type, exc)
        if not faults:
            return  # another process took it meanwhile
        if faults >= self.retry.attempts:
            self._dead_letter(
                run, message, 0, f"{type(exc).__name__} ({faults} times): {exc}"[:2000]
            )
            return
        run.faults.append(exc)

    def _dead_letter(self, run: _Run, message: Message, status: int, response: str) -> None:
        if not self.file.move_to_dead_letters(message.msg_id, status, response):
            return  # another process acknowledged or dead-lettered it meanwhile
        run.dead += 1
        log.warning(
            "outbox %s: message %s of %d event(s) %s; kept in the dead letters",
            message.type,
            message.msg_id,
            message.event_count,
            f"refused with HTTP {status}" if status else f"failed for good ({response[:200]})",
        )

    def _failed(self, type_: str, exc: ReplicatorError) -> None:
        """Record ``exc`` as the type's last error and set its next attempt after a
        backoff (a record that cannot be written is logged: the error goes on)."""
        retry_after = getattr(exc, "retry_after", None)
        try:
            failures, wait = self.file.record_failure(
                type_,
                f"{type(exc).__name__}: {exc}",
                lambda failures: self.retry.delay(failures, retry_after),
            )
        except ReplicatorError as again:
            log.warning("outbox %s: could not record a failure: %s", type_, again)
            return
        log.warning(
            "outbox %s: delivery failed (%s), failure %d in a row; next attempt in %.1f s",
            type_,
            type(exc).__name__,
            failures,
            wait,
        )

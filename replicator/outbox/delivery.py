"""Delivering a type's events: messages compiled from waiting events, sent
through the type's sink, acknowledged, retried or dead-lettered.

Invariants:

* one delivery of a type runs at a time (a lock per type): an explicit sync during
  an automatic one waits its turn and sends only what is left;
* a delivery sends only the events saved before it began, so a type that keeps
  saving cannot keep it going forever;
* a message is compiled (its events moved from ``events`` into
  ``processed_sync_data``) in the transaction that deletes those events, and only
  when no other message of the type is ready: a message once compiled is sent
  again under its ``msg_id`` until acknowledged, never rebuilt;
* a message is deleted only after the sink acknowledged it; the acknowledgement
  is written in the transaction that compiles the next message;
* a batched type's message is gzipped JSON (``msg_id``, ``type``, ``events``) built
  around each event's stored text; a single event goes as its own JSON text;
* a refusal for good (:class:`~replicator.errors.DeliveryRejected`) moves the
  message to the dead letters and the delivery goes on; a failure that can pass
  (:class:`~replicator.errors.OfflineError`,
  :class:`~replicator.errors.TransientError`) is retried ``attempts`` times, then
  recorded (last error, next attempt after a backoff) and raised, everything kept;
  any other exception of an app's sink is a :class:`~replicator.errors.RemoteError`
  and the message stays in line.
"""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..errors import DeliveryRejected, OfflineError, RemoteError, ReplicatorError, TransientError
from ..stores.base import Delivery, Sink
from .config import Retry, SyncConfiguration
from .setup import Setup
from .store import OutboxFile

log = logging.getLogger(__name__)


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


@attrs.frozen
class _Message:
    """A message ready to send, as read from ``processed_sync_data`` (``body``
    un-gzipped for a single event)."""

    id: int
    msg_id: str
    type: str
    body: bytes
    gzipped: bool
    event_count: int
    key: str | None
    size: int
    priority: int


@attrs.frozen
class _Built:
    """A message built from waiting events (``rows``), not yet written."""

    msg_id: str
    rows: list[Any]
    data: bytes
    key: str | None
    size: int


@attrs.define
class _Run:
    """What one delivery of ``type`` has sent so far, and the message it sent last
    (acknowledged by the sink, deleted with the next compile)."""

    type: str
    events: int = 0
    messages: int = 0
    bytes: int = 0
    dead: int = 0
    done: _Message | None = None

    def sent(self, message: _Message) -> None:
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
        """Events of ``type_`` not yet delivered (waiting or in messages); cheap."""
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
        :attr:`Retry.attempts` times."""
        sink = self.setup.sink(type_)
        config = self.setup.config(type_)
        run = _Run(type_)
        with self._lock(type_):
            with self.file.mapped("read the outbox"):
                upto = self.file.conn().execute("SELECT MAX(_id) FROM events").fetchone()[0] or 0
            try:
                self._drain(run, config, sink, upto, automatic, should_stop, pace)
            except (OfflineError, TransientError) as exc:
                self._failed(type_, exc)
                raise
            finally:
                if run.done is not None:
                    self._compile(config, 0, run.done)
                run.log()
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
        while not should_stop():
            self._compile(config, upto, run.done)
            run.done = None
            message = self._next_message(config.type)
            if message is None:
                break
            try:
                self._send(sink, message, attempts=1 if automatic else self.retry.attempts)
            except DeliveryRejected as exc:
                self._dead_letter(message, exc)
                run.dead += 1
                continue
            run.sent(message)
            if pace is not None:
                pace(len(message.body))

    def _compile(self, config: SyncConfiguration, upto: int, done: _Message | None) -> None:
        """Forget the message ``done`` (acknowledged by the sink), then, if no message
        of the type is ready, move waiting events saved before the sync began
        (``_id <= upto``) into one: up to ``batch_events``/``batch_bytes`` of them for
        a batched type, one otherwise. One commit per message.

        The message is built and compressed before the write transaction, so saves
        on other threads wait only for the insert and the delete; inside it, the
        events are checked to be as they were read (a save under the same key may
        have changed one meanwhile) and the message is rebuilt if not."""
        with self.file.mapped("read the outbox"):
            built = self._build(self.file.conn(), config, upto, done)
        with self.file.transaction("compile a message") as conn:
            if done is not None:
                self._acknowledged(conn, done)
            if built is None:
                return
            if not _unchanged(conn, built.rows):
                built = self._build(conn, config, upto, None)
                if built is None:
                    return
            conn.execute(
                "INSERT INTO processed_sync_data"
                " (msg_id, type, processed_data, event_count, priority, key, size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    built.msg_id,
                    config.type,
                    built.data,
                    len(built.rows),
                    max(r[4] for r in built.rows),
                    built.key,
                    built.size,
                ),
            )
            conn.execute(
                "DELETE FROM events WHERE _id IN (SELECT value FROM json_each(?))",
                (json.dumps([r[0] for r in built.rows]),),
            )

    def _build(
        self, conn: sqlite3.Connection, config: SyncConfiguration, upto: int, done: _Message | None
    ) -> _Built | None:
        """The next message of ``config.type`` from waiting events, or ``None`` when a
        message other than ``done`` is ready (send that first) or nothing waits."""
        ready = conn.execute(
            "SELECT _id FROM processed_sync_data WHERE type = ? ORDER BY _id LIMIT 2",
            (config.type,),
        ).fetchall()
        if any(done is None or r[0] != done.id for r in ready):
            return None
        limit = self.batch_events if config.should_batch else 1
        rows = conn.execute(
            "SELECT _id, key, data, timestamp, priority FROM events"
            " WHERE type = ? AND _id <= ? ORDER BY priority DESC, _id LIMIT ?",
            (config.type, upto, limit),
        ).fetchall()
        if not rows:
            return None
        taken: list[Any] = []
        size = 0
        for row in rows:
            if taken and size + len(row[2]) > self.batch_bytes:
                break
            taken.append(row)
            size += len(row[2])
        msg_id = uuid.uuid4().hex
        if config.should_batch:
            body, key = _batch_body(msg_id, config.type, taken), None
        else:
            body, key = taken[0][2].encode(), taken[0][1]
        return _Built(msg_id, taken, gzip.compress(body, compresslevel=6), key, size)

    def _next_message(self, type_: str) -> _Message | None:
        with self.file.mapped("read the outbox"):
            row = (
                self.file.conn()
                .execute(
                    "SELECT _id, msg_id, processed_data, event_count, key, size, priority"
                    " FROM processed_sync_data WHERE type = ?"
                    " ORDER BY priority DESC, _id LIMIT 1",
                    (type_,),
                )
                .fetchone()
            )
        if row is None:
            return None
        batched = self.setup.config(type_).should_batch
        data = row[2] if batched else gzip.decompress(row[2])
        return _Message(row[0], row[1], type_, data, batched, row[3], row[4], row[5], row[6])

    def _send(self, sink: Sink, message: _Message, attempts: int) -> None:
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
            except (OfflineError, TransientError) as exc:
                if attempt == attempts:
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
            except ReplicatorError:
                raise
            except Exception as exc:  # an app's own sink failed: say so, keep the message
                raise RemoteError(
                    f"the sink of {message.type} failed: {type(exc).__name__}: {exc}",
                    hint="the message stays in line; fix the sink and sync again",
                    orig=exc,
                ) from exc

    def _acknowledged(self, conn: sqlite3.Connection, message: _Message) -> None:
        conn.execute("DELETE FROM processed_sync_data WHERE _id = ?", (message.id,))
        if message.key is not None and self.setup.merge(message.type) is not None:
            # what the next save under this key merges with, once nothing waits
            conn.execute(
                "INSERT OR REPLACE INTO outbox_merged (type, key, data) VALUES (?, ?, ?)",
                (message.type, message.key, message.body.decode()),
            )
        self.file.counts.remove(message.type, message.event_count, message.size)

    def _dead_letter(self, message: _Message, exc: DeliveryRejected) -> None:
        log.warning(
            "outbox %s: the sink refused a message of %d event(s) with HTTP %d;"
            " kept in the dead letters",
            message.type,
            message.event_count,
            exc.status,
        )
        self.file.move_to_dead_letters(message.id, exc.status, exc.response)
        self.file.counts.remove(message.type, message.event_count, message.size)

    def _failed(self, type_: str, exc: ReplicatorError) -> None:
        retry_after = getattr(exc, "retry_after", None)
        failures, wait = self.file.record_failure(
            type_,
            f"{type(exc).__name__}: {exc}",
            lambda failures: self.retry.delay(failures, retry_after),
        )
        log.warning(
            "outbox %s: delivery failed (%s), failure %d in a row; next attempt in %.1f s",
            type_,
            type(exc).__name__,
            failures,
            wait,
        )


def _unchanged(conn: sqlite3.Connection, rows: Sequence[Any]) -> bool:
    """Whether the events read for a message still wait, as they were read (a save
    under the same key rewrites ``data`` and ``timestamp``)."""
    now = conn.execute(
        "SELECT _id, timestamp, length(data) FROM events"
        " WHERE _id IN (SELECT value FROM json_each(?))",
        (json.dumps([r[0] for r in rows]),),
    ).fetchall()
    return sorted(now) == sorted((r[0], r[3], len(r[2])) for r in rows)


def _batch_body(msg_id: str, type_: str, rows: Sequence[Any]) -> bytes:
    """The JSON of one batch, built around each event's stored text (not re-parsed)."""
    events = ",".join(
        f'{{"key":{json.dumps(key)},"timestamp":{ts!r},"priority":{prio},"data":{data}}}'
        for _id, key, data, ts, prio in rows
    )
    head = json.dumps({"msg_id": msg_id, "type": type_})[:-1]
    return f'{head},"events":[{events}]}}'.encode()

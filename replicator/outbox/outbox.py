"""The event outbox (seed 000): events saved offline, delivered exactly once.

An app hands events to :meth:`Outbox.save` from any thread; they are committed to
the outbox's own SQLite file (never the app's database) in one short
transaction. Delivery happens in :meth:`Outbox.sync` or on the outbox's
background worker (:meth:`Outbox.start`), never on the thread that saves.

The file holds the seed's two tables and three of replicator's:

* ``events`` (``_id, type, key, data, timestamp, priority``): events not yet
  sent. ``key`` is unique per type while the event waits; saving again under a
  key that waits replaces (or merges into) it.
* ``processed_sync_data`` (``_id, msg_id, type, processed_data, event_count,
  priority``): messages ready to send, gzipped. A batched type's events move
  here in batches, in the same transaction that deletes them from ``events``, so
  an event is always in exactly one place; a message is deleted only after the
  sink acknowledged it, and keeps its ``msg_id`` on every attempt.
* ``dead_letters``: messages a sink refused for good (a 4xx), with the status
  and the response, until :meth:`Outbox.requeue` sends them again.
* ``outbox_configs`` and ``outbox_state``: the configurations given to
  :meth:`Outbox.init` (so a restarted process or the CLI can deliver before the
  app calls ``init`` again), and per type the last success, the last error, the
  next attempt after a failure, and how many events the caps dropped.

Units of ``autoSync``: ``frequency`` in minutes, ``threshold`` in pending events,
``bandwidth`` in KiB per second of message bytes on the wire. Fractions are fine.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import (
    ConfigurationError,
    DeliveryRejected,
    EventError,
    LocalDatabaseError,
    OfflineError,
    RemoteError,
    ReplicatorError,
    TransientError,
)
from ..stores.base import Delivery, Sink

log = logging.getLogger(__name__)

Merge = Callable[[Any, Any], Any]

METHODS = ("POST", "PUT", "PATCH")
#: tables of an outbox file; any other table means the file is not an outbox's
TABLES = (
    "events",
    "processed_sync_data",
    "dead_letters",
    "outbox_configs",
    "outbox_state",
    "outbox_merged",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    _id INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    timestamp REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS events_type_key ON events (type, key);
CREATE INDEX IF NOT EXISTS events_order ON events (type, priority DESC, _id);
CREATE TABLE IF NOT EXISTS processed_sync_data (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS processed_order ON processed_sync_data (type, priority DESC, _id);
CREATE INDEX IF NOT EXISTS processed_key ON processed_sync_data (type, key);
CREATE TABLE IF NOT EXISTS dead_letters (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL, status INTEGER NOT NULL, response TEXT NOT NULL,
    failed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_configs (type TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_merged (
    type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (type, key));
CREATE TABLE IF NOT EXISTS outbox_state (
    type TEXT PRIMARY KEY, last_success REAL, last_error TEXT, last_error_at REAL,
    next_attempt REAL, failures INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0, requested INTEGER NOT NULL DEFAULT 0);
"""


# -- configuration: the seed's SyncConfiguration ------------------------------------


def _field(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigurationError(f"{where} must be {what}, got {value!r}")
    return value


@attrs.frozen
class Api:
    """Where a type's messages go: ``method`` (POST, PUT or PATCH, any case) to
    ``host`` + ``path`` with ``params`` as the query. ``host`` is a bare host name
    (https is assumed) or a URL with scheme and port."""

    method: str
    host: str
    path: str = ""
    params: str = ""

    @property
    def url(self) -> str:
        host = self.host if "://" in self.host else f"https://{self.host}"
        url = host.rstrip("/")
        if self.path:
            url += "/" + self.path.lstrip("/")
        if self.params:
            url += "?" + self.params.lstrip("?")
        return url


@attrs.frozen
class AutoSync:
    """When the worker syncs a type by itself: every ``frequency`` minutes, and as
    soon as ``threshold`` events wait; automatic syncs send at most ``bandwidth``
    KiB per second. A zero or missing value switches that trigger (or the cap) off."""

    frequency: float | None = None
    threshold: int | None = None
    bandwidth: float | None = None


@attrs.frozen
class SyncConfiguration:
    """One type's configuration, the seed's ``SyncConfiguration``."""

    type: str
    api: Api
    auto_sync: AutoSync | None = None
    should_batch: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], type_name: str | None = None) -> SyncConfiguration:
        """Read the seed's JSON shape; ``type_name`` supplies ``type`` when the dict
        is a value of a ``{type: config}`` mapping, as in the seed's table."""
        where = f"configuration {type_name or raw.get('type', '?')!s}"
        _field(where, raw, Mapping, "an object")
        unknown = set(raw) - {"type", "api", "autoSync", "shouldBatch"}
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key(s) {sorted(unknown)}",
                hint="a configuration has type, api, autoSync and shouldBatch",
            )
        type_ = raw.get("type", type_name)
        if type_name is not None and type_ != type_name:
            raise ConfigurationError(f"{where}: type {type_!r} under the key {type_name!r}")
        if not isinstance(type_, str) or not type_:
            raise ConfigurationError(f"{where}: type must be a non-empty string, got {type_!r}")
        api = _field(f"{where}.api", raw.get("api"), Mapping, "an object")
        unknown = set(api) - {"method", "host", "path", "params"}
        if unknown:
            raise ConfigurationError(f"{where}.api: unknown key(s) {sorted(unknown)}")
        method = _field(f"{where}.api.method", api.get("method"), str, "a string")
        if method.upper() not in METHODS:
            raise ConfigurationError(f"{where}.api.method must be POST, PUT or PATCH: {method!r}")
        host = _field(f"{where}.api.host", api.get("host"), str, "a string")
        if not host.strip():
            raise ConfigurationError(f"{where}.api.host must not be empty")
        path = _field(f"{where}.api.path", api.get("path", ""), str, "a string")
        params = api.get("params", "")
        if isinstance(params, Mapping):
            from urllib.parse import urlencode

            params = urlencode({str(k): str(v) for k, v in params.items()})
        params = _field(f"{where}.api.params", params, str, "a string or an object")
        api_ = Api(method.upper(), host.strip(), path, params)
        _check_url(f"{where}.api", api_.url)
        return cls(
            type=type_,
            api=api_,
            auto_sync=_auto_sync(where, raw.get("autoSync")),
            should_batch=_field(
                f"{where}.shouldBatch", raw.get("shouldBatch", False), bool, "true or false"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        auto = self.auto_sync
        return {
            "type": self.type,
            "api": attrs.asdict(self.api),
            "autoSync": None if auto is None else attrs.asdict(auto),
            "shouldBatch": self.should_batch,
        }


def _check_url(where: str, url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError as exc:
        raise ConfigurationError(
            f"{where}: host, path and params make no URL ({url!r}): {exc}"
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigurationError(
            f"{where}: host, path and params make no http(s) URL: {url!r}",
            hint="host is a name (https assumed) or http(s)://host[:port]",
        )


def _auto_sync(where: str, raw: Any) -> AutoSync | None:
    if raw is None:
        return None
    _field(f"{where}.autoSync", raw, Mapping, "an object or null")
    unknown = set(raw) - {"frequency", "threshold", "bandwidth"}
    if unknown:
        raise ConfigurationError(f"{where}.autoSync: unknown key(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name in ("frequency", "threshold", "bandwidth"):
        value = raw.get(name)
        if value is None:
            continue
        _field(f"{where}.autoSync.{name}", value, (int, float), "a number")
        if value < 0 or value != value or value == float("inf"):
            raise ConfigurationError(f"{where}.autoSync.{name} must be a finite number >= 0")
        if value:
            values[name] = int(value) if name == "threshold" else float(value)
    return AutoSync(**values)


def load_configurations(
    configurations: Iterable[Mapping[str, Any] | SyncConfiguration]
    | Mapping[str, Mapping[str, Any]],
) -> dict[str, SyncConfiguration]:
    """Configurations as a list (each with ``type``) or as ``{type: config}``."""
    if isinstance(configurations, Mapping):
        items = [SyncConfiguration.from_dict(c, t) for t, c in configurations.items()]
    else:
        items = [
            c if isinstance(c, SyncConfiguration) else SyncConfiguration.from_dict(c)
            for c in configurations
        ]
    out: dict[str, SyncConfiguration] = {}
    for item in items:
        if item.type in out:
            raise ConfigurationError(f"type {item.type!r} is configured twice")
        out[item.type] = item
    return out


# -- what an outbox tells --------------------------------------------------------------


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
class TypeStatus:
    """Where one type stands: events not yet delivered (waiting, or in a message
    ready to send) and their bytes, messages ready to send, dead letters, events
    the caps dropped, and the times of the last success, the last error and the
    next attempt (seconds since the epoch, or ``None``)."""

    type: str
    configured: bool
    pending_events: int
    pending_bytes: int
    messages: int
    dead_letters: int
    dropped: int
    last_success: float | None
    last_error: str | None
    next_attempt: float | None


@attrs.frozen
class Retry:
    """How delivery failures that can pass are retried: waits of ``base`` seconds
    doubling up to ``cap``, each scaled by a random factor in [0.5, 1] (jitter), or
    the receiver's ``Retry-After`` (at most ``cap``). An explicit :meth:`Outbox.sync`
    tries a message ``attempts`` times before it raises; the worker tries once per
    run and waits the backoff before the next run, however many runs it takes."""

    attempts: int = 3
    base: float = 0.5
    cap: float = 300.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.cap, float(retry_after))
        backoff: float = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return backoff * random.uniform(0.5, 1.0)


def per_key_max(earlier: Any, later: Any) -> Any:
    """A merge for progress maps (seed 003): each key keeps its highest value, so a
    coalesced progress event never goes backwards. Built on the conflict module's
    ``map_max``."""
    from ..strategies.conflict import map_max

    return map_max(later, earlier, None)


# -- the outbox ------------------------------------------------------------------------


class Outbox:
    """Events saved offline in their own SQLite file and delivered in the background.

    ``max_pending`` and ``max_pending_bytes`` cap what one type may hold undelivered
    (events waiting plus events in messages). Past a cap the outbox drops the oldest
    event of the lowest priority first (a whole message once no event waits), counts
    the drop in :meth:`status` and logs a warning. ``batch_events`` and
    ``batch_bytes`` bound one message of a batched type. ``durable=True`` makes each
    save survive a power cut (``synchronous=FULL``); the default survives a crash of
    the process, not of the machine.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_pending: int = 100_000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        batch_events: int = 500,
        batch_bytes: int = 1024 * 1024,
        retry: Retry | None = None,
        timeout: float = 30.0,
        durable: bool = False,
    ) -> None:
        if str(path) == ":memory:":
            raise ConfigurationError(
                "the outbox needs a file: events in memory would be lost with the process"
            )
        for name, value in (
            ("max_pending", max_pending),
            ("max_pending_bytes", max_pending_bytes),
            ("batch_events", batch_events),
            ("batch_bytes", batch_bytes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        self.path = Path(path)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.retry = retry or Retry()
        self.timeout = timeout
        self._synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._registry = threading.Lock()
        self._closed = False
        self._configs: dict[str, SyncConfiguration] = {}
        self._sinks: dict[str, Sink] = {}
        self._own_sinks: dict[str, Sink] = {}
        self._merge: dict[str, Merge] = {}
        self._type_locks: dict[str, threading.Lock] = {}
        self._counts_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        #: per type: [events not yet delivered, their bytes] (approximate across processes)
        self._pending: dict[str, list[int]] = {}
        self._worker: Any = None
        conn = self._conn()
        try:
            self._check_file(conn)
        except ReplicatorError:
            self.close()
            raise
        with self._mapped("open the outbox"):
            conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: once is enough
            conn.executescript(_SCHEMA)
            stored = conn.execute("SELECT type, config FROM outbox_configs").fetchall()
        for type_, text in stored:
            with contextlib.suppress(ConfigurationError, ValueError):
                self._configs[type_] = SyncConfiguration.from_dict(json.loads(text))
        self._recount()

    # -- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise ConfigurationError("the outbox is closed", hint="open a new Outbox")
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.DatabaseError as exc:
            raise LocalDatabaseError(
                f"{self.path} cannot be opened as an outbox: {exc}", retryable=False, orig=exc
            ) from exc
        self._local.conn = conn
        with self._registry:
            # close the connections of threads that have ended (an app that saves
            # from short-lived threads would otherwise keep one file handle per thread)
            alive = []
            for thread, other in self._connections:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            self._connections = [*alive, (threading.current_thread(), conn)]
        return conn

    def _check_file(self, conn: sqlite3.Connection) -> None:
        with self._mapped("read the outbox"):
            names = {
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            }
        foreign = sorted(names - set(TABLES))
        if foreign:
            raise ConfigurationError(
                f"{self.path} holds tables that are not an outbox's ({', '.join(foreign[:5])})",
                hint="give the outbox a file of its own, never the app's database",
            )

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise _database_error(what, exc) from exc

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._mapped(what):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _recount(self) -> None:
        with self._mapped("count pending events"):
            rows = (
                self._conn()
                .execute(
                    "SELECT type, SUM(n), SUM(b) FROM ("
                    " SELECT type, COUNT(*) AS n, SUM(length(data)) AS b FROM events GROUP BY type"
                    " UNION ALL SELECT type, SUM(event_count), SUM(size)"
                    " FROM processed_sync_data GROUP BY type) GROUP BY type"
                )
                .fetchall()
            )
        with self._counts_lock:
            self._pending = {t: [int(n or 0), int(b or 0)] for t, n, b in rows}

    # -- configuration -------------------------------------------------------------------

    def init(
        self,
        configurations: Iterable[Mapping[str, Any] | SyncConfiguration]
        | Mapping[str, Mapping[str, Any]],
        *,
        sinks: Mapping[str, Sink] | None = None,
        merge: Mapping[str, Merge] | None = None,
    ) -> None:
        """Configure the types (the seed's ``init``), replacing earlier ones.

        ``sinks`` gives a type a sink of the app's instead of HTTP to its ``api``;
        ``merge`` gives a type a function ``merge(earlier, later)`` that combines two
        waiting events saved under one key (default: the later replaces the earlier).
        """
        configs = load_configurations(configurations)
        for type_ in (*(sinks or {}), *(merge or {})):
            if type_ not in configs:
                raise ConfigurationError(f"a sink or merge is given for unknown type {type_!r}")
        with self._transaction("store the configurations") as conn:
            conn.execute("DELETE FROM outbox_configs")
            conn.executemany(
                "INSERT INTO outbox_configs (type, config) VALUES (?, ?)",
                [(t, json.dumps(c.to_dict())) for t, c in configs.items()],
            )
        for sink in self._own_sinks.values():
            sink.close()
        self._own_sinks = {}
        self._configs = configs
        self._sinks = dict(sinks or {})
        self._merge = dict(merge or {})
        if self._worker is not None:
            self._worker.wake()

    @property
    def configurations(self) -> dict[str, SyncConfiguration]:
        return dict(self._configs)

    def _config(self, type_: str) -> SyncConfiguration:
        config = self._configs.get(type_)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise EventError(
                f"no configuration for type {type_!r} (configured: {known})",
                hint="call outbox.init(configurations) with this type first",
            )
        return config

    def _sink(self, type_: str) -> Sink:
        sink = self._sinks.get(type_) or self._own_sinks.get(type_)
        if sink is None:
            from ..stores.http import HttpSink

            api = self._config(type_).api
            sink = self._own_sinks[type_] = HttpSink(api.method, api.url, timeout=self.timeout)
        return sink

    def _lock(self, type_: str) -> threading.Lock:
        with self._counts_lock:
            return self._type_locks.setdefault(type_, threading.Lock())

    # -- save ----------------------------------------------------------------------------

    def save(self, type: str, data: Any, *, key: str | None = None, priority: int = 0) -> str:
        """Store one event and return its key (the seed's ``save``).

        ``data`` is a JSON value (a dict, a list, ...) or JSON text (``str`` or
        ``bytes``). Without ``key`` the event gets a new unique one. With a ``key``
        that an undelivered event of this type already has, the two coalesce: the
        later replaces the earlier, or the type's merge function combines them. With
        a merge function, a save under a key merges with whatever is latest for it:
        the waiting event, else the message still waiting for its acknowledgement,
        else the state last acknowledged (kept per key for single-event types), so
        every message of a key carries its full merged state and never goes
        backwards. Higher ``priority`` is sent first.
        """
        config = self._configs.get(type)
        if config is None:
            self._config(type)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise EventError(f"priority must be an integer, got {priority!r}")
        text = _json_text(data)
        if key is not None and (not isinstance(key, str) or not key):
            raise EventError(f"key must be a non-empty string, got {key!r}")
        conn = self._conn()
        now = time.time()
        if key is None:
            key = os.urandom(16).hex()  # 128 random bits, cheaper than a uuid4 object
            try:
                conn.execute(
                    "INSERT INTO events (type, key, data, timestamp, priority)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (type, key, text, now, priority),
                )
            except sqlite3.DatabaseError as exc:
                raise _database_error("save an event", exc) from exc
            added, added_bytes = 1, len(text)
        else:
            added, added_bytes = self._save_keyed(type, key, text, now, priority)
        with self._counts_lock:
            counts = self._pending.setdefault(type, [0, 0])
            counts[0] += added
            counts[1] += added_bytes
            over = counts[0] > self.max_pending or counts[1] > self.max_pending_bytes
            waiting = counts[0]
        if over:
            self._drop_excess(type)
        auto = config.auto_sync if config else None
        if auto and auto.threshold and waiting >= auto.threshold and self._worker is not None:
            self._worker.wake()
        return key

    def _save_keyed(
        self, type_: str, key: str, text: str, now: float, priority: int
    ) -> tuple[int, int]:
        merge = self._merge.get(type_)
        with self._transaction("save an event") as conn:
            row = conn.execute(
                "SELECT _id, data, priority FROM events WHERE type = ? AND key = ?", (type_, key)
            ).fetchone()
            earlier: str | None = row[1] if row else None
            if earlier is None and merge is not None:
                sent = conn.execute(
                    "SELECT processed_data FROM processed_sync_data WHERE type = ? AND key = ?"
                    " ORDER BY _id DESC LIMIT 1",
                    (type_, key),
                ).fetchone()
                if sent is not None:
                    earlier = gzip.decompress(sent[0]).decode()
                else:  # the state the receiver acknowledged last
                    last = conn.execute(
                        "SELECT data FROM outbox_merged WHERE type = ? AND key = ?", (type_, key)
                    ).fetchone()
                    earlier = last[0] if last else None
            if earlier is not None and merge is not None:
                try:
                    text = _json_text(merge(json.loads(earlier), json.loads(text)))
                except EventError:
                    raise
                except Exception as exc:
                    raise EventError(
                        f"the merge function of {type_!r} failed: {type(exc).__name__}: {exc}",
                        orig=exc,
                    ) from exc
            if row is None:
                conn.execute(
                    "INSERT INTO events (type, key, data, timestamp, priority)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (type_, key, text, now, priority),
                )
                return 1, len(text)
            conn.execute(
                "UPDATE events SET data = ?, timestamp = ?, priority = ? WHERE _id = ?",
                (text, now, max(priority, row[2]), row[0]),
            )
            return 0, len(text) - len(row[1])

    def _drop_excess(self, type_: str) -> None:
        """Drop the oldest events of the lowest priority (whole messages once no event
        waits) until the type is within its caps; count and log what went. Works from
        the in-memory counts and the indexes: a few rows read per drop, whatever the
        backlog."""
        dropped = dropped_bytes = 0
        with self._drop_lock, self._transaction("drop events over the cap") as conn:
            with self._counts_lock:
                events, size = self._pending.get(type_, [0, 0])
            while (
                events - dropped > self.max_pending or size - dropped_bytes > self.max_pending_bytes
            ):
                gone = _lowest(conn, "events", type_, "1, length(data)")
                if gone is None:
                    gone = _lowest(conn, "processed_sync_data", type_, "event_count, size")
                    if gone is None:
                        break
                dropped += gone[0]
                dropped_bytes += gone[1]
            if dropped:
                _state(conn, type_)
                conn.execute(
                    "UPDATE outbox_state SET dropped = dropped + ? WHERE type = ?",
                    (dropped, type_),
                )
        if not dropped:
            return
        self._uncount(type_, dropped, dropped_bytes)
        log.warning(
            "outbox %s is over its cap (%d events, %d bytes): dropped %d oldest"
            " lowest-priority event(s)",
            type_,
            self.max_pending,
            self.max_pending_bytes,
            dropped,
        )

    # -- delivery ------------------------------------------------------------------------

    def sync(self, type: str) -> OutboxReport:
        """Deliver everything of ``type`` now, whatever ``autoSync`` says (the seed's
        ``sync``). Messages go highest priority first; a message that fails in a way
        that can pass is retried per :attr:`retry`, then the error is raised
        (:class:`OfflineError` when the receiver cannot be reached) and everything
        stays for the next sync. A message the sink refuses for good goes to the dead
        letters and the sync goes on."""
        self._config(type)
        return self._deliver(type, automatic=False)

    def request_sync(self, type: str) -> None:
        """Ask the worker to sync ``type`` soon and to keep trying, with backoff,
        until it succeeds; the request survives a restart (one-off work)."""
        self._config(type)
        with self._transaction("record a sync request") as conn:
            _state(conn, type)
            conn.execute("UPDATE outbox_state SET requested = 1 WHERE type = ?", (type,))
        if self._worker is not None:
            self._worker.wake()

    def _deliver(
        self,
        type_: str,
        *,
        automatic: bool,
        should_stop: Callable[[], bool] = lambda: False,
        pace: Callable[[int], None] | None = None,
    ) -> OutboxReport:
        sink = self._sink(type_)
        config = self._config(type_)
        sent = messages = sent_bytes = dead = 0
        with self._lock(type_):
            with self._mapped("read the outbox"):
                upto = self._conn().execute("SELECT MAX(_id) FROM events").fetchone()[0] or 0
            done: _Message | None = None  # delivered, forgotten with the next compile
            try:
                while not should_stop():
                    self._compile(config, upto, done)
                    done = None
                    message = self._next_message(type_)
                    if message is None:
                        break
                    try:
                        self._send(sink, message, attempts=1 if automatic else self.retry.attempts)
                    except DeliveryRejected as exc:
                        self._dead_letter(message, exc)
                        dead += 1
                        continue
                    done = message
                    sent += message.event_count
                    messages += 1
                    sent_bytes += len(message.body)
                    if pace is not None:
                        pace(len(message.body))
            except (OfflineError, TransientError) as exc:
                self._failed(type_, exc)
                raise
            finally:
                if done is not None:
                    self._compile(config, 0, done)
                if messages or dead:
                    log.info(
                        "outbox %s: sent %d event(s) in %d message(s), %d byte(s);"
                        " %d dead-lettered",
                        type_,
                        sent,
                        messages,
                        sent_bytes,
                        dead,
                    )
            self._succeeded(type_)
        status = self.status(type_)[type_]
        return OutboxReport(
            type=type_,
            events_sent=sent,
            messages_sent=messages,
            bytes_sent=sent_bytes,
            dead_lettered=dead,
            pending_events=status.pending_events,
            pending_messages=status.messages,
        )

    def _compile(self, config: SyncConfiguration, upto: int, done: _Message | None) -> None:
        """Forget the message ``done`` (acknowledged by the sink), then, if no message
        of the type is ready, move waiting events saved before the sync began
        (``_id <= upto``) into one: up to ``batch_events``/``batch_bytes`` of them for
        a batched type, one otherwise. One commit per message.

        The message is built and compressed before the write transaction, so saves
        on other threads wait only for the insert and the delete; inside it, the
        events are checked to be as they were read (a save under the same key may
        have changed one meanwhile) and the message is rebuilt if not."""
        with self._mapped("read the outbox"):
            built = self._build(self._conn(), config, upto, done)
        with self._transaction("compile a message") as conn:
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
        with self._mapped("read the outbox"):
            row = (
                self._conn()
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
        batched = self._config(type_).should_batch
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
        if message.key is not None and message.type in self._merge:
            # what the next save under this key merges with, once nothing waits
            conn.execute(
                "INSERT OR REPLACE INTO outbox_merged (type, key, data) VALUES (?, ?, ?)",
                (message.type, message.key, message.body.decode()),
            )
        self._uncount(message.type, message.event_count, message.size)

    def _uncount(self, type_: str, events: int, size: int) -> None:
        """Events that left the outbox (delivered, dead-lettered or dropped)."""
        with self._counts_lock:
            counts = self._pending.setdefault(type_, [0, 0])
            counts[0] = max(0, counts[0] - events)
            counts[1] = max(0, counts[1] - size)

    def _dead_letter(self, message: _Message, exc: DeliveryRejected) -> None:
        log.warning(
            "outbox %s: the sink refused a message of %d event(s) with HTTP %d;"
            " kept in the dead letters",
            message.type,
            message.event_count,
            exc.status,
        )
        with self._transaction("dead-letter a message") as conn:
            conn.execute(
                "INSERT INTO dead_letters (msg_id, type, processed_data, event_count, priority,"
                " key, size, status, response, failed_at)"
                " SELECT msg_id, type, processed_data, event_count, priority, key, size, ?, ?, ?"
                " FROM processed_sync_data WHERE _id = ?",
                (exc.status, exc.response, time.time(), message.id),
            )
            conn.execute("DELETE FROM processed_sync_data WHERE _id = ?", (message.id,))
        self._uncount(message.type, message.event_count, message.size)

    def _failed(self, type_: str, exc: ReplicatorError) -> None:
        with self._transaction("record a failure") as conn:
            _state(conn, type_)
            failures = conn.execute(
                "UPDATE outbox_state SET failures = failures + 1, last_error = ?,"
                " last_error_at = ? WHERE type = ? RETURNING failures",
                (f"{type(exc).__name__}: {exc}"[:500], time.time(), type_),
            ).fetchone()[0]
            wait = self.retry.delay(failures, getattr(exc, "retry_after", None))
            conn.execute(
                "UPDATE outbox_state SET next_attempt = ? WHERE type = ?",
                (time.time() + wait, type_),
            )
        log.warning(
            "outbox %s: delivery failed (%s), failure %d in a row; next attempt in %.1f s",
            type_,
            type(exc).__name__,
            failures,
            wait,
        )

    def _succeeded(self, type_: str) -> None:
        with self._transaction("record a success") as conn:
            _state(conn, type_)
            conn.execute(
                "UPDATE outbox_state SET last_success = ?, failures = 0, next_attempt = NULL,"
                " requested = 0 WHERE type = ?",
                (time.time(), type_),
            )

    # -- dead letters, status ------------------------------------------------------------

    def dead_letters(self, type: str | None = None) -> list[DeadLetter]:
        """The messages a sink refused, oldest first."""
        sql = (
            "SELECT msg_id, type, event_count, status, response, failed_at FROM dead_letters"
            + (" WHERE type = ?" if type is not None else "")
            + " ORDER BY _id"
        )
        with self._mapped("read the dead letters"):
            rows = self._conn().execute(sql, (type,) if type is not None else ()).fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue(self, type: str | None = None, msg_ids: Sequence[str] | None = None) -> int:
        """Put dead letters (of one type, or the ``msg_ids`` named, or all) back in
        line, with their ``msg_id``; returns how many messages went back."""
        where, args = ["1"], []
        if type is not None:
            where.append("type = ?")
            args.append(type)
        if msg_ids is not None:
            where.append("msg_id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(msg_ids)))
        condition = " AND ".join(where)
        with self._transaction("requeue dead letters") as conn:
            moved = conn.execute(
                "INSERT INTO processed_sync_data"
                " (msg_id, type, processed_data, event_count, priority, key, size)"
                " SELECT msg_id, type, processed_data, event_count, priority, key, size"
                f" FROM dead_letters WHERE {condition} ORDER BY _id",
                args,
            ).rowcount
            conn.execute(f"DELETE FROM dead_letters WHERE {condition}", args)
        self._recount()
        if moved and self._worker is not None:
            self._worker.wake()
        return moved

    def status(self, type: str | None = None) -> dict[str, TypeStatus]:
        """Per type (configured, or holding anything): see :class:`TypeStatus`."""
        conn = self._conn()
        with self._mapped("read the outbox status"):
            if type is not None:  # one type (every sync asks): no walk of the tables
                types = {type}
            else:
                types = set(self._configs)
                for table in ("events", "processed_sync_data", "dead_letters", "outbox_state"):
                    types.update(r[0] for r in conn.execute(f"SELECT DISTINCT type FROM {table}"))
            out: dict[str, TypeStatus] = {}
            for t in sorted(types):
                events, size = _counts(conn, t)
                messages = conn.execute(
                    "SELECT COUNT(*) FROM processed_sync_data WHERE type = ?", (t,)
                ).fetchone()[0]
                dead = conn.execute(
                    "SELECT COUNT(*) FROM dead_letters WHERE type = ?", (t,)
                ).fetchone()[0]
                state = conn.execute(
                    "SELECT dropped, last_success, last_error, next_attempt FROM outbox_state"
                    " WHERE type = ?",
                    (t,),
                ).fetchone() or (0, None, None, None)
                out[t] = TypeStatus(t, t in self._configs, events, size, messages, dead, *state)
        return out

    def pending(self, type: str) -> int:
        """Events of ``type`` not yet delivered (waiting or in messages); cheap."""
        with self._counts_lock:
            return self._pending.get(type, [0, 0])[0]

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker: automatic syncs per ``autoSync``, requested
        syncs, and the jobs given to :meth:`schedule`. Idempotent."""
        from .worker import Worker

        if self._closed:
            raise ConfigurationError("the outbox is closed", hint="open a new Outbox")
        if self._worker is None:
            self._worker = Worker(self)
        if not self._worker.is_alive():
            self._worker.start()

    def schedule(self, job: Callable[[], object], *, every: float, name: str | None = None) -> None:
        """Run ``job`` on the worker every ``every`` minutes (``replicator.sync``, for
        one); a failure that can pass (``retryable``) is retried with the outbox's
        backoff, any other is logged and the job keeps its interval."""
        from .worker import Worker

        if not every or every <= 0:
            raise ConfigurationError(f"every must be a positive number of minutes: {every!r}")
        if self._worker is None:
            self._worker = Worker(self)
        self._worker.add_job(name or getattr(job, "__qualname__", "job"), job, every * 60.0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after a flush of the automatic types bounded by
        ``timeout`` seconds) and close the file. What is left stays for next time."""
        if self._closed:
            return
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)
        for sink in self._own_sinks.values():
            sink.close()
        self._closed = True
        with self._registry:
            for _thread, conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen
class DeadLetter:
    msg_id: str
    type: str
    event_count: int
    status: int
    response: str
    failed_at: float


@attrs.frozen
class _Message:
    id: int
    msg_id: str
    type: str
    body: bytes
    gzipped: bool
    event_count: int
    key: str | None
    size: int
    priority: int


def _database_error(what: str, exc: sqlite3.DatabaseError) -> LocalDatabaseError:
    text = str(exc)
    busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
    return LocalDatabaseError(f"could not {what}: {text}", retryable=busy, orig=exc)


@attrs.frozen
class _Built:
    msg_id: str
    rows: list[Any]
    data: bytes
    key: str | None
    size: int


def _unchanged(conn: sqlite3.Connection, rows: Sequence[Any]) -> bool:
    """Whether the events read for a message still wait, as they were read (a save
    under the same key rewrites ``data`` and ``timestamp``)."""
    now = conn.execute(
        "SELECT _id, timestamp, length(data) FROM events"
        " WHERE _id IN (SELECT value FROM json_each(?))",
        (json.dumps([r[0] for r in rows]),),
    ).fetchall()
    return sorted(now) == sorted((r[0], r[3], len(r[2])) for r in rows)


#: one encoder for every save (``json.dumps`` with options builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _json_text(data: Any) -> str:
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode()
        except UnicodeDecodeError as exc:
            raise EventError("event bytes are not UTF-8 JSON text", orig=exc) from exc
    if isinstance(data, str):
        try:
            json.loads(data)
        except ValueError as exc:
            raise EventError(
                f"event text is not JSON: {exc}",
                hint="pass a dict (or other JSON value), or JSON text",
                orig=exc,
            ) from exc
        return data
    try:
        return _encode(data)
    except (TypeError, ValueError) as exc:
        raise EventError(
            f"event data cannot be stored as JSON: {exc}",
            hint="convert dates, bytes and other objects to strings or numbers first",
            orig=exc,
        ) from exc


def _batch_body(msg_id: str, type_: str, rows: Sequence[Any]) -> bytes:
    """The JSON of one batch, built around each event's stored text (not re-parsed)."""
    events = ",".join(
        f'{{"key":{json.dumps(key)},"timestamp":{ts!r},"priority":{prio},"data":{data}}}'
        for _id, key, data, ts, prio in rows
    )
    head = json.dumps({"msg_id": msg_id, "type": type_})[:-1]
    return f'{head},"events":[{events}]}}'.encode()


def _counts(conn: sqlite3.Connection, type_: str) -> tuple[int, int]:
    n, b = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM events WHERE type = ?", (type_,)
    ).fetchone()
    bn, bb = conn.execute(
        "SELECT COALESCE(SUM(event_count), 0), COALESCE(SUM(size), 0)"
        " FROM processed_sync_data WHERE type = ?",
        (type_,),
    ).fetchone()
    return int(n + bn), int(b + bb)


def _lowest(
    conn: sqlite3.Connection, table: str, type_: str, measures: str
) -> tuple[int, int] | None:
    """Delete the oldest row of the lowest priority of ``type_`` in ``table`` and
    return its ``measures`` (events, bytes); two index lookups, no sort."""
    low = conn.execute(f"SELECT MIN(priority) FROM {table} WHERE type = ?", (type_,)).fetchone()[0]
    if low is None:
        return None
    row = conn.execute(
        f"SELECT _id, {measures} FROM {table} WHERE type = ? AND priority = ? ORDER BY _id LIMIT 1",
        (type_, low),
    ).fetchone()
    conn.execute(f"DELETE FROM {table} WHERE _id = ?", (row[0],))
    return int(row[1]), int(row[2])


def _state(conn: sqlite3.Connection, type_: str) -> None:
    conn.execute("INSERT OR IGNORE INTO outbox_state (type) VALUES (?)", (type_,))

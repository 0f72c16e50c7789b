"""EmbeddedRemote: the default remote, one SQLite file shared by every device.

Devices on one machine (or on a shared disk) sync through it without any
credentials, which makes it the store of the demo, the tests and local
development. Every write gets the next value of one monotonic sequence, taken
inside the write transaction (``BEGIN IMMEDIATE``), so the sequence is the
server's change order: cursors, versions and positions are all sequence
numbers, unique and never reused, whatever the devices' clocks say.

A connection is opened for each operation, or, inside ``session()`` (a sync),
kept by the thread for the next one; so one store object may be used from
several threads and several processes may share the file, and between syncs
the store holds nothing open (the file may be copied or replaced then).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..codec import decode_json, encode_json
from ..errors import (
    ConfigurationError,
    OfflineError,
    PreconditionFailed,
    RemoteError,
    ReplicatorError,
    TransientError,
)
from ..sql import path_problem, select_in, trouble
from .base import (
    Compactable,
    Countable,
    Deadlined,
    DeviceRecord,
    Page,
    PushResult,
    RemoteDoc,
    RemoteStore,
    Sessions,
    Usage,
    Write,
)


def _seq(value: int) -> str:
    """A sequence number as a cursor: zero-padded, so cursors compare as strings."""
    return f"{value:020d}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated_by TEXT,
    seq INTEGER NOT NULL UNIQUE,
    changed_at REAL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX IF NOT EXISTS docs_by_seq ON docs (collection, seq);
CREATE TABLE IF NOT EXISTS devices (
    installation_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    last_upload INTEGER,
    last_sync TEXT
);
CREATE INDEX IF NOT EXISTS devices_by_upload ON devices (last_upload);
CREATE TABLE IF NOT EXISTS sequence (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO sequence (singleton, value) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS horizons (
    collection TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);
"""
# what a file made before tombstone retention lacks: the store's time of each change
# (older changes count from the upgrade), and the index a purge pages through
_LATER = """
CREATE INDEX IF NOT EXISTS docs_tombstones ON docs (collection, changed_at) WHERE deleted = 1;
"""


_NOT_A_REMOTE = "name the file the devices sync through (the one EmbeddedRemote created)"


class EmbeddedRemote:
    """A :class:`~replicator.stores.base.RemoteStore` in one SQLite file.

    ``max_document_bytes`` (0: unlimited) lets an app hold rows to the limit
    of the production store it will move to (Firestore: 1 MiB).
    """

    max_batch_writes = 500

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 30.0,
        max_document_bytes: int = 0,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_document_bytes = max_document_bytes
        self.usage = Usage()
        self._deadline: float | None = None
        self._local = threading.local()
        #: only the constructor's first connection may create the file: a store opened
        #: with ``create=False``, or whose file went away since, never makes an empty one
        self._creating = create
        #: whether a connection to the file ever opened: a path that never worked is a
        #: setup mistake, one that worked and went away (an unmounted share) an outage
        self._opened_once = False
        if create:
            with self._connect() as conn:
                self._creating = False
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if "docs" not in tables and "replicator_device" in tables:
                    raise ConfigurationError(
                        f"{self.path} is a device's database, not an embedded remote",
                        hint=_NOT_A_REMOTE,
                    )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                have = {r[1] for r in conn.execute("PRAGMA table_info(docs)")}
                if "changed_at" not in have:
                    conn.execute("ALTER TABLE docs ADD COLUMN changed_at REAL")
                    conn.execute("UPDATE docs SET changed_at = ?", (time.time(),))
                conn.executescript(_LATER)

    def __repr__(self) -> str:
        return f"EmbeddedRemote({str(self.path)!r})"

    # -- plumbing ---------------------------------------------------------

    def set_deadline(self, at: float | None) -> None:
        """Give up (``OfflineError``) once ``time.monotonic()`` passes ``at``."""
        self._deadline = at

    def _connection(self, wait: float) -> sqlite3.Connection:
        """This thread's connection, opened anew when the file is not the one it was
        opened on (replaced, deleted) or the process is not the one that opened it."""
        if not self.path.parent.is_dir() or not (self._creating or self.path.exists()):
            # as SQLite says it; but SQLite would create a missing file (a path URI with
            # mode=rw would not, but is not portable to Windows shares)
            raise sqlite3.OperationalError("unable to open database file")
        try:
            st = os.stat(self.path)
            identity: tuple[int, int, int] | None = (os.getpid(), st.st_dev, st.st_ino)
        except OSError:
            identity = None
        held = getattr(self._local, "held", None)
        if held is not None and identity is not None and held[0] == identity:
            conn: sqlite3.Connection = held[1]
            timeout = held[2]
            if timeout != wait:
                conn.execute(f"PRAGMA busy_timeout = {max(0, int(wait * 1000))}")
                self._local.held = (identity, conn, wait)
            return conn
        self.close()
        conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        self._opened_once = True
        if identity is None:  # the file was created just now
            st = os.stat(self.path)
            identity = (os.getpid(), st.st_dev, st.st_ino)
        self._local.held = (identity, conn, wait)
        return conn

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep this thread's connection for every operation in the block (see ``Sessions``)."""
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if not self._local.depth:
                self.close()

    def close(self) -> None:
        """Close this thread's connection (the next operation opens one again)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held[0][0] == os.getpid():
            held[1].close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        wait = self.timeout
        if self._deadline is not None:
            wait = min(wait, self._deadline - time.monotonic())
            if wait <= 0:
                raise OfflineError(f"the sync's deadline passed (embedded remote at {self.path})")
        try:
            conn = self._connection(wait)
        except sqlite3.Error as exc:
            raise self._unopened(exc) from exc
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if trouble(exc) == "busy":
                raise TransientError(
                    f"the embedded remote at {self.path} stayed locked for {self.timeout}s",
                    orig=exc,
                ) from exc
            if "no such table" in str(exc):
                raise ConfigurationError(
                    f"{self.path} is not an embedded remote ({exc}): a device's database?",
                    hint=_NOT_A_REMOTE,
                    orig=exc,
                ) from exc
            raise OfflineError(
                f"the embedded remote at {self.path} failed: {exc}", orig=exc
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            raise RemoteError(
                f"the embedded remote at {self.path} is damaged or not a database: {exc}",
                hint="if it is the remote's file, restore it from a backup (devices keep their"
                " unsynced rows); else name the remote's file",
                orig=exc,
            ) from exc
        finally:
            # outside a session nothing stays open; a kept connection never keeps a
            # transaction (nor one that just failed)
            kept = getattr(self._local, "depth", 0) and sys.exc_info()[0] is None
            if not kept or conn.in_transaction:
                self.close()

    def _unopened(self, exc: sqlite3.Error) -> ReplicatorError:
        """Why SQLite could not open the file. A path that never worked (a missing
        folder, a folder named as the file, no file) is a setup mistake that asking
        again cannot cure; one that worked before and went away (a share unmounted)
        or a file that exists and still cannot be opened is offline."""
        problem = path_problem(self.path)
        if problem is not None and not self._opened_once:
            return ConfigurationError(
                f"no embedded remote at {self.path}: {problem}",
                hint="fix the path (the remote is one file; EmbeddedRemote(path) creates it"
                " in a folder that exists), or mount the disk it lives on",
                orig=exc,
            )
        return OfflineError(
            f"cannot open the embedded remote at {self.path}: {problem or exc}",
            hint="check that the disk or share it lives on is there, and sync again;"
            " no data was lost",
            orig=exc,
        )

    def _doc(self, collection: str, row: tuple[Any, ...]) -> RemoteDoc:
        doc_id, text, deleted, seq = row
        problem = None
        try:
            data = decode_json(text, strict_document=True)
        except (ValueError, TypeError, RecursionError) as exc:
            data, problem = {}, f"not valid JSON ({exc})"
        if not isinstance(data, dict):
            data, problem = {}, f"data is a {type(data).__name__}, not a map"
        position = _seq(seq)  # the document's version and its cursor alike
        return RemoteDoc(
            collection, doc_id, data, bool(deleted), position, position, problem=problem
        )

    def _count_reads(self, rows: Sequence[tuple[Any, ...]]) -> None:
        # billed like Firestore: one read per document examined, at least one per query
        self.usage.reads += max(1, len(rows))
        self.usage.bytes_read += sum(len(r[1]) for r in rows)

    # -- RemoteStore --------------------------------------------------------

    def pull(
        self,
        collection: str,
        after: str | None,
        limit: int,
        exclude_by: str | None = None,
        catch_up: bool = False,
    ) -> Page:
        start = int(after) if after else 0
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, data, deleted, seq, updated_by FROM docs"
                " WHERE collection = ? AND seq > ? ORDER BY seq LIMIT ?",
                (collection, start, limit),
            ).fetchall()
        self._count_reads(rows)
        if not rows:
            return Page([], after, False)
        docs = [
            self._doc(collection, r[:4]) for r in rows if exclude_by is None or r[4] != exclude_by
        ]
        return Page(docs, _seq(rows[-1][3]), len(rows) == limit)

    def count_after(self, collection: str, after: str | None) -> int:
        """Changes of ``collection`` after the cursor ``after`` (see ``Countable``)."""
        with self._connect() as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM docs WHERE collection = ? AND seq > ?",
                (collection, int(after) if after else 0),
            ).fetchone()
        self.usage.reads += 1
        return int(n)

    def get(self, collection: str, ids: Sequence[str]) -> dict[str, RemoteDoc]:
        found: dict[str, RemoteDoc] = {}
        with self._connect() as conn:
            rows = select_in(
                conn.execute,
                "SELECT id, data, deleted, seq FROM docs WHERE collection = ? AND id IN ({})",
                ids,
                before=(collection,),
            )
        for row in rows:
            found[row[0]] = self._doc(collection, row)
            self._count_reads([row])
        if not found:
            self.usage.reads += 1
        return found

    def push(self, writes: Sequence[Write], device: DeviceRecord) -> PushResult:
        if len(writes) + 1 > self.max_batch_writes:
            raise ConfigurationError(
                f"a batch holds at most {self.max_batch_writes - 1} writes plus the device record"
            )
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = conn.execute("SELECT value FROM sequence").fetchone()
                current = self._current(conn, [w.key for w in writes])
                failed = [
                    w.key
                    for w in writes
                    if not w.unconditional
                    and (current.get(w.key, (None, None))[0] != w.base_version)
                ]
                if failed:
                    raise PreconditionFailed(
                        f"{len(failed)} document(s) changed remotely since they were read",
                        failed,
                    )
                rows, written = _rows(writes, current, seq)
                conn.executemany(
                    "INSERT INTO docs (collection, id, data, deleted, updated_by, seq, changed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET"
                    " data = excluded.data, deleted = excluded.deleted,"
                    " updated_by = excluded.updated_by, seq = excluded.seq,"
                    " changed_at = excluded.changed_at",
                    rows,
                )
                seq += len(writes) + 1  # the device record is a write too, and marks the commit
                self._put_device(conn, device, last_upload=seq)
                conn.execute("UPDATE sequence SET value = ?", (seq,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.usage.writes += len(writes) + 1
        self.usage.bytes_written += written
        versions = {w.key: _seq(row[5]) for w, row in zip(writes, rows, strict=True)}
        return PushResult(versions, _seq(seq), _dt.datetime.now(_dt.timezone.utc))

    def _current(
        self, conn: sqlite3.Connection, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        out: dict[tuple[str, str], tuple[str, str]] = {}
        by_collection: dict[str, list[str]] = {}
        for collection, doc_id in keys:
            by_collection.setdefault(collection, []).append(doc_id)
        for collection, ids in by_collection.items():
            for doc_id, seq, data in select_in(
                conn.execute,
                "SELECT id, seq, data FROM docs WHERE collection = ? AND id IN ({})",
                ids,
                before=(collection,),
            ):
                out[(collection, doc_id)] = (_seq(seq), data)
        return out

    def _put_device(
        self, conn: sqlite3.Connection, device: DeviceRecord, last_upload: int | None
    ) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        row = conn.execute(
            "SELECT last_upload FROM devices WHERE installation_id = ?", (device.installation_id,)
        ).fetchone()
        if last_upload is None and row is not None:
            last_upload = row[0]
        record = {
            "installationId": device.installation_id,
            "name": device.name,
            "platform": device.platform,
            "appVersion": device.app_version,
            "watermarks": dict(device.watermarks),
            "snapshotGeneration": device.snapshot_generation,
        }
        conn.execute(
            "INSERT INTO devices (installation_id, record, last_upload, last_sync)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (installation_id) DO UPDATE SET record = excluded.record,"
            " last_upload = excluded.last_upload, last_sync = excluded.last_sync",
            (device.installation_id, json.dumps(record), last_upload, now),
        )

    def register(self, device: DeviceRecord) -> _dt.datetime:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._put_device(conn, device, last_upload=None)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.usage.writes += 1
        return _dt.datetime.now(_dt.timezone.utc)

    def uploads_after(self, position: str | None, exclude: str) -> str | None:
        start = int(position) if position else 0
        with self._connect() as conn:
            row = conn.execute(
                "SELECT MAX(last_upload) FROM devices WHERE typeof(last_upload) = 'integer'"
                " AND last_upload > ? AND installation_id != ?",
                (start, exclude),
            ).fetchone()
        self.usage.reads += 1
        return None if row[0] is None else _seq(row[0])

    def devices(self) -> list[DeviceRecord]:
        out = []
        with self._connect() as conn:
            for iid, record, last_upload, last_sync in conn.execute(
                "SELECT installation_id, record, last_upload, last_sync FROM devices"
                " ORDER BY installation_id"
            ):
                out.append(_device_record(iid, record, last_upload, last_sync))
        self.usage.reads += max(1, len(out))
        return out

    # -- Compactable -----------------------------------------------------------

    def purge_tombstones(self, collection: str, before: _dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` tombstones of ``collection`` committed before ``before``,
        raising the collection's horizon in the same transaction."""
        cutoff = before.replace(tzinfo=before.tzinfo or _dt.timezone.utc).timestamp()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT id, seq FROM docs INDEXED BY docs_tombstones"
                    " WHERE collection = ? AND deleted = 1 AND changed_at < ?"
                    " ORDER BY changed_at LIMIT ?",
                    (collection, cutoff, limit),
                ).fetchall()
                if rows:
                    conn.execute(
                        "INSERT INTO horizons (collection, cursor) VALUES (?, ?)"
                        " ON CONFLICT (collection) DO UPDATE SET"
                        " cursor = MAX(cursor, excluded.cursor)",
                        (collection, max(seq for _, seq in rows)),
                    )
                    conn.executemany(
                        "DELETE FROM docs WHERE collection = ? AND id = ?",
                        [(collection, doc_id) for doc_id, _ in rows],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.usage.reads += max(1, len(rows))
        self.usage.writes += len(rows) + (1 if rows else 0)
        return len(rows)

    def horizons(self) -> dict[str, str]:
        with self._connect() as conn:
            rows = conn.execute("SELECT collection, cursor FROM horizons").fetchall()
        self.usage.reads += 1
        return {c: _seq(v) for c, v in rows if isinstance(v, int)}

    def collections(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute("SELECT DISTINCT collection FROM docs ORDER BY collection")
            names = [r[0] for r in rows]
        self.usage.reads += 1
        return names

    # -- inspection (tests, CLI) ---------------------------------------------

    def all_docs(self, collection: str) -> dict[str, RemoteDoc]:
        """Every document of ``collection``, tombstones included (not counted as usage)."""
        before = self.usage.copy()
        page = self.pull(collection, None, 1 << 62)
        self.usage = before
        return {d.id: d for d in page.docs}


def _device_record(iid: Any, record: Any, last_upload: Any, last_sync: Any) -> DeviceRecord:
    """A Devices row as a record; fields another writer damaged read as unknown."""
    try:
        fields = json.loads(record) if isinstance(record, str | bytes) else {}
    except ValueError:
        fields = {}
    return DeviceRecord.from_stored(
        str(iid),
        fields,
        last_sync=last_sync if isinstance(last_sync, str) else None,
        last_upload=_seq(last_upload)
        if isinstance(last_upload, int) and last_upload >= 0
        else None,
    )


def _rows(
    writes: Sequence[Write], current: dict[tuple[str, str], tuple[str, str]], seq: int
) -> tuple[list[tuple[Any, ...]], int]:
    """The ``docs`` rows a batch writes, numbered from after ``seq``: each update merged
    over the document it replaces (a delete keeps the data it had). Returns them and the
    bytes of JSON they hold."""
    rows = []
    written = 0
    now = time.time()
    for w in writes:
        seq += 1
        _, old = current.get(w.key, (None, None))
        if old is None and w.encoded is not None:
            merged, text = dict(w.data), w.encoded  # JSON the writer made
        else:
            merged = dict(decode_json(old)) if old else {}
            merged.update(w.data)
            text = encode_json(merged)
        written += len(text)
        rows.append((w.collection, w.id, text, int(w.deleted), merged.get("updatedBy"), seq, now))
    return rows, written


# the protocols this store implements, checked by mypy
_is_remotestore: type[RemoteStore] = EmbeddedRemote
_is_deadlined: type[Deadlined] = EmbeddedRemote
_is_countable: type[Countable] = EmbeddedRemote
_is_sessions: type[Sessions] = EmbeddedRemote
_is_compactable: type[Compactable] = EmbeddedRemote

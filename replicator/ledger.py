"""The bundle ledger: bundles of upload-only rows this device made that the ingest
service has not settled, the rows each carries (at the ``syncRev`` they were
bundled at), and the rows the service refused with its reasons.

A row is in at most one bundle. It is marked synced only when the service
accepted the bundle and the row is unchanged since it was bundled; a row
changed since stays dirty and goes in a later bundle. A row the service
refused is not sent again until the app changes it, but gets no ``serverId``
(the remote does not hold it). Settling a bundle is one transaction.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

import attrs
import peewee

from .sql import select_in


@attrs.frozen
class BundleRecord:
    """A bundle as this device recorded it: ``state`` is ``built`` (made, maybe not
    stored yet) or ``requested`` (stored, and the service asked to ingest it)."""

    bundle: str
    collection: str
    key: str
    sha256: str
    size: int
    count: int
    state: str
    created: str


class BundleLedger:
    """The ledger's part of :class:`~replicator.local.LocalState` (which it is mixed into:
    every method runs on the caller's connection)."""

    db: peewee.Database

    def applying(self) -> AbstractContextManager[None]:
        """A transaction in which change capture is silenced (``LocalState.applying``)."""
        raise NotImplementedError

    def bundles(self) -> list[BundleRecord]:
        """The bundles this device made that the service has not settled, oldest first."""
        rows = self.db.execute_sql(
            "SELECT bundle, collection, key, sha256, size, count, state, created"
            " FROM replicator_bundles ORDER BY created, bundle"
        ).fetchall()
        return [BundleRecord(*r) for r in rows]

    def add_bundle(self, record: BundleRecord, rows: Sequence[tuple[str, int]]) -> None:
        """Record a bundle and the rows (id, syncRev) it carries, in one transaction."""
        with self.db.atomic():
            self.db.execute_sql(
                "INSERT INTO replicator_bundles"
                " (bundle, collection, key, sha256, size, count, state, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(record),
            )
            self.db.connection().executemany(
                "INSERT INTO replicator_bundle_rows (collection, id, bundle, rev)"
                " VALUES (?, ?, ?, ?)",
                [(record.collection, i, record.bundle, rev) for i, rev in rows],
            )

    def set_bundle_state(self, bundle: str, state: str) -> None:
        self.db.execute_sql(
            "UPDATE replicator_bundles SET state = ? WHERE bundle = ?", (state, bundle)
        )

    def drop_bundle(self, bundle: str) -> None:
        """Forget a bundle the service never took: its rows are free for the next one."""
        with self.db.atomic():
            self.db.execute_sql("DELETE FROM replicator_bundle_rows WHERE bundle = ?", (bundle,))
            self.db.execute_sql("DELETE FROM replicator_bundles WHERE bundle = ?", (bundle,))

    def settle_bundle(self, record: BundleRecord, refused: Mapping[str, str]) -> tuple[int, int]:
        """The service accepted ``record``: mark its rows synced (those unchanged since they
        were bundled), keep the reasons of the ``refused`` ones, and forget the bundle. One
        transaction. Returns (rows accepted, rows refused) among the unchanged rows."""
        table, bundle = record.collection, record.bundle
        # the bundle's rows, as they stand now, that are as they were bundled
        members = (
            f'SELECT b.id FROM replicator_bundle_rows b JOIN "{table}" t ON t.id = b.id'
            ' WHERE b.bundle = ? AND t."syncRev" IS b.rev'
        )
        with self.applying():
            gone = [
                r[0]
                for r in select_in(
                    self.db.execute_sql,
                    f"{members} AND b.id IN ({{}})",
                    sorted(refused),
                    before=(bundle,),
                )
            ]
            # a refused row is not on the remote (unless an earlier version was): it keeps
            # its serverId, so a child naming it waits for it (``bundles/send.py``)
            kept = dict(
                select_in(
                    self.db.execute_sql,
                    f'SELECT id, "serverId" FROM "{table}" WHERE id IN ({{}})',
                    gone,
                )
            )
            marked = self.db.execute_sql(
                f'UPDATE "{table}" SET "isDirty" = 0, "serverId" = id'
                " WHERE id IN (SELECT id FROM replicator_bundle_rows WHERE bundle = ?)"
                ' AND "syncRev" IS (SELECT rev FROM replicator_bundle_rows b'
                f' WHERE b.collection = ? AND b.id = "{table}".id)',
                (bundle, table),
            ).rowcount
            self.db.connection().executemany(
                f'UPDATE "{table}" SET "serverId" = ? WHERE id = ?',
                [(server_id, i) for i, server_id in kept.items()],
            )
            # a row accepted now needs no refusal; a row changed since keeps its old one
            any_refused = self.db.execute_sql(
                "SELECT 1 FROM replicator_refused WHERE collection = ? LIMIT 1", (table,)
            ).fetchone()
            if any_refused:
                self.db.execute_sql(
                    f"DELETE FROM replicator_refused WHERE collection = ? AND id IN ({members})",
                    (table, bundle),
                )
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            self.db.connection().executemany(
                "INSERT OR REPLACE INTO replicator_refused"
                " (collection, id, bundle, reason, refused_on) VALUES (?, ?, ?, ?, ?)",
                [(table, i, bundle, refused[i], now) for i in gone],
            )
            self.drop_bundle(bundle)
        return marked - len(gone), len(gone)

    def refused(self, collection: str) -> list[tuple[str, str, str]]:
        """(id, reason, bundle) of the rows of ``collection`` the ingest service refused."""
        rows = self.db.execute_sql(
            "SELECT id, reason, bundle FROM replicator_refused WHERE collection = ? ORDER BY id",
            (collection,),
        )
        return [tuple(r) for r in rows.fetchall()]

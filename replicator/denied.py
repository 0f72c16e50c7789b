"""Denied writes: rows and deletes the remote's security rules refused, set aside.

A write the rules refuse (Firestore's ``PERMISSION_DENIED``) is never dropped and
never blocks the others: the upload isolates it (``sync/isolate.py``) and records
it here, in ``replicator_denied``, with the reason and the time. The row itself
stays in the app's table exactly as the app wrote it, dirty.

A row is **aside** while its entry names the ``syncRev`` the row still has (a
delete: while its tombstone is pending). Such a row is not sent again, so a sync
pays nothing for it; once the app changes the row (a new ``syncRev``) it goes up
with the next sync like any change, and its entry goes when the remote takes it.
A download leaves a row with an entry as it is (``sync/page.py``). The app lists
the entries (:meth:`DeniedLedger.denied`), retries them (the entry goes: the
next sync sends the row again) or discards them (the row takes the remote's
version back; see ``denied_writes.py``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence

import attrs
import peewee

from .sql import select_in


@attrs.frozen
class DeniedRow:
    """One write the remote's rules refused, as set aside: the row's collection and
    id, whether it was a delete, why (the store's message) and when (ISO 8601, UTC)."""

    collection: str
    id: str
    delete: bool
    reason: str
    denied_on: str

    def as_json(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "id": self.id,
            "delete": self.delete,
            "reason": self.reason,
            "denied_on": self.denied_on,
        }


def aside_clause(collection: str, alias: str) -> str:
    """SQL true for a row of ``collection`` (its table named ``alias`` in the query)
    that is not aside: no entry names its current ``syncRev``. One primary-key lookup."""
    name = collection.replace("'", "''")
    return (
        "NOT EXISTS (SELECT 1 FROM replicator_denied d WHERE d.collection ="
        f" '{name}' AND d.id = {alias}.id AND d.rev IS {alias}.\"syncRev\")"
    )


class DeniedLedger:
    """The denied writes' part of :class:`~replicator.local.LocalState` (mixed into it:
    every method runs on the caller's connection and transaction)."""

    db: peewee.Database

    def deny(self, entries: Iterable[tuple[str, str, int | None, bool, str]]) -> None:
        """Set aside ``(collection, id, syncRev as sent, is a delete, reason)``; an entry
        for the same row is replaced."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.db.connection().executemany(
            "INSERT OR REPLACE INTO replicator_denied"
            " (collection, id, rev, is_delete, reason, denied_on) VALUES (?, ?, ?, ?, ?, ?)",
            [(c, i, None if d else rev, int(d), why, now) for c, i, rev, d, why in entries],
        )

    def any_denied(self) -> bool:
        found = self.db.execute_sql("SELECT 1 FROM replicator_denied LIMIT 1").fetchone()
        return found is not None

    def denied_deletes(self, collection: str, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` whose delete is set aside."""
        sql = (
            "SELECT id FROM replicator_denied WHERE collection = ? AND is_delete = 1 AND id IN ({})"
        )
        return {r[0] for r in select_in(self.db.execute_sql, sql, list(ids), before=(collection,))}

    def has_denied(self, collection: str, doc_id: str) -> bool:
        """Whether the row has an entry (a download leaves such a row as it is)."""
        found = self.db.execute_sql(
            "SELECT 1 FROM replicator_denied WHERE collection = ? AND id = ?",
            (collection, doc_id),
        ).fetchone()
        return found is not None

    def undeny(self, collection: str, ids: Sequence[str]) -> int:
        """Forget the entries of ``ids`` (the remote took the rows, or the app asked for
        a retry or a discard); returns how many there were."""
        if not ids or not self.any_denied():
            return 0
        cursor = self.db.connection().executemany(
            "DELETE FROM replicator_denied WHERE collection = ? AND id = ?",
            [(collection, i) for i in ids],
        )
        return int(cursor.rowcount or 0)

    def denied(self, collection: str | None = None) -> list[DeniedRow]:
        """The entries, of one collection or all, in (collection, id) order."""
        where, args = ("WHERE collection = ?", (collection,)) if collection else ("", ())
        rows = self.db.execute_sql(
            "SELECT collection, id, is_delete, reason, denied_on FROM replicator_denied"
            f" {where} ORDER BY collection, id",
            args,
        ).fetchall()
        return [DeniedRow(c, i, bool(d), why, on) for c, i, d, why, on in rows]

    def denied_counts(self) -> dict[str, int]:
        rows = self.db.execute_sql(
            "SELECT collection, COUNT(*) FROM replicator_denied GROUP BY collection"
        ).fetchall()
        return dict(rows)

"""Change listeners: which rows a sync changed, told after each commit.

While an app has a listener (``Replicator(on_change=...)`` or
``replicator.subscribe(fn)``), the sync's connection carries temporary triggers
(``TEMP``: they live in that connection only, and never in the database file)
that note every row the engine inserts, updates or deletes, in a temporary
table written in the engine's own transactions. A page that rolls back takes
its notes with it. After each committed page of a download, each committed
upload batch and each committed conflict resolution, the notes are read,
cleared, and told to the listeners as :class:`Change` values, one per
collection. Without a listener, nothing of this runs.

A row inserted and then updated within one step is told as inserted; deleted
and inserted again, as updated; inserted and then deleted, as deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

log = logging.getLogger(__name__)

Phase = Literal["download", "upload"]

_TABLE = "replicator_changed"


@attrs.frozen
class Change:
    """What one committed step of a sync changed in one collection.

    ``inserted``, ``updated`` and ``deleted`` are the ids of rows the sync wrote
    locally (from other devices, or a conflict merged); ``uploaded`` and
    ``uploaded_deletes`` the ids of the app's rows and deletes the remote now
    holds (their data did not change locally: a UI may show them as synced).
    """

    phase: Phase
    collection: str
    inserted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    uploaded: tuple[str, ...] = ()
    uploaded_deletes: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id this change names, once."""
        seen = dict.fromkeys(
            (*self.inserted, *self.updated, *self.deleted, *self.uploaded, *self.uploaded_deletes)
        )
        return tuple(seen)


Listener = Callable[[Change], None]


def install(execute: Callable[..., Any], tables: Mapping[str, Sequence[str]]) -> None:
    """Create the temporary notes table and triggers on the connection behind
    ``execute`` (idempotent, cheap: it runs at the start of each sync). ``tables``
    maps each synced table to its data columns: an update of other columns only
    (the upload marking a row synced) is not a change of the row."""
    gate = "(SELECT applying FROM main.replicator_control WHERE singleton = 1) = 1"
    execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TABLE} (collection TEXT NOT NULL, id TEXT NOT NULL,"
        " op TEXT NOT NULL, PRIMARY KEY (collection, id)) WITHOUT ROWID"
    )
    for table, cols in tables.items():
        watched = ", ".join(f'"{c}"' for c in cols)
        quoted = table.replace("'", "''")
        name = table.replace('"', "")
        note = f"INSERT INTO {_TABLE} (collection, id, op) VALUES ('{quoted}', "
        execute(
            f'CREATE TEMP TRIGGER IF NOT EXISTS "replicator_note_ins_{name}" AFTER INSERT'
            f" ON main.\"{table}\" WHEN {gate} BEGIN {note}NEW.id, 'insert')"
            " ON CONFLICT (collection, id) DO UPDATE SET"
            " op = CASE op WHEN 'delete' THEN 'update' ELSE op END; END"
        )
        execute(
            f'CREATE TEMP TRIGGER IF NOT EXISTS "replicator_note_upd_{name}" AFTER UPDATE'
            f' OF {watched} ON main."{table}" WHEN {gate}'
            f" BEGIN {note}NEW.id, 'update') ON CONFLICT (collection, id) DO NOTHING; END"
        )
        execute(
            f'CREATE TEMP TRIGGER IF NOT EXISTS "replicator_note_del_{name}" AFTER DELETE'
            f" ON main.\"{table}\" WHEN {gate} BEGIN {note}OLD.id, 'delete')"
            " ON CONFLICT (collection, id) DO UPDATE SET op = 'delete'; END"
        )


def drain(
    execute: Callable[..., Any],
    phase: Phase,
    order: Sequence[str],
    uploaded: Mapping[str, tuple[list[str], list[str]]] | None = None,
) -> list[Change]:
    """Read and clear the notes (after a commit), as one Change per collection in
    ``order`` (parents first), with the ids an upload just made synced."""
    rows = execute(f"SELECT collection, id, op FROM temp.{_TABLE}").fetchall()
    if rows:
        execute(f"DELETE FROM temp.{_TABLE}")
    noted: dict[str, dict[str, list[str]]] = {}
    for collection, doc_id, op in rows:
        noted.setdefault(collection, {}).setdefault(op, []).append(doc_id)
    out = []
    for collection in order:
        ops = noted.get(collection, {})
        sent, sent_deletes = (uploaded or {}).get(collection, ([], []))
        if not ops and not sent and not sent_deletes:
            continue
        out.append(
            Change(
                phase,
                collection,
                tuple(sorted(ops.get("insert", ()))),
                tuple(sorted(ops.get("update", ()))),
                tuple(sorted(ops.get("delete", ()))),
                tuple(sent),
                tuple(sent_deletes),
            )
        )
    return out


def tell(listeners: Sequence[Listener], changes: Sequence[Change]) -> None:
    """Call every listener with every change; a listener that raises is logged (by
    kind) and does not stop the sync or the other listeners."""
    for change in changes:
        for listener in listeners:
            try:
                listener(change)
            except Exception as exc:
                log.warning(
                    "change listener %s failed: %s",
                    getattr(listener, "__qualname__", "?"),
                    type(exc).__name__,
                )

"""What an app does with the writes the remote's rules refused (``denied.py``): list
them, export them, send them again, or give them up for the remote's version.

Mixed into :class:`~replicator.Replicator`. Each call takes the device's turn (it
waits for a running sync to end), so it never races an upload.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import peewee

from .codec import encode_json
from .denied import DeniedRow
from .errors import ConfigurationError
from .model import SyncModel, collection_name, remote_columns
from .report import Applied
from .sql import on_local_database
from .stores.base import RemoteStore
from .sync.apply import apply_remote
from .sync.foreign_keys import delete_local

if TYPE_CHECKING:
    from .local import LocalState
    from .sync.context import SyncContext
    from .sync.turns import Turns


class DeniedWrites:
    """The denied writes' part of :class:`~replicator.Replicator`."""

    database: peewee.SqliteDatabase
    local: LocalState
    models: list[type[peewee.Model]]
    remote: RemoteStore
    _turns: Turns

    if TYPE_CHECKING:

        def _context(self) -> SyncContext: ...

    @on_local_database("could not be read")
    def denied_rows(self, model: type[SyncModel] | None = None) -> list[DeniedRow]:
        """The writes the remote's security rules refused and that are set aside (of
        ``model``, or of every collection), in (collection, id) order, each with the
        store's reason and when it was refused. Such a row stays as the app wrote it
        and is not sent again until the app changes it or calls :meth:`retry_denied`."""
        return self.local.denied(None if model is None else self._collection(model))

    @on_local_database("could not be written")
    def retry_denied(
        self, model: type[SyncModel] | None = None, ids: Sequence[str] | None = None
    ) -> int:
        """Send the rows set aside (of ``model``; only ``ids`` when given) again at the
        next sync, e.g. once the rules or the user's rights changed. A row the rules
        still refuse is set aside again. Returns how many were set aside."""
        with self._turns.hold("retry_denied()"), self.database.atomic():
            return sum(self.local.undeny(coll, ids) for coll, ids in self._chosen(model, ids))

    @on_local_database("could not be written")
    def discard_denied(
        self, model: type[SyncModel] | None = None, ids: Sequence[str] | None = None
    ) -> int:
        """Give up the refused writes (of ``model``; only ``ids`` when given): each row
        takes the remote's current version back (one read per collection), or goes
        when the remote never held it; a refused delete brings the row back. Export
        them first (:meth:`export_denied`) if they must not be lost. Raises
        ``OfflineError`` (nothing changed) when the remote cannot be reached. Returns
        how many were discarded."""
        with self._turns.hold("discard_denied()"):
            chosen = list(self._chosen(model, ids))
            ctx = self._context()
            done = 0
            for coll, chosen_ids in chosen:
                if chosen_ids:
                    done += self._discard(ctx, coll, chosen_ids)
            ctx.changed("download")
            return done

    def _discard(self, ctx: SyncContext, coll: str, ids: list[str]) -> int:
        model = next(m for m in self.models if collection_name(m) == coll)
        docs = self.remote.get(coll, ids)
        out = Applied()
        with self.local.applying():
            for doc_id in ids:
                self.local.undeny(coll, [doc_id])
                self.local.drop_tombstone(coll, doc_id)  # a refused delete: the row comes back
                self.database.execute_sql(
                    f'UPDATE "{coll}" SET "isDirty" = 0, "syncVersion" = NULL WHERE id = ?',
                    (doc_id,),
                )
                self.local.drop_base(coll, doc_id)
                doc = docs.get(doc_id)
                if doc is None or doc.deleted:
                    delete_local(ctx, model, doc_id, out, pending=False)
                    self.local.drop_tombstone(coll, doc_id)
                else:
                    out.add(apply_remote(ctx, model, ctx.codec.incoming(model, doc)))
        return len(ids)

    @on_local_database("could not be read")
    def export_denied(self, dest: str | os.PathLike[str] | IO[str]) -> int:
        """Write every row set aside as JSON lines to ``dest`` (a path, ``"-"`` for
        standard output, or a text stream): per line the collection, id, whether it
        was a delete, the reason, when, and ``row``, the row's values as it stands
        locally (``null`` for a delete). Returns how many lines were written."""
        with _opened(dest) as out:
            n = 0
            for entry in self.local.denied():
                out.write(encode_json({**entry.as_json(), "row": self._row(entry)}) + "\n")
                n += 1
        return n

    def _row(self, entry: DeniedRow) -> dict[str, Any] | None:
        model = next((m for m in self.models if collection_name(m) == entry.collection), None)
        if model is None or entry.delete:
            return None
        cols = remote_columns(model)
        names = ", ".join(f'"{c}"' for c in cols)
        found = self.database.execute_sql(
            f'SELECT {names} FROM "{entry.collection}" WHERE id = ?', (entry.id,)
        ).fetchone()
        return None if found is None else dict(zip(cols, found, strict=True))

    def _collection(self, model: type[SyncModel]) -> str:
        coll = collection_name(model)
        if model not in self.models:
            raise ConfigurationError(
                f"{coll!r} is not one of this Replicator's collections",
                hint=f"one of: {', '.join(collection_name(m) for m in self.models)}",
            )
        return coll

    def _chosen(
        self, model: type[SyncModel] | None, ids: Sequence[str] | None
    ) -> Iterator[tuple[str, list[str]]]:
        """(collection, ids) of the entries the app names."""
        colls = [self._collection(model)] if model is not None else None
        by_coll: dict[str, list[str]] = {}
        for entry in self.local.denied(colls[0] if colls else None):
            if ids is None or entry.id in ids:
                by_coll.setdefault(entry.collection, []).append(entry.id)
        yield from by_coll.items()


@contextlib.contextmanager
def _opened(dest: str | os.PathLike[str] | IO[str]) -> Iterator[IO[str]]:
    if isinstance(dest, str) and dest == "-":
        yield sys.stdout
    elif isinstance(dest, (str, os.PathLike)):
        try:
            with Path(dest).open("w", encoding="utf-8") as out:
                yield out
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the export to {dest}: {exc.strerror or exc}",
                hint="give a path in a folder that exists and can be written",
            ) from exc
    else:
        yield dest

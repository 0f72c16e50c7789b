"""How the ingest service takes a verified bundle's rows: each checked against its
model as it is read, stamped by the service, and written only where the sending
device may write.

What a device may write through a bundle (the service's rules, whoever asks):

* rows of the collection the request names, which the service takes (its configured
  upload-only collections; the caller checks that);
* **only rows it created**: a row's document records the device that created it
  through ingest (:data:`OWNER`, ``createdBy``; for a document without it, its
  ``updatedBy``). A row another device created (or a supervisor wrote by normal sync)
  is refused with the reason, never overwritten;
* ``updatedBy`` and ``createdOn`` are the service's: ``updatedBy`` is the sending
  device, ``createdOn`` the service's clock when the row was first taken (kept on
  later versions); whatever the bundle says for them is ignored;
* ``updatedOn`` orders the versions of a row, so it stays the device's, bounded by the
  service's clock as last-writer-wins bounds it: a stamp more than ``max_clock_skew``
  ahead of the service's clock is **clamped** to the service's clock (the row is
  taken, and a later correction, stamped later, still wins). A stored stamp that far
  ahead (written before this rule) ranks as the oldest possible, as
  ``LastWriterWins`` ranks it.

Memory: checked rows wait in a spooled temporary file (:class:`RowSpool`), not in
lists, until the whole bundle has been read; only their ids stay in memory.
"""

from __future__ import annotations

import datetime as _dt
import marshal
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import peewee

from ..codec import RowCodec, check_id, check_value, missing_value
from ..errors import (
    DocumentTooLargeError,
    PreconditionFailed,
    RemoteDataError,
    TransientError,
    UnsupportedValueError,
)
from ..model import collection_name, remote_columns
from ..stores.base import DeviceRecord, RemoteDoc, RemoteStore, Write
from ..stores.ingest import IngestRequest

#: the document field naming the device that created a row through ingest
OWNER = "createdBy"
#: columns the service stamps itself: the bundle's values are ignored
STAMPED = ("createdOn", "updatedBy")


class BundleRejected(Exception):
    """A bundle that cannot be applied at all; the message is the reason recorded."""


def parse_time(value: Any) -> _dt.datetime | None:
    """A stored or sent timestamp as naive UTC, or None when it is none."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, _dt.datetime):
        return None
    when: _dt.datetime = value
    if when.tzinfo is None:
        return when
    return when.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def time_text(when: _dt.datetime) -> str:
    """A naive UTC time in the text form devices write (``model.NOW_SQL``'s)."""
    return when.isoformat(" ")


def checked_row(
    coll: str, fields: dict[str, peewee.Field], cols: Collection[str], raw: Any
) -> tuple[dict[str, Any], _dt.datetime]:
    """A bundle row checked against the model, in SQLite form, and its ``updatedOn``;
    ``RemoteDataError`` why not. ``fields`` are the model's fields by column, ``cols``
    its remote columns. The stamped columns are not checked (the service writes them)."""
    if not isinstance(raw, dict):
        raise RemoteDataError(coll, "?", "the line is not a JSON object")
    doc_id = check_id(coll, raw.get("id"))
    unknown = sorted(k for k in raw if k not in cols)
    if unknown:
        raise RemoteDataError(coll, doc_id, f"unknown field {str(unknown[0])[:60]!r}")
    out: dict[str, Any] = {}
    for col in cols:
        if col in STAMPED:
            continue
        field = fields[col]
        if col not in raw:
            if col == "updatedOn":
                raise RemoteDataError(coll, doc_id, "updatedOn is missing")
            out[col] = missing_value(field)
            if out[col] is None and not field.null:
                raise RemoteDataError(coll, doc_id, f"{col} is missing")
            continue
        out[col] = check_value(coll, doc_id, field, raw[col])
    when = parse_time(out.get("updatedOn"))
    if when is None:
        raise RemoteDataError(coll, doc_id, "updatedOn is not a timestamp")
    return out, when


class RowSpool:
    """Checked rows kept in a temporary file (in memory up to ``in_memory`` bytes),
    read back in batches: a bundle's rows never sit in memory all at once. Values are
    SQLite's (text, numbers, bytes, None), which ``marshal`` writes exactly."""

    def __init__(self, in_memory: int = 4 << 20) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        data = marshal.dumps(row)
        self._file.write(len(data).to_bytes(4, "little") + data)
        self.count += 1

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        self._file.seek(0)
        batch: list[dict[str, Any]] = []
        for _ in range(self.count):
            length = int.from_bytes(self._file.read(4), "little")
            batch.append(marshal.loads(self._file.read(length)))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._file.close()


class RowIntake:
    """One bundle's rows of ``model``, taken one at a time as they are read
    (:meth:`take`), then written (:meth:`apply`) for ``device`` at ``now``.

    ``permit`` (a scope's declaration, ``bundles/scoped.py``) judges each row against
    what is stored (None: a create) instead of the rule that a device writes only rows
    it created.

    A row that fails its checks is refused with the reason and the others go on; past
    ``max_refused`` refusals the bundle is rejected whole (``BundleRejected``, raised
    as the one too many is read), so a result always fits in one queue document."""

    def __init__(
        self,
        model: type[peewee.Model],
        *,
        device: str,
        now: _dt.datetime,
        max_clock_skew: _dt.timedelta,
        max_refused: int,
        permit: Callable[[Any, Any], str | None] | None = None,
    ) -> None:
        self.model = model
        self.permit = permit
        self.coll = collection_name(model)
        self.device = device
        self.now = now
        self.latest = now + max_clock_skew
        self.max_refused = max_refused
        self.refused: dict[str, str] = {}
        self._refusals = 0
        self._fields = {f.column_name: f for f in model._meta.sorted_fields}
        self._cols = frozenset(remote_columns(model))
        self._seen: set[str] = set()
        self.spool = RowSpool()

    def refuse(self, row_id: str, reason: str) -> None:
        self.refused[row_id] = reason[:200]
        self._refusals += 1
        if self._refusals > self.max_refused:
            first = next(iter(self.refused.items()))
            raise BundleRejected(
                f"more than {self.max_refused} rows are invalid; the first, {first[0]}: {first[1]}"
            )

    def take(self, number: int, raw: Any) -> None:
        """Check line ``number``'s row and keep it for :meth:`apply`, or refuse it."""
        try:
            row, when = checked_row(self.coll, self._fields, self._cols, raw)
        except RemoteDataError as exc:
            named = isinstance(raw, dict) and raw.get("id") == exc.doc_id
            self.refuse(exc.doc_id if named else f"line {number}", exc.reason)
            return
        if row["id"] in self._seen:
            self.refuse(row["id"], "the bundle holds this id twice")
            return
        self._seen.add(row["id"])
        if when > self.latest:  # a clock far ahead: clamped
            row["updatedOn"] = time_text(self.now)
        self.spool.add(row)

    def apply(self, store: RemoteStore, codec: RowCodec, writer: DeviceRecord) -> int:
        """Write the kept rows the device may write; the number written or already there
        (a bundle taken again changes nothing). ``self.refused`` gets the others."""
        taken: dict[str, bool] = {}

        def plan(batch: list[dict[str, Any]], current: dict[str, RemoteDoc]) -> list[Write]:
            out = []
            for row in batch:
                rid = row["id"]
                doc = current.get(rid)
                stored = None if doc is None else codec.incoming(self.model, doc).data
                why = self._refusal(row, doc, stored)
                taken[rid] = why is None
                if why is not None:
                    self._note(rid, why)
                    continue
                self.refused.pop(rid, None)  # (refused by an earlier plan of this batch)
                if stored is not None and not self._newer(row, stored):
                    continue  # applied before, or a later version is there: idempotent
                data = {**row, "updatedBy": self.device}
                if doc is None:
                    data.update({"createdOn": time_text(self.now), OWNER: self.device})
                base = None if doc is None else doc.version
                out.append(
                    Write(self.coll, rid, codec.outgoing(self.model, data), base_version=base)
                )
            return out

        batches = (
            [r for r in batch if r["id"] not in self.refused]
            for batch in self.spool.batches(batch_size(store))
        )
        write_batches(store, writer, self.coll, batches, plan, self._note)
        return sum(ok and rid not in self.refused for rid, ok in taken.items())

    def _note(self, row_id: str, reason: str) -> None:
        self.refused[row_id] = reason[:200]

    def _refusal(self, row: dict[str, Any], doc: RemoteDoc | None, stored: Any) -> str | None:
        """Why the device may not write ``row`` over ``doc``, or None when it may."""
        if doc is not None and doc.deleted:
            return "deleted on the service"
        if self.permit is not None:
            return self.permit(row, stored)
        if doc is None:
            return None
        owner = stored.get(OWNER) or stored.get("updatedBy")
        if owner != self.device:
            return "this row was created by another device; a device writes only its own rows"
        return None

    def _newer(self, row: dict[str, Any], stored: Any) -> bool:
        """Whether ``row`` is a later version than the stored one (by ``updatedOn``; a
        stored stamp far ahead of the service's clock ranks as the oldest)."""
        mine, theirs = parse_time(row.get("updatedOn")), parse_time(stored.get("updatedOn"))
        if theirs is None or theirs > self.latest:
            return True
        return mine is not None and mine > theirs

    def close(self) -> None:
        self.spool.close()


def batch_size(store: RemoteStore) -> int:
    """Documents per batch: what one push takes, less the device record's write."""
    return max(1, store.max_batch_writes - 1)


Plan = Callable[[list[Any], dict[str, RemoteDoc]], list[Write]]


def write_batches(
    store: RemoteStore,
    writer: DeviceRecord,
    coll: str,
    batches: Iterable[list[Any]],
    plan: Plan,
    refuse: Callable[[str, str], None],
) -> None:
    """Write documents of ``coll`` batch by batch. ``plan`` turns a batch (items with
    an ``id``: rows, or event documents) and the documents the store holds for them now
    into the writes still needed; a batch another writer beat (a device, another
    ingestor) is looked at and planned again. A document the store cannot take (too
    large, a value it cannot hold) is ``refuse``d and the rest of its batch written."""
    for batch in batches:
        for _attempt in range(8):
            ids = [item["id"] for item in batch]
            needed = plan(batch, store.get(coll, ids))
            if not needed:
                break
            try:
                store.push(needed, writer)
                break
            except PreconditionFailed:
                continue
            except (DocumentTooLargeError, UnsupportedValueError) as exc:
                if exc.doc_id not in ids:
                    raise
                refuse(exc.doc_id, str(exc))
                batch = [item for item in batch if item["id"] != exc.doc_id]
        else:
            raise TransientError(f"documents of {coll} kept changing while being ingested")


def check_header(header: dict[str, Any], request: IngestRequest, model: Any) -> None:
    """The header names what the request does, and no column the model lacks."""
    for name, want in (
        ("bundle", request.bundle),
        ("device", request.device),
        ("collection", request.collection),
        ("count", request.count),
    ):
        if header.get(name) != want:
            raise BundleRejected(f"the bundle's header names another {name} than the request")
    columns = header.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BundleRejected("the bundle's header does not list its columns")
    newer = sorted(set(columns) - set(remote_columns(model)))
    if newer:  # rejected whole, so the rows are sent again once the service knows them
        raise BundleRejected(
            f"the bundle has columns this service does not know ({', '.join(newer)[:200]}):"
            " a newer app version; upgrade the service's models"
        )

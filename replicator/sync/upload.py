"""Upload phase: send this device's dirty rows and deletes.

Rows go parents before children, deletes children before parents, in atomic
batches the size of the store's limit (the device's own record rides in the
same batch), streamed: a page of dirty rows is read, turned into writes and
pushed before the next is read, so memory does not grow with the backlog. A row
goes up only when every parent it names is on the remote or in the same batch,
so an app committing a parent and its child while the upload reads can never
make the remote hold an orphan; the child waits for the next pass. A row is a
create (precondition: the document does not exist) when this device never saw
it remotely, else an update conditional on the
version it last saw, so a remote change that slipped in since the download is
detected: the engine fetches it, resolves the conflict and uploads again.
A document that holds what this device sent in an earlier sync whose
acknowledgement was lost is recognised as its own (the journal of sends), not
counted as a conflict (``_Retries``).
After the commit a row is marked clean, and gets its ``serverId``, only if its
``syncRev`` is unchanged, i.e. nobody wrote it while the upload was in flight.
A batch the remote's rules refuse is split to find the refused writes, which are
set aside while the others go on (``isolate.py``); a row set aside is not read
again until it changes (``denied.py``).
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import peewee

from ..codec import ROW_ID_RULE, encode_json, is_row_id, missing_value
from ..denied import aside_clause
from ..errors import (
    AccessDeniedError,
    ConflictError,
    DocumentTooLargeError,
    PreconditionFailed,
    UnsupportedValueError,
)
from ..model import collection_name, parents_first, remote_columns, shift_time
from ..report import Applied, RowError, Tally
from ..sql import select_in
from ..stores.base import PushResult, SizedDocuments, Write
from .apply import apply_remote
from .commits import Commits
from .context import SyncContext
from .isolate import isolate

log = logging.getLogger(__name__)

MAX_CONFLICT_ROUNDS = 5


def document_size(write: Write) -> int:
    return len(encode_json(write.data)) + len(write.collection) + len(write.id) + 16


@attrs.frozen
class Outgoing:
    """One row write as collected: what is sent, and what marking it synced needs."""

    write: Write
    rev: Any  # the row's syncRev as read; None for a delete
    row: dict[str, Any]  # every remote column, SQLite form, as it will stand remotely
    sent: Mapping[str, Any] | None  # exactly the values sent, SQLite form (None: a delete)
    base: Mapping[str, Any] = attrs.field(factory=dict)  # the base data the update is over
    sent_json: str | None = None  # ``sent`` as JSON, for the journal


class WaitsForParent(ValueError):
    """A row held back because a parent it names is not on the remote yet."""


def _changed(
    model: type[peewee.Model], row: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """The columns of ``row`` an update must send: those that differ from the base.

    A column the base lacks (the remote document never had it, or this device
    never saw its value) is sent only if the row holds something other than
    the value such a document decodes to, so a device never writes over a
    remote value it has not seen.
    """
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    out = {}
    for col, value in row.items():
        if col in ("id", "updatedOn", "updatedBy"):
            out[col] = value
        elif col in base:
            if base[col] != value:
                out[col] = value
        elif col in fields and value != missing_value(fields[col]):
            out[col] = value
    return out


def _pending_rows(ctx: SyncContext, model: type[peewee.Model], page: int) -> Iterator[list[Any]]:
    """The dirty rows of ``model``, a page at a time in id order (a partial index on the
    dirty ids), each page read on its own: memory holds one page, whatever the backlog."""
    coll = collection_name(model)
    names = ", ".join(f'"{c}"' for c in remote_columns(model))
    table = f'"{coll}"'
    # rows set aside (the rules refused them, unchanged since) are not sent again
    select = (
        f'SELECT {names}, "syncVersion", "syncRev" FROM "{coll}"'
        f' INDEXED BY "replicator_{coll}_dirty_ids" WHERE "isDirty" = 1'
        f" AND {aside_clause(coll, table)}"
    )
    # the first page from the lowest id (an empty or a numeric one included: the upload
    # reports it rather than leave it dirty unseen), the next ones after the last read
    rows = ctx.db.execute_sql(f"{select} ORDER BY id LIMIT ?", (page,)).fetchall()
    while rows:
        yield rows
        rows = ctx.db.execute_sql(
            f"{select} AND id > ? ORDER BY id LIMIT ?", (rows[-1][0], page)
        ).fetchall()


def _confirmed(ctx: SyncContext, parent: type[peewee.Model], ids: set[str]) -> set[str]:
    """The ids of ``ids`` the remote holds: rows with a ``serverId`` (confirmed once)."""
    table = collection_name(parent)
    sql = f'SELECT id FROM "{table}" WHERE "serverId" IS NOT NULL AND id IN ({{}})'
    return {r[0] for r in select_in(ctx.db.execute_sql, sql, sorted(ids))}


def _outgoing_rows(
    ctx: SyncContext, model: type[peewee.Model], rows: list[Any], batch_ids: set[tuple[str, str]]
) -> Iterator[Outgoing | RowError]:
    """Writes for one page of dirty rows, or why a row must wait.

    A row goes up only if every parent it names is on the remote already or
    rides in the same batch (committed atomically): whatever the app commits
    while the upload reads, the remote never holds a child whose parent it
    lacks. A row whose parent must wait waits too, for the next pass.
    """
    coll = collection_name(model)
    cols = remote_columns(model)
    fks = [(fk.column_name, fk.rel_model) for fk in model._meta.refs]
    confirmed = _confirmed_parents(ctx, fks, cols, rows)
    bases = ctx.local.bases_for(coll, [r[0] for r in rows])
    fit = _Fit(
        ctx.remote.max_document_bytes,
        ctx.remote.document_size if isinstance(ctx.remote, SizedDocuments) else document_size,
        ctx.clock_shift(),
    )
    id_at = cols.index("id")
    self_refs = [cols.index(c) for c, parent in fks if parent is model]
    if self_refs:
        rows = parents_first(rows, lambda r: r[id_at], lambda r: [r[i] for i in self_refs])
    for row in rows:
        data = dict(zip(cols, row[:-2], strict=True))
        doc_id = data["id"]
        if not is_row_id(doc_id):  # no store could name it, no other device could keep it
            yield _not_a_row_id(coll, doc_id)
            continue
        waiting = next(
            (
                f"{collection_name(parent)}/{data[col]}"
                for col, parent in fks
                if data[col] is not None
                and data[col] != doc_id
                and data[col] not in confirmed[parent]
                and (collection_name(parent), data[col]) not in batch_ids
            ),
            None,
        )
        if waiting is not None:
            yield RowError(coll, doc_id, WaitsForParent(f"waits for its parent {waiting}"))
            continue
        out = _outgoing(ctx, model, data, row, bases, fit)
        if isinstance(out, Outgoing):
            batch_ids.add((coll, doc_id))
        yield out


def _confirmed_parents(
    ctx: SyncContext,
    fks: list[tuple[str, type[peewee.Model]]],
    cols: list[str],
    rows: list[Any],
) -> dict[type[peewee.Model], set[str]]:
    """Per parent model, which of the parents the page's rows name the remote holds."""
    needed: dict[type[peewee.Model], set[str]] = defaultdict(set)
    for row in rows:
        data = dict(zip(cols, row[:-2], strict=True))
        for col, parent in fks:
            if data[col] is not None:
                needed[parent].add(data[col])
    return {parent: _confirmed(ctx, parent, ids) for parent, ids in needed.items()}


@attrs.frozen
class _Fit:
    """What a write must fit, read once a page: the store's document size limit and how
    it measures a document, and the shift from this device's clock to the store's."""

    limit: int | None
    measure: Callable[[Write], int]
    shift: float | None


def _not_a_row_id(coll: str, doc_id: Any) -> RowError:
    shown = repr(doc_id)[:60]
    problem = f"{shown} is not a row id ({ROW_ID_RULE})"
    hint = "give the row another id (a new_id()); the row stays dirty"
    key = doc_id if isinstance(doc_id, str) else shown
    return RowError(coll, key, UnsupportedValueError("id", problem, coll, key, hint=hint))


def _outgoing(
    ctx: SyncContext,
    model: type[peewee.Model],
    data: dict[str, Any],
    row: list[Any],
    bases: Mapping[str, tuple[str, dict[str, Any]]],
    fit: _Fit,
) -> Outgoing | RowError:
    """The write of one dirty row (``row`` as read; ``data``, its remote columns), or why
    no store can take it."""
    coll, doc_id, version = collection_name(model), data["id"], row[-2]
    if fit.shift is not None and data.get("updatedOn"):
        data["updatedOn"] = shift_time(data["updatedOn"], fit.shift)
    # a row the remote holds goes up over the version it last agreed with; only the
    # columns changed since are sent when its merge base is known (else all of them)
    base = bases.get(doc_id) if version is not None else None
    base_data = base[1] if base is not None and base[0] == version else None
    sent = data if base_data is None else _changed(model, data, base_data)
    try:
        full = ctx.codec.outgoing(model, data)
    except UnsupportedValueError as exc:  # a value the store cannot hold
        return RowError(coll, doc_id, UnsupportedValueError(exc.column, exc.reason, coll, doc_id))
    size = None
    if fit.limit:
        size = fit.measure(Write(coll, doc_id, full, base_version=version))
        if size > fit.limit:
            return RowError(coll, doc_id, DocumentTooLargeError(coll, doc_id, size, fit.limit))
    if sent is not data:
        full = {k: v for k, v in full.items() if k in sent}
    # the journal keeps the values sent as JSON; when they are what the store gets
    # (a store of SQLite's form), the store takes that JSON rather than make it again
    sent_json = encode_json(sent)
    encoded = sent_json if full is sent else None
    write = Write(coll, doc_id, full, base_version=version, encoded=encoded, size=size)
    return Outgoing(write, row[-1], data, sent, base_data or {}, sent_json)


def _deletes(ctx: SyncContext, model: type[peewee.Model], page: int) -> Iterator[Outgoing]:
    coll = collection_name(model)
    shift = ctx.clock_shift()
    after = None
    while True:
        found = ctx.local.pending_tombstones(coll, after=after, limit=page)
        if not found:
            return
        unnamable = [r[0] for r in found if not is_row_id(r[0])]
        if unnamable:  # a row no store could hold was never uploaded: nothing to delete there
            ctx.local.ack_tombstones(coll, unnamable)
        aside = ctx.local.denied_deletes(coll, [r[0] for r in found])
        for doc_id, deleted_on, deleted_by in found:
            if doc_id in unnamable or doc_id in aside:
                continue
            if shift is not None and deleted_on:
                deleted_on = shift_time(deleted_on, shift)
            data = {"updatedOn": deleted_on, "updatedBy": deleted_by or ctx.me}
            write = Write(
                coll, doc_id, ctx.codec.outgoing(model, data), deleted=True, unconditional=True
            )
            yield Outgoing(write, None, data, None)
        after = found[-1][0]


@attrs.frozen
class Uploaded:
    """What the phase did: the last commit's result (``None``: nothing was pushed),
    what went up, and what had to stay (``tally.rejected``)."""

    pushed: PushResult | None
    tally: Tally


def upload(ctx: SyncContext) -> Uploaded:
    """Run the phase.

    Streams: dirty rows are read a page at a time (parents' collections
    first), turned into writes and pushed as soon as a batch is full, so memory
    holds one batch whatever the backlog, and a crash loses nothing (pushed
    batches are marked synced as they commit). Rows that had to wait for a
    parent get another pass while passes make progress.
    """
    ctx = ctx.for_phase()
    per_batch = ctx.remote.max_batch_writes - 1
    last: PushResult | None = None
    retries = _Retries(ctx)
    total = sum(ctx.local.count_dirty(collection_name(m)) for m in ctx.pushed())
    total += sum(ctx.local.count_pending_tombstones().values())
    done = 0
    while True:
        waiting: dict[tuple[str, str], RowError] = {}
        pushed = 0
        try:
            with Commits(ctx) as commits:
                for batch in _batches(ctx, per_batch, waiting):
                    last = _push(ctx, batch, commits, waiting) or last
                    pushed += len(batch)
                    done += len(batch)
                    commits.after_commit(functools.partial(_told, ctx, done, total))
        except PreconditionFailed as exc:
            retries.failed(exc, pushed=pushed > 0)
            continue
        ctx.tally.rejected[:] = list(waiting.values())
        parents_pending = any(isinstance(e.error, WaitsForParent) for e in waiting.values())
        if not (parents_pending and pushed):
            return Uploaded(last, ctx.tally)


def _batches(
    ctx: SyncContext, per_batch: int, waiting: dict[tuple[str, str], RowError]
) -> Iterator[list[Outgoing]]:
    """Full batches of writes: rows parents first, then deletes children first."""
    batch: list[Outgoing] = []
    batch_ids: set[tuple[str, str]] = set()
    for model in ctx.pushed():
        for rows in _pending_rows(ctx, model, per_batch):
            for item in _outgoing_rows(ctx, model, rows, batch_ids):
                if isinstance(item, RowError):
                    waiting[(item.collection, item.id)] = item
                    continue
                batch.append(item)
                if len(batch) == per_batch:
                    yield batch
                    batch, batch_ids = [], set()
    for model in reversed(ctx.pushed()):
        for item in _deletes(ctx, model, per_batch):
            batch.append(item)
            if len(batch) == per_batch:
                yield batch
                batch = []
    if batch:
        yield batch


def _told(ctx: SyncContext, done: int, total: int) -> None:
    ctx.progress("upload", None, done, max(total, done))


def _push(
    ctx: SyncContext,
    batch: list[Outgoing],
    commits: Commits,
    waiting: dict[tuple[str, str], RowError],
) -> PushResult | None:
    """Journal the batch, push it and mark it synced; a batch the rules refuse is
    isolated (``isolate.py``). None when the rules refused every write of it."""
    commits.begin()
    with ctx.db.atomic():  # a savepoint: a failed journal write leaves the open mark whole
        span = ctx.local.record_sent(
            [
                (o.write.collection, o.write.id, o.sent_json)
                for o in batch
                if o.sent_json is not None
            ]
        )
    commits.commit()
    try:
        return _push_part(ctx, batch, commits, span)
    except AccessDeniedError as exc:
        part = functools.partial(_push_part, ctx, commits=commits, span=None)
        return isolate(ctx, batch, exc, part, waiting)


def _push_part(
    ctx: SyncContext,
    batch: list[Outgoing],
    commits: Commits,
    span: tuple[int, int] | None,
) -> PushResult:
    """Push journalled writes and mark them synced; ``span``: the journal rowids the
    whole batch took, or None for a part of it (its sends are forgotten row by row)."""
    before = ctx.clock()
    try:
        result = ctx.remote.push([o.write for o in batch], ctx.device_record())
    except PreconditionFailed as exc:
        if exc.keys:
            raise
        # the store could not tell which write failed: every write of the batch is suspect
        raise PreconditionFailed(str(exc), [o.write.key for o in batch]) from exc
    commits.begin()
    ctx.measured_clock(before, result.server_time)
    _mark_synced(ctx, batch, result, span)
    if ctx.listeners:
        sent: dict[str, tuple[list[str], list[str]]] = {}
        for o in batch:
            rows, deletes = sent.setdefault(o.write.collection, ([], []))
            (deletes if o.write.deleted else rows).append(o.write.id)
        commits.after_commit(lambda: ctx.changed("upload", sent))
    log.debug("upload: batch of %d write(s) committed at %s", len(batch), result.position)
    return result


def _mark_synced(
    ctx: SyncContext, batch: list[Outgoing], result: PushResult, span: tuple[int, int] | None
) -> None:
    """Mark each pushed row clean, only if it is unchanged since it was read."""
    conn = ctx.db.connection()
    by_coll: dict[str, list[Outgoing]] = defaultdict(list)
    for item in batch:
        by_coll[item.write.collection].append(item)
    with ctx.local.applying():
        for coll, items in by_coll.items():
            deletes = [o.write.id for o in items if o.write.deleted]
            rows = [o for o in items if not o.write.deleted]
            if deletes:
                ctx.local.ack_tombstones(coll, deletes)
                ctx.local.drop_bases(coll, deletes)
                ctx.tally.bump(ctx.tally.uploaded_deletes, coll, len(deletes))
            if rows:
                # updatedOn as it stands remotely (corrected for this device's clock)
                conn.executemany(
                    f'UPDATE "{coll}" SET "isDirty" = 0, "serverId" = id, "updatedOn" = ?,'
                    ' "syncVersion" = ? WHERE id = ? AND "syncRev" = ?',
                    [
                        (o.row.get("updatedOn"), result.versions[o.write.key], o.write.id, o.rev)
                        for o in rows
                    ],
                )
                # a row written again while in flight stays dirty: it now stands over the
                # new version, and what was just sent is its merge base; the others keep
                # no base (a create never had one)
                again = set(ctx.local.still_dirty(coll, [o.write.id for o in rows]))
                ctx.local.drop_bases(
                    coll,
                    [
                        o.write.id
                        for o in rows
                        if o.write.base_version is not None and o.write.id not in again
                    ],
                )
                moved = [o for o in rows if o.write.id in again]
                ctx.local.set_versions(
                    coll, [(o.write.id, result.versions[o.write.key]) for o in moved]
                )
                ctx.local.set_bases(
                    coll,
                    [
                        (o.write.id, result.versions[o.write.key], {**o.base, **o.row})
                        for o in moved
                    ],
                )
                ctx.tally.bump(ctx.tally.uploaded, coll, len(rows))
        _forget(ctx, by_coll, span)
        ctx.local.record_upload(registered=1)


def _forget(
    ctx: SyncContext, by_coll: Mapping[str, list[Outgoing]], span: tuple[int, int] | None
) -> None:
    """Forget the journalled sends of a committed batch (row by row for a part of one:
    ``span`` None) and the refusals of the rows the remote took now."""
    acked = {
        coll: [o.write.id for o in items if not o.write.deleted] for coll, items in by_coll.items()
    }
    if span is None:
        for coll, ids in acked.items():
            ctx.local.forget_sent(coll, ids)
    else:
        ctx.local.forget_sends(span, acked)
    if ctx.local.any_denied():  # rows taken now are no longer aside
        for coll, items in by_coll.items():
            ctx.local.undeny(coll, [o.write.id for o in items])


class _Retries:
    """What a failed precondition was, and when the upload gives up.

    A precondition fails when the remote document is not the version this
    device last agreed with: either another writer changed it (the change is
    fetched, resolved by the strategy and reported) or it holds this device's
    own write whose acknowledgement was lost in an earlier sync (recognised
    from the journal of sends: no conflict). Only another writer can keep an
    upload from finishing, so only rounds that met such a change, with no batch
    pushed since the last one, count towards ``MAX_CONFLICT_ROUNDS``; a round
    whose failure nothing explains counts too, so the loop always ends.

    A lost acknowledgement leaves a whole batch committed but dirty here, and
    the next sync's batches (in id order, among rows written since) would meet
    its rows a few per batch, one failed push each. So the first failure
    recognises every send journalled before this sync at once: one read per
    row, and the batches after it go through.
    """

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.earlier = ctx.local.sent_top()  # sends up to here were made by earlier syncs
        self.stalled = 0

    def failed(self, exc: PreconditionFailed, *, pushed: bool) -> None:
        """Resolve what beat the round's preconditions; raise ``ConflictError`` when
        another writer has beaten it ``MAX_CONFLICT_ROUNDS`` times in a row."""
        if pushed:
            self.stalled = 0
        seen = _Seen()
        if self.earlier:
            _recognise_earlier_sends(self.ctx, self.earlier, seen)
            self.earlier = 0
        _refresh(self.ctx, [k for k in exc.keys if k not in seen.checked], seen)
        failed = set(exc.keys)
        fresh = sorted(seen.fresh & failed)
        if fresh or not seen.own & failed:
            self.stalled += 1
        if self.stalled >= MAX_CONFLICT_ROUNDS:
            named = ", ".join(f"{c}/{i}" for c, i in fresh[:3]) or "unknown documents"
            raise ConflictError(
                f"uploads met fresh remote changes {MAX_CONFLICT_ROUNDS} times in a row ({named})"
            ) from exc


@attrs.define
class _Seen:
    """What refreshing documents found: the keys read, those that held another writer's
    change, and those that held this device's own values (a lost acknowledgement)."""

    checked: set[tuple[str, str]] = attrs.field(factory=set)
    fresh: set[tuple[str, str]] = attrs.field(factory=set)
    own: set[tuple[str, str]] = attrs.field(factory=set)


def _recognise_earlier_sends(ctx: SyncContext, upto: int, seen: _Seen) -> None:
    """Refresh every row with a send journalled at rowid ``upto`` or before (made by an
    earlier sync, its acknowledgement never heard), a page of keys at a time."""
    after = ("", "")
    while True:
        keys = ctx.local.sent_keys(upto, after, _REFRESH_PAGE)
        if not keys:
            return
        _refresh(ctx, keys, seen)
        after = keys[-1]


#: how many documents one read of a refresh asks for (one local transaction applies them)
_REFRESH_PAGE = 500


def _refresh(ctx: SyncContext, keys: list[tuple[str, str]], seen: _Seen) -> None:
    """Fetch the remote versions of ``keys`` and resolve them locally, noting in ``seen``
    which were another writer's change and which this device's own write."""
    by_coll: dict[str, list[str]] = defaultdict(list)
    for coll, doc_id in keys:
        by_coll[coll].append(doc_id)
    for model in ctx.models:
        coll = collection_name(model)
        ids = by_coll.get(coll, [])
        for start in range(0, len(ids), _REFRESH_PAGE):
            _refresh_page(ctx, model, ids[start : start + _REFRESH_PAGE], seen)


def _refresh_page(ctx: SyncContext, model: type[peewee.Model], ids: list[str], seen: _Seen) -> None:
    coll = collection_name(model)
    docs = ctx.remote.get(coll, ids)
    _, versions = ctx.local.row_states(coll, ids)
    applied = Applied()
    with ctx.local.applying():
        for doc_id in ids:
            key, doc, known = (coll, doc_id), docs.get(doc_id), versions.get(doc_id)
            seen.checked.add(key)
            if doc is None:
                # our base names a document the remote no longer has: create it afresh
                ctx.local.drop_base(coll, doc_id)
                ctx.local.set_versions(coll, [(doc_id, None)])
                if known is not None:
                    seen.fresh.add(key)
            elif doc.version != known:  # else: only suspected, unchanged since we agreed
                got = apply_remote(ctx, model, ctx.codec.incoming(model, doc))
                (seen.own if key in got.agreed else seen.fresh).add(key)
                applied.add(got)
    ctx.fold(applied)
    ctx.changed("upload")

"""Isolating the writes the remote's security rules refuse.

Firestore refuses a batch with one forbidden write whole (``PERMISSION_DENIED``,
an :class:`~replicator.errors.AccessDeniedError`), without saying which write.
So a denied batch is **bisected**: its halves are pushed in order, a half that
is refused again is split again, until every write the rules allow has gone
through and each refused one stands alone. A refused write alone is set aside
(``denied.py``): recorded with the store's reason and time, kept locally as
the app wrote it, and not sent again until the app changes the row or asks for
a retry. The rest of the batch, and every later batch, goes on.

Cost: one denied write in a batch of ``n`` costs about ``log2(n)`` extra
pushes: each level of the split pushes its left half, and when that half goes
through whole the right half is known to hold the refusal, so it is split
without being pushed (when the left half is refused, the right one is pushed as
it may be clean: ``k`` refused writes cost at most about ``2·k·log2(n)``). Plus
one registration of the device alone first. That registration tells a refused
row from a refused device record (every push carries the device's record): if
the rules refuse the record itself, nothing is set aside and the upload fails
with the ``AccessDeniedError``, as a configuration error should.

Order is kept: halves go in batch order, so a parent committed in an earlier
half is on the remote before its child goes. A row whose parent's *create* was
refused is not pushed (the remote would hold an orphan): it waits for its
parent like any row whose parent is not on the remote yet, and is reported as
rejected, not denied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import peewee

from ..errors import AccessDeniedError
from ..model import collection_name
from ..report import RowError
from ..stores.base import PushResult
from .context import SyncContext

log = logging.getLogger(__name__)


class WaitsForDeniedParent(ValueError):
    """A row held back because the remote's rules refused its parent's create."""


def isolate(
    ctx: SyncContext,
    batch: list[Any],
    denied: AccessDeniedError,
    push: Callable[[list[Any]], PushResult],
    waiting: dict[tuple[str, str], RowError],
) -> PushResult | None:
    """Push every write of ``batch`` (``Outgoing``s, refused whole with ``denied``) the
    rules allow, through ``push`` (which commits and marks a part synced), and set
    aside each one they refuse. Returns the last part's result (None: none went)."""
    try:
        ctx.remote.register(ctx.device_record())
    except AccessDeniedError:
        raise denied from None  # the device's own record is refused: no row is to blame
    bisect = _Bisection(ctx, push, waiting)
    bisect.run(batch, denied, known=True)
    log.info(
        "upload: a denied batch of %d write(s) isolated in %d push(es)", len(batch), bisect.pushes
    )
    return bisect.last


class _Bisection:
    """One denied batch being split (see the module's docstring)."""

    def __init__(
        self,
        ctx: SyncContext,
        push: Callable[[list[Any]], PushResult],
        waiting: dict[tuple[str, str], RowError],
    ) -> None:
        self.ctx, self.push, self.waiting = ctx, push, waiting
        self.models = {collection_name(m): m for m in ctx.models}
        self.refused: set[tuple[str, str]] = set()  # creates refused: children must wait
        self.last: PushResult | None = None
        self.pushes = 0

    def run(self, part: list[Any], denied: AccessDeniedError, *, known: bool) -> bool:
        """Push ``part``, or split it; ``known``: it holds a refused write for sure (it
        was refused whole, or its sibling half went through whole), so it is split
        without being pushed. True when ``part`` went through whole."""
        kept = _without_orphans(part, self.models, self.refused, self.waiting)
        if not kept:
            return False
        if not known or len(kept) < len(part):
            try:
                self.pushes += 1
                self.last = self.push(kept)
                return len(kept) == len(part)
            except AccessDeniedError as exc:
                denied = exc
        if len(kept) == 1:
            self._set_aside(kept[0], denied)
            return False
        left, right = _halves(kept)
        # a refused part whose left half goes through whole holds its refusal on the right
        self.run(right, denied, known=self.run(left, denied, known=False))
        return False

    def _set_aside(self, o: Any, exc: AccessDeniedError) -> None:
        _set_aside(self.ctx, o, exc)
        if o.write.base_version is None and not o.write.deleted:
            self.refused.add(o.write.key)


def _halves(part: list[Any]) -> tuple[list[Any], list[Any]]:
    mid = len(part) // 2
    return part[:mid], part[mid:]


def _without_orphans(
    part: list[Any],
    models: Mapping[str, type[peewee.Model]],
    refused: set[tuple[str, str]],
    waiting: dict[tuple[str, str], RowError],
) -> list[Any]:
    """``part`` without the rows naming a parent whose create was refused (noted in
    ``waiting``); such a row's own create then counts as refused for its children."""
    if not refused:
        return part
    kept = []
    for o in part:
        parent = _refused_parent(o, models, refused)
        if parent is None:
            kept.append(o)
            continue
        coll, doc_id = o.write.key
        why = f"waits for its parent {parent[0]}/{parent[1]}, which the rules refused"
        waiting[o.write.key] = RowError(coll, doc_id, WaitsForDeniedParent(why))
        refused.add(o.write.key)
    return kept


def _refused_parent(
    o: Any, models: Mapping[str, type[peewee.Model]], refused: set[tuple[str, str]]
) -> tuple[str, str] | None:
    if o.write.deleted:
        return None
    model = models.get(o.write.collection)
    for fk in [] if model is None else model._meta.refs:
        key = (collection_name(fk.rel_model), o.row.get(fk.column_name))
        if key[1] is not None and key in refused:
            return key
    return None


def _set_aside(ctx: SyncContext, o: Any, exc: AccessDeniedError) -> None:
    coll, doc_id = o.write.key
    ctx.local.deny([(coll, doc_id, o.rev, o.write.deleted, exc.message)])
    ctx.local.forget_sent(coll, [doc_id])  # nothing of it was written
    ctx.tally.denied.append(RowError(coll, doc_id, exc))
    log.warning("upload: the rules refused %s/%s; set aside (%s)", coll, doc_id, exc.message)

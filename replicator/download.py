"""Download phase (seed 002 §2): apply what other devices uploaded.

1. Ask the Devices collection whether any other device uploaded after the
   position this device last caught up with. If none, stop: one remote read.
2. Otherwise, per collection, parents before children, page through the
   changes after the collection's ``downloadedTill`` cursor, skipping this
   device's own writes, and apply each page together with its new cursor in
   one local transaction. A crash between pages loses nothing: the next sync
   resumes after the last committed page. This device's own uploads come back
   too and are skipped by version; ``updatedBy`` is never trusted for that.
3. Retry the documents earlier syncs set aside (``apply.settle``).

A collection whose cursor is below the store's tombstone horizon (this device
was offline longer than the retention) is downloaded again from the start and
reconciled (``retention.py``); one whose model gained columns in an app
upgrade is downloaded again to fill them (``upgrade.py``).
"""

from __future__ import annotations

import logging

import attrs

from .apply import apply_page, settle
from .context import SyncContext
from .model import collection_name
from .report import Tally
from .retention import reconcile, stale
from .stores.base import Compactable, Countable
from .upgrade import fill_columns

log = logging.getLogger(__name__)


@attrs.frozen
class Downloaded:
    """What the phase did: whether another device had uploaded, and what was applied."""

    others: bool
    tally: Tally


def download(ctx: SyncContext, *, catch_up_only: bool = False) -> Downloaded:
    """Run the phase.

    ``catch_up_only`` skips the Devices check and pulls every collection (used
    before a snapshot, to move the cursors past this device's own uploads).
    """
    ctx = ctx.for_phase()
    latest = None
    if not catch_up_only:
        latest = ctx.remote.uploads_after(ctx.local.seen_position, exclude=ctx.me)
        if latest is None and not ctx.local.any_recovery():
            settle(ctx)  # documents set aside are retried even when nothing is new
            return Downloaded(False, ctx.tally)
    horizons = ctx.remote.horizons() if isinstance(ctx.remote, Compactable) else {}
    for model in ctx.pulled():
        coll = collection_name(model)
        cursor = ctx.local.tracker(coll)
        again = ctx.local.recovery(coll)
        if stale(cursor, horizons.get(coll)) and not (again and again[0]):
            ctx.local.start_recovery(coll)
            cursor, again = None, ctx.local.recovery(coll)
        done = 0
        total: int | None = None
        while True:
            page = ctx.remote.pull(coll, cursor, ctx.page_size, catch_up=done == 0)
            docs = [ctx.codec.incoming(model, d) for d in page.docs]
            with ctx.local.applying():
                if again is not None:
                    ctx.local.note_seen(coll, [d.id for d in docs])
                    fill_columns(ctx, model, docs, again[1])
                apply_page(ctx, model, docs)
                if page.cursor is not None and page.cursor != cursor:
                    ctx.local.set_tracker(coll, page.cursor)
            ctx.changed("download")
            log.debug(
                "download %s: page of %d document(s), cursor %s", coll, len(docs), page.cursor
            )
            stuck = page.cursor == cursor and done > 0
            if done == 0 and page.more and isinstance(ctx.remote, Countable):
                # a long download: learn its size once, so progress has a total
                total = len(page.docs) + ctx.remote.count_after(coll, page.cursor)
            cursor = page.cursor
            done += max(1, len(page.docs))
            ctx.progress("download", coll, done, None if total is None else max(total, done))
            if not page.more or stuck:  # a store that cannot move past a document
                break
        if total is not None and total != done:  # the estimate was off: end at 100%
            ctx.progress("download", coll, done, done)
        if again is not None:
            with ctx.local.applying():
                if again[0]:
                    reconcile(ctx, model)
                ctx.local.end_recovery(coll)
            ctx.changed("download")
            if again[0]:
                ctx.tally.recovered.append(coll)
    if not catch_up_only:  # (the sync's own download has retried them already)
        settle(ctx)
    if latest is not None:
        ctx.local.set_device(seen_position=latest)
    return Downloaded(True, ctx.tally)

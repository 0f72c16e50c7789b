"""Download phase: apply what other devices uploaded.

1. Ask the Devices collection whether any other device uploaded after the
   position this device last caught up with. If none, stop: one remote read.
2. Otherwise, per collection, parents before children, page through the
   changes after the collection's ``downloadedTill`` cursor, skipping this
   device's own writes, and apply each page together with its new cursor in
   one local transaction. A crash between pages loses nothing: the next sync
   resumes after the last committed page. This device's own uploads come back
   too and are skipped by version; ``updatedBy`` is never trusted for that.
3. Retry the documents earlier syncs set aside (``page.settle``).

A collection whose cursor is below the store's tombstone horizon (this device
was offline longer than the retention) is downloaded again from the start and
reconciled (``retention.py``); one whose model gained columns in an app
upgrade is downloaded again to fill them (``upgrade.py``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence

import attrs
import peewee

from ..model import collection_name
from ..report import Applied, Tally
from ..stores.base import Compactable, Countable, Page
from .context import SyncContext
from .page import apply_page, settle
from .retention import reconcile, stale
from .upgrade import fill_columns

log = logging.getLogger(__name__)


@attrs.frozen
class Downloaded:
    """What the phase did: whether another device had uploaded, and what was applied."""

    others: bool
    tally: Tally


@attrs.define
class _Plan:
    """One collection's download: where it starts, and what the pages came to."""

    model: type[peewee.Model]
    coll: str
    cursor: str | None
    again: tuple[bool, list[str]] | None
    done: int = 0
    total: int | None = None


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
            _settle(ctx)  # documents set aside are retried even when nothing is new
            return Downloaded(False, ctx.tally)
    horizons = ctx.remote.horizons() if isinstance(ctx.remote, Compactable) else {}
    plans = []
    for model in ctx.pulled():
        coll = collection_name(model)
        cursor = ctx.local.tracker(coll)
        again = ctx.local.recovery(coll)
        behind = stale(cursor, horizons.get(coll)) or (
            # never downloaded, yet holding rows the remote once held (its own uploads):
            # deletes of them purged since cannot come down, only a reconcile finds them
            cursor is None and horizons.get(coll) is not None and ctx.local.holds_synced(coll)
        )
        if behind and not (again and again[0]):
            ctx.local.start_recovery(coll)
            cursor, again = None, ctx.local.recovery(coll)
        plans.append(_Plan(model, coll, cursor, again))
    started = {p.coll: p.cursor for p in plans if p.again is None}
    for plan, page in _pages(ctx, plans):
        if page is None:
            _finish(ctx, plan)
        else:
            _apply(ctx, plan, page)
    if isinstance(ctx.remote, Compactable):
        _purged_meanwhile(ctx, started, horizons)
    if not catch_up_only:  # (the sync's own download has retried them already)
        _settle(ctx)
    if latest is not None:
        ctx.local.set_device(seen_position=latest)
    return Downloaded(True, ctx.tally)


def _apply(ctx: SyncContext, plan: _Plan, page: Page) -> None:
    """Apply one page with its cursor, in one local transaction."""
    model, coll = plan.model, plan.coll
    docs = [ctx.codec.incoming(model, d) for d in page.docs]
    with ctx.local.applying():
        if plan.again is not None:
            ctx.local.note_seen(coll, [d.id for d in docs])
            fill_columns(ctx, model, docs, plan.again[1])
        applied = apply_page(ctx, model, docs)
        if page.cursor is not None and page.cursor != plan.cursor:
            ctx.local.set_tracker(coll, page.cursor)
    ctx.fold(applied)
    ctx.changed("download")
    log.debug("download %s: page of %d document(s), cursor %s", coll, len(docs), page.cursor)
    if plan.done == 0 and page.more and isinstance(ctx.remote, Countable):
        # a long download: learn its size once, so progress has a total
        plan.total = len(page.docs) + ctx.remote.count_after(coll, page.cursor)
    plan.cursor = page.cursor
    plan.done += max(1, len(page.docs))
    total = None if plan.total is None else max(plan.total, plan.done)
    ctx.progress("download", coll, plan.done, total)


def _finish(ctx: SyncContext, plan: _Plan) -> None:
    """A collection's last page is in: end its progress at 100%, end a recovery."""
    if plan.total is not None and plan.total != plan.done:  # the estimate was off
        ctx.progress("download", plan.coll, plan.done, plan.done)
    again = plan.again
    if again is not None:
        with ctx.local.applying():
            applied = reconcile(ctx, plan.model) if again[0] else Applied()
            ctx.local.end_recovery(plan.coll)
        ctx.fold(applied)
        ctx.changed("download")
        if again[0]:
            ctx.tally.recovered.append(plan.coll)


def _purged_meanwhile(
    ctx: SyncContext, started: dict[str, str | None], before: dict[str, str]
) -> None:
    """Tombstones another device purged while this download ran may have gone between
    the horizons read and the page that would have held them: a collection whose
    horizon moved past the cursor it started from is downloaded again from its start
    and reconciled, from the next sync (one more read of the horizons per download)."""
    assert isinstance(ctx.remote, Compactable)
    after = ctx.remote.horizons()
    for coll, cursor in started.items():
        moved = after.get(coll) != before.get(coll)
        if moved and stale(cursor, after.get(coll)) and ctx.local.recovery(coll) is None:
            log.info("%s: tombstones purged during the download; reconciled next sync", coll)
            ctx.local.start_recovery(coll)


def _settle(ctx: SyncContext) -> None:
    """Retry the documents earlier syncs set aside (not those this one just did)."""
    just_now = {(e.collection, e.id) for e in ctx.tally.set_aside}
    ctx.fold(settle(ctx, just_now))


def _pulls(ctx: SyncContext, plan: _Plan) -> Iterator[Page]:
    """The pages of one collection after its cursor, in order, until the store says
    there are no more (or cannot move past a document)."""
    cursor, first = plan.cursor, True
    while True:
        page = ctx.remote.pull(plan.coll, cursor, ctx.page_size, catch_up=first)
        yield page
        stuck = page.cursor == cursor and not first
        cursor, first = page.cursor, False
        if not page.more or stuck:
            return


def groups(models: Sequence[type[peewee.Model]]) -> list[list[type[peewee.Model]]]:
    """``models`` split into groups with no foreign-key path between two groups, each
    in the given (parents first) order."""
    group_of: dict[type[peewee.Model], int] = {}
    members: dict[int, list[type[peewee.Model]]] = {}
    for model in models:
        linked = {group_of[f.rel_model] for f in model._meta.refs if f.rel_model in group_of}
        linked |= {group_of[m] for m in group_of if any(f.rel_model is model for f in m._meta.refs)}
        target = min(linked) if linked else len(members)
        merged = [model]
        for g in sorted(linked - {target}):
            merged += members.pop(g)
        members.setdefault(target, []).extend(merged)
        for m in members[target]:
            group_of[m] = target
    order = {m: i for i, m in enumerate(models)}
    return [sorted(g, key=order.__getitem__) for g in members.values()]


def _pages(ctx: SyncContext, plans: list[_Plan]) -> Iterator[tuple[_Plan, Page | None]]:
    """Every collection's pages, each followed by ``(plan, None)`` once it is complete.

    Collections linked by foreign keys are pulled one after another, parents first.
    Groups with no foreign-key path between them are pulled concurrently, one thread
    each, a few pages ahead at most; the pages are applied here, on the calling thread,
    one transaction each, in the order they arrive (any order is safe across groups).
    """
    by_model = {p.model: p for p in plans}
    chains = [[by_model[m] for m in g] for g in groups([p.model for p in plans])]
    if len(chains) < 2 or ctx.parallel_downloads < 2:
        for plan in plans:
            for page in _pulls(ctx, plan):
                yield plan, page
            yield plan, None
        return
    yield from _pages_concurrently(ctx, chains)


#: what a pulling thread hands the applying one: a page (None: its collection is
#: complete), an error to raise there, or (None, None, None): this chain is done
_Handed = tuple[_Plan | None, Page | None, BaseException | None]


def _pages_concurrently(
    ctx: SyncContext, chains: list[list[_Plan]]
) -> Iterator[tuple[_Plan, Page | None]]:
    """The pages of independent chains of collections, pulled by up to
    ``parallel_downloads`` threads, handed over in the order they arrive."""
    inbox: queue.Queue[_Handed] = queue.Queue(maxsize=2 * len(chains))
    stop = threading.Event()

    def pull_chain(chain: list[_Plan]) -> None:
        try:
            for plan in chain:
                for page in _pulls(ctx, plan):
                    if stop.is_set():
                        return
                    inbox.put((plan, page, None))
                inbox.put((plan, None, None))
        except BaseException as exc:  # handed to the applying thread, raised there
            inbox.put((None, None, exc))
        finally:
            inbox.put((None, None, None))  # this chain is done

    def pull_chains(share: list[list[_Plan]]) -> None:
        for chain in share:
            pull_chain(chain)

    shares = [chains[i :: ctx.parallel_downloads] for i in range(ctx.parallel_downloads)]
    workers = [
        threading.Thread(target=pull_chains, args=(share,), name="replicator-pull", daemon=True)
        for share in shares
        if share
    ]
    running = len(chains)
    for worker in workers:
        worker.start()
    try:
        while running:
            got, item, error = inbox.get()
            if error is not None:
                raise error
            if got is None:
                running -= 1
                continue
            yield got, item
    finally:
        stop.set()
        while any(w.is_alive() for w in workers):  # unblock producers waiting on a full inbox
            with contextlib.suppress(queue.Empty):
                inbox.get(timeout=0.05)

"""SyncReport: what one sync did, as a value.

Every conflict resolution, every rejected row and every billable remote
operation of a sync is in its report; nothing the engine decided is silent.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .stores.base import Usage

#: how a conflict ended (see :class:`Resolution`)
Outcome = Literal["local", "remote", "merged", "deleted", "set-null", "set-default", "restored"]
#: the long phases :class:`Progress` reports
Phase = Literal["download", "upload", "register", "snapshot", "restore"]


@attrs.frozen
class Resolution:
    """One conflict and how it was resolved.

    ``outcome`` is ``"local"`` (the device's version kept and uploaded),
    ``"remote"`` (the remote version applied), ``"merged"`` (a new version
    combining both, uploaded), ``"deleted"`` (deletes win: the row is gone),
    ``"set-null"`` / ``"set-default"`` (its parent was deleted under that
    ``on_delete`` rule: the row is kept with the key cleared, and uploaded), or
    ``"restored"`` (a delete refused under ``RESTRICT``/``NO ACTION``: a child
    still refers to the row, which is kept and uploaded live again).
    """

    collection: str
    id: str
    outcome: Outcome
    local: Mapping[str, Any] | None
    remote: Mapping[str, Any] | None
    base: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    strategy: str


@attrs.frozen
class RowError:
    """A row the sync could not upload; it stays dirty and is retried next time."""

    collection: str
    id: str
    error: Exception


@attrs.frozen
class Progress:
    """Passed to ``on_progress`` while a long phase runs."""

    phase: Phase
    collection: str | None
    done: int
    total: int | None = None


@attrs.define
class Applied:
    """What applying remote documents did locally: rows written and deleted per
    collection, conflicts resolved (in order), documents set aside, and the documents
    of dirty rows that needed no resolution because they hold what this device holds
    or sent (``agreed``: a write of its own whose acknowledgement was lost)."""

    downloaded: dict[str, int] = attrs.field(factory=dict)
    deleted: dict[str, int] = attrs.field(factory=dict)
    resolutions: list[Resolution] = attrs.field(factory=list)
    set_aside: list[RowError] = attrs.field(factory=list)
    agreed: list[tuple[str, str]] = attrs.field(factory=list)

    def wrote(self, collection: str, n: int = 1) -> None:
        if n:
            self.downloaded[collection] = self.downloaded.get(collection, 0) + n

    def removed(self, collection: str) -> None:
        self.deleted[collection] = self.deleted.get(collection, 0) + 1

    def resolved(self, resolution: Resolution) -> None:
        self.resolutions.append(resolution)

    def add(self, later: Applied) -> None:
        """Take in what a later document (or page) did."""
        for coll, n in later.downloaded.items():
            self.wrote(coll, n)
        for coll, n in later.deleted.items():
            self.deleted[coll] = self.deleted.get(coll, 0) + n
        self.resolutions += later.resolutions
        self.set_aside += later.set_aside
        self.agreed += later.agreed


@attrs.define
class Tally:
    """What one phase of a sync did, recorded as it goes.

    Each phase starts its own, returns it, and the engine folds the tallies of
    a sync into its :class:`SyncReport`; no phase reads another's.
    """

    downloaded: dict[str, int] = attrs.field(factory=dict)
    deleted: dict[str, int] = attrs.field(factory=dict)
    uploaded: dict[str, int] = attrs.field(factory=dict)
    uploaded_deletes: dict[str, int] = attrs.field(factory=dict)
    conflicts: list[Resolution] = attrs.field(factory=list)
    #: rows the upload could not send (they stay dirty): the last pass's
    rejected: list[RowError] = attrs.field(factory=list)
    #: remote documents that could not be applied (kept aside, retried each sync)
    set_aside: list[RowError] = attrs.field(factory=list)
    #: collections downloaded again because the store purged tombstones this device missed
    recovered: list[str] = attrs.field(factory=list)
    #: writes the remote's rules refused: set aside with their reason (``denied.py``)
    denied: list[RowError] = attrs.field(factory=list)

    def total(self) -> int:
        """Rows moved either way: downloaded, deleted, uploaded, deletes uploaded."""
        counters = (self.downloaded, self.deleted, self.uploaded, self.uploaded_deletes)
        return sum(sum(c.values()) for c in counters)

    @staticmethod
    def bump(counter: dict[str, int], collection: str, n: int = 1) -> None:
        if n:
            counter[collection] = counter.get(collection, 0) + n

    def fold(self, later: Tally) -> None:
        """Add what a later phase did."""
        for mine, theirs in (
            (self.downloaded, later.downloaded),
            (self.deleted, later.deleted),
            (self.uploaded, later.uploaded),
            (self.uploaded_deletes, later.uploaded_deletes),
        ):
            for coll, n in theirs.items():
                self.bump(mine, coll, n)
        self.conflicts += later.conflicts
        self.rejected += later.rejected
        aside = {(e.collection, e.id) for e in later.set_aside}
        self.set_aside = [e for e in self.set_aside if (e.collection, e.id) not in aside]
        self.set_aside += later.set_aside
        self.recovered += [c for c in later.recovered if c not in self.recovered]
        self.denied += later.denied

    def take(self, applied: Applied) -> None:
        """Add what applying remote documents did (once it committed)."""
        for coll, n in applied.downloaded.items():
            self.bump(self.downloaded, coll, n)
        for coll, n in applied.deleted.items():
            self.bump(self.deleted, coll, n)
        self.conflicts += applied.resolutions
        self.set_aside += applied.set_aside

    def report(self, **sync: Any) -> SyncReport:
        """The :class:`SyncReport` of a sync whose phases folded into this tally;
        ``sync`` gives the rest of its fields (times, usage, snapshot, purge)."""
        return SyncReport(
            downloaded=dict(self.downloaded),
            deleted=dict(self.deleted),
            uploaded=dict(self.uploaded),
            uploaded_deletes=dict(self.uploaded_deletes),
            conflicts=tuple(self.conflicts),
            rejected=tuple(self.rejected),
            set_aside=tuple(self.set_aside),
            recovered=tuple(self.recovered),
            denied=tuple(self.denied),
            **sync,
        )


@attrs.frozen
class SyncReport:
    """The outcome of ``Replicator.sync()``.

    ``idle`` is true when the Devices check found no other device's upload and
    there was nothing to upload: such a sync costs one remote read.
    """

    installation_id: str
    started_at: _dt.datetime
    finished_at: _dt.datetime
    idle: bool
    downloaded: Mapping[str, int]
    deleted: Mapping[str, int]
    uploaded: Mapping[str, int]
    uploaded_deletes: Mapping[str, int]
    conflicts: tuple[Resolution, ...]
    rejected: tuple[RowError, ...]
    usage: Usage
    registered: bool
    snapshot: str | None = None
    restored: str | None = None
    #: remote documents this device could not apply (a parent that never came, a
    #: malformed value): set aside, retried at every sync, never blocking one
    set_aside: tuple[RowError, ...] = ()
    #: why the snapshot phase could not publish (the sync itself succeeded), if it failed
    snapshot_error: Exception | None = None
    #: collections downloaded again from the start: this device was offline longer than
    #: the tombstone retention (see ``sync/retention.py``); nothing of its own was lost
    recovered: tuple[str, ...] = ()
    #: remote tombstones this sync purged, per collection
    purged: Mapping[str, int] = attrs.field(factory=dict)
    #: why purging old tombstones failed (the sync itself succeeded; retried next sync)
    purge_error: Exception | None = None
    #: upload-only rows the ingest service accepted in bundles, per collection
    bundled: Mapping[str, int] = attrs.field(factory=dict)
    #: upload-only rows it refused (``Replicator.refused`` tells why), per collection
    refused: Mapping[str, int] = attrs.field(factory=dict)
    #: bundles the service rejected whole (why); their rows go in the next sync's bundles
    bundles_rejected: tuple[str, ...] = ()
    #: bundles sent that the service has not decided on yet
    bundles_waiting: int = 0
    #: writes the remote's security rules refused in this sync (``error`` an
    #: ``AccessDeniedError`` with the store's reason): set aside, kept locally as the
    #: app wrote them, not sent again until changed or retried; every other write went
    #: on (``Replicator.denied_rows`` lists all the rows set aside, of earlier syncs too)
    denied: tuple[RowError, ...] = ()

    @property
    def denied_counts(self) -> dict[str, int]:
        """Writes refused in this sync, per collection."""
        out: dict[str, int] = {}
        for e in self.denied:
            out[e.collection] = out.get(e.collection, 0) + 1
        return out

    @property
    def total_downloaded(self) -> int:
        return sum(self.downloaded.values()) + sum(self.deleted.values())

    @property
    def total_uploaded(self) -> int:
        return sum(self.uploaded.values()) + sum(self.uploaded_deletes.values())

    def summary(self) -> str:
        """One line of English, e.g. for logs and the CLI: "downloaded 3 notes;
        uploaded 2 comments and 1 note; 4 remote reads and 2 writes"."""
        parts = []
        if self.restored:
            parts.append(f"restored snapshot {self.restored}")
        moved = [
            (verb, counts)
            for verb, counts in (
                ("downloaded", self.downloaded),
                ("deleted", self.deleted),
                ("uploaded", self.uploaded),
                ("uploaded the deletion of", self.uploaded_deletes),
            )
            if any(counts.values())
        ]
        if any(self.bundled.values()):
            moved.append(("bundled", self.bundled))
        if self.idle:
            parts.append("idle: nothing new")
        elif not moved:
            parts.append("nothing to download or upload")
        parts += [f"{verb} {counted(counts)}" for verb, counts in moved]
        if self.conflicts:
            outcomes: dict[str, int] = {}
            for c in self.conflicts:
                outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
            kinds = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
            parts.append(f"{_plural(len(self.conflicts), 'conflict')} resolved ({kinds})")
        if self.rejected:
            parts.append(f"{_plural(len(self.rejected), 'row')} rejected")
        if self.set_aside:
            parts.append(f"{_plural(len(self.set_aside), 'remote document')} set aside")
        if self.denied:
            parts.append(f"the rules refused {counted(self.denied_counts)} (set aside)")
        if any(self.refused.values()):
            parts.append(f"the ingest service refused {counted(self.refused)}")
        if self.bundles_rejected:
            parts.append(f"{_plural(len(self.bundles_rejected), 'bundle')} rejected")
        if self.bundles_waiting:
            parts.append(f"{_plural(self.bundles_waiting, 'bundle')} awaiting the service")
        if self.recovered:
            parts.append(
                "offline longer than the tombstone retention: downloaded "
                + _and(list(self.recovered))
                + " again"
            )
        if self.purged:
            parts.append(f"purged old tombstones of {counted(self.purged)}")
        if self.purge_error is not None:
            parts.append(f"old tombstones not purged: {type(self.purge_error).__name__}")
        parts.append(
            f"{_plural(self.usage.reads, 'remote read')} and {_plural(self.usage.writes, 'write')}"
        )
        if self.snapshot:
            parts.append(f"published snapshot {self.snapshot}")
        if self.snapshot_error is not None:
            parts.append(f"no snapshot: {type(self.snapshot_error).__name__}")
        return "; ".join(parts)


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _plural(n: int, noun: str) -> str:
    """``3 notes``, ``1 note``, ``2 content_status rows``: English for a plain word (a
    table named in the plural, ``households``, kept as it is), "rows" after a table
    name that is not one."""
    if not noun.replace(" ", "").isalpha() or not noun.islower():
        return f"{n:,} {noun} {'row' if n == 1 else 'rows'}"
    if noun.endswith("s") and not noun.endswith(("ss", "us", "is")):
        # a table named in the plural already (``households``)
        return f"1 {noun[:-1]}" if n == 1 else f"{n:,} {noun}"
    if n == 1:
        return f"1 {noun}"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return f"{n:,} {noun}es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return f"{n:,} {noun[:-1]}ies"
    return f"{n:,} {noun}s"


def counted(counts: Mapping[str, int]) -> str:
    """``2 comments and 1 note``: rows per table in English, the largest count first
    (ties by table name), tables with none left out. Every summary counts rows so."""
    items = sorted(((n, c) for c, n in counts.items() if n), key=lambda i: (-i[0], i[1]))
    return _and([_plural(n, c) for n, c in items])

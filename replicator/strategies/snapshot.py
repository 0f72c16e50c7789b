"""When to publish a snapshot: pure decisions over watermark vectors.

A watermark vector maps each collection to its ``downloadedTill`` cursor;
cursors of one collection compare as strings in the store's change order.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

from ..errors import ConfigurationError


def dominates(mine: Mapping[str, str], theirs: Mapping[str, str]) -> bool:
    """True if ``mine`` is at or past ``theirs`` everywhere and past it somewhere."""
    ahead = False
    for collection in set(mine) | set(theirs):
        a, b = mine.get(collection) or "", theirs.get(collection) or ""
        if a < b:
            return False
        ahead = ahead or a > b
    return ahead


@attrs.frozen
class SnapshotDecision:
    """What the strategy is told after a sync."""

    watermarks: Mapping[str, str]
    manifest_watermarks: Mapping[str, str] | None  # None: no snapshot yet
    manifest_created: _dt.datetime | None
    dirty: int
    now: _dt.datetime
    #: rows this device downloaded or uploaded since the current manifest appeared
    changes: int = 0


@runtime_checkable
class SnapshotStrategy(Protocol):
    """Decides, after each sync that leaves nothing unsynced, whether to publish.

    Optional attributes: ``keep``, how many snapshots stay in the blob store
    (default 3), and ``publishes``; ``False`` says the strategy never publishes,
    so the engine skips the work before asking. The engine never publishes
    while rows are unsynced, whatever ``should_publish`` answers.
    """

    def should_publish(self, decision: SnapshotDecision) -> bool:
        """Whether to publish a snapshot now, given what ``decision`` says of this
        device's data and of the current snapshot."""
        ...


def checked(strategy: object) -> SnapshotStrategy:
    """``strategy`` if it is one, else a ``ConfigurationError`` naming what is missing."""
    if not isinstance(strategy, SnapshotStrategy):
        raise ConfigurationError(
            f"a snapshot strategy needs should_publish(decision), got {strategy!r}",
            hint="pass BigBrother(), Always(), Never() or an object with should_publish",
        )
    keep = getattr(strategy, "keep", 3)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigurationError(f"a snapshot strategy's keep must be 1 or more, got {keep!r}")
    return strategy


def snapshots_kept(strategy: SnapshotStrategy) -> int:
    return int(getattr(strategy, "keep", 3))


def ever_publishes(strategy: SnapshotStrategy) -> bool:
    return bool(getattr(strategy, "publishes", True))


@attrs.frozen
class BigBrother:
    """Publish only from the device with the freshest data (the default).

    After a sync that leaves no dirty rows, a device publishes when its
    watermark vector strictly dominates the current manifest's, and, if set,
    the last snapshot is at least ``min_interval`` old and this device moved at
    least ``min_changes`` rows since it appeared. ``keep`` snapshots are kept in
    the blob store.
    """

    min_interval: _dt.timedelta | None = None
    min_changes: int = 0
    keep: int = 3
    name: str = "big-brother"

    def should_publish(self, d: SnapshotDecision) -> bool:
        if d.dirty:
            return False
        if d.manifest_watermarks is None:
            return bool(d.watermarks)
        if not dominates(d.watermarks, d.manifest_watermarks):
            return False
        if d.changes < self.min_changes:
            return False
        if self.min_interval is not None and d.manifest_created is not None:
            return d.now - d.manifest_created >= self.min_interval
        return True


@attrs.frozen
class Always:
    """Publish after every sync that leaves no dirty rows, unless the manifest is newer."""

    keep: int = 3
    name: str = "always"

    def should_publish(self, d: SnapshotDecision) -> bool:
        if d.dirty:
            return False
        return d.manifest_watermarks is None or not dominates(d.manifest_watermarks, d.watermarks)


@attrs.frozen
class Never:
    """Never publish (restores still work from snapshots other devices publish)."""

    keep: int = 3
    name: str = "never"
    publishes: bool = False  # lets the engine skip the pre-snapshot work entirely

    def should_publish(self, d: SnapshotDecision) -> bool:
        return False

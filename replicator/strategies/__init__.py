"""Policies the engine consults: conflict resolution (and snapshot timing)."""

from .conflict import (
    ClientWins,
    ConflictStrategy,
    FieldConflict,
    FieldMerge,
    LastWriterWins,
    PerCollection,
    ServerWins,
    TimestampedMaps,
    best_score,
    map_last_writer,
    map_max,
    maximum,
    minimum,
    prefer_later,
    prefer_local,
    prefer_remote,
    set_union,
)
from .snapshot import SnapshotDecision, SnapshotStrategy

__all__ = [
    "ClientWins",
    "ConflictStrategy",
    "FieldConflict",
    "FieldMerge",
    "LastWriterWins",
    "PerCollection",
    "ServerWins",
    "SnapshotDecision",
    "SnapshotStrategy",
    "TimestampedMaps",
    "best_score",
    "map_last_writer",
    "map_max",
    "maximum",
    "minimum",
    "prefer_later",
    "prefer_local",
    "prefer_remote",
    "set_union",
]

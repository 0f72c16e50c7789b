"""Policies the engine consults: conflict resolution (and snapshot timing)."""

from .conflict import (
    ClientWins,
    FieldConflict,
    FieldMerge,
    LastWriterWins,
    PerCollection,
    ServerWins,
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

__all__ = [
    "ClientWins",
    "FieldConflict",
    "FieldMerge",
    "LastWriterWins",
    "PerCollection",
    "ServerWins",
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

"""Conflict strategies: pure functions of ``(collection, local, remote, base)``.

The engine calls a strategy when a remote change arrives for a row that is
dirty locally. ``local`` and ``remote`` are the two versions of the row
(column name → SQLite value, sync columns ``updatedOn``/``updatedBy``
included), ``base`` the last version both sides agreed on, or ``None`` when the
row was created on both sides or this device never saw it. A strategy returns
the row to keep (a mapping; missing columns keep the local value). It never
touches a store or the database, so it can be tested on plain dicts.

The engine compares the result with both sides: equal to the remote means the
remote version is applied and the row is clean; equal to the local means the
local version is uploaded over the remote; anything else is a merge, written
locally and uploaded. Every resolution lands in ``SyncReport.conflicts``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any

import attrs

Row = Mapping[str, Any]


def _parse_time(value: Any) -> _dt.datetime | None:
    if isinstance(value, _dt.datetime):
        return (
            value.replace(tzinfo=None)
            if value.tzinfo is None
            else value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        )
    if isinstance(value, str) and value:
        text = value.replace("T", " ").rstrip("Z")
        try:
            return _dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


@attrs.frozen
class LastWriterWins:
    """The version with the later ``updatedOn`` wins, whole-row (the default).

    Ties are broken by ``updatedBy`` (the larger installation id wins), then by
    the values themselves, so every device picks the same winner. A timestamp
    more than ``max_clock_skew`` ahead of ``clock()`` comes from a device whose
    clock is wrong; it ranks as the oldest possible time instead of winning
    every conflict for as long as the clock stays wrong.
    """

    max_clock_skew: _dt.timedelta = _dt.timedelta(hours=1)
    clock: Callable[[], _dt.datetime] = _utcnow
    name: str = "last-writer-wins"

    def rank(self, row: Row) -> tuple[Any, ...]:
        when = _parse_time(row.get("updatedOn"))
        if when is None or when > self.clock() + self.max_clock_skew:
            when = _dt.datetime.min
        return (when, str(row.get("updatedBy") or ""), repr(sorted(row.items(), key=str)))

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        return local if self.rank(local) > self.rank(remote) else remote

    __call__ = resolve


@attrs.frozen
class ServerWins:
    """The remote version always wins; local edits to a conflicting row are dropped."""

    name: str = "server-wins"

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        return remote

    __call__ = resolve


@attrs.frozen
class ClientWins:
    """This device's version always wins and is uploaded over the remote one."""

    name: str = "client-wins"

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        return local

    __call__ = resolve

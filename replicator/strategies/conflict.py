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
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import ConfigurationError

Row = Mapping[str, Any]
#: a strategy as a plain function of ``(collection, local, remote, base)``
Resolver = Callable[[str, Row, Row, "Row | None"], Row]


@runtime_checkable
class ConflictStrategy(Protocol):
    """What the engine calls to resolve a conflict (see the module's docstring).

    A plain function with ``resolve``'s signature (a :data:`Resolver`) is
    accepted wherever a strategy is. An optional ``name`` attribute names the
    strategy in each ``Resolution``.
    """

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        """The row to keep, given this device's ``local`` row, the ``remote`` one and
        ``base``, the version both last agreed on (``None`` when there is none). Return
        ``local`` or ``remote`` to keep that side, anything else to merge. Pure: it must
        give every device the same answer from the same rows."""
        ...


def resolver(strategy: ConflictStrategy | Resolver) -> Resolver:
    """The function that resolves under ``strategy``: its ``resolve``, or the strategy
    itself when it is a function. Anything else is a ``ConfigurationError``."""
    if isinstance(strategy, ConflictStrategy):
        return strategy.resolve
    if callable(strategy):
        return strategy
    raise ConfigurationError(
        f"a conflict strategy needs resolve(collection, local, remote, base), got {strategy!r}",
        hint="pass LastWriterWins(), FieldMerge(...), a strategy object, or a function",
    )


def strategy_name(strategy: ConflictStrategy | Resolver) -> str:
    """How a ``Resolution`` names the strategy: its ``name``, else its type's or function's."""
    name = getattr(strategy, "name", None)
    if isinstance(name, str):
        return name
    return str(getattr(strategy, "__name__", type(strategy).__name__))


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


_store_now: ContextVar[Callable[[], _dt.datetime] | None] = ContextVar(
    "replicator_store_now", default=None
)


def _utcnow() -> _dt.datetime:
    """The store's time as the resolving device knows it (naive UTC).

    While the engine resolves a conflict it provides the store's time (the
    device clock corrected by its measured offset), so a device whose own clock
    is wrong still judges "in the future" by the store's time.
    """
    now = _store_now.get()
    if now is not None:
        return now()
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


@contextmanager
def store_clock(now: Callable[[], _dt.datetime]) -> Iterator[None]:
    """Run strategies with ``_utcnow()`` answering ``now()`` (engine use)."""
    token = _store_now.set(now)
    try:
        yield
    finally:
        _store_now.reset(token)


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


# -- field-level merges ---------------------------------------------------------

#: a field rule decides one column that both sides changed:
#: ``rule(local_value, remote_value, base_value, conflict)`` → value to keep
FieldRule = Callable[[Any, Any, Any, "FieldConflict"], Any]

_SYNC_COLUMNS = ("updatedOn", "updatedBy", "createdOn", "id")


@attrs.frozen
class FieldConflict:
    """What a field rule may look at besides the three values."""

    collection: str
    column: str
    local: Row
    remote: Row
    base: Row | None
    later: str  # "local" or "remote": whose row LastWriterWins would pick


def prefer_later(local: Any, remote: Any, base: Any, c: FieldConflict) -> Any:
    """The value of the row written later (LastWriterWins' order)."""
    return local if c.later == "local" else remote


def prefer_local(local: Any, remote: Any, base: Any, c: FieldConflict) -> Any:
    return local


def prefer_remote(local: Any, remote: Any, base: Any, c: FieldConflict) -> Any:
    return remote


def maximum(local: Any, remote: Any, base: Any = None, c: FieldConflict | None = None) -> Any:
    """The larger value (``None`` loses): counters that only grow, statuses that only advance."""
    if local is None or remote is None:
        return remote if local is None else local
    return max(local, remote)


def minimum(local: Any, remote: Any, base: Any = None, c: FieldConflict | None = None) -> Any:
    if local is None or remote is None:
        return remote if local is None else local
    return min(local, remote)


@attrs.frozen
class FieldMerge:
    """Three-way merge per column: edits to different fields on two devices both survive.

    For each column: if only one side changed it since ``base``, that side's
    value is kept; if both changed it (or there is no base), the column's rule
    in ``fields`` decides, else ``default`` (the later writer's value). Rules
    for map and JSON columns are in this module too (``map_max``,
    ``map_last_writer``, ``set_union``, ``best_score``).
    """

    fields: Mapping[str, FieldRule] = attrs.field(factory=dict)
    default: FieldRule = prefer_later
    lww: LastWriterWins = attrs.field(factory=LastWriterWins)
    name: str = "field-merge"

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        later = "local" if self.lww.rank(local) > self.lww.rank(remote) else "remote"
        out: dict[str, Any] = {}
        for column in sorted(set(local) | set(remote)):
            lv, rv = local.get(column), remote.get(column)
            if column in _SYNC_COLUMNS or lv == rv:
                out[column] = (local if later == "local" else remote).get(column)
                continue
            if base is not None and column in base:
                bv = base[column]
                if lv == bv:
                    out[column] = rv
                    continue
                if rv == bv:
                    out[column] = lv
                    continue
            else:
                bv = None
            rule = self.fields.get(column, self.default)
            out[column] = rule(
                lv, rv, bv, FieldConflict(collection, column, local, remote, base, later)
            )
        return out

    __call__ = resolve


@attrs.frozen
class TimestampedMaps:
    """Group aggregates (a course's counts and percentages): a map of values and a map
    of when each was computed (``agg`` and ``agg_last_updated``), merged key by key,
    the later computation winning. Two devices that update the same row concurrently each keep the
    metrics they computed last, so no metric goes back to an older value,
    whichever device syncs last. A tie keeps the larger value. Other columns
    follow ``others`` (by default :class:`FieldMerge`).

    Timestamps are compared as ISO-8601 text or numbers; a metric without one is
    older than any metric with one.
    """

    values: str = "agg"
    times: str = "agg_last_updated"
    others: ConflictStrategy | Resolver = attrs.field(factory=lambda: FieldMerge())
    name: str = "timestamped-maps"

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        out = dict(resolver(self.others)(collection, local, remote, base))
        lv, rv = _load(local.get(self.values)) or {}, _load(remote.get(self.values)) or {}
        lt, rt = _load(local.get(self.times)) or {}, _load(remote.get(self.times)) or {}
        values: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for key in sorted(set(lv) | set(rv) | set(lt) | set(rt)):
            mine, theirs = (lt.get(key), lv.get(key)), (rt.get(key), rv.get(key))
            if key not in lv and key not in lt:
                chosen = theirs
            elif key not in rv and key not in rt:
                chosen = mine
            else:
                chosen = max(mine, theirs, key=_when_then_value)
            times[key], values[key] = chosen
        form = _form(local.get(self.values), remote.get(self.values))
        out[self.values] = _dump_like(form, values)
        out[self.times] = _dump_like(_form(local.get(self.times), remote.get(self.times)), times)
        return out

    __call__ = resolve


def _when_then_value(entry: tuple[Any, Any]) -> tuple[int, str, float, str]:
    when, value = entry
    when_key = (
        (0, "")
        if when is None
        else (1, f"{when:020.6f}" if isinstance(when, int | float) else str(when))
    )
    number = (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else float("-inf")
    )
    return (*when_key, number, json.dumps(value, sort_keys=True))


@attrs.frozen
class PerCollection:
    """A strategy per collection, and one for the rest (``LastWriterWins()`` unless given)."""

    strategies: Mapping[str, ConflictStrategy | Resolver]
    default: ConflictStrategy | Resolver = attrs.field(factory=LastWriterWins)
    name: str = "per-collection"

    def __attrs_post_init__(self) -> None:
        for strategy in (*self.strategies.values(), self.default):
            resolver(strategy)  # a wrong one fails here, not at the first conflict

    def resolve(self, collection: str, local: Row, remote: Row, base: Row | None) -> Row:
        strategy = self.strategies.get(collection, self.default)
        return resolver(strategy)(collection, local, remote, base)

    __call__ = resolve


# -- map and JSON helpers ----------------------------------------------------------
#
# Values of JSON columns arrive as SQLite holds them: JSON text (what playhouse's
# JSONField and most apps store), or already-decoded maps and lists from stores
# that keep maps natively. The helpers accept both and answer in the form the
# local value had, with keys sorted, so every device produces the same bytes.


def _load(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return json.loads(value) if value else None
    return value


def _form(local: Any, remote: Any) -> Any:
    return local if local is not None else remote


def _dump_like(template: Any, value: Any) -> Any:
    if isinstance(template, str | bytes) or template is None:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _three_maps(
    local: Any, remote: Any, base: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (_load(local) or {}, _load(remote) or {}, _load(base) or {})


def map_max(local: Any, remote: Any, base: Any, c: FieldConflict | None = None) -> Any:
    """Per-key maximum: a status map where 2 (completed) beats 1 (in progress) beats 0.

    A learner's ``content_status`` map merges with this: progress never goes backwards,
    whichever device recorded it.
    """
    lm, rm, _ = _three_maps(local, remote, base)
    merged = {k: maximum(lm.get(k), rm.get(k), None, c) for k in sorted(set(lm) | set(rm))}
    return _dump_like(_form(local, remote), merged)


def map_last_writer(local: Any, remote: Any, base: Any, c: FieldConflict | None = None) -> Any:
    """Per-key three-way merge: a key changed on one side only keeps that change;
    a key changed on both takes the later row's value (local on a tie without context).
    A key deleted on one side and untouched on the other is deleted."""
    lm, rm, bm = _three_maps(local, remote, base)
    later_local = c is None or c.later == "local"
    merged: dict[str, Any] = {}
    missing = object()
    for k in sorted(set(lm) | set(rm) | set(bm)):
        lv, rv, bv = lm.get(k, missing), rm.get(k, missing), bm.get(k, missing)
        if lv == rv:
            value = lv
        elif lv == bv:
            value = rv
        elif rv == bv:
            value = lv
        else:
            value = lv if later_local else rv
        if value is not missing:
            merged[k] = value
    return _dump_like(_form(local, remote), merged)


def set_union(local: Any, remote: Any, base: Any, c: FieldConflict | None = None) -> Any:
    """Union of two lists taken as sets (sorted, so both devices agree): tags, attempt ids."""
    lv, rv = _load(local) or [], _load(remote) or []
    merged = sorted({json.dumps(x, sort_keys=True) for x in [*lv, *rv]})
    return _dump_like(_form(local, remote), [json.loads(x) for x in merged])


def _score_key(entry: Any) -> tuple[float, float, str]:
    if not isinstance(entry, Mapping):
        return (float("-inf"), 0.0, json.dumps(entry, sort_keys=True))
    score = entry.get("score") or 0
    max_score = entry.get("max_score") or entry.get("maxScore") or 0
    ratio = score / max_score if max_score else 0.0
    return (float(score), ratio, json.dumps(entry, sort_keys=True))


def best_score(local: Any, remote: Any, base: Any, c: FieldConflict | None = None) -> Any:
    """Keep the best attempt: an entry ``{"score": s, "max_score": m, ...}`` with the
    higher score (then the higher ratio) wins, whole, so a score never travels
    without its max_score. Works on one entry or on a map of entries per key."""
    lv, rv = _load(local), _load(remote)
    if (
        isinstance(lv, Mapping)
        and "score" not in lv
        and isinstance(rv, Mapping)
        and "score" not in rv
    ):
        merged = {}
        for k in sorted(set(lv) | set(rv)):
            candidates = [x for x in (lv.get(k), rv.get(k)) if x is not None]
            merged[k] = max(candidates, key=_score_key)
        return _dump_like(_form(local, remote), merged)
    candidates = [x for x in (lv, rv) if x is not None]
    return (
        _dump_like(_form(local, remote), max(candidates, key=_score_key)) if candidates else local
    )

"""Field merges and map helpers: unit examples and algebraic properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator import FieldMerge, LastWriterWins, PerCollection, ServerWins
from replicator.strategies import (
    best_score,
    map_last_writer,
    map_max,
    maximum,
    prefer_local,
    set_union,
)

EARLY, LATE = "2026-01-01 10:00:00", "2026-01-01 11:00:00"


def row(when, by, **data):
    return {"id": "x", "updatedOn": when, "updatedBy": by, **data}


def test_field_merge_keeps_edits_to_different_fields():
    base = row(EARLY, "a", title="t", body="b")
    local = row(LATE, "a", title="new title", body="b")
    remote = row(EARLY, "b", title="t", body="new body")
    out = FieldMerge()("note", local, remote, base)
    assert (out["title"], out["body"]) == ("new title", "new body")


def test_field_merge_same_field_uses_its_rule_then_the_default():
    base = row(EARLY, "a", views=3, title="t")
    local = row(EARLY, "a", views=5, title="mine")
    remote = row(LATE, "b", views=4, title="theirs")
    out = FieldMerge(fields={"views": maximum})("note", local, remote, base)
    assert out["views"] == 5  # the rule
    assert out["title"] == "theirs"  # default: the later row's value
    out = FieldMerge(default=prefer_local)("note", local, remote, base)
    assert out["title"] == "mine"


def test_field_merge_without_base_treats_every_difference_as_conflict():
    local = row(LATE, "a", title="l", n=1)
    remote = row(EARLY, "b", title="r", n=1)
    assert FieldMerge()("note", local, remote, None)["title"] == "l"


def test_per_collection_routes_and_defaults():
    strategy = PerCollection({"progress": ServerWins()}, default=LastWriterWins())
    local, remote = row(LATE, "a", v=1), row(EARLY, "b", v=2)
    assert strategy("progress", local, remote, None) is remote
    assert strategy("note", local, remote, None) is local
    custom = PerCollection({}, default=lambda c, lo, re, ba: {**lo, "v": lo["v"] + re["v"]})
    assert custom("any", local, remote, None)["v"] == 3


def test_map_max_is_seed_003_progress():
    phone = json.dumps({"do_1": 2, "do_2": 1})
    tablet = json.dumps({"do_2": 2, "do_3": 1})
    merged = json.loads(map_max(phone, tablet, None))
    assert merged == {"do_1": 2, "do_2": 2, "do_3": 1}


def test_map_last_writer_three_way():
    base = {"a": 1, "b": 1, "c": 1}
    local = {"a": 2, "b": 1}  # changed a, deleted c
    remote = {"a": 1, "b": 3, "c": 1, "d": 4}  # changed b, added d
    assert map_last_writer(local, remote, base) == {"a": 2, "b": 3, "d": 4}


def test_best_score_keeps_score_with_its_max():
    a = {"score": 3, "max_score": 5, "attempt": "a"}
    b = {"score": 4, "max_score": 10, "attempt": "b"}
    assert best_score(a, b, None) == b
    per_content = best_score({"q1": a}, {"q1": {"score": 1, "max_score": 5}, "q2": b}, None)
    assert per_content == {"q1": a, "q2": b}


statuses = st.dictionaries(st.sampled_from(["c1", "c2", "c3", "c4"]), st.integers(0, 2))
scores = st.fixed_dictionaries({"score": st.integers(0, 10), "max_score": st.integers(1, 10)})
lists = st.lists(st.integers(0, 5) | st.text(max_size=2), max_size=5)


@given(statuses, statuses)
def test_map_max_commutative_idempotent_monotone(a, b):
    ab, ba = map_max(a, b, None), map_max(b, a, None)
    assert ab == ba
    assert map_max(a, a, None) == a
    assert map_max(ab, b, None) == ab
    for k, v in a.items():
        assert ab[k] >= v


@given(statuses, statuses, statuses)
def test_map_max_associative(a, b, c):
    assert map_max(map_max(a, b, None), c, None) == map_max(a, map_max(b, c, None), None)


@given(lists, lists)
def test_set_union_commutative_idempotent(a, b):
    assert set_union(a, b, None) == set_union(b, a, None)
    u = set_union(a, b, None)
    assert set_union(u, u, None) == u
    assert set(map(json.dumps, a)) <= set(map(json.dumps, u))


@given(scores, scores)
def test_best_score_commutative(a, b):
    assert best_score(a, b, None) == best_score(b, a, None)
    assert best_score(a, b, None)["score"] == max(a["score"], b["score"])


@given(statuses, statuses, statuses)
def test_map_last_writer_keeps_one_sided_changes(base, local, remote):
    merged = map_last_writer(local, remote, base)
    for k in set(local) | set(remote) | set(base):
        if local.get(k) == base.get(k) and k in remote:
            assert merged.get(k) == remote[k]
        if remote.get(k) == base.get(k) and k in local:
            assert merged.get(k) == local[k]


@given(
    st.fixed_dictionaries({"title": st.text(max_size=3), "body": st.text(max_size=3)}),
    st.fixed_dictionaries({"title": st.text(max_size=3), "body": st.text(max_size=3)}),
    st.fixed_dictionaries({"title": st.text(max_size=3), "body": st.text(max_size=3)}),
    st.sampled_from([EARLY, LATE]),
    st.sampled_from([EARLY, LATE]),
)
def test_field_merge_is_deterministic_and_symmetric(base, x, y, tx, ty):
    fm = FieldMerge()
    left = fm("n", row(tx, "a", **x), row(ty, "b", **y), row(EARLY, "a", **base))
    right = fm("n", row(ty, "b", **y), row(tx, "a", **x), row(EARLY, "a", **base))
    assert {k: left[k] for k in ("title", "body")} == {k: right[k] for k in ("title", "body")}


def test_strategy_results_are_plain_mappings_the_engine_accepts():
    out = FieldMerge(fields={"tags": set_union, "progress": map_max})(
        "c",
        row(LATE, "a", tags='["x"]', progress='{"a":1}'),
        row(EARLY, "b", tags='["y"]', progress='{"a":2}'),
        row(EARLY, "a", tags="[]", progress="{}"),
    )
    assert json.loads(out["tags"]) == ["x", "y"]
    assert json.loads(out["progress"]) == {"a": 2}
    assert prefer_local(1, 2, 0, None) == 1


def test_a_wrong_strategy_is_refused_when_the_replicator_is_made(tmp_path):
    import peewee

    from replicator import ConfigurationError, EmbeddedRemote, PerCollection, Replicator
    from tests.models import MODELS

    def make(**kw):
        db = peewee.SqliteDatabase(str(tmp_path / "a.db"))
        return Replicator(db, MODELS, EmbeddedRemote(tmp_path / "r.db"), **kw)

    with pytest.raises(ConfigurationError, match="resolve"):
        make(conflict_strategy=42)
    with pytest.raises(ConfigurationError, match="should_publish"):
        make(snapshot_strategy=object())

    class KeepsNone:
        keep = 0

        def should_publish(self, decision):
            return True

    with pytest.raises(ConfigurationError, match="keep"):
        make(snapshot_strategy=KeepsNone())
    with pytest.raises(ConfigurationError, match="resolve"):
        PerCollection({"note": "server wins"})

    # a plain function is a strategy too, and names itself in the report
    def mine(collection, local, remote, base):
        return local

    assert make(conflict_strategy=mine).conflict_strategy is mine


# -- group aggregates: maps merged key by key, the later computation winning ------------


def _agg_row(agg, when, **extra):
    return {"agg": json.dumps(agg), "agg_last_updated": json.dumps(when), **extra}


def test_timestamped_maps_keep_each_metrics_latest_computation():
    from replicator.strategies import TimestampedMaps

    merge = TimestampedMaps()
    local = _agg_row(
        {"completedCount": 3, "enrolledCount": 5},
        {"completedCount": "2026-01-02T10:00:00", "enrolledCount": "2026-01-01T09:00:00"},
        updatedOn="2026-01-02 10:00:00",
    )
    remote = _agg_row(
        {"completedCount": 2, "enrolledCount": 6, "completionPercentage": 40},
        {
            "completedCount": "2026-01-01T12:00:00",
            "enrolledCount": "2026-01-03T08:00:00",
            "completionPercentage": "2026-01-03T08:00:00",
        },
        updatedOn="2026-01-03 08:00:00",
    )
    out = merge("activity_agg", local, remote, None)
    assert json.loads(out["agg"]) == {
        "completedCount": 3,  # local computed it later: the older 2 does not come back
        "completionPercentage": 40,
        "enrolledCount": 6,
    }
    assert json.loads(out["agg_last_updated"])["completedCount"] == "2026-01-02T10:00:00"
    # the same answer whichever side is local
    again = merge("activity_agg", remote, local, None)
    assert json.loads(again["agg"]) == json.loads(out["agg"])
    assert json.loads(again["agg_last_updated"]) == json.loads(out["agg_last_updated"])


def test_timestamped_maps_ties_keep_the_larger_value_and_untimed_metrics_lose():
    from replicator.strategies import TimestampedMaps

    merge = TimestampedMaps()
    local = _agg_row({"a": 1, "b": 9}, {"a": "t1"})
    remote = _agg_row({"a": 2, "b": 1}, {"a": "t1", "b": "t0"})
    out = merge("x", local, remote, None)
    assert json.loads(out["agg"]) == {"a": 2, "b": 1}  # b: a timed value beats an untimed one


@given(
    st.dictionaries(st.sampled_from("abcd"), st.tuples(st.integers(0, 5), st.integers(0, 9))),
    st.dictionaries(st.sampled_from("abcd"), st.tuples(st.integers(0, 5), st.integers(0, 9))),
)
def test_timestamped_maps_merge_is_symmetric_and_never_older(mine, theirs):
    from replicator.strategies import TimestampedMaps

    def row(entries):
        return _agg_row(
            {k: v for k, (_, v) in entries.items()},
            {k: f"2026-01-0{t}" for k, (t, _) in entries.items()},
        )

    merge = TimestampedMaps()
    one = merge("x", row(mine), row(theirs), None)
    two = merge("x", row(theirs), row(mine), None)
    assert json.loads(one["agg"]) == json.loads(two["agg"])
    when = json.loads(one["agg_last_updated"])
    for key in set(mine) | set(theirs):
        latest = max(t for side in (mine, theirs) if key in side for t in [side[key][0]])
        assert when[key] == f"2026-01-0{latest}"

"""Last-writer-wins and the one-sided strategies: who wins, the same way on every device."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from replicator import ClientWins, LastWriterWins, ServerWins

NOW = dt.datetime(2026, 1, 1, 12, 0, 0)


def row(when, by="dev-a", **data):
    return {"updatedOn": when, "updatedBy": by, **data}


def test_lww_later_wins_either_side():
    lww = LastWriterWins(clock=lambda: NOW)
    old, new = row("2026-01-01 10:00:00", title="old"), row("2026-01-01 11:00:00", title="new")
    assert lww("c", old, new, None) is new
    assert lww("c", new, old, None) is new


def test_lww_tie_is_broken_by_installation_id_the_same_way_everywhere():
    lww = LastWriterWins(clock=lambda: NOW)
    a, b = row("2026-01-01 10:00:00", "dev-a", v=1), row("2026-01-01 10:00:00", "dev-b", v=2)
    assert lww("c", a, b, None) is b
    assert lww("c", b, a, None) is b


def test_lww_far_future_clock_does_not_win():
    lww = LastWriterWins(clock=lambda: NOW, max_clock_skew=dt.timedelta(hours=1))
    skewed = row("2030-01-01 00:00:00", "dev-z", v="skewed")
    honest = row("2026-01-01 11:59:00", "dev-a", v="honest")
    assert lww("c", skewed, honest, None) is honest
    assert lww("c", honest, skewed, None) is honest


@given(
    st.lists(
        st.tuples(
            st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2026, 1, 1)), st.sampled_from("abc")
        ),
        min_size=2,
        max_size=2,
    ),
    st.integers(),
    st.integers(),
)
def test_lww_is_symmetric(stamps, v1, v2):
    lww = LastWriterWins(clock=lambda: NOW)
    x = row(stamps[0][0].isoformat(sep=" "), stamps[0][1], v=v1)
    y = row(stamps[1][0].isoformat(sep=" "), stamps[1][1], v=v2)
    assert lww("c", x, y, None) == lww("c", y, x, None)


def test_server_and_client_wins():
    local, remote = {"v": 1}, {"v": 2}
    assert ServerWins()("c", local, remote, None) is remote
    assert ClientWins()("c", local, remote, None) is local

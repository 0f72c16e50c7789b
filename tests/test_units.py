"""Unit tests of the pure pieces: strategies, codec, errors, report."""

from __future__ import annotations

import datetime as dt

import peewee
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator import (
    ClientWins,
    LastWriterWins,
    OfflineError,
    RemoteDataError,
    ReplicatorError,
    ServerWins,
)
from replicator.codec import check_value, decode_json, encode_json
from replicator.report import Resolution, SyncReport
from replicator.stores.base import Usage

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


@given(
    st.dictionaries(
        st.text(min_size=1),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text()
        | st.binary(),
    )
)
def test_json_codec_round_trips(data):
    assert decode_json(encode_json(data)) == data


def test_check_value_accepts_and_rejects():
    text, num, blob = peewee.TextField(), peewee.IntegerField(null=True), peewee.BlobField()
    for f, name in ((text, "title"), (num, "n"), (blob, "b")):
        f.column_name = name
    assert check_value("c", "i", text, "x") == "x"
    assert check_value("c", "i", num, None) is None
    assert check_value("c", "i", num, True) == 1
    assert check_value("c", "i", blob, b"\x00") == b"\x00"
    with pytest.raises(RemoteDataError, match="c/i"):
        check_value("c", "i", num, "seven")
    with pytest.raises(RemoteDataError, match="title is null"):
        check_value("c", "i", text, None)


def test_errors_say_what_to_do_and_keep_the_cause():
    cause = OSError("boom")
    err = OfflineError("cannot reach", orig=cause)
    assert isinstance(err, ReplicatorError) and err.retryable and err.orig is cause
    assert "sync again" in str(err)
    assert not RemoteDataError("c", "i", "bad").retryable


def test_report_summary_speaks_english():
    from replicator.report import counted

    assert counted({"comment": 2, "note": 1}) == "2 comments and 1 note"
    assert counted({"box": 2, "category": 3, "key": 2}) == "3 categories, 2 boxes and 2 keys"
    assert counted({"content_status": 2, "Tag": 1}) == "2 content_status rows and 1 Tag row"
    assert counted({"note": 1500}) == "1,500 notes"


def test_report_summary():
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    report = SyncReport(
        installation_id="x",
        started_at=t,
        finished_at=t,
        idle=False,
        downloaded={"note": 2},
        deleted={},
        uploaded={"comment": 1},
        uploaded_deletes={},
        conflicts=(Resolution("note", "1", "merged", {}, {}, None, {}, "field-merge"),),
        rejected=(),
        usage=Usage(reads=3, writes=2),
        registered=True,
    )
    text = report.summary()
    assert text == (
        "downloaded 2 notes; uploaded 1 comment; 1 conflict resolved (1 merged);"
        " 3 remote reads and 2 writes"
    )
    assert report.total_downloaded == 2 and report.total_uploaded == 1


def test_local_state_upgrades_an_older_device_table(tmp_path):
    from replicator.local import LocalState

    db = peewee.SqliteDatabase(str(tmp_path / "old.db"))
    db.execute_sql(
        "CREATE TABLE replicator_device (singleton INTEGER PRIMARY KEY, installation_id TEXT"
        " NOT NULL, name TEXT NOT NULL DEFAULT '', platform TEXT NOT NULL DEFAULT '',"
        " seen_position TEXT, last_upload TEXT, last_sync TEXT,"
        " registered INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute_sql(
        "INSERT INTO replicator_device (singleton, installation_id) VALUES (1, 'old-id')"
    )
    state = LocalState(db)
    assert state.installation_id == "old-id"
    state.set_device(last_snapshot="x", changes_since_snapshot=3)
    assert state.changes_since_snapshot == 3


def test_a_sync_folds_its_phases_tallies():
    from replicator.errors import RemoteDataError
    from replicator.report import RowError, Tally

    down, up = Tally(), Tally()
    down.bump(down.downloaded, "note", 3)
    down.set_aside.append(RowError("note", "x", RemoteDataError("note", "x", "old reason")))
    down.recovered.append("note")
    up.bump(up.uploaded, "note", 2)
    up.bump(up.downloaded, "note", 1)  # fetched to resolve a conflict
    up.set_aside.append(RowError("note", "x", RemoteDataError("note", "x", "new reason")))
    up.recovered.append("note")
    total = Tally()
    total.fold(down)
    total.fold(up)
    assert total.downloaded == {"note": 4} and total.uploaded == {"note": 2}
    assert total.total() == 6
    assert [e.error.reason for e in total.set_aside] == ["new reason"]  # once, as it stands
    assert total.recovered == ["note"]

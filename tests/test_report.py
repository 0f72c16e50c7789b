"""A sync's report: summaries in English, and the phases' tallies folded once."""

from __future__ import annotations

import datetime as dt

from replicator.report import Applied, Resolution, RowError, SyncReport, Tally
from replicator.stores.base import Usage


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


def test_a_sync_folds_its_phases_tallies():
    from replicator.errors import RemoteDataError

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


def test_what_applying_did_is_taken_whole_once_it_committed():
    from replicator.errors import RemoteDataError

    first, second = Applied(), Applied()
    first.wrote("note", 2)
    first.removed("comment")
    merged = Resolution("note", "a", "merged", {}, {}, None, {}, "field-merge")
    first.resolved(merged)
    second.wrote("note")
    second.set_aside.append(RowError("note", "b", RemoteDataError("note", "b", "bad")))
    first.add(second)
    tally = Tally()
    tally.take(first)
    assert tally.downloaded == {"note": 3} and tally.deleted == {"comment": 1}
    assert tally.conflicts == [merged]
    assert [e.id for e in tally.set_aside] == ["b"]

"""The sync's local statements never walk a whole table: their cost follows the changes.

Every SELECT, UPDATE and DELETE the engine runs during an idle sync, an upload of a few changes
and a download of a few changes (captured with sqlite3's trace callback) is
given to ``EXPLAIN QUERY PLAN``. A full scan of a synced table or of
replicator's bookkeeping, or a range over one whole collection of it, fails
the test; scans of a partial index (dirty rows, pending deletes) and of
single-row or per-collection tables are what O(changes) looks like.
"""

from __future__ import annotations

import re

from tests.models import Comment, Note

#: tables whose size does not grow with the data
SMALL = {"replicator_device", "replicator_control", "DownloadedTracker", "replicator_schema",
         "replicator_parked", "replicator_recovery",
         "replicator_denied",  # (writes the rules refused: what is wrong, not the data)
         "replicator_bundles"}  # (bundles in flight only: a settled one is deleted)  # fmt: skip
#: partial indexes: scanning them costs what is pending, not what is stored
PARTIAL = re.compile(r"USING (COVERING )?INDEX replicator_\w*(dirty|pending)\w*")


def _plans(device, action) -> list[tuple[str, str]]:
    conn = device.database.connection()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    out = []
    for sql in seen:
        if sql.lstrip().upper().startswith(("SELECT", "WITH", "DELETE", "UPDATE")):
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall():
                out.append((sql, row[3]))
    return out


def _walks(plan: str, sql: str = "") -> bool:
    if PARTIAL.search(plan):
        return False
    if plan.startswith("SEARCH") and sql.rstrip().upper().endswith("LIMIT 1"):
        return False  # an existence check: it stops at the first row the index finds
    found = re.match(r"(SCAN|SEARCH) (\w+)", plan)
    if not found or found[2] in SMALL or found[2].startswith("sqlite_"):
        return False
    if found[1] == "SCAN":
        return True
    # a SEARCH that pins nothing but the collection walks that whole collection
    return bool(re.search(r"\(collection=\?\)$", plan))


def test_no_sync_statement_walks_a_table(make_device):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        notes = [Note.create(title=f"n{i}") for i in range(300)]
        for note in notes[:100]:
            Comment.create(note=note, text="c")
    a.sync()
    b.sync()
    with a.bound():  # history: deletes acknowledged long ago
        Note.delete().where(Note.id.in_([n.id for n in notes[200:]])).execute()
    a.sync()
    b.sync()
    plans = _plans(a, a.sync)  # idle
    with a.bound():
        Note.update(title="edited").where(Note.id == notes[0].id).execute()
        Note.delete().where(Note.id == notes[1].id).execute()
    plans += _plans(a, a.sync)  # a small upload
    plans += _plans(b, b.sync)  # a small download
    walks = [(sql[:120], plan) for sql, plan in plans if _walks(plan, sql)]
    assert not walks, "statements that walk a table:\n" + "\n".join(map(str, walks))
    assert len(plans) > 10, "the trace saw too few statements to check anything"


def test_no_bundle_sync_statement_walks_a_table(tmp_path):
    """A collector whose 600 registrations went up long ago bundles 3 new ones without
    walking the table, the bundle tables or the refusals."""
    import peewee

    from replicator import (
        Bundles,
        DirectoryBlobStore,
        EmbeddedRemote,
        Ingestor,
        Replicator,
        StoreIngest,
    )
    from tests.campaign_models import MODELS, REFERENCE, Household

    remote = EmbeddedRemote(tmp_path / "remote.db")
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    db = peewee.SqliteDatabase(str(tmp_path / "c.db"))
    device = Replicator(
        db,
        MODELS,
        remote,
        bundles=Bundles(blobs, StoreIngest(remote), [Household], max_rows=200),
        download_only=REFERENCE,
    )
    ingestor = Ingestor(blobs, EmbeddedRemote(tmp_path / "remote.db"), MODELS)
    with device.bound():
        Household.insert_many([{"head": f"h{i}"} for i in range(600)]).execute()
    device.sync()
    ingestor.poll()
    device.sync()
    with device.bound():
        Household.insert_many([{"head": f"new {i}"} for i in range(3)]).execute()
    plans = _plans(device, device.sync)  # bundles the new rows
    ingestor.poll()
    plans += _plans(device, device.sync)  # settles them
    walks = [(sql[:120], plan) for sql, plan in plans if _walks(plan, sql)]
    assert not walks, "statements that walk a table:\n" + "\n".join(map(str, walks))
    assert any("replicator_bundle_rows" in sql for sql, _ in plans)


def test_the_status_pending_count_walks_no_table(make_device):
    """What a status badge reads after every sync and local write: pending rows only."""
    a = make_device("a")
    with a.bound():
        for i in range(300):
            Note.create(title=f"n{i}")
    a.sync()
    with a.bound():
        Note.create(title="new")
        Note.get().delete_instance()
    plans = _plans(a, a._board.refresh_pending)
    assert plans and a.status.pending == 2
    assert not [p for p in plans if _walks(p[1], p[0])], plans

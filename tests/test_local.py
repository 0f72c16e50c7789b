"""LocalState: replicator's own tables, brought up to date from an older layout."""

from __future__ import annotations

import peewee


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

"""The public API: everything exported exists, __all__ is sorted, errors form one tree."""

from __future__ import annotations

import replicator
from replicator import errors


def test_all_is_sorted_and_exported():
    assert list(replicator.__all__) == sorted(replicator.__all__)
    for name in replicator.__all__:
        assert hasattr(replicator, name), name


def test_a_synced_table_cannot_shadow_the_devices_collection(tmp_path):
    import peewee
    import pytest

    class Devices(replicator.SyncModel):
        name = peewee.TextField()

        class Meta:
            table_name = "devices"

    class Meta_(replicator.SyncModel):
        class Meta:
            table_name = "replicator_meta"

    db = peewee.SqliteDatabase(str(tmp_path / "x.db"))
    with pytest.raises(replicator.SchemaError, match="its own collection"):
        replicator.Replicator(db, [Meta_], replicator.EmbeddedRemote(tmp_path / "r.db"))
    with pytest.raises(replicator.SchemaError, match="Devices"):
        replicator.Replicator(db, [Devices], replicator.EmbeddedRemote(tmp_path / "r.db"))


def test_every_error_derives_from_the_root():
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.ReplicatorError), name
            if obj is not errors.ReplicatorError:
                assert obj.__doc__, f"{name} needs a docstring"

"""The public API: everything exported exists, __all__ is sorted, errors form one tree."""

from __future__ import annotations

import types

import replicator
from replicator import errors


def test_all_is_sorted_and_exported():
    assert list(replicator.__all__) == sorted(replicator.__all__)
    for name in replicator.__all__:
        assert hasattr(replicator, name), name


def test_every_public_name_of_the_package_is_in_all():
    # a name imported into the package but missing from __all__ is invisible to
    # ``from replicator import *`` and to the docs; one in __all__ but not imported fails above
    public = {
        name
        for name, value in vars(replicator).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(replicator.__all__) - {"__version__"}


def test_every_error_is_exported():
    found = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert found <= set(replicator.__all__), found - set(replicator.__all__)


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

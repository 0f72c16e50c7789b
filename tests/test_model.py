"""What a SyncModel may be, and what its instances say about themselves."""

from __future__ import annotations

import uuid

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator, SchemaError, SyncModel
from tests.models import MODELS, Note


def _model(name: str, **fields: object) -> type[SyncModel]:
    attrs: dict[str, object] = {"title": peewee.TextField(default=""), **fields}
    attrs["Meta"] = type("Meta", (), {"table_name": name})
    return type(name.capitalize(), (SyncModel,), attrs)


@pytest.mark.parametrize(
    "field",
    [
        peewee.AutoField(),
        peewee.BigAutoField(),
        peewee.IntegerField(primary_key=True, default=1),
        peewee.BinaryUUIDField(primary_key=True, default=uuid.uuid4),
    ],
    ids=["AutoField", "BigAutoField", "IntegerField", "BinaryUUIDField"],
)
def test_a_model_whose_id_is_not_text_is_refused_before_the_database_is_touched(tmp_path, field):
    model = _model("item", id=field)
    path = tmp_path / "app.db"
    with pytest.raises(SchemaError) as caught:
        Replicator(peewee.SqliteDatabase(str(path)), [model], EmbeddedRemote(tmp_path / "r.db"))
    assert "item.id" in caught.value.message and "text" in caught.value.message
    assert "SyncModel" in caught.value.hint and "UUID" in caught.value.hint
    assert not path.exists() or path.stat().st_size == 0  # nothing written


def test_a_primary_key_other_than_id_is_refused(tmp_path):
    model = _model("code", code=peewee.CharField(primary_key=True, default="x"))
    with pytest.raises(SchemaError, match="'code'") as caught:
        Replicator(
            peewee.SqliteDatabase(str(tmp_path / "a.db")), [model], EmbeddedRemote(tmp_path / "r")
        )
    assert "unique=True" in caught.value.hint


@pytest.mark.parametrize(
    "field",
    [
        peewee.CharField(primary_key=True, max_length=36, default=lambda: str(uuid.uuid4())),
        peewee.TextField(primary_key=True, default=lambda: str(uuid.uuid4())),
        peewee.UUIDField(primary_key=True, default=uuid.uuid4),
    ],
    ids=["CharField", "TextField", "UUIDField"],
)
def test_text_ids_of_any_text_field_sync(tmp_path, field):
    model = _model("thing", id=field)
    device = Replicator(
        peewee.SqliteDatabase(str(tmp_path / "a.db")), [model], EmbeddedRemote(tmp_path / "r.db")
    )
    with device.bound():
        model.create(title="t")
    report = device.sync()
    assert report.rejected == () and report.uploaded == {"thing": 1}


def test_an_instance_says_it_is_dirty_once_saved(tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "a.db"), pragmas={"foreign_keys": 1})
    device = Replicator(db, MODELS, EmbeddedRemote(tmp_path / "r.db"))
    with device.bound():
        note = Note.create(title="Shopping")
        assert note.is_dirty is True
        unsaved = Note(title="not saved yet")
        assert unsaved.is_dirty is None
        unsaved.save()
        assert unsaved.is_dirty is True
    device.sync()
    with device.bound():
        loaded = Note.get_by_id(note.id)
        assert loaded.is_dirty is False
        loaded.title = "edited"
        loaded.save()
        assert loaded.is_dirty is True
        assert Note.get_by_id(note.id).is_dirty is True  # what the row says, too

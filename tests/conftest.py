"""Fixtures: fresh SQLite files per test, devices that share one remote, cleanup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator
from replicator.demo import Comment, Note

MODELS = [Note, Comment]


@pytest.fixture
def remote(tmp_path: Path) -> EmbeddedRemote:
    return EmbeddedRemote(tmp_path / "remote.db")


DeviceFactory = Callable[..., Replicator]


@pytest.fixture
def make_device(tmp_path: Path, remote: EmbeddedRemote) -> Iterator[DeviceFactory]:
    opened: list[Replicator] = []

    def make(name: str, store: Any = None, models: Any = None, **kw: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
        device = Replicator(db, models or MODELS, store or remote, device_name=name, **kw)
        opened.append(device)
        return device

    yield make
    for device in opened:
        device.database.close()


def snapshot_rows(device: Replicator, models: Any = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced row of a device, sync columns dropped, for comparing devices."""
    out = {}
    for model in models or MODELS:
        table = model._meta.table_name
        cols = [
            f.column_name
            for f in model._meta.sorted_fields
            if f.column_name not in ("isDirty", "serverId", "syncRev")
        ]
        names = ", ".join(f'"{c}"' for c in cols)
        out[table] = device.database.execute_sql(
            f'SELECT {names} FROM "{table}" ORDER BY id'
        ).fetchall()
    return out

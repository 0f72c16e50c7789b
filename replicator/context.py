"""The state one sync carries through its phases."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

import attrs
import peewee

from .codec import from_native, to_native
from .local import LocalState
from .model import CLOCK_TOLERANCE, collection_name
from .report import Phase, Progress, Resolution, RowError, _Counts
from .stores.base import DeviceRecord, RemoteDoc, RemoteStore, keeps_native_types
from .strategies.conflict import ConflictStrategy, Resolver


@attrs.define
class SyncContext:
    db: peewee.SqliteDatabase
    local: LocalState
    remote: RemoteStore
    models: list[type[peewee.Model]]  # parents before children
    strategy: ConflictStrategy | Resolver
    me: str
    page_size: int
    app_version: str
    clock: Callable[[], _dt.datetime] = attrs.field(
        default=lambda: _dt.datetime.now(_dt.timezone.utc)
    )
    on_progress: Callable[[Progress], None] | None = None
    on_conflict: Callable[[Resolution], None] | None = None
    counts: _Counts = attrs.field(factory=_Counts)
    conflicts: list[Resolution] = attrs.field(factory=list)
    rejected: list[RowError] = attrs.field(factory=list)
    set_aside: list[RowError] = attrs.field(factory=list)
    #: collections downloaded again because the store purged tombstones this device missed
    recovered: list[str] = attrs.field(factory=list)
    by_collection: dict[str, type[peewee.Model]] = attrs.field(factory=dict)
    children: dict[type[peewee.Model], list[tuple[type[peewee.Model], peewee.ForeignKeyField]]] = (
        attrs.field(factory=dict)
    )

    def __attrs_post_init__(self) -> None:
        self.by_collection = {collection_name(m): m for m in self.models}
        self.children = {m: [] for m in self.models}
        for m in self.models:
            for fk in m._meta.refs:
                self.children[fk.rel_model].append((m, fk))

    def incoming(self, model: type[peewee.Model], doc: RemoteDoc) -> RemoteDoc:
        """A remote document with its values in SQLite form."""
        if not keeps_native_types(self.remote):
            return doc
        return attrs.evolve(doc, data=from_native(model, doc.data))

    def outgoing(self, model: type[peewee.Model], data: dict[str, Any]) -> dict[str, Any]:
        """A row's values in the store's form."""
        if not keeps_native_types(self.remote):
            return data
        return to_native(model, data)

    def progress(
        self, phase: Phase, collection: str | None, done: int, total: int | None = None
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(phase, collection, done, total))

    def resolved(self, resolution: Resolution) -> None:
        self.conflicts.append(resolution)
        if self.on_conflict is not None:
            self.on_conflict(resolution)

    def measured_clock(self, before: _dt.datetime, server_time: _dt.datetime | None) -> None:
        """Record the device clock's offset from a store time stamped between ``before``
        and now (the midpoint of the round trip stands for the device's reading)."""
        if server_time is None:
            return
        after = self.clock()
        mid = before + (after - before) / 2
        self.local.set_device(clock_offset=(server_time - mid).total_seconds())

    def clock_shift(self) -> float | None:
        """Seconds to move this device's timestamps by to get the store's time, or None
        when the measured offset is within the noise (``CLOCK_TOLERANCE``)."""
        offset = self.local.clock_offset
        return offset if offset is not None and abs(offset) >= CLOCK_TOLERANCE else None

    def store_now(self) -> _dt.datetime:
        """The store's time as this device best knows it (naive UTC)."""
        now = self.clock().astimezone(_dt.timezone.utc).replace(tzinfo=None)
        offset = self.local.clock_offset
        return now if offset is None else now + _dt.timedelta(seconds=offset)

    def device_record(self) -> DeviceRecord:
        return DeviceRecord(
            installation_id=self.me,
            name=self.local.device_name,
            platform=self.local.platform,
            app_version=self.app_version,
            watermarks=self.local.trackers(),
            snapshot_generation=self.local.snapshot_generation,
        )

"""The state one sync carries through its phases."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import attrs
import peewee

from ..codec import RowCodec
from ..local import LocalState
from ..model import CLOCK_TOLERANCE
from ..report import Applied, Phase, Progress, Resolution, Tally
from ..stores.base import DeviceRecord, RemoteStore, keeps_native_types
from ..strategies.conflict import ConflictStrategy, Resolver
from .listeners import Listener, drain, tell
from .listeners import Phase as ChangePhase


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
    #: change listeners (``listeners.py``); with none, no change is noted or told
    listeners: tuple[Listener, ...] = ()
    #: collections that go up as bundles only (``bundles/send.py``): never pushed or pulled
    upload_only: frozenset[str] = frozenset()
    #: collections that are only downloaded (``reference/data.py``): never uploaded
    download_only: frozenset[str] = frozenset()
    #: how many groups of collections with no foreign-key path between them are
    #: pulled at once (``download.py``); 1 pulls one collection after another
    parallel_downloads: int = 4
    #: rows to and from the store's form
    codec: RowCodec = attrs.field(init=False)
    #: what the running phase did (each phase starts its own: ``for_phase``)
    tally: Tally = attrs.field(factory=Tally)
    children: dict[type[peewee.Model], list[tuple[type[peewee.Model], peewee.ForeignKeyField]]] = (
        attrs.field(factory=dict)
    )

    def __attrs_post_init__(self) -> None:
        self.codec = RowCodec(native=keeps_native_types(self.remote))
        self.children = {m: [] for m in self.models}
        for m in self.models:
            for fk in m._meta.refs:
                self.children[fk.rel_model].append((m, fk))

    def pulled(self) -> list[type[peewee.Model]]:
        """The models the download pulls, parents first."""
        return [m for m in self.models if m._meta.table_name not in self.upload_only]

    def pushed(self) -> list[type[peewee.Model]]:
        """The models the upload pushes row by row, parents first."""
        skip = self.upload_only | self.download_only
        return [m for m in self.models if m._meta.table_name not in skip]

    def progress(
        self, phase: Phase, collection: str | None, done: int, total: int | None = None
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(phase, collection, done, total))

    def changed(
        self, phase: ChangePhase, uploaded: dict[str, tuple[list[str], list[str]]] | None = None
    ) -> None:
        """Tell the listeners what the step just committed changed (and, for an
        upload batch, which ids the remote now holds). Call after the commit."""
        if self.listeners:
            order = [m._meta.table_name for m in self.models]
            tell(self.listeners, drain(self.db.execute_sql, phase, order, uploaded))

    def for_phase(self) -> SyncContext:
        """The same sync's context with a fresh tally, for a phase to fill and return."""
        return attrs.evolve(self, tally=Tally())

    def fold(self, applied: Applied) -> None:
        """Record what applying documents did, once it committed: the phase's tally
        takes it, and the app's ``on_conflict`` hears of each resolution."""
        self.tally.take(applied)
        if self.on_conflict is not None:
            for resolution in applied.resolutions:
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

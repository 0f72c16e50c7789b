"""Collections with no foreign-key path between them are pulled concurrently, and
applied one page per transaction, parents still before their children."""

from __future__ import annotations

import threading
import time
from typing import Any

import peewee
import pytest

from replicator import OfflineError, SyncModel
from replicator.sync.download import groups
from replicator.testing import FaultyRemote


class Contact(SyncModel):
    name = peewee.TextField()


class Tile(SyncModel):
    z = peewee.IntegerField()


class Route(SyncModel):
    length = peewee.FloatField()


class Aggregate(SyncModel):
    metric = peewee.TextField()


class District(SyncModel):
    name = peewee.TextField()


class Village(SyncModel):
    district = peewee.ForeignKeyField(District)
    name = peewee.TextField()


MODELS = [Contact, Tile, Route, Aggregate, District, Village]


def test_groups_keep_every_foreign_key_path_in_one_group():
    class Street(SyncModel):
        village = peewee.ForeignKeyField(Village)

    class Tree(SyncModel):
        parent = peewee.ForeignKeyField("self", null=True)

    found = groups([Contact, District, Tree, Village, Street, Tile])
    assert sorted(sorted(m.__name__ for m in g) for g in found) == [
        ["Contact"],
        ["District", "Street", "Village"],
        ["Tile"],
        ["Tree"],
    ]
    (chain,) = [g for g in found if District in g]
    assert chain == [District, Village, Street]  # the given (parents first) order


class InFlight:
    """Counts pulls running at once, each made slow like a distant store."""

    def __init__(self, delay: float, slower: str = "") -> None:
        self.delay = delay
        self.slower = slower
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kw: Any) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay * (4 if args[0] == self.slower else 1))
        with self.lock:
            self.now -= 1


def _fill(device: Any, n: int) -> None:
    with device.bound():
        for i in range(n):
            Contact.create(name=f"c{i}")
            Tile.create(z=i)
            Route.create(length=i / 3)
            Aggregate.create(metric=f"m{i}")
            district = District.create(name=f"d{i}")
            Village.create(district=district, name=f"v{i}")


@pytest.fixture
def source(make_device):
    device = make_device("source", models=MODELS)
    _fill(device, 25)
    device.sync()
    return device


def test_independent_collections_are_pulled_at_once_and_children_after_parents(
    make_device, remote, source
):
    slow = FaultyRemote(remote)
    flight = InFlight(0.02, slower="district")  # parents arriving late must still go first
    slow.hooks["pull"] = flight
    order: list[tuple[str, int]] = []
    device = make_device(
        "reader",
        store=slow,
        models=MODELS,
        page_size=10,
        on_progress=lambda p: order.append((p.collection or "", p.done)),
    )
    report = device.sync()
    assert flight.most >= 2
    assert report.total_downloaded == 150
    with device.bound(), source.bound():
        for model in MODELS:
            assert model.select().count() == 25
    # every village page came after the last district page
    last_district = max(i for i, (c, _) in enumerate(order) if c == "district")
    first_village = min(i for i, (c, _) in enumerate(order) if c == "village")
    assert last_district < first_village


def test_one_at_a_time_when_asked(make_device, remote, source):
    slow = FaultyRemote(remote)
    flight = InFlight(0.005)
    slow.hooks["pull"] = flight
    device = make_device("reader", store=slow, models=MODELS, parallel_downloads=1)
    assert device.sync().total_downloaded == 150
    assert flight.most == 1


def test_a_failed_pull_stops_the_sync_keeps_what_was_applied_and_the_next_resumes(
    make_device, embedded_remote, tmp_path
):
    writer = make_device("source", store=embedded_remote, models=MODELS)
    _fill(writer, 30)
    writer.sync()
    flaky = FaultyRemote(embedded_remote)
    calls = [0]

    def fail_the_fifth(*args: Any, **kw: Any) -> None:
        calls[0] += 1
        if calls[0] == 5:
            raise OfflineError("the network dropped")

    flaky.hooks["pull"] = fail_the_fifth
    device = make_device("reader", store=flaky, models=MODELS, page_size=7)
    with pytest.raises(OfflineError):
        device.sync()
    with device.bound():
        partial = sum(m.select().count() for m in MODELS)
        # no orphan: every village applied has its district
        orphans = (
            Village.select().join(District, peewee.JOIN.LEFT_OUTER).where(District.id.is_null())
        )
        assert orphans.count() == 0
    assert partial < 180
    flaky.hooks.clear()
    report = device.sync()
    assert report.total_downloaded == 180 - partial
    with device.bound():
        assert sum(m.select().count() for m in MODELS) == 180

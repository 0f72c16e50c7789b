"""Parents before children, for bundles as for row uploads: a member's bundle is not
sent while the household it names is not on the remote (its bundle rejected, or not
decided yet, or the row refused), so a supervisor never meets members without their
household."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    Replicator,
    StoreIngest,
    SyncModel,
)
from tests.campaign_models import Household


class HouseholdV2(SyncModel):
    """The collectors' newer app version: a phone column the old service does not know."""

    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    village = peewee.TextField(default="")
    phone = peewee.TextField(default="")

    class Meta:
        table_name = "households"


class Member(SyncModel):
    """One person of a household: upload-only too, the household's child."""

    household = peewee.ForeignKeyField(HouseholdV2, on_delete="CASCADE")
    name = peewee.TextField()

    class Meta:
        table_name = "members"


class MemberV1(SyncModel):
    """A member as the old service and the supervisor's app know it."""

    household = peewee.ForeignKeyField(Household, on_delete="CASCADE")
    name = peewee.TextField()

    class Meta:
        table_name = "members"


class Field:
    """A remote, a bucket, collectors on the newer app version, a supervisor."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.remote = EmbeddedRemote(tmp / "remote.db")
        self.blobs = DirectoryBlobStore(tmp / "bucket")
        self.opened: list[Replicator] = []

    def service(self, *, upgraded: bool) -> Ingestor:
        models = [HouseholdV2, Member] if upgraded else [Household, MemberV1]
        return Ingestor(self.blobs, self.remote, models, name="v2" if upgraded else "v1")

    def collector(self, service: Any) -> Replicator:
        bundles = Bundles(self.blobs, service, [HouseholdV2, Member])
        return self._device("collector", [HouseholdV2, Member], bundles=bundles)

    def supervisor(self) -> Replicator:
        return self._device(f"supervisor{len(self.opened)}", [HouseholdV2, Member])

    def _device(self, name: str, models: list[Any], **kw: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(self.tmp / f"{name}.db"), pragmas={"foreign_keys": 1})
        device = Replicator(db, models, self.remote, device_name=name, **kw)
        self.opened.append(device)
        return device


@pytest.fixture
def field(tmp_path: Path) -> Any:
    f = Field(tmp_path)
    yield f
    for device in f.opened:
        device.database.close()


def register(collector: Replicator, households: int, each: int = 3) -> list[str]:
    with collector.bound():
        made = [HouseholdV2.create(head=f"head {i}", phone=f"+258 {i}") for i in range(households)]
        Member.insert_many(
            [
                {"household": h.id, "name": f"{h.head}, member {k}"}
                for h in made
                for k in range(each)
            ]
        ).execute()
    return [h.id for h in made]


def dirty(device: Replicator, table: str) -> int:
    sql = f'SELECT count(*) FROM "{table}" WHERE "isDirty" = 1'
    return int(device.database.execute_sql(sql).fetchone()[0])


def what_a_supervisor_sees(field: Field) -> tuple[int, int, int]:
    """(households, members, documents set aside) of a supervisor syncing now."""
    sup = field.supervisor()
    report = sup.sync()
    with sup.bound():
        return HouseholdV2.select().count(), Member.select().count(), len(report.set_aside)


def test_members_wait_while_their_households_bundle_is_rejected(field):
    with field.service(upgraded=False).serve() as old:
        collector = field.collector(HttpIngest(old.url))
        register(collector, 40)
        report = collector.sync()
    # the service does not know the newer households yet: that bundle is rejected whole
    assert report.bundles_rejected and "upgrade the service" in report.bundles_rejected[0]
    # and the members, whose households are not on the remote, are not sent
    assert not report.bundled
    assert field.remote.all_docs("members") == {}
    assert dirty(collector, "households") == 40 and dirty(collector, "members") == 120
    waiting = [e for e in report.rejected if e.collection == "members"]
    assert len(waiting) == 120 and "households/" in str(waiting[0].error)
    assert what_a_supervisor_sees(field) == (0, 0, 0)  # nothing set aside

    with field.service(upgraded=True).serve() as new:
        collector.bundles.service.url = new.url  # type: ignore[union-attr]
        report = collector.sync()
    assert report.bundled == {"households": 40, "members": 120}  # parents, then children
    assert report.rejected == ()
    assert what_a_supervisor_sees(field) == (40, 120, 0)


def test_members_wait_until_the_queued_households_bundle_is_accepted(field):
    """Through the store's queue the answer comes at a later sync: the members'
    bundle is made only once the households' is accepted, so whatever the ingestor
    decides about the households, no member reaches the remote without its own."""
    collector = field.collector(StoreIngest(field.remote))
    register(collector, 10)
    report = collector.sync()
    assert report.bundles_waiting == 1  # the households' only
    old = field.service(upgraded=False)
    assert [r.state for r in old.poll()] == ["rejected"]
    collector.sync()  # learns of the rejection; households queued again, members wait
    assert field.remote.all_docs("members") == {}
    assert what_a_supervisor_sees(field) == (0, 0, 0)

    new = field.service(upgraded=True)
    assert [r.state for r in new.poll()] == ["accepted"]
    report = collector.sync()  # households settled; now the members' bundle goes
    assert report.bundled == {"households": 10} and report.bundles_waiting == 1
    assert [r.state for r in new.poll()] == ["accepted"]
    assert collector.sync().bundled == {"members": 30}
    assert dirty(collector, "members") == 0
    assert what_a_supervisor_sees(field) == (10, 30, 0)


def test_members_of_a_refused_household_wait_for_it_to_be_fixed(field):
    with field.service(upgraded=True).serve() as service:
        collector = field.collector(HttpIngest(service.url))
        ids = register(collector, 3)
        # an app bug wrote text into the integer column, behind peewee's back
        collector.database.execute_sql(
            "UPDATE households SET members = 'many' WHERE id = ?", (ids[0],)
        )
        report = collector.sync()
        assert report.refused == {"households": 1}
        assert report.bundled == {"households": 2, "members": 6}
        assert dirty(collector, "members") == 3  # the refused household's
        with collector.bound():  # a refused row is not on the remote: no serverId
            assert HouseholdV2.get_by_id(ids[0]).server_id is None
        assert what_a_supervisor_sees(field) == (2, 6, 0)
        with collector.bound():  # fixed by the app: it goes, and its members after it
            HouseholdV2.update(members=3).where(HouseholdV2.id == ids[0]).execute()
        assert collector.sync().bundled == {"households": 1, "members": 3}
    assert what_a_supervisor_sees(field) == (3, 9, 0)


class Place(SyncModel):
    """An upload-only tree: a place inside another."""

    name = peewee.TextField()
    within = peewee.ForeignKeyField("self", null=True, on_delete="CASCADE")

    class Meta:
        table_name = "places"


def test_a_tree_of_upload_only_rows_goes_parents_first_in_one_sync(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    with Ingestor(blobs, remote, [Place]).serve() as service:
        db = peewee.SqliteDatabase(str(tmp_path / "c.db"), pragmas={"foreign_keys": 1})
        bundles = Bundles(blobs, HttpIngest(service.url), [Place], max_rows=2)
        collector = Replicator(db, [Place], remote, bundles=bundles)
        with collector.bound():
            parent = None
            for depth in range(8):  # ids are random: children often sort before parents
                parent = Place.create(name=f"level {depth}", within=parent)
        report = collector.sync()
    assert report.bundled == {"places": 8} and report.rejected == ()
    docs = remote.all_docs("places")
    assert len(docs) == 8
    # each place reached the remote after the place it is within
    order = sorted(docs.values(), key=lambda d: d.cursor)
    seen: set[str] = set()
    for doc in order:
        assert doc.data["within_id"] is None or doc.data["within_id"] in seen
        seen.add(doc.id)

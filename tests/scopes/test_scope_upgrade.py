"""Upgrade: a device of the per-user layout (one root per user), as release 0.1.0 left
its database and remote (tests/data/release-0.1.0, made by that release with
tests/data/make_release_device.py), becomes the user's private scope of a
ScopedReplicator: nothing downloaded again, its offline writes and delete uploaded,
and the scopes the user belongs to added beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import Membership
from tests.models import MODELS as PRIVATE_MODELS
from tests.models import Note
from tests.scope_models import MODELS, SCOPES, Registration

RELEASE = Path(__file__).resolve().parent.parent / "data" / "release-0.1.0"


class OneCampaign:
    def memberships(self) -> list[Membership]:
        return [Membership("campaign-1", "campaign", "collector")]


def test_a_device_of_the_per_user_layout_becomes_the_private_scope(tmp_path):
    for name in ("device.db", "remote.db"):
        shutil.copy(RELEASE / name, tmp_path / name)
    remote = EmbeddedRemote(tmp_path / "remote.db", create=False)
    db = peewee.SqliteDatabase(str(tmp_path / "device.db"), pragmas={"foreign_keys": 1})
    private = Replicator(db, PRIVATE_MODELS, remote, device_name="phone")
    assert private.dirty_counts() == {"note": 3, "comment": 0}  # 2 rows, 1 delete
    (tmp_path / "campaign").mkdir()
    device = ScopedReplicator(
        tmp_path / "scopes",
        MODELS,
        SCOPES,
        uid="u1",
        directory=OneCampaign(),
        remote_for=lambda root, owned: EmbeddedRemote(tmp_path / "campaign" / "remote.db"),
        private=private,
    )
    report = device.sync()
    assert not report.failed, report.failed
    mine = report.reports["users/u1"]
    assert mine.downloaded == {}  # what the release had synced is not fetched again
    assert mine.uploaded == {"note": 2}  # the new note, the edit
    assert mine.uploaded_deletes == {"note": 1}
    assert [c.scope for c in report.added] == ["campaign-1"]
    with private.bound():
        titles = sorted(n.title for n in Note.select())
    assert titles == [
        "edited offline",
        "from the laptop 0",
        "from the laptop 1",
        "from the laptop 2",
        "written offline, not uploaded",
    ]
    with device.scope("campaign-1").bound():
        Registration.create(head="h", collector="u1")
    assert device.sync().reports["campaign-1"].uploaded == {"registrations": 1}
    assert device.sync().idle
    device.close()

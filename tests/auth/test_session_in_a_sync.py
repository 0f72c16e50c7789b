"""A session under a real sync: a store acting as the user asks the session for a token
before every call (as the Firestore store does), so a sync that outlives its ID token
picks up fresh ones, and a user disabled mid-way stops the sync with AuthError while
every unsynced row stays dirty. The remote is a real embedded store; the tokens come
from the real Auth emulator."""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from replicator import AuthError, EmbeddedRemote, Replicator
from replicator.testing import FaultyRemote
from tests.models import MODELS, Note


class AsTheUser(FaultyRemote):
    """Every remote call first takes the user's ID token from the session; each call
    lasts ``step`` seconds of the session's clock (a slow network, a long sync)."""

    def __init__(self, inner: Any, session: Any, clock: Any, step: float) -> None:
        super().__init__(inner)
        self.user, self.clock, self.step = session, clock, step
        self.tokens: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if name.startswith("_") or name in self.PLUMBING or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.clock.advance(self.step)
            self.tokens.append(self.user.id_token())
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def device(tmp_path):
    def make(store):
        db = peewee.SqliteDatabase(str(tmp_path / "device.db"))
        return Replicator(db, MODELS, store, device_name="laptop")

    return make


def dirty_notes(device):
    with device.bound():
        return Note.select().where(Note.is_dirty == True).count()  # noqa: E712


def test_a_sync_that_outlives_its_token_completes(make_auth, clock, tmp_path, device):
    session = make_auth().sign_up("ada@example.com", "correct horse")
    store = AsTheUser(EmbeddedRemote(tmp_path / "remote.db"), session, clock, step=1200)
    laptop = device(store)
    with laptop.bound():
        for i in range(1200):  # several upload batches
            Note.create(title=f"note {i}")
    report = laptop.sync()
    assert report.uploaded["note"] == 1200 and dirty_notes(laptop) == 0
    calls = len(store.tokens)
    assert calls >= 4  # the sync lasted at least 80 minutes of the session's clock
    assert session.refreshes >= calls * 1200 // 3600 - 1  # fresh tokens all along
    assert session.refreshes < calls  # not one refresh per call
    assert len(set(store.tokens)) >= 2


def test_a_user_disabled_mid_sync_gets_auth_error_and_keeps_every_row(
    make_auth, emulator, clock, tmp_path, device
):
    session = make_auth().sign_up("ada@example.com", "correct horse")
    store = AsTheUser(EmbeddedRemote(tmp_path / "remote.db"), session, clock, step=0)
    laptop = device(store)
    laptop.sync()
    with laptop.bound():
        for i in range(30):
            Note.create(title=f"written offline {i}")
    emulator.disable_user(session.uid)
    clock.advance(3600)  # the ID token ran out while the user was disabled
    with pytest.raises(AuthError) as caught:
        laptop.sync()
    assert caught.value.code == "USER_DISABLED" and not caught.value.retryable
    assert dirty_notes(laptop) == 30
    emulator.disable_user(session.uid, disabled=False)
    laptop.sync()  # the user is let back in: the same rows go up
    assert dirty_notes(laptop) == 0

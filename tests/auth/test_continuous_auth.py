"""Continuous sync and sign-in: a user disabled while continuous sync runs stops it with
AuthError in the status (retrying cannot mend it), every unsynced row kept; started
again once the user is let back in, it uploads them. Tokens from the real Auth
emulator, a real embedded store."""

from __future__ import annotations

import time

import peewee

from replicator import EmbeddedRemote, Replicator
from tests.auth.test_session_in_a_sync import AsTheUser
from tests.models import MODELS, Note


def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_an_auth_error_stops_continuous_sync_and_shows(make_auth, emulator, clock, tmp_path):
    session = make_auth().sign_up("ada@example.com", "correct horse")
    store = AsTheUser(EmbeddedRemote(tmp_path / "remote.db"), session, clock, step=0)
    db = peewee.SqliteDatabase(str(tmp_path / "device.db"))
    with Replicator(db, MODELS, store, device_name="laptop") as laptop:
        laptop.start(interval=0.05, backoff=(0.05, 0.2))
        wait_for(lambda: laptop.status.has_synced)
        emulator.disable_user(session.uid)
        clock.advance(3600)  # the ID token ran out while the user was disabled
        with laptop.bound():
            for i in range(5):
                Note.create(title=f"written offline {i}")
        wait_for(lambda: not laptop.status.running)
        error = laptop.status.last_error
        assert error is not None and error.kind == "AuthError" and not error.retryable
        assert "disabled" in error.hint and laptop.status.pending == 5
        emulator.disable_user(session.uid, disabled=False)
        laptop.start(interval=0.05)
        wait_for(lambda: laptop.status.pending == 0 and laptop.status.last_error is None)

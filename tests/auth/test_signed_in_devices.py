"""Devices of real users, signed in on the Firebase Auth emulator, sync through the
Firestore emulator under the rules ``replicator rules`` generates: both emulators, no
admin client anywhere in a device's path.

The Auth emulator issues tokens for its own project, so the rules go to that project
(a request acting as admin, as the other tests' clients do, bypasses rules whatever
they are; the project's rules are opened again afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import peewee
import pytest

from replicator import AccessDeniedError, FirebaseAuth, Replicator
from replicator.auth import MemoryTokenStore
from replicator.scopes import firestore_rules
from replicator.stores.firestore_user import UserFirestoreRemote
from tests.helpers import FIRESTORE_PROJECT, snapshot_rows
from tests.models import MODELS, Comment, Note

OPEN = (
    "rules_version = '2';\nservice cloud.firestore {\n  match /databases/{d}/documents {\n"
    "    match /{document=**} { allow read, write: if true; }\n  }\n}\n"
)


@pytest.fixture
def under_rules(firestore_emulator: Any, auth_emulator: Any) -> Iterator[FirebaseAuth]:
    firestore_emulator.reset(FIRESTORE_PROJECT)
    firestore_emulator.load_rules(FIRESTORE_PROJECT, firestore_rules(MODELS).rules)
    auth = FirebaseAuth(store=MemoryTokenStore())
    yield auth
    auth.close()
    firestore_emulator.load_rules(FIRESTORE_PROJECT, OPEN)


def _device(tmp_path: Any, name: str, session: Any) -> Replicator:
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    remote = UserFirestoreRemote(session, FIRESTORE_PROJECT, timeout=10.0)
    return Replicator(db, MODELS, remote, device_name=name)


def test_two_devices_of_a_signed_in_user_sync_and_another_user_is_denied(under_rules, tmp_path):
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    on_phone = under_rules.sign_up(email, "correct horse battery")
    on_laptop = FirebaseAuth(store=MemoryTokenStore()).sign_in_with_password(
        email, "correct horse battery"
    )
    assert on_phone.uid == on_laptop.uid
    phone, laptop = _device(tmp_path, "phone", on_phone), _device(tmp_path, "laptop", on_laptop)
    with phone.bound():
        note = Note.create(title="signed in")
        Comment.create(note=note, text="under the rules")
    assert phone.sync().total_uploaded == 2
    assert laptop.sync().total_downloaded == 2
    with laptop.bound():
        Note.update(body="edited on the laptop").where(Note.id == note.id).execute()
        Note.create(title="second")
    laptop.sync()
    phone.sync()
    assert snapshot_rows(phone) == snapshot_rows(laptop)
    with phone.bound():
        assert Note.get_by_id(note.id).body == "edited on the laptop"

    # another user, signed in for real, can neither read nor write the first user's data
    mallory = FirebaseAuth(store=MemoryTokenStore()).sign_in_anonymously()
    snoop = UserFirestoreRemote(mallory, FIRESTORE_PROJECT, root=f"users/{on_phone.uid}")
    db = peewee.SqliteDatabase(str(tmp_path / "mallory.db"), pragmas={"foreign_keys": 1})
    intruder = Replicator(db, MODELS, snoop, device_name="mallory")
    with pytest.raises(AccessDeniedError):
        intruder.sync()
    with intruder.bound():
        assert Note.select().count() == 0

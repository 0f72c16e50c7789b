"""A user signed in on two devices syncs through Firestore under the security rules
``replicator rules`` generates: the official emulators here, a real project the same way.

Each device signs the user in (Firebase Authentication) and reaches Firestore with
that user's ID token (``UserFirestoreRemote``), never with server credentials, so
the rules decide what it may read and write; a second user is refused.

If FIRESTORE_EMULATOR_HOST / FIREBASE_AUTH_EMULATOR_HOST are not set, the script
starts the emulators itself (Debian package google-cloud-cli-firestore-emulator with
Java; npm package firebase-tools). Against a real project: deploy the rules
(``replicator rules --models ...`` then ``firebase deploy --only firestore``), give
``FirebaseAuth`` the project's Web API key and ``UserFirestoreRemote`` the project id.

Run: .venv/bin/python examples/firestore_sync.py [DIRECTORY]
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import peewee

from replicator import AccessDeniedError, FieldMerge, FirebaseAuth, Replicator, SyncModel
from replicator.auth import MemoryTokenStore
from replicator.scopes import firestore_rules
from replicator.stores.firestore_user import UserFirestoreRemote
from replicator.testing import (
    AUTH_PROJECT,
    AuthEmulator,
    FirestoreEmulator,
    find_firebase_cli,
    find_jar,
)

PROJECT = AUTH_PROJECT  # the Auth emulator's project: its tokens are for this one


class Task(SyncModel):
    title = peewee.TextField()
    done = peewee.BooleanField(default=False)
    notes = peewee.TextField(default="")


def main(directory: Path, firestore: FirestoreEmulator) -> None:
    # what `replicator rules --models ...` writes, loaded as a deployment would
    firestore.load_rules(PROJECT, firestore_rules([Task]).rules)
    email, password = f"ada-{uuid.uuid4().hex[:6]}@example.com", "correct horse battery"
    on_phone = FirebaseAuth(store=MemoryTokenStore()).sign_up(email, password)
    on_laptop = FirebaseAuth(store=MemoryTokenStore()).sign_in_with_password(email, password)

    def device(name: str, session: object, root: str | None = None) -> Replicator:
        db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
        remote = UserFirestoreRemote(session, PROJECT, root=root)  # type: ignore[arg-type]
        return Replicator(db, [Task], remote, device_name=name, conflict_strategy=FieldMerge())

    phone, laptop = device("phone", on_phone), device("laptop", on_laptop)
    print(f"signed in on two devices as {on_phone.uid}")
    with phone.bound():
        task = Task.create(title="Buy milk")
    print("phone: ", phone.sync().summary())
    print("laptop:", laptop.sync().summary())

    # both edit the same task offline, different fields: FieldMerge keeps both
    with phone.bound():
        Task.update(done=True).where(Task.id == task.id).execute()
    with laptop.bound():
        Task.update(notes="the oat one").where(Task.id == task.id).execute()
    print("phone: ", phone.sync().summary())
    print("laptop:", laptop.sync().summary())
    print("phone: ", phone.sync().summary())
    for name, d in (("phone", phone), ("laptop", laptop)):
        with d.bound():
            t = Task.get_by_id(task.id)
            print(f"{name} sees: {t.title!r} done={t.done} notes={t.notes!r}")
            assert t.done and t.notes == "the oat one"

    # another user pointed at the first user's data: the rules refuse it
    other = FirebaseAuth(store=MemoryTokenStore()).sign_in_anonymously()
    intruder = device("intruder", other, root=f"users/{on_phone.uid}")
    try:
        intruder.sync()
    except AccessDeniedError as exc:
        print("another user is refused:", type(exc).__name__)
    else:
        raise SystemExit("the rules let another user in")


def start_emulators(stack: ExitStack) -> FirestoreEmulator:
    """The emulators the environment names, or started here."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    jar = find_jar()
    if host:
        firestore = FirestoreEmulator(jar or "", port=int(host.rsplit(":", 1)[1]))
    elif jar is None:
        raise SystemExit(
            "install google-cloud-cli-firestore-emulator or set FIRESTORE_EMULATOR_HOST"
        )
    else:
        firestore = FirestoreEmulator(jar).start()
        stack.callback(firestore.stop)
        os.environ["FIRESTORE_EMULATOR_HOST"] = firestore.host
    if not os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
        cli = find_firebase_cli()
        if cli is None:
            raise SystemExit("npm install firebase-tools, or set FIREBASE_AUTH_EMULATOR_HOST")
        auth = AuthEmulator(cli, project=PROJECT).start()
        stack.callback(auth.stop)
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = auth.host
    return firestore


def run(directory: Path) -> None:
    with ExitStack() as stack:
        main(directory, start_emulators(stack))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))

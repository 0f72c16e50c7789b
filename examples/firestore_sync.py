"""Two devices sync through Firestore: the official emulator here, a real project the same way.

If FIRESTORE_EMULATOR_HOST is not set, the script starts the emulator itself
(Debian package google-cloud-cli-firestore-emulator, with Java). Against a real
project, build the client from your credentials instead and keep root=users/<uid>.

Run: .venv/bin/python examples/firestore_sync.py [DIRECTORY]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import peewee

from replicator import FieldMerge, Replicator, SyncModel
from replicator.testing import FirestoreEmulator, find_jar


class Task(SyncModel):
    title = peewee.TextField()
    done = peewee.BooleanField(default=False)
    notes = peewee.TextField(default="")


def main(directory: Path) -> None:
    from google.cloud import firestore

    from replicator.stores.firestore import FirestoreRemote

    client = firestore.Client(project="demo-replicator-example")

    def device(name: str) -> Replicator:
        db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
        remote = FirestoreRemote(client, root="users/example-user")
        return Replicator(db, [Task], remote, device_name=name, conflict_strategy=FieldMerge())

    phone, laptop = device("phone"), device("laptop")
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
    raw = client.document(f"users/example-user/task/{task.id}").get().to_dict()
    print("in Firestore:", {k: raw[k] for k in ("title", "done", "notes", "updatedOn")})


def run(directory: Path) -> None:
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        main(directory)
        return
    jar = find_jar()
    if jar is None:
        raise SystemExit(
            "install google-cloud-cli-firestore-emulator or set FIRESTORE_EMULATOR_HOST"
        )
    emulator = FirestoreEmulator(jar).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        main(directory)
    finally:
        emulator.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))

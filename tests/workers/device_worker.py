"""A device in its own process, for the multi-process tests.

usage: python device_worker.py DB REMOTE NAME ROUNDS [crash-after-push]

REMOTE is the path of an EmbeddedRemote file, or firestore:HOST:PORT:PROJECT:ROOT.
"""

from __future__ import annotations

import os
import random
import sys
import time

import peewee

from replicator import EmbeddedRemote, Replicator, TransientError
from replicator.testing import FaultyRemote
from tests.models import MODELS, Comment, Note


def open_remote(spec: str):
    if not spec.startswith("firestore:"):
        return EmbeddedRemote(spec)
    from google.cloud import firestore

    from replicator.stores.firestore import FirestoreRemote

    _, host, port, project, root = spec.split(":")
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"{host}:{port}"
    return FirestoreRemote(firestore.Client(project=project), root=root, timeout=30)


def main() -> None:
    db_path, remote_path, name, rounds = sys.argv[1:5]
    crash = len(sys.argv) > 5 and sys.argv[5] == "crash-after-push"
    store = FaultyRemote(open_remote(remote_path))
    if crash:
        real_push = store.inner.push

        def push_then_die(*args, **kwargs):
            real_push(*args, **kwargs)
            os._exit(17)  # the process dies after the commit, before mark-clean

        store.inner.push = push_then_die
    db = peewee.SqliteDatabase(db_path, pragmas={"foreign_keys": 1}, timeout=30)
    device = Replicator(db, MODELS, store, device_name=name)
    rng = random.Random(name)
    for i in range(int(rounds)):
        with device.bound():
            note = Note.create(title=f"{name}-{i}")
            Comment.create(note=note, text=f"{name}-{i}-c")
            notes = list(Note.select())
            victim = rng.choice(notes)
            Note.update(body=f"{name} touched {i}").where(Note.id == victim.id).execute()
        for _attempt in range(20):
            try:
                device.sync()
                break
            except TransientError:
                time.sleep(0.05)
        time.sleep(rng.random() / 50)
    db.close()


if __name__ == "__main__":
    main()

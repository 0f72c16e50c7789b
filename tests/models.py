"""The models most tests sync: notes and their comments (a parent and a child that
cascades)."""

from __future__ import annotations

import peewee

from replicator import SyncModel


class Note(SyncModel):
    title = peewee.TextField()
    body = peewee.TextField(default="")

    class Meta:
        table_name = "note"


class Comment(SyncModel):
    note = peewee.ForeignKeyField(Note, on_delete="CASCADE", backref="comments")
    text = peewee.TextField()

    class Meta:
        table_name = "comment"


MODELS = [Note, Comment]

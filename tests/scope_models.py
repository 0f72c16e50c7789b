"""A field campaign and a learning group shared through scopes: the models and the
declaration of who may do what (tests/scopes, tests/stores/test_scope_matrix.py)."""

from __future__ import annotations

import peewee

from replicator import SyncModel
from replicator.scopes import ScopeKind, Scopes


class Registration(SyncModel):
    """A household registered by a collector; ``collector`` is their uid (the owner)."""

    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    collector = peewee.TextField()

    class Meta:
        table_name = "registrations"


class Form(SyncModel):
    """Reference data: members only read it."""

    name = peewee.TextField()
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "forms"


class Progress(SyncModel):
    """A learner's progress in a course; ``learner`` is their uid (the owner)."""

    course = peewee.TextField()
    completed = peewee.IntegerField(default=0)
    learner = peewee.TextField()

    class Meta:
        table_name = "progress"


MODELS = [Registration, Form, Progress]
CAMPAIGN_MODELS = [Registration, Form]

CAMPAIGN = ScopeKind(
    "campaign",
    roles=["collector", "supervisor", "admin"],
    admins=["admin"],
    tables={
        "registrations": {
            "collector": "read create update:own delete:own",
            "supervisor": "read update delete",
            "admin": "read create update delete",
        },
        "forms": {"*": "read"},
    },
)
GROUP = ScopeKind(
    "group",
    roles=["learner", "teacher"],
    admins=["teacher"],
    tables={
        "progress": {
            "learner": "read:own create update:own",
            "teacher": "read",
        },
    },
)
SCOPES = Scopes([CAMPAIGN, GROUP], owners={"registrations": "collector", "progress": "learner"})

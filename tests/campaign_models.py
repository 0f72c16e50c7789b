"""The field campaign's models (registrations, reference data), for bundle and reference tests."""

from __future__ import annotations

import peewee

from replicator import SyncModel


class Household(SyncModel):
    """A registration made offline by a data collector: upload-only on collectors."""

    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    village = peewee.TextField(default="")

    class Meta:
        table_name = "households"


class FormSchema(SyncModel):
    """A dynamic form's schema: download-only reference data."""

    form = peewee.TextField()
    version = peewee.IntegerField()
    schema = peewee.TextField()

    class Meta:
        table_name = "form_schemas"


class Localization(SyncModel):
    """One form's strings in one language (a JSON object): download-only."""

    form = peewee.TextField()
    language = peewee.TextField()
    strings = peewee.TextField()

    class Meta:
        table_name = "localizations"


MODELS = [Household, FormSchema, Localization]
REFERENCE = [FormSchema, Localization]

"""The rules compiler: a pure function from the models to the text of the two files.

What the rules allow and deny is proven on the emulator (tests/stores/test_rules_matrix.py
and test_engine_as_users.py); these check what the text says for each kind of model and
option, and that the repository's own files are the ones the demo's models make.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import attrs
import peewee
import pytest

from replicator import ConfigurationError, SyncModel
from replicator.scopes import firestore_rules
from replicator.scopes.rules import DEVICE_FIELDS
from tests.campaign_models import FormSchema, Household
from tests.helpers import ROOT
from tests.models import MODELS, Comment, Note


class Kinds(SyncModel):
    flag = peewee.BooleanField(default=False)
    count = peewee.IntegerField(default=0)
    ratio = peewee.FloatField(null=True)
    at = peewee.DateTimeField(null=True)
    price = peewee.DecimalField(null=True)
    raw = peewee.BlobField(null=True)
    token = peewee.UUIDField(null=True)
    label = peewee.CharField(max_length=20)

    class Meta:
        table_name = "kinds"


def _block(rules: str, collection: str) -> str:
    start = rules.index(f"      match /{collection}/{{id}} {{")
    return rules[start : rules.index("      }\n", start)]


def _function(rules: str, collection: str) -> str:
    start = rules.index(f"    // {collection} (")
    return rules[start : rules.index("    }\n", start)]


def test_a_synced_collection_takes_its_columns_and_the_sync_fields_only():
    rules = firestore_rules(MODELS).rules
    fn = _function(rules, "comment")
    allowed = fn[fn.index("isSyncedWrite(uid, id, d, changed, [") :].split("]", 1)[0]
    assert re.findall(r"'([^']+)'", allowed) == [
        *("id", "createdOn", "updatedOn", "updatedBy", "note_id", "text"),
        *("deleted", "changedAt"),
    ]
    assert "(!('text' in changed) || d['text'] is string)" in fn
    block = _block(rules, "comment")
    assert "allow read: if isUser(uid);" in block
    assert "allow create, update: if is_comment_write_1(uid, id);" in block
    assert "allow delete: if isExpiredTombstone(uid);" in block
    assert "duration.value(7776000, 's')" in rules  # 90 days
    assert "d.changedAt == request.time" in rules
    assert "getAfter(/databases/$(database)/documents/users/$(uid)/devices/$(device))" in rules
    devices = rules[rules.index("function isOwnDeviceRecord") :].split("]", 1)[0]
    assert re.findall(r"'([^']+)'", devices.split("hasOnly([", 1)[1]) == list(DEVICE_FIELDS)


def test_each_column_is_checked_for_the_kind_of_value_firestore_holds():
    fn = _function(firestore_rules([Kinds]).rules, "kinds")
    assert "(!('flag' in changed) || d['flag'] is bool)" in fn
    assert "(!('count' in changed) || d['count'] is number)" in fn
    assert "(!('ratio' in changed) || d['ratio'] is number || d['ratio'] == null)" in fn
    assert "|| d['at'] is timestamp || d['at'] is string || d['at'] == null)" in fn
    assert "(!('price' in changed) || d['price'] is string || d['price'] == null)" in fn
    assert "d['raw'] is bytes" in fn
    assert "(!('label' in changed) || d['label'] is string)" in fn
    assert "d['token']" not in fn  # a UUID column's affinity is numeric: no kind promised


def test_one_way_collections_and_the_ingest_queue():
    models = [Note, FormSchema, Household]
    made = firestore_rules(models, download_only=["form_schemas"], upload_only=["households"])
    rules = made.rules
    block = _block(rules, "form_schemas")
    assert "allow read: if isUser(uid);" in block and "allow create" not in block
    assert "match /households/" not in rules and "ingest_requests" not in rules
    queued = firestore_rules(models, upload_only=["households"], ingest_queue=True).rules
    assert "match /ingest_requests/{bundle}" in queued
    assert "d.collection in ['households']" in queued


def test_the_retention_bounds_the_only_delete():
    short = firestore_rules(MODELS, retention=dt.timedelta(seconds=2)).rules
    assert "duration.value(2, 's')" in short and "(2 seconds)" in short
    none = firestore_rules(MODELS, retention=None).rules
    assert "allow delete" not in none and "no document is ever deleted" in none


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"download_only": ["nope"]}, "download_only names 'nope'"),
        ({"upload_only": ["note"], "download_only": ["note"]}, "download-only and upload-only"),
        ({"retention": dt.timedelta(0)}, "at least one second"),
    ],
)
def test_options_that_name_no_model_or_contradict_are_refused(kw, message):
    with pytest.raises(ConfigurationError, match=message):
        firestore_rules(MODELS, **kw)


def test_a_collection_rules_cannot_name_is_refused():
    class Odd(SyncModel):
        class Meta:
            table_name = "odd table"

    with pytest.raises(ConfigurationError, match="cannot be named in security rules"):
        firestore_rules([Odd])
    with pytest.raises(ConfigurationError, match="no models"):
        firestore_rules([])


def test_the_indexes_serve_the_purge_of_every_collection():
    indexes = json.loads(firestore_rules([Note, Comment, FormSchema]).indexes)
    assert [i["collectionGroup"] for i in indexes["indexes"]] == ["note", "comment", "form_schemas"]
    assert indexes["indexes"][0]["fields"] == [
        {"fieldPath": "deleted", "order": "ASCENDING"},
        {"fieldPath": "changedAt", "order": "ASCENDING"},
    ]


def test_the_repositorys_rules_are_the_ones_the_demos_models_make():
    """firestore.rules and firestore.indexes.json at the root are generated: regenerate
    them with `replicator rules --models replicator.cli.scenario` when this fails."""
    from replicator.cli import scenario

    made = firestore_rules(scenario.MODELS, source="replicator.cli.scenario")
    assert (ROOT / "firestore.rules").read_text() == made.rules
    assert (ROOT / "firestore.indexes.json").read_text() == made.indexes


def test_the_rules_describe_the_layout_the_stores_write():
    from replicator.scopes import rules
    from replicator.stores import firestore, ingest

    assert (rules.DEVICES, rules.META, rules.HORIZONS) == (
        firestore.DEVICES,
        firestore.META,
        firestore.HORIZONS,
    )
    assert (rules.CHANGED_AT, rules.DELETED) == (firestore.CHANGED_AT, firestore.DELETED)
    assert rules.QUEUE == ingest.QUEUE
    request = {a.name for a in attrs.fields(ingest.IngestRequest)}
    # a request naming a scope goes over HTTP only: the queue's rules refuse the field
    assert set(rules.REQUEST_FIELDS) == (request - {"scope"}) | {"state"}

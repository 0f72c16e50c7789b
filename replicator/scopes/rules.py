"""The Firestore security rules (and indexes) for an app's synced models.

:func:`firestore_rules` is a pure function from the models to the text of
``firestore.rules`` and ``firestore.indexes.json``; ``replicator rules`` writes
them. What the rules enforce, for a user signed in with Firebase Authentication
(servers and admin tools use service-account credentials, which no rule binds):

* a user reads and writes only under ``users/{uid}``, their own root;
* a synced collection takes writes of its model's columns and the sync fields
  only (``keys().hasOnly``; for an update, the fields it alters), with the kind
  of value each column holds (:func:`~replicator.codec.native_kinds`) where it
  can be told; ``changedAt`` must be the request's time, so download cursors
  cannot be forged; ``updatedBy`` must name a device registered to this user
  (its record as the batch leaves it: a device's first upload registers it in
  the same batch); ``id``, when written, must be the document's name;
* deletes travel as tombstones (``deleted: true``). A document itself is
  deleted only as a tombstone the store committed longer ago than the
  **retention**, which is what the purge of expired tombstones deletes: a
  device's sync purges the collections it writes (see ``sync/retention.py``),
  and ``replicator compact`` (admin) purges any. The rules take the retention
  the app passes to ``Replicator(tombstone_retention=...)`` (90 days by
  default); a device with a shorter one has its purges refused (reported in
  ``SyncReport.purge_error``, nothing else fails). Without a retention, no
  document is ever deleted by a device;
* download-only collections (reference data) are read-only; upload-only ones
  (bundles) belong to the ingest service: no device access at all. With
  ``ingest_queue``, a device may create its own ``pending`` requests in
  ``ingest_requests`` (``StoreIngest``) and read their answers;
* ``devices/{installationId}`` is written only as that installation's record,
  owned by the signed-in user (``owner``), its ``lastSync`` and ``lastUpload``
  stamped with the request's time; records are never deleted;
* ``replicator_meta/horizons`` holds the tombstone horizons a purge raises.

What rules cannot tell: which of a user's devices is writing (a token names the
user, not the installation), so one device of a user can write under another
device's name; the rules keep every device within its own user's data.

Cost: each synced write makes one document access (``getAfter`` of the writer's
Devices record), the same document for every write of a device's batch.
Firestore limits accesses to 20 per batched write and says repeated (cached)
accesses do not count; the emulator does not enforce the limit, so batches of
499 writes pass there. Confirm on a real project before relying on it.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Sequence

import attrs
import peewee

from ..codec import native_kinds
from ..errors import ConfigurationError
from ..model import collection_name, remote_columns

#: the Firestore layout the rules describe (``stores/firestore.py`` names them too)
DEVICES = "devices"
META = "replicator_meta"
HORIZONS = "horizons"
QUEUE = "ingest_requests"
CHANGED_AT = "changedAt"
DELETED = "deleted"
#: the fields of a Devices record as ``UserFirestoreRemote`` writes it
DEVICE_FIELDS = (
    "installationId",
    "name",
    "platform",
    "appVersion",
    "watermarks",
    "lastSync",
    "lastUpload",
    "snapshotGeneration",
    "owner",
)
#: the fields of an ingest request (``stores.ingest.IngestRequest`` and its state)
REQUEST_FIELDS = ("bundle", "key", "sha256", "size", "count", "collection", "device", "state")
DEFAULT_RETENTION = _dt.timedelta(days=90)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@attrs.frozen
class FirestoreRules:
    """The two files Firebase deploys: ``firestore.rules`` and ``firestore.indexes.json``."""

    rules: str
    indexes: str


def firestore_rules(
    models: Sequence[type[peewee.Model]],
    *,
    download_only: Sequence[str] = (),
    upload_only: Sequence[str] = (),
    ingest_queue: bool = False,
    retention: _dt.timedelta | None = DEFAULT_RETENTION,
    source: str = "",
) -> FirestoreRules:
    """The rules and indexes for ``models`` (SyncModel classes). ``download_only`` and
    ``upload_only`` name collections (table names) among them; ``source`` names the
    models in the files' header (the module they came from)."""
    names = [collection_name(m) for m in models]
    _check(names, download_only, upload_only, retention)
    blocks: list[str] = []
    functions: list[str] = []
    for model in models:
        name = collection_name(model)
        if name in upload_only:
            blocks.append(f"      // {name}: upload-only (bundles): the ingest service's alone\n")
            continue
        if name in download_only:
            blocks.append(_read_only(name))
            continue
        fn = f"is_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_write_{len(functions)}"
        functions.append(collection_function(fn, model))
        blocks.append(_synced(name, fn, retention is not None))
    if ingest_queue:
        blocks.append(_QUEUE_BLOCK)
        functions.append(_request_function(upload_only))
    rules = _RULES.format(
        source=source or "the app's models",
        retention=retention_text(retention),
        seconds=int(retention.total_seconds()) if retention is not None else 0,
        functions="".join(functions),
        blocks="".join(blocks),
    )
    return FirestoreRules(rules, _indexes(names))


def _check(
    names: Sequence[str],
    download_only: Sequence[str],
    upload_only: Sequence[str],
    retention: _dt.timedelta | None,
) -> None:
    if not names:
        raise ConfigurationError("no models to write rules for", hint="name the synced models")
    for name in names:
        if not _NAME.match(name):
            raise ConfigurationError(
                f"the collection {name!r} cannot be named in security rules",
                hint="give the model a table name of letters, digits, '_' and '-'",
            )
    for label, chosen in (("download_only", download_only), ("upload_only", upload_only)):
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ConfigurationError(
                f"{label} names {', '.join(map(repr, unknown))}, not among the models'"
                f" tables ({', '.join(names)})"
            )
    both = sorted(set(download_only) & set(upload_only))
    if both:
        raise ConfigurationError(f"{', '.join(both)} cannot be download-only and upload-only")
    if retention is not None and retention.total_seconds() < 1:
        raise ConfigurationError("the retention must be at least one second, or None")


def quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rules_list(items: Sequence[str], indent: int = 0) -> str:
    """A rules list literal; with ``indent``, wrapped onto lines of at most 90 characters
    (continuation lines indented that much)."""
    flat = "[" + ", ".join(quoted(i) for i in items) + "]"
    if not indent or len(flat) <= 60:
        return flat
    lines, line = [], ""
    for item in (quoted(i) for i in items):
        if line and indent + len(line) + len(item) + 2 > 90:
            lines.append(line.rstrip())
            line = ""
        line += item + ", "
    lines.append(line.rstrip(", "))
    pad = "\n" + " " * indent
    return "[" + pad + pad.join(lines) + "\n" + " " * (indent - 2) + "]"


def retention_text(retention: _dt.timedelta | None) -> str:
    if retention is None:
        return "none: no document is ever deleted by a device"
    days = retention.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{retention.total_seconds():g} seconds"


def _kind_check(column: str, kinds: Sequence[str], nullable: bool) -> str:
    tests = [f"d[{quoted(column)}] is {kind}" for kind in kinds]
    if nullable:
        tests.append(f"d[{quoted(column)}] == null")
    check = f"(!({quoted(column)} in changed) || {' || '.join(tests)})"
    if len(check) <= 80:
        return check
    return f"(!({quoted(column)} in changed)\n          || {' || '.join(tests)})"


def collection_function(
    fn: str, model: type[peewee.Model], root: str = "uid", check: str = "isSyncedWrite"
) -> str:
    """The rules function a write of ``model``'s collection must pass: ``fn(root, id)``,
    calling ``check`` (the root's checks of every synced write) with the columns."""
    columns = remote_columns(model)
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    checks = [
        _kind_check(c, kinds, bool(fields[c].null))
        for c in columns
        if c in fields and (kinds := native_kinds(fields[c]))
    ]
    allowed = [*columns, DELETED, CHANGED_AT]
    lines = [f"{check}({root}, id, d, changed, {rules_list(allowed, 10)})", *checks]
    body = "\n        && ".join(lines)
    return (
        f"    // {collection_name(model)} ({model.__module__}.{model.__name__})\n"
        f"    function {fn}({root}, id) {{\n"
        "      let d = request.resource.data;\n"
        "      let changed = changedKeys();\n"
        f"      return {body};\n"
        "    }\n\n"
    )


def _synced(name: str, fn: str, purge: bool) -> str:
    delete = "        allow delete: if isExpiredTombstone(uid);\n" if purge else ""
    return (
        f"      match /{name}/{{id}} {{\n"
        "        allow read: if isUser(uid);\n"
        f"        allow create, update: if {fn}(uid, id);\n"
        f"{delete}"
        "      }\n"
    )


def _read_only(name: str) -> str:
    return (
        f"      // {name}: download-only (reference data): read-only for devices\n"
        f"      match /{name}/{{id}} {{\n"
        "        allow read: if isUser(uid);\n"
        "      }\n"
    )


def _request_function(upload_only: Sequence[str]) -> str:
    return (
        "    // a device's request to the ingest service about one bundle it put in the bucket\n"
        "    function isIngestRequest(uid, bundle) {\n"
        "      let d = request.resource.data;\n"
        f"      return isUser(uid)\n"
        f"        && d.keys().hasOnly({rules_list([*REQUEST_FIELDS, DELETED, CHANGED_AT], 10)})\n"
        "        && d.bundle == bundle && d.state == 'pending' && d.deleted == false\n"
        "        && d.changedAt == request.time\n"
        "        && d.key is string && d.sha256 is string && d.size is int && d.count is int\n"
        f"        && d.collection in {rules_list(upload_only)}\n"
        "        && isOwnDevice(uid, d.device);\n"
        "    }\n\n"
    )


_QUEUE_BLOCK = """\
      // the ingest queue (StoreIngest): a device creates its own pending requests
      // and reads the answers; only the ingest service (admin) updates them
      match /ingest_requests/{bundle} {
        allow read: if isUser(uid);
        allow create: if isIngestRequest(uid, bundle);
      }
"""


def _indexes(names: Sequence[str]) -> str:
    """The composite index ``(deleted, changedAt)`` of every collection (the tombstone
    purge's query); every other query replicator makes is served by single-field
    indexes, which Firestore makes by itself."""
    indexes = [
        {
            "collectionGroup": name,
            "queryScope": "COLLECTION",
            "fields": [
                {"fieldPath": DELETED, "order": "ASCENDING"},
                {"fieldPath": CHANGED_AT, "order": "ASCENDING"},
            ],
        }
        for name in names
    ]
    return json.dumps({"indexes": indexes, "fieldOverrides": []}, indent=2) + "\n"


_RULES = """\
rules_version = '2';

// Generated by `replicator rules` from {source}: do not edit. Change the models,
// generate again and deploy: firebase deploy --only firestore:rules,firestore:indexes
//
// A signed-in user reads and writes only under users/{{uid}}, their own root. There:
// a synced collection takes only its model's columns and the sync fields; changedAt
// must be the request's time (download cursors cannot be forged); updatedBy must be
// a device registered to this user; deletes travel as tombstones, and a document is
// deleted only as a tombstone older than the retention ({retention}), by the
// purge. Download-only collections are read-only, upload-only ones the ingest
// service's. A device writes only its own Devices record, owned by the user.
// Servers and admin tools (service-account credentials) bypass these rules.
service cloud.firestore {{
  match /databases/{{database}}/documents {{

    function isUser(uid) {{
      return request.auth != null && request.auth.uid == uid;
    }}

    // the fields a write sets: all of a create's, the ones an update alters
    function changedKeys() {{
      return resource == null
        ? request.resource.data.keys().toSet()
        : request.resource.data.diff(resource.data).affectedKeys();
    }}

    // a device registered to the signed-in user, as the write leaves the database
    // (a device's first upload registers it in the same batch)
    function isOwnDevice(uid, device) {{
      return device is string
        && getAfter(/databases/$(database)/documents/users/$(uid)/devices/$(device))
          .data.get('owner', null) == request.auth.uid;
    }}

    // a write of a synced document: `allowed` are its model's columns and the sync fields
    function isSyncedWrite(uid, id, d, changed, allowed) {{
      return isUser(uid)
        && changed.hasOnly(allowed)
        && d.changedAt == request.time
        && d.deleted is bool
        && (!('id' in changed) || d.id == id)
        && isOwnDevice(uid, d.get('updatedBy', null));
    }}

    // what the purge deletes: a tombstone the store committed before the retention
    function isExpiredTombstone(uid) {{
      return isUser(uid)
        && resource.data.deleted == true
        && resource.data.changedAt < request.time - duration.value({seconds}, 's');
    }}

    // a device's own record in the Devices collection, owned by the signed-in user
    function isOwnDeviceRecord(device) {{
      let d = request.resource.data;
      let changed = changedKeys();
      return changed.hasOnly({device_fields})
        && d.installationId == device
        && d.owner == request.auth.uid
        && (resource == null || resource.data.get('owner', request.auth.uid) == request.auth.uid)
        && d.lastSync == request.time
        && (!('lastUpload' in changed) || d.lastUpload == request.time)
        && d.name is string && d.platform is string && d.appVersion is string
        && d.watermarks is map
        && (d.get('snapshotGeneration', null) == null || d.snapshotGeneration is int);
    }}

{functions}\
    match /users/{{uid}} {{
{blocks}\
      match /devices/{{device}} {{
        allow read: if isUser(uid);
        allow create, update: if isUser(uid) && isOwnDeviceRecord(device);
      }}

      // the tombstone horizons a purge raises (see the retention above)
      match /replicator_meta/horizons {{
        allow read: if isUser(uid);
        allow create, update: if isUser(uid)
          && request.resource.data.keys().hasOnly(['horizons'])
          && request.resource.data.horizons is map;
      }}
    }}
  }}
}}
""".replace("{device_fields}", rules_list(DEVICE_FIELDS, 10))

"""The Firestore rules of scopes: a :class:`~replicator.scopes.roles.Scopes`
declaration compiled beside the rules of each user's own root.

:func:`scoped_rules` returns what :func:`~replicator.scopes.rules.firestore_rules`
does for ``users/{uid}``, plus ``scopes/{scopeId}``, where every check of a user's
root holds (the model's columns only, the kind of each value, ``changedAt`` the
request's time, the writer a device of the caller registered in the scope's Devices
collection, deletes as tombstones, the purge only of expired tombstones) and, on top,
the caller's **place** decides: ``'<kind>/<role>'``, read with ``get()`` from the
scope document's ``kind`` and the caller's member document
``scopes/{scopeId}/members/{uid}`` (``''`` for a non-member, a removed member
included). Each grant of the declaration becomes a list of places a rule tests with
``in``; ``:own`` adds the test that the owner column is the caller's uid.

Cost: a write reads the scope document, the caller's member document and the
writer's Devices record (``getAfter``): three documents, the same ones for a whole
batch (Firestore counts repeated accesses once; the limit is 20 per batch, 10 per
single request).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Sequence

import peewee

from ..model import collection_name, remote_columns
from .members import UID
from .roles import MEMBER_FIELDS, MEMBERS, ROLE, Operation, Reach, Scopes
from .rules import (
    CHANGED_AT,
    DEFAULT_RETENTION,
    DELETED,
    FirestoreRules,
    collection_function,
    firestore_rules,
    quoted,
    rules_list,
)

#: the collection holding the scopes (``scopes/{scopeId}`` is a scope's root)
SCOPES = "scopes"
#: the scope document's field naming its kind
KIND = "kind"
PLACE = "placeIn(scopeId)"
#: a scope's snapshot key generations (``replicator.scopes.keys``): the collection,
#: the fields of a generation, the digits of its zero-padded id, a key's base64 length
KEYS = "keys"
KEY_FIELDS = ("key", "createdBy", "changedAt")
GENERATION_DIGITS = 10
KEY_CHARS = 44


def scoped_rules(
    models: Sequence[type[peewee.Model]],
    scopes: Scopes,
    *,
    retention: _dt.timedelta | None = DEFAULT_RETENTION,
    source: str = "",
    **options: object,
) -> FirestoreRules:
    """The rules and indexes for ``models`` in users' own roots (as
    :func:`~replicator.scopes.rules.firestore_rules`, with ``options``) and in the
    scopes ``scopes`` declares. ``download_only``, ``upload_only`` and
    ``ingest_queue`` shape the users' roots only: in a scope the declaration alone says
    who may touch a table (reference data is a table every role may only read).
    ``ConfigurationError`` when the declaration names a table the models lack, or an
    owner column a table lacks."""
    base = firestore_rules(models, retention=retention, source=source, **options)  # type: ignore[arg-type]
    by_name = {collection_name(m): m for m in models}
    scopes.check(list(by_name), {n: remote_columns(m) for n, m in by_name.items()})
    functions = [_COMMON.format(places=rules_list(_places(scopes), 10))]
    blocks: list[str] = []
    for number, table in enumerate(scopes.tables()):
        fn = f"is_{re.sub(r'[^A-Za-z0-9_]', '_', table)}_scoped_{number}"
        functions.append(collection_function(fn, by_name[table], "scopeId", "isScopedWrite"))
        blocks.append(_table_block(scopes, table, fn, retention is not None))
    seconds = int(retention.total_seconds()) if retention is not None else 0
    section = _SECTION.format(
        functions="".join(functions),
        seconds=seconds,
        blocks="".join(blocks),
        admins=rules_list(_admins(scopes), 12),
        purgers=rules_list(_purgers(scopes), 12),
        places=rules_list(_places(scopes), 10),
        member_fields=rules_list(MEMBER_FIELDS),
        keys=KEYS,
        key_fields=rules_list(list(KEY_FIELDS)),
        digits=GENERATION_DIGITS,
        key_body=KEY_CHARS - 1,
    )
    end = base.rules.rindex("  }\n}\n")
    return FirestoreRules(
        base.rules[:end] + section + base.rules[end:], _indexes(base.indexes, scopes)
    )


def _indexes(base: str, scopes: Scopes) -> str:
    """The users' roots' indexes, plus what scopes query: the discovery
    (``members`` by ``uid``, across scopes: a collection-group field index) and, for a
    table some role reads ``:own``, its download filtered on the owner column and
    ordered by change time, and the purge's query so filtered."""
    spec = json.loads(base)
    for table, owner in sorted(scopes.owners.items()):
        if not _with(scopes, table, "read", "own"):
            continue
        for fields in ((owner, CHANGED_AT), (owner, DELETED, CHANGED_AT)):
            spec["indexes"].append(
                {
                    "collectionGroup": table,
                    "queryScope": "COLLECTION",
                    "fields": [{"fieldPath": f, "order": "ASCENDING"} for f in fields],
                }
            )
    spec["fieldOverrides"].append(
        {
            "collectionGroup": MEMBERS,
            "fieldPath": UID,
            "indexes": [
                {"order": "ASCENDING", "queryScope": "COLLECTION"},
                {"order": "ASCENDING", "queryScope": "COLLECTION_GROUP"},
            ],
        }
    )
    return json.dumps(spec, indent=2) + "\n"


def _places(scopes: Scopes) -> list[str]:
    return [f"{k.name}/{r}" for k in scopes.kinds for r in k.roles]


def _admins(scopes: Scopes) -> list[str]:
    return [f"{k.name}/{r}" for k in scopes.kinds for r in k.admins]


def _purgers(scopes: Scopes) -> list[str]:
    """The places that may delete in some table: they raise the tombstone horizons."""
    return [
        f"{k.name}/{r}"
        for k in scopes.kinds
        for r in k.roles
        if any(k.grant(r, t).delete != "none" for t in k.tables)
    ]


def _allowed(scopes: Scopes, table: str, op: Operation) -> str:
    """The rules expression: the caller's place grants ``op`` on this row of ``table``."""
    owner = scopes.owners.get(table)
    terms = []
    reaches: tuple[Reach, ...] = ("all", "own")
    for reach in reaches:
        places = _with(scopes, table, op, reach)
        if not places:
            continue
        test = f"{PLACE} in {rules_list(places, 14)}"
        if reach == "own":
            test = (
                f"({test}\n            && resource.data[{quoted(str(owner))}] == request.auth.uid)"
            )
        terms.append(test)
    return "\n            || ".join(terms) if terms else "false"


def _with(scopes: Scopes, table: str, op: Operation, reach: Reach) -> list[str]:
    return [f"{k.name}/{r}" for k in scopes.kinds for r in k.roles_with(table, op, reach)]


def _table_block(scopes: Scopes, table: str, fn: str, purge: bool) -> str:
    """The rules of ``table`` in a scope; an operation no place is granted gets no
    ``allow`` (denied)."""
    owner = scopes.owners.get(table)
    created = (
        f"\n          && request.resource.data[{quoted(owner)}] == request.auth.uid"
        if owner
        else ""
    )
    kept = f"\n          && !({quoted(owner)} in changedKeys())" if owner else ""
    read, create = _allowed(scopes, table, "read"), _allowed(scopes, table, "create")
    update, delete = _allowed(scopes, table, "update"), _allowed(scopes, table, "delete")
    lines = [f"      match /{table}/{{id}} {{\n"]
    if read != "false":
        lines.append(f"        allow read: if {read};\n")
    if create != "false":
        lines.append(
            f"        allow create: if {fn}(scopeId, id){created}\n          && ({create});\n"
        )
    if (update, delete) != ("false", "false"):
        lines.append(
            f"        allow update: if {fn}(scopeId, id){kept}\n"
            f"          && (isTombstoning()\n"
            f"            ? ({delete})\n"
            f"            : ({update}));\n"
        )
    if purge and delete != "false":
        lines.append(
            f"        allow delete: if isExpiredScopeTombstone()\n          && ({delete});\n"
        )
    if len(lines) == 1:
        lines.append(f"        // {table}: nothing granted to any role\n")
    return "".join(lines) + "      }\n"


_COMMON = """\
    // -- scopes: roots shared by their members (replicator.scopes.roles) --------------
    // The caller's place in a scope: '<kind>/<role>' from the scope document's kind and
    // the caller's member document, or '' for anyone who is not a member.
    function placeIn(scopeId) {{
      let scope = /databases/$(database)/documents/scopes/$(scopeId);
      let member = /databases/$(database)/documents/scopes/$(scopeId)/members/$(request.auth.uid);
      return request.auth != null && exists(scope) && exists(member)
        ? get(scope).data.get('kind', '') + '/' + get(member).data.get('role', '')
        : '';
    }}

    function isMember(scopeId) {{
      return {place} in {places};
    }}

    // a device of the caller registered in the scope, as the write leaves the database
    function isScopeDevice(scopeId, device) {{
      return device is string
        && getAfter(/databases/$(database)/documents/scopes/$(scopeId)/devices/$(device))
          .data.get('owner', null) == request.auth.uid;
    }}

    // a write of a synced document in a scope, by a device of the caller
    function isScopedWrite(scopeId, id, d, changed, allowed) {{
      return isMember(scopeId)
        && changed.hasOnly(allowed)
        && d.changedAt == request.time
        && d.deleted is bool
        && (!('id' in changed) || d.id == id)
        && isScopeDevice(scopeId, d.get('updatedBy', null));
    }}

    // an update that turns a live document into a tombstone: a delete
    function isTombstoning() {{
      return request.resource.data.deleted == true && resource.data.get('deleted', false) != true;
    }}

""".replace("{place}", PLACE)

_SECTION = """\
{functions}\
    // what the purge deletes in a scope: a tombstone committed before the retention
    function isExpiredScopeTombstone() {{
      return resource.data.deleted == true
        && resource.data.changedAt < request.time - duration.value({seconds}, 's');
    }}

    // a member's document as a scope's admin writes it: a role of the scope's kind, the
    // member's uid and the scope's kind (what a device's discovery query reads);
    // addedBy and changedAt, when written, the admin and the request's time
    function isMemberDocument(scopeId, uid) {{
      let d = request.resource.data;
      let kind = get(/databases/$(database)/documents/scopes/$(scopeId)).data.get('kind', '');
      return d.keys().hasOnly({member_fields})
        && d.keys().hasAll(['role', 'uid', 'kind'])
        && d.role is string
        && d.uid == uid
        && d.kind == kind
        && (kind + '/' + d.role) in {places}
        && (!('addedBy' in changedKeys()) || d.addedBy == request.auth.uid)
        && (!('changedAt' in changedKeys()) || d.changedAt == request.time);
    }}

    // Discovery: a signed-in user lists their own member documents, in every scope at
    // once (a collection-group query on members where uid is theirs); nothing else.
    match /{{path=**}}/members/{{member}} {{
      allow list: if request.auth != null && resource.data.uid == request.auth.uid;
    }}

    // A scope: its document (kind) is a server's; its members' documents its admins'.
    match /scopes/{{scopeId}} {{
      allow get: if isMember(scopeId);

{blocks}\
      match /devices/{{device}} {{
        allow read: if isMember(scopeId);
        allow create, update: if isMember(scopeId) && isOwnDeviceRecord(device);
      }}

      match /replicator_meta/horizons {{
        allow read: if isMember(scopeId);
        allow create, update: if placeIn(scopeId) in {purgers}
          && request.resource.data.keys().hasOnly(['horizons'])
          && request.resource.data.horizons is map;
      }}

      // only the scope's admins change members, never their own document
      match /members/{{uid}} {{
        allow get: if request.auth != null
          && (request.auth.uid == uid || placeIn(scopeId) in {admins});
        allow list: if placeIn(scopeId) in {admins};
        allow create, update: if placeIn(scopeId) in {admins}
          && request.auth.uid != uid && isMemberDocument(scopeId, uid);
        allow delete: if placeIn(scopeId) in {admins} && request.auth.uid != uid;
      }}

      // the scope's snapshot keys (replicator.scopes.keys): its members read every
      // generation; only its admins add the next one (a removal rotates it in the same
      // batch), its fields those three only, each required by its test (the key: 32
      // bytes in base64, 44 characters); nobody changes or deletes a generation
      match /{keys}/{{generation}} {{
        allow read: if isMember(scopeId);
        allow create: if placeIn(scopeId) in {admins}
          && generation.matches('[0-9]{{{digits}}}')
          && request.resource.data.keys().hasOnly({key_fields})
          && request.resource.data.key.matches('[A-Za-z0-9+/]{{{key_body}}}=')
          && request.resource.data.createdBy == request.auth.uid
          && request.resource.data.changedAt == request.time;
      }}
    }}
"""

__all__ = ["KEYS", "KEY_FIELDS", "KIND", "MEMBERS", "ROLE", "SCOPES", "scoped_rules"]

"""What a device keeps per scope: which tables a member syncs and how, the scopes it
knew at its last sync, and the writes it sets aside when its user loses a scope.

Each scope a device syncs lives in a SQLite file of its own in the device's folder
(``scope-<id>.<tag>.db``), synced by an ordinary :class:`~replicator.Replicator` against the
scope's root: its cursors, its Devices record, its snapshots are the scope's alone, and
losing the scope is deleting the file (no tombstone, nothing left behind).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import peewee

from ..codec import encode_json
from ..errors import ConfigurationError
from ..model import SyncModel, collection_name, remote_columns
from .members import Membership, acceptable, valid_scope_id
from .roles import Scopes

log = logging.getLogger(__name__)

#: the file naming the scopes a device synced last
STATE = "scopes.json"
#: where the pending writes of a lost scope go, one JSON-lines file per loss
SET_ASIDE = "set-aside"
_PREFIX, _SUFFIX = "scope-", ".db"


@attrs.frozen
class ScopePlan:
    """How a member syncs a scope: the tables its role reads, those it only reads, and
    those it reads only its own rows of (``{table: (owner column, uid)}``)."""

    models: tuple[type[SyncModel], ...]
    download_only: tuple[type[SyncModel], ...]
    owned: Mapping[str, tuple[str, str]]


def plan(
    scopes: Scopes, models: Sequence[type[SyncModel]], member: Membership, uid: str
) -> ScopePlan:
    """The plan of ``member`` (a membership of ``uid``): a table of the kind the role
    may not read is not synced; one it may only read is download-only; ``read:own``
    downloads only the rows whose owner column is ``uid``."""
    kind = scopes.kind(member.kind)
    chosen, readonly, owned = [], [], {}
    for model in models:
        table = collection_name(model)
        grant = kind.grant(member.role, table)
        if table not in kind.tables or grant.read == "none":
            continue
        chosen.append(model)
        if grant.read == "own":
            owned[table] = (scopes.owners[table], uid)
        if (grant.create, grant.update, grant.delete) == ("none", "none", "none"):
            readonly.append(model)
    if not chosen:
        raise ConfigurationError(
            f"the role {member.role!r} of scope kind {member.kind!r} reads none of the"
            " models given",
            hint="grant the role read on a table of the kind, or pass its models",
        )
    return ScopePlan(tuple(chosen), tuple(readonly), owned)


def _tag(scope: str) -> str:
    """Eight hex digits of the id's hash: file names differ even where the file system
    folds case (scopes ``A`` and ``a`` are two scopes, and two files, on macOS too)."""
    return hashlib.sha256(scope.encode()).hexdigest()[:8]


def database_path(folder: Path, scope: str) -> Path:
    """The file of ``scope``'s rows in the device's ``folder``:
    ``scope-<id>.<tag>.db``."""
    if not valid_scope_id(scope):
        raise ConfigurationError(f"{scope!r:.80} is not a scope id a device accepts")
    return folder / f"{_PREFIX}{scope}.{_tag(scope)}{_SUFFIX}"


def scope_files(folder: Path) -> dict[str, Path]:
    """The scopes whose files are in ``folder`` (an app's write after a loss can make
    one again: the sync treats it as a scope lost); a name whose tag does not match its
    id is not a scope's file."""
    out = {}
    for path in folder.glob(f"{_PREFIX}*{_SUFFIX}"):
        scope, _, tag = path.name[len(_PREFIX) : -len(_SUFFIX)].rpartition(".")
        if valid_scope_id(scope) and tag == _tag(scope):
            out[scope] = path
    return out


def remove_files(path: Path) -> None:
    """Delete a scope's database with its journal files."""
    for extra in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{extra}").unlink(missing_ok=True)


def read_state(folder: Path) -> dict[str, Membership]:
    """The memberships a device synced at its last sync (none when never, or when the
    file is damaged: a damaged file is logged, and the next discovery rewrites it)."""
    path = folder / STATE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        found = {s: Membership(s, v["kind"], v["role"]) for s, v in raw["scopes"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s could not be read (%s): rewritten at the next sync", path, exc)
        return {}
    kept = {s: m for s, m in found.items() if acceptable(m)}
    if len(kept) < len(found):  # never trusted to name a file: rewritten at the next sync
        log.warning("%s names %d scopes a device does not accept", path, len(found) - len(kept))
    return kept


def write_state(folder: Path, members: Iterable[Membership]) -> None:
    """Record ``members`` as the scopes synced (written whole, then renamed)."""
    body = {"version": 1, "scopes": {m.scope: {"kind": m.kind, "role": m.role} for m in members}}
    _write_whole(folder / STATE, json.dumps(body, indent=1, sort_keys=True))


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: ``<name>.tmp`` written, synced, renamed."""
    tmp = path.with_name(f"{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def set_aside(
    folder: Path,
    db: peewee.SqliteDatabase,
    models: Sequence[type[SyncModel]],
    member: Membership,
    reason: str,
) -> tuple[Path | None, int]:
    """Write every write of ``db`` not uploaded yet (rows changed, deletes) to a new
    JSON-lines file under ``folder/set-aside``, each line with the scope, the reason and
    the row; returns the file (None when nothing was pending) and how many lines. The
    caller holds the database's write lock, so no write slips in between."""
    lines = list(_pending(db, models, member, reason))
    if not lines:
        return None, 0
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    where = folder / SET_ASIDE
    where.mkdir(exist_ok=True)
    path = where / f"{member.scope}-{stamp}.jsonl"
    _write_whole(path, "".join(encode_json(line) + "\n" for line in lines))
    return path, len(lines)


def retire(
    folder: Path,
    db: peewee.SqliteDatabase,
    models: Sequence[type[SyncModel]],
    member: Membership,
    reason: str,
) -> tuple[Path | None, int]:
    """Empty the database of a scope lost: in one write transaction, set aside what was
    not uploaded (:func:`set_aside`) and drop every table, so that an app connection
    still open on the file (another thread's) fails loudly on its next write instead of
    writing into a file about to be deleted. Returns what :func:`set_aside` does."""
    db.connect(reuse_if_open=True)
    db.execute_sql("PRAGMA foreign_keys = OFF")  # this connection only: any drop order
    db.execute_sql("BEGIN IMMEDIATE")  # no app write slips in from now on
    try:
        kept = set_aside(folder, db, models, member, reason)
        tables = db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for (name,) in tables:
            db.execute_sql(f'DROP TABLE IF EXISTS "{name}"')
        db.execute_sql("COMMIT")
    except BaseException:
        db.execute_sql("ROLLBACK")
        raise
    return kept


def _pending(
    db: peewee.SqliteDatabase,
    models: Sequence[type[SyncModel]],
    member: Membership,
    reason: str,
) -> Iterable[dict[str, Any]]:
    head = {"scope": member.scope, "kind": member.kind, "role": member.role, "reason": reason}
    tables = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    for model in models:
        table = collection_name(model)
        if table not in tables:
            continue
        cols = remote_columns(model)
        names = ", ".join(f'"{c}"' for c in cols)
        for row in db.execute_sql(
            f'SELECT {names} FROM "{table}" WHERE "isDirty" = 1 ORDER BY id'
        ).fetchall():
            values = dict(zip(cols, row, strict=True))
            yield {**head, "collection": table, "id": values["id"], "delete": False, "row": values}
        if "replicator_tombstones" in tables:
            for (doc_id,) in db.execute_sql(
                "SELECT id FROM replicator_tombstones WHERE collection = ? AND pending = 1"
                " ORDER BY id",
                (table,),
            ).fetchall():
                yield {**head, "collection": table, "id": doc_id, "delete": True, "row": None}

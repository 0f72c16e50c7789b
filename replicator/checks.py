"""The Replicator's settings and its models' foreign keys, checked before anything
is written (the engine's constructor calls these)."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from typing import Any

import peewee

from .bundles.send import Bundles
from .errors import ConfigurationError
from .model import SyncModel, collection_name

log = logging.getLogger(__name__)


def check_settings(
    models: Sequence[type[SyncModel]],
    page_size: int,
    tombstone_retention: _dt.timedelta | None,
    parallel_downloads: int,
) -> None:
    """Refuse settings no sync could run with, before anything is written."""
    if not models:
        raise ConfigurationError("Replicator needs at least one model to sync")
    if page_size < 1:
        raise ConfigurationError(f"page_size must be positive, got {page_size}")
    if tombstone_retention is not None and (
        not isinstance(tombstone_retention, _dt.timedelta)
        or tombstone_retention <= _dt.timedelta(0)
    ):
        raise ConfigurationError(
            f"tombstone_retention must be a positive timedelta or None,"
            f" got {tombstone_retention!r}",
            hint="e.g. datetime.timedelta(days=90); None keeps deletes for ever",
        )
    if parallel_downloads < 1:
        raise ConfigurationError(f"parallel_downloads must be ≥ 1, got {parallel_downloads}")


def enforce_foreign_keys(database: peewee.SqliteDatabase, models: Sequence[type[Any]]) -> None:
    """Turn SQLite's foreign keys on, for this connection and every later one, when a
    synced model has one.

    Without ``PRAGMA foreign_keys`` SQLite ignores every ``on_delete``: a parent the
    app deletes leaves its children here, and they stay live on the remote, orphans,
    until another device applies the delete. The rules a model declares are what
    every other device applies (``sync/foreign_keys.py``), so they are made to hold
    here too rather than refused (which would break every app opened without the
    pragma) or merely logged (replicator's log is silent unless the app configures it).
    """
    if not any(m._meta.refs for m in models):
        return
    database.pragma("foreign_keys", 1, permanent=True)  # peewee sets it on new connections
    if not database.execute_sql("PRAGMA foreign_keys").fetchone()[0]:
        # SQLite ignores the pragma inside a transaction: this connection stays as it was
        log.warning(
            "foreign keys are not enforced on this connection (Replicator made inside a"
            " transaction); open the database with pragmas={'foreign_keys': 1}"
        )


def one_way(
    models: Sequence[type[SyncModel]],
    bundles: Bundles | None,
    download_only: Sequence[type[SyncModel]],
) -> tuple[frozenset[str], frozenset[str]]:
    """The upload-only (bundled) and the download-only collections, checked: each among
    the synced models, none both."""
    upload = bundles.names if bundles is not None else frozenset()
    download = frozenset(collection_name(m) for m in download_only)
    names = {collection_name(m) for m in models}
    for label, chosen in (("bundles", upload), ("download_only", download)):
        if not chosen <= names:
            raise ConfigurationError(
                f"{label} names {sorted(chosen - names)}, not among the synced models",
                hint="pass every upload-only and download-only model in models too",
            )
    if upload & download:
        raise ConfigurationError(
            f"{sorted(upload & download)} cannot be both upload-only and download-only"
        )
    return upload, download

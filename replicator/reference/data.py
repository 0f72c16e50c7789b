"""Download-only reference data: collections the app reads and only the service writes.

**Download-only collections** (``Replicator(..., download_only=[FormSchema,
Localization])``): form schemas, localizations, dashboard aggregates, contacts.
They are pulled like any collection, by their last-updated cursor
(``DownloadedTracker``), and each remote change overwrites the local copy. They
are never uploaded, and the app cannot write them: a ``BEFORE`` trigger refuses
every insert, update and delete that does not come from the engine, with an
``IntegrityError`` whose message starts ``replicator: <table> is download-only``.
So a local copy is always exactly the service's, never a half-edited mix.

**Localizations** are one row per form and language whose ``strings`` column holds
a JSON object of field key → text; :func:`localizations` reads it as a dictionary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping

import peewee

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

_GUARD_OPS = ("INSERT", "UPDATE", "DELETE")


def _guard_name(table: str, op: str) -> str:
    return f"replicator_{table}_download_only_{op.lower()}"


def guard_download_only(db: peewee.Database, tables: Iterable[str], chosen: frozenset[str]) -> None:
    """Install the triggers refusing app writes on the ``chosen`` tables, and drop them
    from the others (a collection no longer download-only). Idempotent."""
    gate = "(SELECT applying FROM replicator_control WHERE singleton = 1) = 0"
    for table in tables:
        for op in _GUARD_OPS:
            name = _guard_name(table, op)
            if table not in chosen:
                db.execute_sql(f'DROP TRIGGER IF EXISTS "{name}"')
                continue
            message = (
                f"replicator: {table} is download-only: the app cannot {op.lower()} its rows"
                " (the next sync brings the service's copy)"
            ).replace("'", "''")
            db.execute_sql(
                f'CREATE TRIGGER IF NOT EXISTS "{name}" BEFORE {op} ON "{table}" WHEN {gate}'
                f" BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )


def localizations(
    model: type[peewee.Model],
    form: str,
    language: str,
    *,
    form_field: str = "form",
    language_field: str = "language",
    strings_field: str = "strings",
) -> dict[str, str]:
    """The localization of ``form`` in ``language`` as a dictionary of field key → text
    (empty if there is none). ``strings_field`` holds the JSON object; entries that are
    not text are left out, so a damaged document cannot break a form."""
    fields = model._meta.fields
    for name in (form_field, language_field, strings_field):
        if name not in fields:
            raise ConfigurationError(
                f"{model.__name__} has no field {name!r}",
                hint="name the fields: localizations(..., form_field=, language_field=,"
                " strings_field=)",
            )
    row = (
        model.select(fields[strings_field])
        .where((fields[form_field] == form) & (fields[language_field] == language))
        .order_by(model._meta.primary_key)
        .first()
    )
    if row is None:
        return {}
    raw = getattr(row, strings_field)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            log.warning("localization %s/%s is not JSON", form, language)
            return {}
    if not isinstance(raw, Mapping):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}

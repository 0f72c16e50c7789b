"""The shape of a device's config file (TOML), checked by cattrs.

Each section is an attrs class; :func:`check_shape` structures the parsed TOML into
:class:`FileShape` with a cattrs converter that forbids unknown keys (a typo is never
ignored) and takes strings, flags and lists of table names only as they are (a
number is no string, ``"yes"`` is no flag, a string is no list). Every mistake of the
file is found at once and told in one line, each naming its key and the type wanted:
``phone.toml: remote.embedded must be a non-empty string (str), not 5; unknown
key(s) ['colour'] (known: ...)``. What no type can say (exactly one remote, a key
with a blob store) is checked by ``config.py`` after this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NewType

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError

from ..errors import ConfigurationError

#: a list of table names, none empty, at least one
Tables = NewType("Tables", list)  # type: ignore[type-arg]


@attrs.frozen
class RemoteSection:
    embedded: str | None = None
    firestore_root: str | None = None
    firestore_project: str | None = None


@attrs.frozen
class BlobsSection:
    directory: str | None = None
    s3: str | None = None
    endpoint_url: str | None = None


@attrs.frozen
class KeySection:
    file: str | None = None
    passphrase_env: str | None = None


@attrs.frozen
class BundlesSection:
    collections: Tables | None = None
    ingest_url: str | None = None
    ingest_token_env: str | None = None
    ingest_queue: bool = False
    directory: str | None = None
    s3: str | None = None
    endpoint_url: str | None = None


@attrs.frozen
class ServiceSection:
    device_tokens: str | None = None


@attrs.frozen
class FileShape:
    """Every key a config file may hold, and its type."""

    models: str
    database: str | None = None
    device_name: str | None = None
    app_version: str | None = None
    remote: RemoteSection | None = None
    blobs: BlobsSection | None = None
    key: KeySection | None = None
    database_key: KeySection | None = None
    download_only: Tables | None = None
    bundles: BundlesSection | None = None
    service: ServiceSection | None = None


def _text(value: Any, _: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"must be a non-empty string (str), not {value!r}")


def _flag(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false (bool), not {value!r}")


def _tables(value: Any, _: Any) -> list[str]:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise ValueError(f'must be a list of table names (["a", "b"]), not {value!r}')


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
_converter.register_structure_hook(str, _text)
_converter.register_structure_hook(bool, _flag)
_converter.register_structure_hook(Tables, _tables)


def _said(exc: BaseException, wanted: Any) -> str:
    """One mistake, in words (the key is put before it by :func:`check_shape`)."""
    if isinstance(exc, ForbiddenExtraKeysError):
        known = sorted(a.name for a in attrs.fields(exc.cl))
        return f"unknown key(s) {sorted(exc.extra_fields)} (known: {known})"
    if isinstance(exc, KeyError):
        return 'is required (e.g. models = "my_app.models")'
    if isinstance(exc, ValueError):
        return str(exc)
    if attrs.has(wanted) or isinstance(exc, AttributeError):
        return "must be a table ([section] with keys under it)"
    return f"is not valid ({type(exc).__name__}: {exc})"


def check_shape(path: Path, raw: dict[str, Any]) -> FileShape:
    """``raw`` (a config file's TOML) as a :class:`FileShape`, or a
    ``ConfigurationError`` naming every key that is unknown or of the wrong type."""
    try:
        return _converter.structure(raw, FileShape)
    except (cattrs.ClassValidationError, cattrs.IterableValidationError) as exc:
        problems = []
        for line in cattrs.transform_error(exc, format_exception=_said):
            said, _, where = line.rpartition(" @ $")
            where = where.lstrip(".")
            if said.startswith("unknown key"):
                problems.append(f"{said} in [{where}]" if where else said)
            else:
                problems.append(f"{where} {said}")
        raise ConfigurationError(f"{path}: {'; '.join(problems)}") from None

"""Row values in and out of remote documents, in one place.

Rows travel as their SQLite values (``None``, ``int``, ``float``, ``str``,
``bytes``) keyed by column name, so no peewee conversion runs in the sync loop.
Stores with richer types (Firestore) map these through the models' field
types; JSON-backed stores tag bytes as base64.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import functools
import json
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import peewee

from .errors import RemoteDataError, UnsupportedValueError

if TYPE_CHECKING:
    from .stores.base import RemoteDoc


def _encode_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a document value")


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$bytes" in obj:
            return base64.b64decode(obj["$bytes"])
        # the forms SQL writes a row's pre-image in (model.preimage_json)
        if "$real" in obj and isinstance(obj["$real"], str):
            return float(obj["$real"])
        if "$hex" in obj and isinstance(obj["$hex"], str):
            return bytes.fromhex(obj["$hex"])
    return obj


# built once: json.dumps/json.loads with options build a new coder on every call
_ENCODER = json.JSONEncoder(default=_encode_default, separators=(",", ":"), sort_keys=True)
_DECODER = json.JSONDecoder(object_hook=_decode_hook)


def encode_json(data: Mapping[str, Any]) -> str:
    """Encode a document's data as JSON, with bytes tagged as base64."""
    return _ENCODER.encode(data)


def decode_json(text: str | bytes, *, strict_document: bool = False) -> Any:
    """Decode JSON written by :func:`encode_json`. ``strict_document``: ``text`` is one
    object with nothing around it (what a store wrote), which decodes faster."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    if strict_document and text[:1] == "{":
        value, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError(f"extra data after the document at {end}")
        return value
    return _DECODER.decode(text)


#: the integers SQLite (and Firestore) hold
INT64 = (-(2**63), 2**63 - 1)

_INT_FIELDS = (peewee.IntegerField, peewee.BooleanField, peewee.AutoField)
_REAL_FIELDS = (peewee.FloatField, peewee.DoubleField, peewee.DecimalField)
_TEXT_FIELDS = (
    peewee.CharField,
    peewee.TextField,
    peewee.DateTimeField,
    peewee.DateField,
    peewee.TimeField,
    peewee.UUIDField,
)


def _storage_field(field: peewee.Field) -> peewee.Field:
    while isinstance(field, peewee.ForeignKeyField):
        field = field.rel_field
    return field


def plain_type(field: peewee.Field) -> type | None:
    """The Python type a value of the field's column has when nothing needs checking
    (remembered on the field: the check runs on every downloaded value)."""
    try:
        known: type | None = field.__dict__["_replicator_plain"]
        return known
    except KeyError:
        pass
    plain = _compute_plain_type(field)
    field.__dict__["_replicator_plain"] = plain
    return plain


def _compute_plain_type(field: peewee.Field) -> type | None:
    target = _storage_field(field)
    if isinstance(target, _TEXT_FIELDS):
        return str
    if isinstance(target, _INT_FIELDS):
        return int
    if isinstance(target, _REAL_FIELDS) and not isinstance(target, peewee.DecimalField):
        return float
    return None


def fits_plainly(value: Any, plain: type | None) -> bool:
    """Whether ``value`` is of its column's plain type (see :func:`plain_type`) and fit
    for SQLite as it is: :func:`check_value`'s common case, cheap enough for every value."""
    kind = type(value)
    return (
        kind is plain
        and (kind is not str or value.isascii())
        and (kind is not int or INT64[0] <= value <= INT64[1])
        and (kind is not float or value == value)
    )


def check_value(collection: str, doc_id: str, field: peewee.Field, value: Any) -> Any:
    """Return ``value`` fit for the field's column, or raise RemoteDataError."""
    if fits_plainly(value, plain_type(field)):
        return value  # the common case, decided without the general checks below
    if value is None:
        if not field.null and not field.primary_key:
            raise RemoteDataError(collection, doc_id, f"{field.column_name} is null")
        return None
    problem = _unusable(value)
    if problem:
        raise RemoteDataError(collection, doc_id, f"{field.column_name} {problem}")
    target = _storage_field(field)
    if isinstance(target, _INT_FIELDS):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
    elif isinstance(target, _REAL_FIELDS):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(target, peewee.DecimalField) and isinstance(value, str):
            return value
    elif isinstance(target, peewee.BlobField):
        if isinstance(value, bytes | bytearray):
            return bytes(value)
    elif isinstance(target, _TEXT_FIELDS):
        if isinstance(value, str):
            return value
    elif isinstance(value, str | int | float | bytes):
        return value
    raise RemoteDataError(
        collection,
        doc_id,
        f"{field.column_name} holds a {type(value).__name__} where the "
        f"{type(target).__name__} expects another type",
    )


def _unusable(value: Any) -> str | None:
    """Why SQLite cannot store ``value`` as it is, or None (cheap: runs on every value)."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds text that is not valid UTF-8"
        return None
    if kind is int:
        return (
            None
            if INT64[0] <= value <= INT64[1]
            else (f"holds an integer beyond 64 bits ({str(value)[:24]}…)")
        )
    if kind is float and value != value:
        return "holds NaN"
    return None


#: what a row id must be, as the errors say it
ROW_ID_RULE = "text of 1-36 printable characters, without '/', other than '.', '..' and '__…__'"


def names_a_document(doc_id: str) -> bool:
    """True for text a document store can take as a document's id: not empty, without
    ``/``, other than ``.``, ``..`` and ``__…__`` (Firestore's rules; the strictest)."""
    return (
        bool(doc_id)
        and "/" not in doc_id
        and doc_id not in (".", "..")
        and not (len(doc_id) >= 4 and doc_id.startswith("__") and doc_id.endswith("__"))
    )


def is_row_id(doc_id: Any) -> bool:
    """True for an id every store can name a document by and every device can keep."""
    return (
        isinstance(doc_id, str)
        and len(doc_id) <= 36
        and doc_id.isprintable()
        and names_a_document(doc_id)
        and _unusable(doc_id) is None
    )


def check_id(collection: str, doc_id: Any) -> str:
    """A remote document id fit for a row (:func:`is_row_id`).

    Ids are client UUIDs (``new_id``); an app may choose its own, but a remote id
    that could not be a row's primary key is refused, never written.
    """
    if not is_row_id(doc_id):
        shown = repr(doc_id)[:60]
        raise RemoteDataError(collection, shown, f"its id is not a row id ({ROW_ID_RULE})")
    return str(doc_id)


def to_sqlite(value: Any) -> Any:
    """A Python value as SQLite stores it (peewee's text forms for dates, decimals, UUIDs)."""
    if value is None or isinstance(value, str | int | float | bytes):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def missing_value(field: peewee.Field) -> Any:
    """The value of a column a remote document lacks (written before the column existed)."""
    if field.column_name in ("createdOn", "updatedOn", "updatedBy"):
        return None
    default = field.default() if callable(field.default) else field.default
    return None if default is None else to_sqlite(field.db_value(default))


# -- native-typed stores (Firestore) --------------------------------------------------
#
# A store that keeps typed values (``native_types = True``) gets rows converted
# field by field: naive UTC datetimes become timestamps, booleans bools, JSON
# columns maps and lists, decimals exact strings; everything else travels as
# SQLite holds it. A conversion is used only when converting back gives the very
# value SQLite held (same type, same bytes); otherwise the value travels as it
# is (an aware datetime's text keeps its offset, JSON text keeps its spacing),
# so every value round-trips exactly. Values of columns the model does not know
# pass through both ways untouched.


def _is_json_field(field: peewee.Field) -> bool:
    return "JSON" in type(field).__name__ or getattr(field, "replicator_json", False)


def _convert(
    model: type[peewee.Model],
    data: Mapping[str, Any],
    one: Callable[[peewee.Field, Any], Any],
) -> dict[str, Any]:
    """Apply ``one(storage_field, value)`` to the known, non-null columns of ``data``."""
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    out: dict[str, Any] = {}
    for col, value in data.items():
        field = fields.get(col)
        out[col] = value if field is None or value is None else one(_storage_field(field), value)
    return out


def native_kinds(field: peewee.Field) -> tuple[str, ...]:
    """The kinds of value a native-typed store (Firestore) holds for a non-null value
    of ``field``, named as Firestore's security rules name types (``string``,
    ``number``, ``bool``, ``timestamp``, ``bytes``), from the column's type and what
    :func:`to_native` makes of it; empty when no kind can be promised (JSON, a UUID
    column of numeric affinity, a type this does not know)."""
    target = _storage_field(field)
    if _is_json_field(target) or isinstance(target, peewee.UUIDField):
        return ()
    if isinstance(target, peewee.DateTimeField):  # text that is no date travels as text
        return ("timestamp", "string")
    if isinstance(target, peewee.BooleanField):
        return ("bool",)
    if isinstance(target, peewee.DecimalField):
        return ("string",)
    if isinstance(target, _TEXT_FIELDS):
        return ("string",)
    if isinstance(target, (*_INT_FIELDS, *_REAL_FIELDS)):
        return ("number",)
    if isinstance(target, peewee.BlobField):
        return ("bytes",)
    return ()


def to_native(model: type[peewee.Model], data: Mapping[str, Any]) -> dict[str, Any]:
    """Row values in a native-typed store's form; raises ``UnsupportedValueError``
    for a value the store cannot hold (an integer beyond 64 bits)."""
    out = dict(data)
    for col, field in _native_plan(model):
        value = out.get(col)
        if value is not None:
            out[col] = _exact_to_native(field, value)
    for col, value in out.items():
        if value is None or type(value) is str:
            continue
        problem = _unstorable(value)
        if problem:
            raise UnsupportedValueError(col, problem)
    return out


@functools.lru_cache(maxsize=256)
def _native_plan(model: type[peewee.Model]) -> tuple[tuple[str, peewee.Field], ...]:
    """The columns of ``model`` whose values a native store keeps in another form
    (dates, booleans, decimals, JSON), with the field that stores each; every other
    column travels as SQLite holds it."""
    out = []
    for field in model._meta.sorted_fields:
        target = _storage_field(field)
        if isinstance(
            target, peewee.DateTimeField | peewee.BooleanField | peewee.DecimalField
        ) or _is_json_field(target):
            out.append((field.column_name, target))
    return tuple(out)


def _exact_to_native(target: peewee.Field, value: Any) -> Any:
    native = _to_native(target, value)
    if native is value:
        return value
    back = to_sqlite(_from_native(target, native))  # as SQLite would hold it
    if type(back) is type(value) and back == value:
        return native
    return value


def _unstorable(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return f"the integer {str(value)[:30]}… is beyond 64 bits"
    if depth > 20:
        return "nested deeper than 20 levels"
    if isinstance(value, Mapping):
        return next((p for v in value.values() if (p := _unstorable(v, depth + 1))), None)
    if isinstance(value, list | tuple):
        return next((p for v in value if (p := _unstorable(v, depth + 1))), None)
    return None


def from_native(model: type[peewee.Model], data: Mapping[str, Any]) -> dict[str, Any]:
    return _convert(model, data, _from_native)


def _to_native(target: peewee.Field, value: Any) -> Any:
    if isinstance(target, peewee.DateTimeField) and isinstance(value, str):
        parsed = _parse_datetime(value)
        if parsed is None:
            return value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=_dt.timezone.utc)  # naive values are UTC
        return parsed.astimezone(_dt.timezone.utc)
    if isinstance(target, peewee.BooleanField) and isinstance(value, int):
        return bool(value)
    if isinstance(target, peewee.DecimalField) and isinstance(value, int | float):
        return str(decimal.Decimal(repr(value)))  # exact text remotely; SQLite keeps a number
    if _is_json_field(target) and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _from_native(target: peewee.Field, value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        # the text the sqlite3 adapter (and so peewee) stores for a datetime
        return _dt.datetime.combine(value.date(), value.time()).isoformat(sep=" ")
    if isinstance(target, peewee.DecimalField) and isinstance(value, str):
        try:
            number = decimal.Decimal(value)
        except decimal.InvalidOperation:
            return value  # check_value reports it
        return int(number) if number == number.to_integral_value() else float(number)
    if _is_json_field(target) and isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _parse_datetime(text: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@attrs.frozen
class RowCodec:
    """Rows between SQLite's form and the form a store keeps: typed values for a
    store with ``NativeTypes`` (``native``), else rows as SQLite holds them."""

    native: bool

    def incoming(self, model: type[peewee.Model], doc: RemoteDoc) -> RemoteDoc:
        """A remote document with its values in SQLite form."""
        if not self.native:
            return doc
        return attrs.evolve(doc, data=from_native(model, doc.data))

    def outgoing(self, model: type[peewee.Model], data: dict[str, Any]) -> dict[str, Any]:
        """A row's values in the store's form."""
        if not self.native:
            return data
        return to_native(model, data)

"""What a device asks a storage-grant service for, and what it gets back: the wire
format of ``POST /storage/sign`` shared by the service (``replicator.grants``) and the
device's :class:`~replicator.stores.granted.GrantedBlobStore`.

A request is ``{"ops": [<op>, ...]}``, each op one S3 operation on one key *relative
to the caller's own folder* (the service alone decides where that folder is)::

    {"op": "put", "key": "snapshots/1.snap", "sha256": "<hex>",
     "if_none_match": true, "if_match": "\\"<etag>\\""}          (both optional)
    {"op": "get" | "head" | "delete", "key": "..."}
    {"op": "list", "prefix": "snapshots/", "continuation": "<token>"}  (token optional)

``"space": "<name>"`` on a get, head or list addresses one of the service's read-only
shared folders (reference data) instead of the caller's own. ``"scope": "<scopeId>"``
on any op addresses the folder of a scope the caller is a member of
(``scopes/{scopeId}/``; the service checks the membership on every request). An op
names at most one of them; an op naming neither is the caller's own folder, as before.

The answer is ``{"expires_in": <seconds>, "requests": [<signed>, ...]}``, one signed
request per op, in order: ``{"method", "url", "headers"}``, the headers being exactly
those signed into the URL (conditions, checksum, metadata), which the device must send
unchanged; for a list, ``"base"`` is the bucket prefix its keys start with.

:func:`key_problem` is the one rule for keys, checked by the device before it asks
and by the service before it signs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

OpName = Literal["put", "get", "head", "list", "delete"]
OPS: tuple[OpName, ...] = ("put", "get", "head", "list", "delete")
#: the operations a read-only shared space allows
READ_OPS = frozenset({"get", "head", "list"})
#: most UTF-8 bytes of a relative key (S3 allows 1024 for the whole key, folder included)
MAX_KEY_BYTES = 900
#: most UTF-8 bytes of one segment (servers that keep keys as paths allow 255: SeaweedFS, MinIO)
MAX_SEGMENT_BYTES = 255
#: most characters of a list's continuation token
MAX_TOKEN = 1024
#: most ops in one request to the service
MAX_OPS = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: most characters of a scope's id (``replicator.scopes.members.valid_scope_id``'s limit)
MAX_SCOPE = 128


class BadOp(ValueError):
    """An op the service refuses to sign: malformed, or a key outside the rules."""


def key_problem(key: object, *, prefix: bool = False) -> str | None:
    """Why ``key`` cannot name an object under a user's folder, or ``None`` when it can.

    A key is relative: non-empty text of at most :data:`MAX_KEY_BYTES` UTF-8 bytes,
    ``/``-separated segments of at most :data:`MAX_SEGMENT_BYTES` bytes, none of which
    is empty, ``.`` or ``..``, with no backslash
    and no control, format or separator character other than the space. Anything else
    (``%2e%2e``, ``..%2f``) is taken literally: S3 keys are literal, so such a key stays
    inside the folder. With ``prefix`` (a list), ``""`` is allowed and one trailing
    ``/`` is taken off before the check.
    """
    if not isinstance(key, str):
        return "a key is text"
    if prefix:
        if key == "":
            return None
        key = key[:-1] if key.endswith("/") else key
    if not key:
        return "a key is not empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "a key is valid Unicode (no lone surrogates)"
    if size > MAX_KEY_BYTES:
        return f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8"
    if "\\" in key:
        return "a key has no backslash"
    if not key.isprintable():
        return "a key has no control, format or separator characters"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return "a key is relative, with no empty, '.' or '..' segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a key's segments are at most {MAX_SEGMENT_BYTES} bytes of UTF-8"
    return None


def scope_problem(scope: object) -> str | None:
    """Why ``scope`` cannot name a scope's folder (one segment of a key, at most
    :data:`MAX_SCOPE` characters), or ``None``. The service checks more
    (``replicator.scopes.members.valid_scope_id``) and the membership."""
    if not isinstance(scope, str):
        return "a scope id is text"
    if len(scope) > MAX_SCOPE:
        return f"a scope id is at most {MAX_SCOPE} characters"
    if "/" in scope:
        return "a scope id has no '/'"
    return key_problem(scope)


@attrs.frozen
class Op:
    """One operation a device asks to have signed (see the module's docstring)."""

    op: OpName
    key: str = ""
    sha256: str | None = None
    if_none_match: bool = False
    if_match: str | None = None
    continuation: str | None = None
    space: str | None = None
    scope: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        out["prefix" if self.op == "list" else "key"] = self.key
        for name in ("sha256", "if_match", "continuation", "space", "scope"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.if_none_match:
            out["if_none_match"] = True
        return out

    @classmethod
    def from_json(cls, data: object) -> Op:
        """The op ``data`` holds; :class:`BadOp` saying why when it is not a valid one."""
        if not isinstance(data, Mapping):
            raise BadOp("an op is a JSON object")
        op = data.get("op")
        if op not in OPS:
            raise BadOp(f"op is one of {', '.join(OPS)}")
        name = "prefix" if op == "list" else "key"
        allowed = {"op", name, "space", "scope"} | _EXTRA[op]
        unknown = sorted(str(k)[:40] for k in data if k not in allowed)
        if unknown:
            raise BadOp(f"a {op} takes no {', '.join(unknown)}")
        key = data.get(name)
        problem = key_problem(key, prefix=op == "list")
        if problem:
            raise BadOp(f"{name} {str(key)[:80]!r}: {problem}")
        return cls(op=op, key=key, **_options(op, data))  # type: ignore[arg-type]


_EXTRA: dict[str, frozenset[str]] = {
    "put": frozenset({"sha256", "if_none_match", "if_match"}),
    "list": frozenset({"continuation"}),
    "get": frozenset(),
    "head": frozenset(),
    "delete": frozenset(),
}


def _options(op: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The checked optional fields of an op's JSON."""
    out: dict[str, Any] = {}
    space = data.get("space")
    if space is not None:
        if not isinstance(space, str) or not _SPACE.fullmatch(space):
            raise BadOp("space is the name of one of the service's shared folders")
        out["space"] = space
    scope = data.get("scope")
    if scope is not None:
        problem = scope_problem(scope)
        if problem:
            raise BadOp(f"scope {str(scope)[:80]!r}: {problem}")
        if space is not None:
            raise BadOp("an op names a space or a scope, not both")
        out["scope"] = scope
    if op == "put":
        sha = data.get("sha256")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise BadOp("a put names its bytes' SHA-256: 64 lowercase hex digits")
        inm, etag = data.get("if_none_match", False), data.get("if_match")
        if not isinstance(inm, bool):
            raise BadOp("if_none_match is true or false")
        if etag is not None and not _is_etag(etag):
            raise BadOp("if_match is an etag: printable ASCII, at most 200 characters")
        if inm and etag is not None:
            raise BadOp("a put has if_none_match or if_match, not both")
        out.update(sha256=sha, if_none_match=inm, if_match=etag)
    if op == "list":
        token = data.get("continuation")
        if token is not None and not _is_token(token, MAX_TOKEN):
            raise BadOp(f"continuation is printable text of at most {MAX_TOKEN} characters")
        out["continuation"] = token
    return out


def _is_token(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _is_etag(value: object) -> bool:
    return isinstance(value, str) and _is_token(value, 200) and value.isascii()


@attrs.frozen
class Signed:
    """One request the service signed: send it as it is, before it expires."""

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: for a list: the bucket prefix every key it answers starts with
    base: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "url": self.url, "headers": self.headers}
        if self.base is not None:
            out["base"] = self.base
        return out

    @classmethod
    def from_json(cls, data: object) -> Signed:
        """The signed request ``data`` holds; ``ValueError`` when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("a signed request is a JSON object")
        method, url, headers = data.get("method"), data.get("url"), data.get("headers", {})
        base = data.get("base")
        if method not in ("GET", "PUT", "HEAD", "DELETE") or not isinstance(url, str):
            raise ValueError("a signed request has a method and a URL")
        if not url.startswith(("http://", "https://")):
            raise ValueError("a signed request's URL is http(s)")
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("a signed request's headers are text")
        if base is not None and not isinstance(base, str):
            raise ValueError("a list's base is text")
        return cls(method, url, dict(headers), base)

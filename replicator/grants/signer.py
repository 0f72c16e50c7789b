"""The signer: one user's operations on their own folder, as presigned S3 requests.

:class:`Signer` holds the service's S3 client (its own credentials, which never leave
the service) and turns each :class:`~replicator.stores.grant_ops.Op` of a verified
user into a request the device sends to S3 itself. The device names keys *relative*
to its folder; the signer alone maps them to ``{root}/{uid}/{key}`` and signs the
whole request: method, bucket, key (a list: its prefix and continuation token),
expiry, and for a put the ``If-None-Match`` / ``If-Match`` condition, the
``x-amz-checksum-sha256`` checksum and the ``x-amz-meta-sha256`` metadata. S3 refuses
a request whose signed parts were changed (``SignatureDoesNotMatch``), so a device can
do with a grant exactly what was signed, under its own folder, until it expires.

Shared folders (``shared``, e.g. ``{"reference": "reference"}``) are read-only: get,
head and list only, for every signed-in user.

Scopes' folders (``{scopes}/{scopeId}/``, given ``members``): an op naming a scope is
granted only when ``members(uid, scope)`` answers a role *now* (one call per scope
per request; :class:`~replicator.grants.members.FirestoreMembers` reads
``scopes/{id}/members/{uid}``). Every member reads; members write (put, with the
conditions asked, and delete) unless ``write_roles`` names the roles that may, when
the others only read.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError, TransientError
from ..scopes.members import valid_scope_id
from ..stores.grant_ops import READ_OPS, BadOp, Op, Signed, key_problem

try:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the storage signer needs boto3: pip install 'replicator[s3]'") from exc

#: how long a signed request stays valid, by default (seconds)
EXPIRES = 900
#: most scopes one request may name (each costs a membership read; a device's store
#: names one)
MAX_SCOPES = 10

_METHODS = {
    "put": ("put_object", "PUT"),
    "get": ("get_object", "GET"),
    "head": ("head_object", "HEAD"),
    "delete": ("delete_object", "DELETE"),
    "list": ("list_objects_v2", "GET"),
}


class Refused(Exception):
    """The caller may not do this (a write in a read-only shared folder, a user id that
    cannot name a folder, a scope the user is not a member of): the service answers 403."""


class Signer:
    """Signs a user's operations with the service's boto3 S3 ``client`` on ``bucket``.

    ``root`` is the folder of the users' folders; ``shared`` maps a read-only space's
    name to its folder in the bucket; ``expires`` is each grant's lifetime in seconds.
    ``members(uid, scope)`` is the user's role in a scope now, or ``None`` (without it,
    ops naming a scope are refused); ``scopes`` is the folder of the scopes' folders;
    ``write_roles``, when given, the roles that may put and delete there.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        root: str = "users",
        shared: Mapping[str, str] | None = None,
        expires: int = EXPIRES,
        members: Callable[[str, str], str | None] | None = None,
        scopes: str = "scopes",
        write_roles: Collection[str] | None = None,
    ) -> None:
        if not 1 <= expires <= 7 * 24 * 3600:
            raise ConfigurationError(
                f"a grant's lifetime is 1 s to 7 days (S3's limit), not {expires}"
            )
        for name, folder in {"root": root, "scopes": scopes, **(shared or {})}.items():
            if key_problem(folder):
                raise ConfigurationError(f"{name}'s folder {folder!r} is not a relative key")
        for name, folder in {"root": root, **(shared or {})}.items():
            if _nested(scopes, folder):
                raise ConfigurationError(
                    f"the scopes' folder {scopes!r} overlaps {name}'s {folder!r}",
                    hint="give scopes' folders a folder of their own (scopes='scopes')",
                )
        self.client = client
        self.bucket = bucket
        self.root = root
        self.shared = dict(shared or {})
        self.expires = expires
        self.members = members
        self.scopes = scopes
        self.write_roles = None if write_roles is None else frozenset(write_roles)
        self._probe()

    def _probe(self) -> None:
        """Sign one conditional put now, so a client that cannot sign the way grants
        need (SigV2, which boto3 still uses for presigned URLs of a custom endpoint in
        us-east-1, leaves ``If-None-Match`` unsigned) is refused at start-up. Missing
        credentials are left for the first grant to report."""
        probe = Op("put", "probe", sha256="0" * 64, if_none_match=True)
        with contextlib.suppress(BotoCoreError, ClientError):
            self._sign(probe, f"{self.root}/")

    def __repr__(self) -> str:
        return f"Signer({self.bucket!r}, root={self.root!r}, shared={sorted(self.shared)})"

    def base(self, uid: str, op: Op, roles: Mapping[str, str | None] | None = None) -> str:
        """The bucket prefix ``op`` works under for ``uid``: the user's folder, a shared
        one (read-only), or a scope's (``roles``: the user's role in each scope the ops
        name, :meth:`roles`). :class:`Refused` or :class:`BadOp` when there is none."""
        if key_problem(uid) or "/" in uid:
            raise Refused(f"the user id {uid[:40]!r} cannot name a folder")
        if op.scope is not None:
            return self._scope_base(op, (roles or {}).get(op.scope))
        if op.space is not None:
            if op.space not in self.shared:
                raise BadOp(f"there is no shared space {op.space!r}")
            if op.op not in READ_OPS:
                raise Refused(f"the shared space {op.space!r} is read-only: no {op.op}")
            return f"{self.shared[op.space]}/"
        return f"{self.root}/{uid}/"

    def _scope_base(self, op: Op, role: str | None) -> str:
        scope = op.scope or ""
        if role is None:
            raise Refused(f"not a member of the scope {scope!r}")
        writes = op.op not in READ_OPS
        if writes and self.write_roles is not None and role not in self.write_roles:
            raise Refused(f"the role {role!r} only reads the scope {scope!r}: no {op.op}")
        return f"{self.scopes}/{scope}/"

    def roles(self, uid: str, ops: Sequence[Op]) -> dict[str, str | None]:
        """``uid``'s role now in each scope ``ops`` name (``None``: not a member), one
        ``members`` call per scope. :class:`BadOp` for a scope id that cannot be one or
        when this service grants no scopes; the lookup's own errors as they are
        (``TransientError`` when the membership cannot be read now)."""
        named = sorted({op.scope for op in ops if op.scope is not None})
        if not named:
            return {}
        if self.members is None:
            raise BadOp("this service grants no scopes' folders")
        if len(named) > MAX_SCOPES:
            raise BadOp(f"a grant request names at most {MAX_SCOPES} scopes")
        for scope in named:
            if not valid_scope_id(scope):
                raise BadOp(f"{scope[:80]!r} is not a scope id")
        if key_problem(uid) or "/" in uid:
            raise Refused(f"the user id {uid[:40]!r} cannot name a folder")
        return {scope: self.members(uid, scope) for scope in named}

    def sign(self, uid: str, ops: Sequence[Op]) -> list[Signed]:
        """One signed request per op, in order (see the module's docstring).

        Raises :class:`BadOp` or :class:`Refused` for an op that cannot be granted
        (nothing is signed then), ``TransientError`` when the service's credentials
        cannot be had now (or a scope's membership cannot be read now),
        ``ConfigurationError`` when it has none."""
        roles = self.roles(uid, ops)
        bases = [self.base(uid, op, roles) for op in ops]
        try:
            return [self._sign(op, base) for op, base in zip(ops, bases, strict=True)]
        except (NoCredentialsError, PartialCredentialsError, ParamValidationError) as exc:
            raise ConfigurationError(
                f"the service cannot sign S3 requests: {exc}",
                hint="give the service S3 credentials (an IAM role, or AWS_ACCESS_KEY_ID"
                " and AWS_SECRET_ACCESS_KEY)",
                orig=exc,
            ) from exc
        except (BotoCoreError, ClientError) as exc:  # fetching credentials failed now
            raise TransientError(f"the service cannot sign S3 requests now: {exc}") from exc

    def _sign(self, op: Op, base: str) -> Signed:
        method_name, method = _METHODS[op.op]
        params: dict[str, Any] = {"Bucket": self.bucket}
        headers: dict[str, str] = {}
        if op.op == "list":
            params["Prefix"] = base + op.key
            if op.continuation is not None:
                params["ContinuationToken"] = op.continuation
        else:
            params["Key"] = base + op.key
        if op.op == "put":
            assert op.sha256 is not None  # Op.from_json requires it
            checksum = base64.b64encode(bytes.fromhex(op.sha256)).decode()
            params.update(Metadata={"sha256": op.sha256}, ChecksumSHA256=checksum)
            headers.update({"x-amz-meta-sha256": op.sha256, "x-amz-checksum-sha256": checksum})
            if op.if_none_match:
                params["IfNoneMatch"] = headers["If-None-Match"] = "*"
            if op.if_match is not None:
                params["IfMatch"] = headers["If-Match"] = op.if_match
        url = self.client.generate_presigned_url(
            method_name, Params=params, ExpiresIn=self.expires, HttpMethod=method
        )
        _check_signed_headers(url, headers)
        return Signed(method, url, headers, base if op.op == "list" else None)


def _nested(one: str, other: str) -> bool:
    """Whether folder ``one`` is ``other``, or inside it, or holds it."""
    return f"{one}/".startswith(f"{other}/") or f"{other}/".startswith(f"{one}/")


def _check_signed_headers(url: str, headers: Mapping[str, str]) -> None:
    """Fail closed unless the URL signs exactly the headers the device will be told to
    send: a boto3 that signed another (a new default checksum) would make every grant
    fail at S3, and one that left a condition unsigned would let the device drop it."""
    signed = parse_qs(urlsplit(url).query).get("X-Amz-SignedHeaders", [""])[0].split(";")
    expected = {"host", *(name.lower() for name in headers)}
    if set(signed) != expected:
        raise ConfigurationError(
            f"boto3 signed the headers {sorted(signed)}, not {sorted(expected)}",
            hint="make the service's client sign SigV4: boto3.client('s3',"
            " config=botocore.config.Config(signature_version='s3v4'))",
        )

"""Members of scopes, as documents and as what a device learns of its user.

A member's document is ``scopes/{scopeId}/members/{uid}``: ``role``, plus ``uid`` (the
document's own id) and ``kind`` (the scope's kind), which the rules require so that
one collection-group query, ``members`` where ``uid`` is the caller's, finds every
scope of a user together with its kind and the user's role
(:meth:`~replicator.stores.firestore_user.UserFirestoreRemote.memberships`).
Write them with :func:`member_document`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigurationError

#: the fields of a member's document a device reads
UID, KIND = "uid", "kind"
#: a scope id a device accepts: what names a Firestore document and a file, not too long
_SCOPE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@attrs.frozen
class Membership:
    """The signed-in user's place in one scope: the scope's id, its kind, the role."""

    scope: str
    kind: str
    role: str

    @property
    def root(self) -> str:
        """The scope's root document in the remote."""
        return f"scopes/{self.scope}"


def member_document(
    uid: str, kind: str, role: str, *, added_by: str | None = None, at: Any = None
) -> dict[str, Any]:
    """The document of member ``uid`` of a scope of ``kind``, in the role ``role``, as an
    admin (``added_by``, a uid) or a server writes it; ``at`` is the time to record
    (``firestore.SERVER_TIMESTAMP`` under the rules, which require the request's time)."""
    doc: dict[str, Any] = {"role": role, UID: uid, KIND: kind}
    if added_by is not None:
        doc["addedBy"] = added_by
    if at is not None:
        doc["changedAt"] = at
    return doc


def valid_scope_id(scope: str) -> bool:
    """Whether a device accepts ``scope`` as a scope's id (it names a file too)."""
    return bool(_SCOPE_ID.fullmatch(scope)) and ".." not in scope


def acceptable(member: object) -> bool:
    """Whether ``member`` (from a directory: the server's answer) is a membership a
    device takes: a scope id it accepts, a kind and a role that are strings."""
    return (
        isinstance(member, Membership)
        and isinstance(member.scope, str)
        and valid_scope_id(member.scope)
        and isinstance(member.kind, str)
        and isinstance(member.role, str)
        and bool(member.kind and member.role)
    )


def parse_membership(path: str, data: Mapping[str, Any], uid: str) -> Membership | str:
    """The membership a member document at ``path`` (``scopes/{id}/members/{uid}``)
    gives ``uid``, or why it gives none (a document elsewhere, of another user, or
    damaged)."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "scopes" or parts[2] != "members":
        return f"{path!r:.80} is not a scope's member document"
    scope, doc_uid = parts[1], parts[3]
    if doc_uid != uid or data.get(UID) != uid:
        return f"{path!r:.80} is another user's"
    if not valid_scope_id(scope):
        return f"the scope id {scope!r:.80} is not one a device accepts"
    kind, role = data.get(KIND), data.get("role")
    if not isinstance(kind, str) or not isinstance(role, str) or not kind or not role:
        return f"{path!r:.80} has no kind or role"
    return Membership(scope, kind, role)


def checked_cap(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(
            f"max_scopes must be a positive integer, got {value!r}",
            hint="the most scopes this device may sync, e.g. max_scopes=50",
        )
    return value


__all__ = ["KIND", "UID", "Membership", "member_document", "parse_membership", "valid_scope_id"]

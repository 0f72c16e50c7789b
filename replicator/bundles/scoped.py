"""The ingest service in a scope: bundles land only where the scope's declaration lets
the sending user's role write (the same :class:`~replicator.scopes.roles.Scopes` the
Firestore rules are compiled from).

An ingestor whose store is a scope's root (``scopes/{scopeId}``, through admin
credentials, which no rule binds) takes ``scope=ScopeAccess(SCOPES, "campaign")``;
for each bundle of a signed-in user it reads the user's member document
(``members/{uid}`` in that root) once, and judges every row as the rules judge the
same write (:meth:`~replicator.scopes.roles.ScopeKind.refusal`): a row the role may
not create or update is refused with the reason, the others land. A bundle from
someone who is not a member (or from a caller who is not a signed-in user) is
rejected whole.

One ingestor for **every scope** takes ``scopes=ScopeRoots.firestore(SCOPES, client)``
(:class:`ScopeRoots`): a request names its scope (``IngestRequest.scope``, which
``HttpIngest(scope=...)`` sets), and before anything is read from the bucket or
written anywhere the service checks, per bundle, that the id can be a scope's
(:func:`~replicator.scopes.members.valid_scope_id`), that the scope's document
exists and declares a ``kind`` the declaration has, and that the signed-in caller is
a member in one of that kind's roles. A bundle failing any of these is refused with
the reason and recorded nowhere (a stranger cannot make the service write into a
scope's root). The others are served as above, in ``scopes/{scopeId}``, under that
kind's declaration: two reads more per bundle (the scope's document and the
caller's member document, which the rows' judge reads again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import peewee

from ..codec import names_a_document
from ..model import collection_name
from ..scopes.members import KIND, valid_scope_id
from ..scopes.roles import MEMBERS, ROLE, Scopes
from ..stores.base import RemoteStore
from .rows import BundleRejected

#: the top-level collection of scope documents (``scopes/{scopeId}``: ``kind``)
SCOPE_DOCS = "scopes"

#: why a row may not be written over what is stored (None: a create); None when it may
Permit = Callable[[Mapping[str, object], Mapping[str, object] | None], str | None]


@attrs.frozen
class ScopeAccess:
    """The declaration an ingestor of a scope enforces: ``scopes``, and the ``kind``
    of the scope its store's root is."""

    scopes: Scopes
    kind: str

    def __attrs_post_init__(self) -> None:
        self.scopes.kind(self.kind)  # ConfigurationError naming the declared kinds

    def role(self, store: RemoteStore, uid: str) -> str | None:
        """``uid``'s role in the scope whose root ``store`` is, or None (not a member)."""
        doc = store.get(MEMBERS, [uid]).get(uid)
        if doc is None or doc.deleted:
            return None
        role = doc.data.get(ROLE)
        kind = self.scopes.kind(self.kind)
        return role if isinstance(role, str) and role in kind.roles else None

    def permit(self, store: RemoteStore, uid: str | None, model: type[peewee.Model]) -> Permit:
        """The judge of ``uid``'s rows of ``model`` in this scope; ``BundleRejected``
        when ``uid`` is not a member (or no signed-in user sent the bundle)."""
        if uid is None:
            raise BundleRejected("bundles into a scope come from its signed-in members only")
        role = self.role(store, uid)
        if role is None:
            raise BundleRejected(f"user {uid} is not a member of this {self.kind}")
        kind, table = self.scopes.kind(self.kind), collection_name(model)
        owner = self.scopes.owners.get(table)

        def judge(row: Mapping[str, object], stored: Mapping[str, object] | None) -> str | None:
            return kind.refusal(role, table, uid, row, stored, owner)

        return judge


@attrs.frozen
class ScopeRoots:
    """Every scope of the declaration ``scopes``, for one ingestor
    (``Ingestor(..., scopes=...)``): ``top`` reads the scope documents (a remote store
    whose ``scopes`` collection holds them: Firestore's top level, admin credentials)
    and ``root(scope_id)`` is the remote store of ``scopes/{scope_id}``.
    :meth:`firestore` makes both from an admin client."""

    scopes: Scopes
    top: RemoteStore
    root: Callable[[str], RemoteStore]

    @classmethod
    def firestore(cls, scopes: Scopes, client: Any, *, timeout: float = 20.0) -> ScopeRoots:
        """The scopes of a Firestore project, through ``client`` (a
        ``google.cloud.firestore.Client`` with service-account credentials)."""
        from ..stores.firestore import FirestoreRemote

        def root(scope: str) -> RemoteStore:
            return FirestoreRemote(client, root=f"{SCOPE_DOCS}/{scope}", timeout=timeout)

        return cls(scopes, FirestoreRemote(client, timeout=timeout), root)

    def admit(self, scope: str, uid: str | None) -> tuple[str, RemoteStore, ScopeAccess]:
        """``uid``, the root of ``scope`` and the access ``uid``'s bundle into it is judged by;
        ``BundleRejected`` with why when the caller is not a signed-in user, the id
        cannot be a scope's, the scope does not exist, its kind is not declared, or the
        user is not its member."""
        if not scope:
            raise BundleRejected("this service takes bundles into scopes only: name one")
        if uid is None or not names_a_document(uid):
            raise BundleRejected("bundles into a scope come from its signed-in members only")
        if not valid_scope_id(scope):
            raise BundleRejected(
                f"{scope[:64]!r} is not a scope id (1 to 128 letters, digits, '_', '.', '-')"
            )
        doc = self.top.get(SCOPE_DOCS, [scope]).get(scope)
        if doc is None or doc.deleted:
            raise BundleRejected(f"there is no scope {scope}")
        kind = doc.data.get(KIND)
        if not isinstance(kind, str) or kind not in {k.name for k in self.scopes.kinds}:
            raise BundleRejected(
                f"scope {scope} is of kind {str(kind)[:40]!r}, which this service does not declare"
            )
        store, access = self.root(scope), ScopeAccess(self.scopes, kind)
        if access.role(store, uid) is None:
            raise BundleRejected(f"user {uid} is not a member of {kind} {scope}")
        return uid, store, access

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import peewee

from ..model import collection_name
from ..scopes.roles import MEMBERS, ROLE, Scopes
from ..stores.base import RemoteStore
from .rows import BundleRejected

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

"""Who may read and write what: the security rules generated from the models.

:func:`~replicator.scopes.rules.firestore_rules` writes the Firestore security
rules and indexes for an app's synced models (``replicator rules``).
:class:`~replicator.scopes.roles.Scopes` declares the scopes users share (a
campaign, a group), their roles and each role's grants per table;
:func:`~replicator.scopes.scoped.scoped_rules` compiles them
(``replicator rules --scopes``), and the ingest service enforces the same
declaration (``Ingestor(..., scope=...)``).
"""

from .roles import Grant, ScopeKind, Scopes
from .rules import FirestoreRules, firestore_rules
from .scoped import scoped_rules

__all__ = ["FirestoreRules", "Grant", "ScopeKind", "Scopes", "firestore_rules", "scoped_rules"]

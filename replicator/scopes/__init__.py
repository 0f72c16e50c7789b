"""Who may read and write what: the security rules generated from the models.

:func:`~replicator.scopes.rules.firestore_rules` writes the Firestore security
rules and indexes for an app's synced models (``replicator rules``).
"""

from .rules import FirestoreRules, firestore_rules

__all__ = ["FirestoreRules", "firestore_rules"]

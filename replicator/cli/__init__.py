"""The ``replicator`` command: one module per command group, thin over the library.

:mod:`.app` defines the group :data:`main`; each command module registers its
commands on it when imported, which is why this package imports them all before
it exports ``main`` (the console script ``replicator``, ``python -m replicator``
and ``python -m replicator.cli`` all run it).
"""

# imported for their side effect: each registers its commands on ``main``
from . import compact, demo, denied, ingest, keys, outbox, rules, snapshot, sync  # noqa: F401
from .app import main

__all__ = ["main"]

"""The ``replicator`` command: one module per command group, thin over the library."""

from .main import main

__all__ = ["main"]

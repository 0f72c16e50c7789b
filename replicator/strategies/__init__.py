"""Policies the engine consults: conflict resolution (and snapshot timing)."""

from .conflict import ClientWins, LastWriterWins, ServerWins

__all__ = ["ClientWins", "LastWriterWins", "ServerWins"]

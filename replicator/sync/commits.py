"""The upload's local transactions (see :class:`Commits`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .context import SyncContext


class Commits:
    """The upload's local transactions, one write to disk per batch rather than two.

    What a batch needs before its push (the sent journal) must be committed
    before the push; marking the batch synced after it may wait. So the mark of
    one batch stays open while the next batch is read and its journal written,
    and both commit together: a crash in between loses the mark, which the
    journal, committed before that batch's push, recovers like any lost
    acknowledgement. Progress is told after the commit, so an app acting on it
    never waits for a lock the upload holds.
    """

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.open: Any = None
        self.told: list[Callable[[], None]] = []

    def __enter__(self) -> Commits:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.commit()
            return
        # keep what the open transaction marked; the error on its way out is the news
        with contextlib.suppress(Exception):
            self.commit()

    def begin(self) -> None:
        if self.open is None:
            self.open = self.ctx.db.atomic(lock_type="IMMEDIATE")
            self.open.__enter__()

    def commit(self) -> None:
        txn, self.open = self.open, None
        if txn is not None:
            txn.__exit__(None, None, None)  # peewee rolls back and raises if COMMIT fails
        told, self.told = self.told, []
        for tell in told:
            tell()

    def after_commit(self, tell: Callable[[], None]) -> None:
        if self.open is None:
            tell()
        else:
            self.told.append(tell)

"""A device of a user in many scopes: :class:`ScopedReplicator`.

Each sync:

1. **discovers** the user's scopes: one query (``memberships()`` of the directory,
   the user's remote), a read per scope. Offline, the scopes of the last sync are
   synced as they were (a loss waits for the next discovery);
2. keeps at most ``max_scopes`` of them (those already on the device first), and only
   those ``only`` accepts; the rest are skipped with a warning, before anything of
   them is downloaded;
3. **loses** the scopes the user left (and any scope file no membership covers): the
   writes not uploaded are set aside in a JSON-lines file with the reason, then the
   scope's file is deleted: its rows go without a tombstone, no other scope is
   touched, listeners get a ``removed`` change;
4. **gains** the new scopes: a file of their own, restored from the scope's snapshot
   when blob storage is configured and one exists (``login()``), then pulled;
   listeners get an ``added`` change. A scope is recorded in ``scopes.json`` only
   once its first login succeeded: a gain that failed or was killed is a gain again;
5. **syncs** every scope (the private one first), each on its own: a scope that fails
   is reported in ``failed`` and the others go on.

The scope files live in ``folder`` (``scope-<id>.<tag>.db``), beside ``scopes.json`` (the
scopes of the last sync) and ``set-aside/``. Each is an ordinary database synced by a
:class:`~replicator.Replicator` with the scope's root (``scopes/<id>``), so cursors,
Devices records, snapshots and denied writes are per scope. An app writes into one
scope at a time: ``with device.scope("campaign-1").bound(): Registration.create(...)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
import peewee

from ..bundles.send import Bundles
from ..engine import Replicator
from ..errors import ConfigurationError, LocalDatabaseError, OfflineError, ReplicatorError
from ..model import SyncModel
from ..report import SyncReport
from ..snapshots.crypto import SnapshotSecret
from ..sql import local_error
from ..stores.base import BlobStore, IdTokens, RemoteStore
from ..sync.listeners import Change
from .members import Membership, acceptable, checked_cap
from .plan import (
    SET_ASIDE,
    STATE,
    database_path,
    plan,
    read_state,
    remove_files,
    retire,
    scope_files,
    write_state,
)
from .roles import Scopes

log = logging.getLogger(__name__)


class Directory(Protocol):
    """Who the user is and which scopes they belong to (a ``UserFirestoreRemote``)."""

    def memberships(self) -> list[Membership]: ...


@attrs.frozen
class ScopeChange:
    """A scope added to the device or removed from it. For a removal, ``set_aside`` is
    the file holding the writes that had not been uploaded (None when there were
    none) and ``pending`` their number; for an addition, ``restored`` the snapshot the
    scope started from (None: pulled from the remote)."""

    event: Literal["added", "removed"]
    scope: str
    kind: str
    role: str
    restored: str | None = None
    set_aside: Path | None = None
    pending: int = 0


@attrs.frozen
class ScopedReport:
    """One sync of every scope: each scope's report, the failures (the other scopes
    synced), the scopes added and removed, those left out (``max_scopes``, ``only``),
    and whether the discovery was offline (the last sync's scopes were used)."""

    reports: Mapping[str, SyncReport]
    failed: Mapping[str, ReplicatorError]
    added: tuple[ScopeChange, ...] = ()
    removed: tuple[ScopeChange, ...] = ()
    skipped: tuple[str, ...] = ()
    discovery_offline: bool = False
    discovery_reads: int = 0

    @property
    def reads(self) -> int:
        """Remote reads of the whole sync, the discovery's included."""
        return self.discovery_reads + sum(r.usage.reads for r in self.reports.values())

    @property
    def idle(self) -> bool:
        """Nothing moved in any scope, and no scope came or went."""
        return (
            not self.failed
            and not self.added
            and not self.removed
            and all(r.idle for r in self.reports.values())
        )


class ScopedReplicator:
    """Syncs every scope a signed-in user belongs to, each in a database file of its own
    under ``folder``.

    ``models`` are every SyncModel a scope may hold; per membership, ``scopes`` (the
    declaration the rules were compiled from) picks the tables the role reads, the
    download-only ones and those read ``:own``. ``directory`` discovers the user's
    memberships; ``remote_for(root, owned)`` makes the remote of a scope's root (the
    user's, with ``owned`` passed to it). ``private`` is the Replicator of the user's
    own root, synced first (an app of the per-user layout keeps its database and remote
    as they are: they become the private scope). ``blobs_for`` and ``key_for`` give a
    scope's snapshot storage and key (None: no snapshots). ``bundles_for`` gives a
    scope's upload-only collections (``bundles=`` of its Replicator; None: none), e.g.
    ``lambda m: Bundles(blobs, HttpIngest(url, tokens=tokens, scope=m.scope),
    [Registration])``: one ingest service for every scope, each request naming its
    scope. ``database_for`` opens a scope's file (default: plain SQLite, foreign keys
    on). Other keyword arguments go to every scope's Replicator.
    """

    def __init__(
        self,
        folder: str | Path,
        models: Sequence[type[SyncModel]],
        scopes: Scopes,
        *,
        uid: str,
        directory: Directory,
        remote_for: Callable[[str, Mapping[str, tuple[str, str]]], RemoteStore],
        private: Replicator | None = None,
        blobs_for: Callable[[Membership], BlobStore | None] | None = None,
        key_for: Callable[[Membership], SnapshotSecret | None] | None = None,
        bundles_for: Callable[[Membership], Bundles | None] | None = None,
        database_for: Callable[[Path], peewee.SqliteDatabase] | None = None,
        max_scopes: int = 50,
        only: Callable[[Membership], bool] | None = None,
        on_scope: Callable[[ScopeChange], None] | None = None,
        on_change: Callable[[str, Change], None] | None = None,
        **options: Any,
    ) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot make the scopes' folder {self.folder}: {exc.strerror or exc}",
                hint="give a folder the app may write",
            ) from exc
        self.models = list(models)
        self.scopes = scopes
        self.uid = uid
        self.directory = directory
        self.remote_for = remote_for
        self.private = private
        self.blobs_for = blobs_for
        self.key_for = key_for
        if bundles_for is not None and "bundles" in options:
            raise ConfigurationError(
                "give bundles_for or bundles, not both",
                hint="bundles_for=lambda membership: Bundles(...) gives each scope its own",
            )
        self.bundles_for = bundles_for
        self.database_for = database_for or _plain
        self.max_scopes = checked_cap(max_scopes)
        self.only = only
        self.on_scope = on_scope
        self.on_change = on_change
        self.options = options
        self._open: dict[str, tuple[Membership, Replicator]] = {}
        #: the file each open scope's database was opened on (device, inode): another
        #: device on the folder may delete it (a loss) or make it anew (a gain)
        self._files: dict[str, tuple[int, int] | None] = {}
        #: one sync at a time; ``_state`` guards the maps, held while scopes lost or
        #: gained are recorded (an app's ``scope()`` waits for that only)
        self._syncing = threading.Lock()
        self._state = threading.RLock()
        self._known = read_state(self.folder)

    @classmethod
    def for_user(
        cls,
        folder: str | Path,
        models: Sequence[type[SyncModel]],
        scopes: Scopes,
        tokens: IdTokens,
        project: str | None = None,
        *,
        timeout: float = 20.0,
        private: Callable[[RemoteStore], Replicator] | None = None,
        scope_keys: bool = False,
        **kw: Any,
    ) -> ScopedReplicator:
        """The device of the signed-in user of ``tokens`` (a sign-in session) in Firestore
        project ``project``: discovery and every scope through one client acting as the
        user. ``private(remote)`` makes the Replicator of the user's own root, given its
        remote (e.g. ``lambda remote: Replicator(db, MODELS, remote)``). With
        ``scope_keys``, each scope's snapshots are sealed with the scope's own key
        generations (:class:`~replicator.scopes.keys.ScopeKeyRing`, through the same
        client) unless ``key_for`` is given. Other keyword arguments (``bundles_for``,
        ``blobs_for``, ...) go to the constructor."""
        from ..stores.firestore_user import UserClient, UserFirestoreRemote
        from .keys import ScopeKeyRing

        client = UserClient(tokens, project)
        own = UserFirestoreRemote(tokens, project, client=client, timeout=timeout)

        def remote_for(root: str, owned: Mapping[str, tuple[str, str]]) -> RemoteStore:
            return UserFirestoreRemote(
                tokens, project, root=root, client=client, owned=owned, timeout=timeout
            )

        if scope_keys and "key_for" not in kw:
            kw["key_for"] = lambda m: ScopeKeyRing(client, m.scope, timeout=timeout)
        return cls(
            folder,
            models,
            scopes,
            uid=tokens.uid,
            directory=own,
            remote_for=remote_for,
            private=None if private is None else private(own),
            **kw,
        )

    # -- what the app uses ---------------------------------------------------------------

    def memberships(self) -> list[Membership]:
        """The scopes this device synced at its last sync."""
        with self._state:
            return [self._known[k] for k in sorted(self._known)]

    def scope(self, scope: str) -> Replicator:
        """The Replicator of ``scope`` (to write in it: ``.bound()``); a scope this device
        does not sync (never discovered, or lost) is a ``ConfigurationError``."""
        with self._state:
            member = self._known.get(scope)
            if member is None:
                raise ConfigurationError(
                    f"this device does not sync the scope {scope!r}",
                    hint="sync() first; the user may not be (or no longer be) its member",
                )
            return self._replicator(member)

    def close(self) -> None:
        """Close every scope's database."""
        with self._syncing, self._state:
            for _member, rep in self._open.values():
                rep.database.close()
            self._open.clear()
            self._files.clear()

    # -- the sync ------------------------------------------------------------------------

    @property
    def private_key(self) -> str:
        """The private scope's name in reports: the user's own root."""
        return f"users/{self.uid}"

    def sync(self) -> ScopedReport:
        """Discover, lose, gain, then sync every scope (see the module's docstring)."""
        with self._syncing:
            found, offline, reads = self._discover()
            chosen, skipped = self._choose(found)
            failed: dict[str, ReplicatorError] = {}
            removed, added = self._settle(chosen, failed)
            reports: dict[str, SyncReport] = {}
            if self.private is not None:
                self._run(self.private_key, self.private.sync, reports, failed)
            gained = []
            for member in added:
                login = functools.partial(self._call, member, "login")
                if self._run(member.scope, login, reports, failed):
                    with self._state:  # known from its first login on, not before
                        self._known[member.scope] = member
                        self._save()
                    change = ScopeChange(
                        "added", member.scope, member.kind, member.role,
                        restored=reports[member.scope].restored,
                    )  # fmt: skip
                    gained.append(change)
                    self._tell(change)
            for scope in sorted(chosen):
                if scope not in reports and scope not in failed:
                    sync = functools.partial(self._call, chosen[scope], "sync")
                    self._run(scope, sync, reports, failed)
            return ScopedReport(
                reports, failed, tuple(gained), tuple(removed), skipped, offline, reads
            )

    def _settle(
        self, chosen: Mapping[str, Membership], failed: dict[str, ReplicatorError]
    ) -> tuple[list[ScopeChange], list[Membership]]:
        """Lose the scopes no longer chosen (or whose role narrowed); returns the scopes
        removed and those to gain. A scope to gain is recorded as known only once its
        first login succeeds (a gain that failed, or a kill in it, is a gain again at
        the next sync, told then); a loss that failed keeps the scope known with its
        old role, so the next sync tries the loss again before anything else."""
        with self._state:
            removed = []
            for scope in self._to_lose(chosen):
                try:
                    removed.append(self._lose(scope))
                except peewee.DatabaseError as exc:  # kept, and tried at the next sync
                    failed[scope] = local_error(f"scope {scope!r} could not be removed", exc)
                except OSError as exc:  # the set-aside file: the emptying rolled back
                    failed[scope] = LocalDatabaseError(
                        f"scope {scope!r} could not be removed: its writes not uploaded"
                        f" could not be set aside ({exc.strerror or exc})",
                        hint=f"free space or fix the folder {self.folder / SET_ASIDE};"
                        " the scope is kept and its removal tried at the next sync",
                        retryable=True,
                        orig=exc,
                    )
            lost = {c.scope for c in removed}
            stuck = {s: self._known[s] for s in failed if s in self._known}
            known = {
                s: m
                for s, m in chosen.items()
                if s in self._known and s not in lost and database_path(self.folder, s).exists()
            }  # a file gone (another device on the folder lost the scope): a gain again
            added = [
                m for s, m in chosen.items() if s not in known and s not in failed
            ]  # fmt: skip
            self._known = {**known, **stuck}
            self._save()
        return removed, added

    def _save(self) -> None:
        try:
            write_state(self.folder, self._known.values())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write {self.folder / STATE}: {exc.strerror or exc}",
                hint="give the scopes' folder back to the app (a writable folder, no"
                " directory named like the file); nothing was lost",
            ) from exc

    def _discover(self) -> tuple[dict[str, Membership], bool, int]:
        """The user's memberships now; offline, those of the last sync."""
        usage = getattr(self.directory, "usage", None)
        before = usage.reads if usage is not None else 0
        try:
            found = self.directory.memberships()
        except OfflineError as exc:
            log.warning("scopes not discovered (%s): the last sync's are synced", exc)
            return dict(self._known), True, 0
        after = usage.reads if usage is not None else 0
        return self._one_each(found), False, after - before

    def _one_each(self, found: Sequence[Membership]) -> dict[str, Membership]:
        """One membership per scope, of those a device accepts (the directory is the
        server's answer: never trusted to name a file). A scope listed twice with two
        roles keeps the membership the device knows, else the first by kind and role:
        never the last listed, or an order changing between syncs would flip the
        role, and each flip to a narrower one would be a loss."""
        kept: dict[str, Membership] = {}
        for member in found:
            if not acceptable(member):
                log.warning("a membership skipped: %s", f"{member!r:.120}")
                continue
            other = kept.setdefault(member.scope, member)
            if other != member:
                log.warning("scope %s listed twice: %s and %s", member.scope, other, member)
                if other != self._known.get(member.scope) and (
                    member == self._known.get(member.scope)
                    or (member.kind, member.role) < (other.kind, other.role)
                ):
                    kept[member.scope] = member
        return kept

    def _choose(
        self, found: dict[str, Membership]
    ) -> tuple[dict[str, Membership], tuple[str, ...]]:
        """The memberships to sync: those ``only`` accepts and whose kind is declared,
        at most ``max_scopes``, the scopes already here first."""
        accepted = []
        declared = {k.name for k in self.scopes.kinds}
        for member in found.values():
            if self.only is not None and not self.only(member):
                continue
            if member.kind not in declared:
                log.warning(
                    "scope %s skipped: its kind %r is not declared", member.scope, member.kind
                )
                continue
            accepted.append(member)
        accepted.sort(key=lambda m: (m.scope not in self._known, m.scope))
        kept, left = accepted[: self.max_scopes], accepted[self.max_scopes :]
        if left:
            log.warning(
                "the user is in %d scopes; this device syncs at most %d (max_scopes):"
                " %d left out, none of them downloaded: %s",
                len(accepted), self.max_scopes, len(left),
                ", ".join(m.scope for m in left[:10]),
            )  # fmt: skip
        return {m.scope: m for m in kept}, tuple(m.scope for m in left)

    def _to_lose(self, chosen: Mapping[str, Membership]) -> list[str]:
        """The scopes on this device no chosen membership covers: known ones, files of
        scopes no longer known (an app write after a loss can make one again), and
        those whose new role reads less than the old one did (rows it may no longer
        read must go: the scope is lost, then gained afresh)."""
        stale = {s for s in self._known if s not in chosen}
        stale |= {s for s in scope_files(self.folder) if s not in chosen}
        for scope, member in chosen.items():
            old = self._known.get(scope)
            if old is not None and old != member and self._narrower(old, member):
                stale.add(scope)
        return sorted(stale)

    def _narrower(self, old: Membership, new: Membership) -> bool:
        """Whether ``new`` reads a table ``old`` read no longer, or only its own rows."""
        try:
            before = plan(self.scopes, self.models, old, self.uid)
            after = plan(self.scopes, self.models, new, self.uid)
        except ConfigurationError:
            return True
        dropped = set(before.models) - set(after.models)
        tighter = set(after.owned) - set(before.owned)
        return bool(dropped or tighter) or old.kind != new.kind

    def _lose(self, scope: str) -> ScopeChange:
        """Set aside what was not uploaded, then delete the scope's file."""
        member = self._known.get(scope) or Membership(scope, "?", "?")
        opened = self._open.pop(scope, None)
        self._files.pop(scope, None)
        path = database_path(self.folder, scope)
        reason = f"access to scope {scope!r} ({member.kind}/{member.role}) was lost"
        where, pending = None, 0
        if path.exists():
            db = opened[1].database if opened else self.database_for(path)
            with contextlib.suppress(peewee.DatabaseError):
                db.close()
            try:
                where, pending = retire(self.folder, db, self.models, member, reason)
            finally:
                db.close()
            remove_files(path)
        if pending:
            log.warning("%s: %d writes not uploaded set aside in %s", reason, pending, where)
        change = ScopeChange(
            "removed", scope, member.kind, member.role, set_aside=where, pending=pending
        )
        self._tell(change)
        return change

    def _replicator(self, member: Membership) -> Replicator:
        with self._state:
            opened = self._open.get(member.scope)
            if opened is not None and opened[0] == member and self._same_file(member.scope):
                return opened[1]
            if opened is not None:  # a new role that reads no less: the file stays
                opened[1].database.close()
            return self._opened(member)

    def _same_file(self, scope: str) -> bool:
        """Whether the open database of ``scope`` is still on the scope's file (another
        device on the folder may have deleted it, or deleted and made it anew)."""
        now = _identity(database_path(self.folder, scope))
        if self._files.get(scope) is None:  # not made yet when it was opened
            self._files[scope] = now
            return True
        return self._files[scope] == now

    def _opened(self, member: Membership) -> Replicator:
        the_plan = plan(self.scopes, self.models, member, self.uid)
        db = self.database_for(database_path(self.folder, member.scope))
        options = dict(self.options)
        if self.bundles_for is not None:
            options["bundles"] = self.bundles_for(member)
        rep = Replicator(
            db,
            the_plan.models,
            self.remote_for(member.root, the_plan.owned),
            self.blobs_for(member) if self.blobs_for else None,
            self.key_for(member) if self.key_for else None,
            download_only=the_plan.download_only,
            **options,
        )
        if self.on_change is not None:
            rep.subscribe(functools.partial(self.on_change, member.scope))
        self._open[member.scope] = (member, rep)
        self._files[member.scope] = _identity(database_path(self.folder, member.scope))
        return rep

    def _call(self, member: Membership, what: str) -> SyncReport:
        """``login`` or ``sync`` of ``member``'s scope (its opening failing is its own
        failure, as the sync's is)."""
        rep = self._replicator(member)
        report: SyncReport = rep.login() if what == "login" else rep.sync()
        return report

    def _run(
        self,
        scope: str,
        call: Callable[[], SyncReport],
        reports: dict[str, SyncReport],
        failed: dict[str, ReplicatorError],
    ) -> bool:
        try:
            reports[scope] = call()
            return True
        except ReplicatorError as exc:
            log.warning("scope %s not synced: %s", scope, type(exc).__name__)
            failed[scope] = exc
            return False

    def _tell(self, change: ScopeChange) -> None:
        if self.on_scope is None:
            return
        try:
            self.on_scope(change)
        except Exception:  # a listener's bug never stops the sync
            log.exception("on_scope failed for %s", change)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _plain(path: Path) -> peewee.SqliteDatabase:
    return peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1})

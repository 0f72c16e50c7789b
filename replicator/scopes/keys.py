"""A scope's snapshot keys: generations in Firestore, rotated when a member is removed.

Each scope's snapshots are sealed under a key its members read from Firestore and
nobody else can (docs/concepts/scope-keys.md has the threat model):

    scopes/{scopeId}/keys/{generation}    key (base64 of 32 random bytes),
                                          createdBy (a uid, or "server"), changedAt

``generation`` is a zero-padded number (``0000000001``); the rules
(:func:`~replicator.scopes.scoped.scoped_rules`) let the scope's members read the
generations, its admins (and servers) create one, and nobody change or delete one.

* :func:`rotate` writes the next generation: the next snapshot published is sealed
  under it. Make the first one when the scope is made.
* :func:`remove_member` deletes a member's document and writes the next generation in
  one write batch: a removal never leaves the key unrotated, and a removed member,
  who can no longer read the keys, cannot open a snapshot published after it.
* :class:`ScopeKeyRing` is a scope's key for a device (``key_for=`` of
  :class:`~replicator.scopes.device.ScopedReplicator`): a
  :class:`~replicator.snapshots.crypto.KeySource` read when a snapshot is published
  or restored, so a rotation is picked up without reopening anything. Generations
  never change once written, so it keeps those it read and asks only for newer ones:
  one query per publish or restore, billed one read when nothing is new.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import (
    AccessDeniedError,
    AuthError,
    ConfigurationError,
    OfflineError,
    PreconditionFailed,
    RemoteDataError,
    RemoteError,
    ReplicatorError,
    SnapshotNotFoundError,
    TransientError,
)
from ..snapshots.crypto import KeyRing, SnapshotKey
from ..stores.firestore import OFFLINE_ERRORS, TRANSIENT_ERRORS
from .members import valid_scope_id
from .roles import MEMBERS
from .scoped import GENERATION_DIGITS, KEYS

try:
    from google.api_core import exceptions as gexc
    from google.cloud import firestore
    from google.cloud.firestore_v1.field_path import FieldPath
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "a scope's keys need google-cloud-firestore: pip install 'replicator[firestore]'"
    ) from exc

T = TypeVar("T")

#: what ``createdBy`` holds when a server (past the rules) rotates
SERVER = "server"
#: tries of a rotation that lose a race to another rotation of the same scope
ROTATE_ATTEMPTS = 5
_GENERATION = re.compile(rf"[0-9]{{{GENERATION_DIGITS}}}")


def generation_id(generation: int) -> str:
    """The document id of ``generation``: zero-padded, so ids sort as numbers."""
    return f"{generation:0{GENERATION_DIGITS}d}"


def _call(client: Any, what: str, fn: Callable[[], T], *, conditional: bool = False) -> T:
    """One Firestore call, its failures as replicator's typed errors (a ``conditional``
    write's failed precondition: ``PreconditionFailed``)."""
    credentials = getattr(client, "id_credentials", None)  # a UserClient: typed errors first
    if credentials is not None:
        credentials.prepare()
    try:
        return fn()
    except gexc.GoogleAPICallError as exc:
        failure = credentials.take_failure() if credentials is not None else None
        if failure is not None:
            raise failure from exc
        raise _mapped(what, exc, conditional) from exc
    except gexc.RetryError as exc:
        raise OfflineError(f"Firestore did not answer {what}", orig=exc) from exc


def _mapped(what: str, exc: gexc.GoogleAPICallError, conditional: bool) -> ReplicatorError:
    if isinstance(exc, gexc.PermissionDenied):
        return AccessDeniedError(
            f"Firestore's security rules refused {what}: {exc.message}",
            hint="only a scope's members read its keys, and only its admins (or a server)"
            " rotate them; a member removed from the scope reads them no more",
            orig=exc,
        )
    if isinstance(exc, gexc.Unauthenticated):
        return AuthError(f"Firestore refused the user's ID token for {what}", orig=exc)
    if isinstance(exc, OFFLINE_ERRORS):
        return OfflineError(f"Firestore did not answer {what}", orig=exc)
    if isinstance(exc, TRANSIENT_ERRORS):
        return TransientError(f"Firestore failed {what} ({type(exc).__name__})", orig=exc)
    if conditional and isinstance(exc, gexc.AlreadyExists | gexc.FailedPrecondition):
        return PreconditionFailed(f"{what}: another write came first", orig=exc)
    return RemoteError(f"Firestore failed {what}: {exc.message}", orig=exc)


def _keys(client: Any, scope: str) -> Any:
    if not valid_scope_id(scope):
        raise ConfigurationError(f"{scope!r:.80} is not a scope id")
    return client.collection("scopes", scope, KEYS)


def read_generations(
    client: Any, scope: str, *, after: int = 0, timeout: float = 20.0
) -> dict[int, SnapshotKey]:
    """``scope``'s key generations newer than ``after``, in one query, as a signed-in
    member (``AccessDeniedError`` for anyone else) or a server. A generation that is
    not a well-formed key is ``RemoteDataError`` (skipping it could seal under an older
    key a removed member holds)."""
    ref = _keys(client, scope)
    query = ref
    if after:
        doc_id = FieldPath.document_id()
        query = ref.where(
            filter=firestore.FieldFilter(doc_id, ">", ref.document(generation_id(after)))
        )
    what = f"the reading of scope {scope!r}'s snapshot keys"
    snaps = _call(client, what, lambda: list(query.stream(timeout=timeout)))
    return dict(_parsed(scope, snap.id, snap.to_dict() or {}) for snap in snaps)


def _parsed(scope: str, doc_id: str, data: dict[str, Any]) -> tuple[int, SnapshotKey]:
    raw = data.get("key")
    try:
        if not _GENERATION.fullmatch(doc_id) or not isinstance(raw, str):
            raise ValueError
        key = base64.b64decode(raw, validate=True)
        if len(key) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise RemoteDataError(
            f"scopes/{scope}/{KEYS}",
            doc_id[:40],
            "not a key generation (a 32-byte key in base64 under a zero-padded number)",
            hint="a server wrote it past the rules: rotate the scope's key (rotate()) and"
            " delete the malformed generation with an admin tool",
        ) from None
    return int(doc_id), SnapshotKey(key)


def _newest(client: Any, scope: str, timeout: float) -> int:
    """The newest generation's number (0: none yet). Every generation is read (a
    descending query on the id would need an index of its own): rotations are rare."""
    return max(read_generations(client, scope, timeout=timeout), default=0)


def _creator(client: Any, by: str | None) -> str:
    if by is not None:
        return by
    credentials = getattr(client, "id_credentials", None)
    return str(credentials.tokens.uid) if credentials is not None else SERVER


def _committed(
    client: Any, scope: str, what: str, also: Callable[[Any], None], by: str | None, timeout: float
) -> int:
    """Create the next generation in one batch with what ``also`` adds to it; a race
    lost to another rotation is tried again against the generation that won."""
    keys = _keys(client, scope)
    creator = _creator(client, by)
    for _attempt in range(ROTATE_ATTEMPTS):
        generation = _newest(client, scope, timeout) + 1
        batch = client.batch()
        also(batch)
        fresh = base64.b64encode(os.urandom(32)).decode("ascii")
        document = {"key": fresh, "createdBy": creator, "changedAt": firestore.SERVER_TIMESTAMP}
        batch.create(keys.document(generation_id(generation)), document)
        try:
            _call(client, what, functools.partial(batch.commit, timeout=timeout), conditional=True)
        except PreconditionFailed:
            continue
        return generation
    raise PreconditionFailed(
        f"{what}: other rotations of scope {scope!r} kept coming first",
        hint="try again; nothing was written",
    )


def rotate(client: Any, scope: str, *, by: str | None = None, timeout: float = 20.0) -> int:
    """Write ``scope``'s next key generation and return its number: the next snapshot
    published is sealed under it. ``client`` is a scope admin's (a
    :class:`~replicator.stores.firestore_user.UserClient`: ``createdBy`` is their uid)
    or a server's (``createdBy`` is ``"server"``; ``by`` names another)."""
    what = f"the rotation of scope {scope!r}'s snapshot key"
    return _committed(client, scope, what, lambda _batch: None, by, timeout)


def remove_member(
    client: Any, scope: str, uid: str, *, by: str | None = None, timeout: float = 20.0
) -> int:
    """Remove member ``uid`` from ``scope`` and rotate its key, in one write batch
    (both or neither); return the new generation. The member's devices lose the scope
    at their next sync; the key they last read opens no snapshot published after this.
    ``client`` is a scope admin's (not ``uid``'s own: the rules refuse it) or a server's."""
    if not isinstance(uid, str) or not uid or "/" in uid or len(uid) > 128:
        raise ConfigurationError(f"{uid!r:.80} is not a user's uid", hint="pass the member's uid")
    member = _keys(client, scope).parent.collection(MEMBERS).document(uid)
    what = f"the removal of {uid!r} from scope {scope!r} with a key rotation"
    return _committed(client, scope, what, lambda batch: batch.delete(member), by, timeout)


class ScopeKeyRing:
    """The snapshot key of ``scope`` for a device: a
    :class:`~replicator.snapshots.crypto.KeySource` whose ring is read from Firestore
    (``client``, the signed-in member's) each time a snapshot is published or restored.

    It keeps the generations it read (they never change) and asks for newer ones
    only: one query each time. A scope with no generation yet is
    ``SnapshotNotFoundError`` (a device logging in then pulls instead of restoring);
    a user who is not (or no longer) a member gets ``AccessDeniedError``.
    """

    def __init__(self, client: Any, scope: str, *, timeout: float = 20.0) -> None:
        _keys(client, scope)  # a scope id check
        self.client = client
        self.scope = scope
        self.timeout = timeout
        #: queries made (each is billed at least one read)
        self.queries = 0
        self._held: dict[int, SnapshotKey] = {}
        self._ring: KeyRing | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScopeKeyRing({self.scope!r}, generations held: {sorted(self._held)})"

    def ring(self) -> KeyRing:
        """The scope's generations now: those held, and any newer (one query)."""
        with self._lock:
            after = max(self._held, default=0)
            self.queries += 1
            fresh = read_generations(self.client, self.scope, after=after, timeout=self.timeout)
            if fresh or self._ring is None:  # a ring is rebuilt only when it grew
                self._held.update(fresh)
                self._ring = self.held()
            held = self._ring
        if held is None:
            raise SnapshotNotFoundError(
                f"scope {self.scope!r} has no snapshot key yet",
                hint="a scope admin or the server makes its first generation:"
                " replicator.scopes.keys.rotate(client, scope)",
            )
        return held

    def held(self) -> KeyRing | None:
        """The generations read so far, without asking Firestore (None: none yet)."""
        numbers = sorted(self._held)
        if not numbers:
            return None
        return KeyRing([self._held[n] for n in numbers], generations=numbers)


__all__ = [
    "KEYS",
    "ScopeKeyRing",
    "generation_id",
    "read_generations",
    "remove_member",
    "rotate",
]

"""Who is a member of a scope now, as the grant service reads it: the ``members``
callable a :class:`~replicator.grants.Signer` is given for scopes' folders.

:class:`FirestoreMembers` reads ``scopes/{scopeId}/members/{uid}`` with the service's
own (admin) google-cloud-firestore client, past the security rules, as a server does.
A member is a document that exists, whose ``uid`` field is the document's id and whose
``role`` is non-empty text (what :func:`~replicator.scopes.members.member_document`
writes); anything else is not a member.

Answers are kept ``cache_seconds`` (default 30 s; 0 keeps none), the refusals too, so
that a device signing many requests costs one read per scope and half a minute, and a
non-member asking again and again costs no more. So a member removed from a scope
keeps reaching its folder for at most ``cache_seconds`` plus a grant's lifetime
(``Signer(expires=...)``, 15 minutes by default) after the removal; a member added
waits at most ``cache_seconds``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import ConfigurationError, TransientError
from ..scopes.members import UID, valid_scope_id

try:
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "reading scopes' members needs google-cloud-firestore: pip install 'replicator[firestore]'"
    ) from exc

#: how long an answer is kept, by default (seconds)
CACHE_SECONDS = 30.0
#: most answers kept (all are dropped past it)
_KEPT = 10_000
_SERVICE_REFUSED = (gexc.PermissionDenied, gexc.Unauthenticated, gexc.NotFound)


class FirestoreMembers:
    """``members(uid, scope)``: ``uid``'s role in ``scope`` now, or ``None``, read with
    ``client`` (a ``google.cloud.firestore.Client`` of the service's; see the module's
    docstring for the cache). A read that fails is ``TransientError`` (the service
    answers 503), or ``ConfigurationError`` when Firestore refuses the service itself;
    ``timeout`` bounds a read, its retries included (seconds).
    """

    def __init__(
        self, client: Any, *, cache_seconds: float = CACHE_SECONDS, timeout: float = 10.0
    ) -> None:
        if not 0 <= cache_seconds <= 3600:
            raise ConfigurationError(
                f"cache_seconds is 0 to 3600, not {cache_seconds!r}",
                hint="a removed member keeps access for up to this long: keep it short",
            )
        self.client = client
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        #: documents read from Firestore, for tests and benchmarks
        self.reads = 0
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[str | None, float]] = {}

    def __repr__(self) -> str:
        return f"FirestoreMembers(cache_seconds={self.cache_seconds:g})"

    def __call__(self, uid: str, scope: str) -> str | None:
        if not valid_scope_id(scope) or not uid or "/" in uid:
            return None
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get((uid, scope))
            if kept is not None and kept[1] > now:
                return kept[0]
        role = self._read(uid, scope)
        if self.cache_seconds:
            with self._lock:
                if len(self._kept) >= _KEPT:
                    self._kept.clear()
                self._kept[(uid, scope)] = (role, now + self.cache_seconds)
        return role

    def forget(self) -> None:
        """Drop every kept answer (a server that just removed a member may call it)."""
        with self._lock:
            self._kept.clear()

    def _read(self, uid: str, scope: str) -> str | None:
        path = f"scopes/{scope}/members/{uid}"
        try:
            ref = self.client.document(path)
            snap = ref.get(timeout=self.timeout, retry=Retry(timeout=self.timeout))
        except _SERVICE_REFUSED as exc:
            raise ConfigurationError(
                f"Firestore refused the service's read of {path}: {exc.message}",
                hint="give the service's credentials read access to the project's"
                " Firestore (an admin client reads past the security rules)",
                orig=exc,
            ) from exc
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise TransientError(f"cannot read {path} now: {exc}", orig=exc) from exc
        finally:
            self.reads += 1
        data = snap.to_dict() if snap.exists else None
        if not data or data.get(UID) != uid:
            return None
        role = data.get("role")
        return role if isinstance(role, str) and role else None

"""Unsigned ID tokens, as the Firebase emulators take them, and a token source built on them.

The Firestore emulator evaluates security rules for a request that carries an
ID token, and does not check its signature: an unsigned JWT (``alg: none``)
naming the user (``sub``, ``user_id``), the project (``aud``, ``iss``), its
times (``iat``, ``exp``, ``auth_time``) and ``firebase.sign_in_provider`` acts
as that user, exactly as Firebase's own rules-unit-testing makes them. Such a
token never works against production (which verifies the signature), so these
are for tests only. The emulator does not check ``exp`` either:
:class:`~replicator.testing.token_gate.TokenGate` does, as production does.

:class:`MockIdTokens` implements the :class:`~replicator.stores.base.IdTokens`
seam with these tokens, and lets a test shorten their lifetime, count what was
asked of it, and make it fail the way a real sign-in session fails.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..errors import AuthError
from ..stores.base import IdTokens


def _b64(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mock_id_token(
    uid: str,
    project: str,
    *,
    lifetime: float = 3600.0,
    issued_at: float | None = None,
    provider: str = "custom",
    claims: Mapping[str, Any] | None = None,
) -> str:
    """An unsigned ID token for ``uid`` in ``project``, valid for ``lifetime`` seconds
    from ``issued_at`` (now). ``claims`` are added to the payload (custom claims)."""
    now = time.time() if issued_at is None else issued_at
    payload: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "iat": int(now),
        "auth_time": int(now),
        "exp": int(now + lifetime),
        "sub": uid,
        "user_id": uid,
        "firebase": {"sign_in_provider": provider, "identities": {}},
        **dict(claims or {}),
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified (for tests and for the gate that stands in for
    production's verification); ``ValueError`` when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: it has no three dot-separated parts")
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a JWT: its payload does not decode ({exc})") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: its payload is not an object")
    return claims


class MockIdTokens:
    """An :class:`~replicator.stores.base.IdTokens` source of unsigned tokens for ``uid``.

    ``id_token()`` hands the current token while it has more than ``margin``
    seconds left (default: a quarter of the lifetime, at most 60 s), else mints
    a new one; ``refresh_id_token()`` always mints one. ``lifetime`` makes
    tokens that expire in the middle of a sync. Counters: ``minted`` (every
    token made), ``forced`` (calls of ``refresh_id_token``). A test may set
    ``revoked`` (both calls raise ``AuthError``, as for a revoked refresh token
    or a disabled account) or ``stale_refresh`` (a refresh hands a token that
    has already expired: a broken clock, or a token service that keeps handing
    a bad one). Thread-safe: parallel downloads share one source.
    """

    def __init__(
        self,
        uid: str,
        project: str,
        *,
        lifetime: float = 3600.0,
        margin: float | None = None,
    ) -> None:
        self.uid = uid
        self.project = project
        self.lifetime = lifetime
        self.margin = min(60.0, lifetime / 4) if margin is None else margin
        self.revoked = False
        self.stale_refresh = False
        self.minted = 0
        self.forced = 0
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    def __repr__(self) -> str:
        return f"MockIdTokens(uid={self.uid!r}, project={self.project!r})"

    def _check(self) -> None:
        if self.revoked:
            raise AuthError(f"the session of {self.uid!r} was revoked")

    def _mint(self, *, stale: bool = False) -> str:
        now = time.time()
        lifetime = -60.0 if stale else self.lifetime
        self._token = mock_id_token(self.uid, self.project, lifetime=lifetime, issued_at=now)
        self._expires = int(now + lifetime)  # as the token says: whole seconds
        self.minted += 1
        return self._token

    def id_token(self) -> str:
        with self._lock:
            self._check()
            if self._expires - time.time() > self.margin:
                return self._token
            return self._mint()

    def refresh_id_token(self) -> str:
        with self._lock:
            self.forced += 1
            self._check()
            return self._mint(stale=self.stale_refresh)


# the seam this source implements, checked by mypy
_is_idtokens: type[IdTokens] = MockIdTokens

"""Whether a verified ID token's user may still act: not disabled, not deleted, their
sessions not revoked since the token was issued.

An ID token stays valid for its hour even when the user's account is disabled or
their refresh tokens revoked (``auth.revoke_refresh_tokens``): only the refresh
stops working. A service that must cut a user off at once asks Firebase
Authentication about the account, as the Admin SDK's ``verify_id_token(...,
check_revoked=True)`` does: Identity Toolkit's ``projects/{project}/accounts:lookup``
with the service's own credentials (application default credentials, the ones
the service reaches Firestore with; the emulator takes ``Bearer owner``).

Answers are kept ``ttl`` seconds per user (default 60), so a busy device costs one
lookup a minute, and cutting a user off takes effect within ``ttl``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import ConfigurationError, TransientError
from .rest import EMULATOR_VARIABLE, IDENTITY

#: the OAuth scope of Identity Toolkit's admin calls
SCOPE = "https://www.googleapis.com/auth/identitytoolkit"


class AccountStatus:
    """Looks users of ``project`` up (see the module's docstring). Calling it with a uid
    and the token's ``auth_time`` answers ``""`` when the user may act, else why not.
    It raises ``TransientError`` when Firebase Authentication cannot be asked now, and
    ``ConfigurationError`` when the service's credentials are refused."""

    def __init__(
        self,
        project: str,
        *,
        emulator_host: str | None = None,
        ttl: float = 60.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.project = project
        host = emulator_host or os.environ.get(EMULATOR_VARIABLE) or None
        root = f"http://{host}/{IDENTITY}" if host else f"https://{IDENTITY}"
        self.url = f"{root}/projects/{project}/accounts:lookup"
        self.emulator = host is not None
        self.ttl = ttl
        self.clock = clock
        self.lookups = 0
        self._client = httpx.Client(timeout=timeout)
        self._credentials: Any = None
        self._seen: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AccountStatus({self.project!r}, ttl={self.ttl:g})"

    def __call__(self, uid: str, auth_time: Any) -> str:
        account = self._account(uid)
        if account is None:
            return "the user's account was deleted"
        if account.get("disabled"):
            return "the user's account is disabled"
        since = account.get("validSince")
        if not (isinstance(since, str) and since.isdigit()):
            return ""
        if not isinstance(auth_time, int | float) or auth_time < int(since):
            return "the user's sessions were revoked after this token was issued"
        return ""

    def _account(self, uid: str) -> dict[str, Any] | None:
        now = self.clock()
        with self._lock:
            kept = self._seen.get(uid)
            if kept is not None and now - kept[0] < self.ttl:
                return kept[1]
        account = self._lookup(uid)
        with self._lock:
            if len(self._seen) > 10_000:  # bounded: the oldest answers go first
                for old in sorted(self._seen, key=lambda u: self._seen[u][0])[:5000]:
                    del self._seen[old]
            self._seen[uid] = (now, account)
        return account

    def _lookup(self, uid: str) -> dict[str, Any] | None:
        self.lookups += 1
        headers = {"Authorization": f"Bearer {self._access_token()}"}
        try:
            answer = self._client.post(self.url, json={"localId": [uid]}, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(
                f"cannot ask Firebase Authentication about user {uid}: {exc}", orig=exc
            ) from exc
        if answer.status_code in (401, 403):
            raise ConfigurationError(
                f"Firebase Authentication refused the service's account lookup: HTTP"
                f" {answer.status_code}",
                hint="give the service credentials with the Firebase Authentication Admin"
                " role (roles/firebaseauth.admin), or turn the account check off",
            )
        if answer.status_code != 200:
            raise TransientError(
                f"Firebase Authentication answered HTTP {answer.status_code} to an account lookup"
            )
        try:
            users = answer.json().get("users") or []
        except (ValueError, AttributeError):
            users = []
        found = [u for u in users if isinstance(u, dict) and u.get("localId") == uid]
        return found[0] if found else None

    def _access_token(self) -> str:
        if self.emulator:
            return "owner"
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[SCOPE])
            if not self._credentials.valid:
                self._credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigurationError(
                "the account check needs the service's Google credentials",
                hint="set GOOGLE_APPLICATION_CREDENTIALS, or run where application default"
                " credentials exist",
                orig=exc,
            ) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise TransientError(f"cannot get the service's access token: {exc}", orig=exc) from exc
        return str(self._credentials.token)

    def close(self) -> None:
        self._client.close()

"""Firebase Authentication's REST API, the few calls a device needs (httpx).

* Identity Toolkit (``identitytoolkit.googleapis.com/v1``): ``accounts:signUp``
  (email and password, or anonymous with an empty body),
  ``accounts:signInWithPassword``, ``accounts:signInWithCustomToken``;
* Secure Token (``securetoken.googleapis.com/v1/token``): a new ID token for a
  refresh token.

Where they are: production, or the Auth emulator (``FIREBASE_AUTH_EMULATOR_HOST``,
as every Firebase SDK reads it, or ``emulator_host=``), which serves both APIs
under one host as path prefixes; ``base_url=`` names such a host explicitly (a
proxy, say). The API key travels in the ``X-Goog-Api-Key`` header, never in the
URL, so no request log shows it; the emulator takes any key.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from ..errors import ConfigurationError
from .failures import answer, field, transport_failures
from .tokens import Tokens, claims

log = logging.getLogger(__name__)

IDENTITY = "identitytoolkit.googleapis.com/v1"
SECURE_TOKEN = "securetoken.googleapis.com/v1"
EMULATOR_VARIABLE = "FIREBASE_AUTH_EMULATOR_HOST"
#: the key sent to an emulator when the app gave none (it accepts any)
EMULATOR_API_KEY = "emulator-api-key"


def service_roots(emulator_host: str | None, base_url: str | None) -> tuple[str, str] | None:
    """The Identity Toolkit and Secure Token roots on an emulator or proxy, or ``None``
    for production. ``base_url`` wins over ``emulator_host``, which wins over
    ``$FIREBASE_AUTH_EMULATOR_HOST``."""
    root = base_url or emulator_host or os.environ.get(EMULATOR_VARIABLE) or None
    if root is None:
        return None
    if "://" not in root:
        root = f"http://{root}"
    root = root.rstrip("/")
    return f"{root}/{IDENTITY}", f"{root}/{SECURE_TOKEN}/token"


class AuthApi:
    """The REST calls of Firebase Authentication, each answered with :class:`Tokens` or
    one of replicator's errors (``auth/failures.py``). Thread-safe (one ``httpx.Client``).

    ``client`` may be an ``httpx.Client`` of the app's (proxies, certificates); the
    app then closes it. ``timeout`` bounds each call, so a dead network ends in an
    :class:`OfflineError` instead of a hang.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        emulator_host: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        roots = service_roots(emulator_host, base_url)
        self.emulated = roots is not None
        if roots is None:
            if not api_key:
                raise ConfigurationError(
                    "signing in to Firebase Authentication needs the project's Web API key",
                    hint="pass api_key= (Firebase console: Project settings > General), or "
                    f"set {EMULATOR_VARIABLE} to use the Auth emulator",
                )
            roots = (f"https://{IDENTITY}", f"https://{SECURE_TOKEN}/token")
        self.identity_url, self.token_url = roots
        self._headers = {"X-Goog-Api-Key": api_key or EMULATOR_API_KEY}
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"AuthApi({self.identity_url!r})"

    def sign_in(self, method: str, body: dict[str, Any], *, provider: str, now: float) -> Tokens:
        """Call ``accounts:<method>`` and return the tokens it issued; ``now`` is the
        session's clock when the call started (the ID token's lifetime counts from it)."""
        what = f"sign-in ({method})"
        url = f"{self.identity_url}/accounts:{method}"
        with transport_failures(what):
            response = self._client.post(
                url, json={**body, "returnSecureToken": True}, headers=self._headers
            )
        data = answer(what, response)
        id_token = field(what, data, "idToken")
        if "localId" not in data:  # a custom-token sign-in names the user in the token only
            data["localId"] = claims(id_token).get("user_id")
        email = data.get("email")
        return Tokens(
            uid=field(what, data, "localId"),
            id_token=id_token,
            refresh_token=field(what, data, "refreshToken"),
            expires_at=now + lifetime(data.get("expiresIn")),
            email=email if isinstance(email, str) and email else None,
            provider=provider,
        )

    def refresh(self, tokens: Tokens, *, now: float) -> Tokens:
        """A new ID token for ``tokens``' refresh token (the refresh token itself may
        change too); raises :class:`AuthError` when the user must sign in again."""
        what = "refreshing the ID token"
        with transport_failures(what):
            response = self._client.post(
                self.token_url,
                data={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
                headers=self._headers,
            )
        data = answer(what, response)
        return Tokens(
            uid=tokens.uid,
            id_token=field(what, data, "id_token", "idToken"),
            refresh_token=field(what, data, "refresh_token", "refreshToken"),
            expires_at=now + lifetime(data.get("expires_in", data.get("expiresIn"))),
            email=tokens.email,
            provider=tokens.provider,
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def lifetime(value: Any) -> float:
    """An answer's ``expiresIn`` in seconds (Firebase sends a string, "3600"); an hour
    when it is missing or unreadable, which is what Firebase issues."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 3600.0
    return seconds if seconds > 0 else 3600.0

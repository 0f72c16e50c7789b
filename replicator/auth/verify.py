"""Who is calling, for a service: Firebase ID tokens verified on every request.

:class:`IdTokenVerifier` answers the user id (the token's ``sub``) of a valid ID
token of the project, or ``None`` for anything else. In production it is
google-auth's Firebase token verification (signature against Google's published
certificates, which google-auth fetches and caches; issuer, audience, expiry). The
Firebase Authentication emulator issues unsigned tokens: with ``emulator=True``
(the default while ``FIREBASE_AUTH_EMULATOR_HOST`` is set, as in every Firebase
SDK) the signature is not checked, every claim still is. Never run a production
service with the emulator's variable set.

A token stays valid for its hour after its user is disabled, deleted or has their
sessions revoked. With ``accounts=`` (an :class:`~replicator.auth.accounts.AccountStatus`)
the verifier also asks Firebase Authentication about the user (kept a minute), as
the Admin SDK's ``check_revoked=True`` does, and refuses such a user.

The ingest service's authenticator for signed-in devices is
``replicator.bundles.auth.SignedInCallers``, built on this.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import TransientError
from .accounts import AccountStatus

#: seconds of clock difference tolerated on ``iat`` and ``exp``
SKEW = 10


class IdTokenVerifier:
    """Checks Firebase ID tokens of ``project`` (see the module's docstring).

    Calling it with a token answers the user id or ``None`` (not a valid ID token of
    this project: malformed, expired, signed by someone else; or, with ``accounts``,
    of a user disabled, deleted or whose sessions were revoked); :meth:`identify`
    answers why not as well. It raises ``TransientError`` when Google's certificates
    (or, with ``accounts``, the user's account) cannot be fetched now."""

    def __init__(
        self,
        project: str,
        *,
        emulator: bool | None = None,
        accounts: AccountStatus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project = project
        self.emulator = (
            bool(os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")) if emulator is None else emulator
        )
        self.accounts = accounts
        self.clock = clock
        self._request: Any = None

    def __repr__(self) -> str:
        mode = "emulator tokens, unsigned" if self.emulator else "signed tokens"
        return f"IdTokenVerifier({self.project!r}, {mode})"

    def __call__(self, token: str) -> str | None:
        return self.identify(token)[0]

    def identify(self, token: str) -> tuple[str | None, str]:
        """``(uid, "")`` for a valid token of a user who may act, else ``(None, why)``."""
        if not token:
            return None, "no ID token (send Authorization: Bearer <the user's ID token>)"
        if len(token) > 8192 or token.count(".") != 2:
            return None, "the bearer token is not an ID token"
        claims = self._unsigned(token) if self.emulator else self._signed(token)
        if claims is None:
            return None, "the ID token is malformed or its signature is not Google's"
        uid, why = self._user(claims)
        if uid is not None and self.accounts is not None:
            why = self.accounts(uid, claims.get("auth_time"))
            if why:
                uid = None
        return uid, why

    def _signed(self, token: str) -> dict[str, Any] | None:
        import google.auth.exceptions
        import google.auth.transport.requests
        from google.oauth2 import id_token

        if self._request is None:
            self._request = google.auth.transport.requests.Request()
        try:
            claims = id_token.verify_firebase_token(
                token, self._request, audience=self.project, clock_skew_in_seconds=SKEW
            )  # type: ignore[no-untyped-call]
        except google.auth.exceptions.TransportError as exc:
            raise TransientError(
                f"cannot fetch Google's certificates to verify ID tokens: {exc}", orig=exc
            ) from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError):
            return None
        return claims if isinstance(claims, dict) else None

    def _unsigned(self, token: str) -> dict[str, Any] | None:
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        return claims if isinstance(claims, dict) else None

    def _user(self, claims: dict[str, Any]) -> tuple[str | None, str]:
        """The claims' user once every claim checks out: the project's issuer and
        audience, a time window containing now, a subject of 1 to 128 characters;
        else why not."""
        now = self.clock()
        exp, iat = claims.get("exp"), claims.get("iat", 0)
        sub = claims.get("sub")
        if claims.get("aud") != self.project or claims.get("iss") != (
            f"https://securetoken.google.com/{self.project}"
        ):
            return None, f"the ID token is not one of project {self.project}"
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            return None, "the ID token has no valid times"
        if exp <= now - SKEW:
            return None, "the ID token has expired (refresh it and ask again)"
        if iat > now + SKEW:
            return None, "the ID token is issued in the future"
        if not isinstance(sub, str) or not 0 < len(sub) <= 128 or not sub.isprintable():
            return None, "the ID token names no valid user"
        if "/" in sub or sub in (".", ".."):  # a user id names a folder and a root
            return None, "the ID token names no valid user"
        return sub, ""

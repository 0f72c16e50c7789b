"""Tokens: what a signed-in session holds, and the one text form it is stored in.

A Firebase sign-in yields an **ID token** (a JWT that Firestore checks on every
request; it lives an hour) and a **refresh token** (long-lived: it mints new ID
tokens until it is revoked, the user is disabled or deleted, or their password
changes). Whoever holds the refresh token *is* the user, so it is a secret: it
never appears in a ``repr``, a log line or an error message, and it is never
put in the local database (so never in a snapshot either: snapshots are copies
of that database). It lives only in memory and in the :class:`TokenStore` the
app chose (``auth/storage.py``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs

#: version of the stored text; a newer one is not read (the user signs in again)
FORMAT = 1


@attrs.frozen
class Tokens:
    """One user's tokens. ``expires_at`` is when the ID token expires, in seconds of
    the session's clock (``time.time()`` unless a test injected another).

    The two tokens are left out of ``repr`` (and so of ``str``, of logs and of
    tracebacks that print locals through it)."""

    uid: str
    id_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    expires_at: float
    email: str | None = None
    #: how the user signed in: ``password``, ``anonymous``, ``custom``
    provider: str | None = None

    def to_text(self) -> str:
        """The stored form (JSON): what a :class:`TokenStore` keeps."""
        return json.dumps(
            {
                "format": FORMAT,
                "uid": self.uid,
                "idToken": self.id_token,
                "refreshToken": self.refresh_token,
                "expiresAt": self.expires_at,
                "email": self.email,
                "provider": self.provider,
            }
        )

    @classmethod
    def from_text(cls, text: str) -> Tokens | None:
        """Tokens from their stored form, or ``None`` when the text is not a session
        this version can read (damaged, hand-edited, written by a newer version): the
        user then signs in again, which is always safe."""
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        uid, id_token, refresh = data.get("uid"), data.get("idToken"), data.get("refreshToken")
        expires_at = data.get("expiresAt")
        if not (isinstance(uid, str) and isinstance(id_token, str) and isinstance(refresh, str)):
            return None
        if not (uid and id_token and refresh):
            return None
        if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            return None
        email, provider = data.get("email"), data.get("provider")
        return cls(
            uid=uid,
            id_token=id_token,
            refresh_token=refresh,
            expires_at=float(expires_at),
            email=email if isinstance(email, str) else None,
            provider=provider if isinstance(provider, str) else None,
        )


def claims(id_token: str) -> dict[str, Any]:
    """The claims of an ID token, read without checking its signature: for what the
    token service just issued over TLS (its uid after a custom-token sign-in, whose
    answer names none); never to decide whom to trust. Empty when unreadable."""
    parts = id_token.split(".")
    if len(parts) != 3:
        return {}
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

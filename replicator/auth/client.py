"""FirebaseAuth: signs a user in on this device and hands back a :class:`Session`.

One object per app (per Firebase project): it knows where Firebase
Authentication is (production with the project's Web API key, or the Auth
emulator), where sessions are kept (a :class:`TokenStore`), and the clock token
lifetimes are measured on. Each sign-in saves the new session to the store
before returning it; :meth:`FirebaseAuth.restore` brings it back in the next run
of the app without a network (the ID token is refreshed when first needed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from .rest import AuthApi
from .session import REFRESH_MARGIN, Session, store_call
from .storage import FileTokenStore, TokenStore, default_folder
from .tokens import Tokens

log = logging.getLogger(__name__)


class FirebaseAuth:
    """Firebase Authentication for one app on one device.

    ``api_key`` is the project's Web API key (Firebase console: Project settings);
    under the Auth emulator (``FIREBASE_AUTH_EMULATOR_HOST``, or ``emulator_host=``
    like ``"127.0.0.1:9099"``, or ``base_url=``) it may be left out. ``store`` is
    where sessions are kept: a :class:`TokenStore`, or a path for a
    :class:`FileTokenStore`; by default a ``0600`` file in the user's state folder
    (``~/.local/state/replicator/`` on Linux), named after the project's key.
    ``timeout`` bounds each call to Firebase; ``client`` is an ``httpx.Client`` of
    the app's, if it needs proxies or certificates.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        emulator_host: str | None = None,
        base_url: str | None = None,
        store: TokenStore | str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.api = AuthApi(
            api_key, emulator_host=emulator_host, base_url=base_url, timeout=timeout, client=client
        )
        if store is None:
            digest = hashlib.sha256(f"{self.api.identity_url} {api_key}".encode()).hexdigest()
            store = default_folder() / f"session-{digest[:16]}.json"
        self.store: TokenStore = (
            FileTokenStore(store) if isinstance(store, (str, os.PathLike)) else store
        )
        self._clock = clock
        self._margin = refresh_margin

    def __repr__(self) -> str:
        return f"FirebaseAuth({self.api.identity_url!r}, store={self.store!r})"

    def sign_in_with_password(self, email: str, password: str) -> Session:
        """Sign an existing user in with their email and password."""
        body = {"email": email, "password": password}
        return self._sign_in("signInWithPassword", body, "password")

    def sign_up(self, email: str, password: str) -> Session:
        """Create a user with an email and a password, signed in."""
        return self._sign_in("signUp", {"email": email, "password": password}, "password")

    def sign_in_anonymously(self) -> Session:
        """Create an anonymous user, signed in: a uid of its own, no credentials to
        remember, so signing out (or losing the stored session) loses the account."""
        return self._sign_in("signUp", {}, "anonymous")

    def sign_in_with_custom_token(self, token: str) -> Session:
        """Sign in with a custom token the app's backend minted (Firebase Admin SDK's
        ``create_custom_token(uid)``) after checking the user its own way."""
        return self._sign_in("signInWithCustomToken", {"token": token}, "custom")

    def restore(self) -> Session | None:
        """The session saved by an earlier sign-in, or ``None`` (the app then shows its
        sign-in screen). No network: a stale ID token is refreshed when first asked for,
        and a refresh token revoked meanwhile answers :class:`AuthError` then."""
        tokens = store_call("load the session", self.store.load)
        if tokens is None:
            return None
        log.info("restored the session of user %s", tokens.uid)
        return self._session(tokens)

    def close(self) -> None:
        """Close the HTTP client (unless it is the app's)."""
        self.api.close()

    def _sign_in(self, method: str, body: dict[str, Any], provider: str) -> Session:
        tokens = self.api.sign_in(method, body, provider=provider, now=self._clock())
        store_call("save the session", self.store.save, tokens)
        log.info("signed in user %s (%s)", tokens.uid, provider)
        return self._session(tokens)

    def _session(self, tokens: Tokens) -> Session:
        return Session(self.api, tokens, self.store, clock=self._clock, refresh_margin=self._margin)

"""Session: one signed-in user on this device, the source of the ID tokens a store sends.

A session implements ``replicator.stores.base.IdTokens``: a store acting as the
user asks it for ``id_token()`` before each request, so a sync that outlives an
ID token (they live an hour) picks up a fresh one mid-way; after an
``UNAUTHENTICATED``/``401`` answer the store calls ``refresh_id_token()`` once
and retries once.

Contracts:

* ``id_token()`` returns a token valid for at least :data:`MIN_VALIDITY` seconds.
  It refreshes first when less than ``refresh_margin`` seconds remain; when that
  early refresh fails for want of a network and the current token still has
  :data:`MIN_VALIDITY` left, it returns the current token (offline work goes on
  until the token really runs out);
* one refresh at a time: threads asking meanwhile wait for it and get its token;
  several threads forcing a refresh together (each after its own ``401``) cause
  one refresh, not one each;
* a refresh the server refuses (revoked or expired refresh token, disabled or
  deleted user) raises :class:`AuthError`, not retryable; a missing network
  :class:`OfflineError`. Neither touches the local database: dirty rows stay dirty;
* after ``sign_out()`` every call raises :class:`AuthError`;
* the tokens never appear in ``repr``/``str`` or in a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AuthError, ConfigurationError, OfflineError, ReplicatorError, TransientError
from ..stores.base import IdTokens
from .local_data import LocalData, remove_local_data
from .rest import AuthApi
from .storage import TokenStore
from .tokens import Tokens

log = logging.getLogger(__name__)
T = TypeVar("T")

#: a token handed out stays valid at least this long (seconds)
MIN_VALIDITY = 60.0
#: by default, refresh when less than this is left (seconds); Firebase issues an hour
REFRESH_MARGIN = 300.0


def store_call(what: str, call: Callable[..., T], *args: Any) -> T:
    """Call the app's :class:`TokenStore`; anything but replicator's own errors becomes a
    :class:`ConfigurationError` (a store is the app's code)."""
    try:
        return call(*args)
    except ReplicatorError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"the token store failed to {what}: {type(exc).__name__}",
            hint="fix the TokenStore the session was given",
            orig=exc,
        ) from exc


class Session:
    """One signed-in user: ``uid``, ``email`` and ``provider`` (``password``,
    ``anonymous``, ``custom``), their ID tokens, and sign-out. Thread-safe.

    Made by :class:`~replicator.auth.FirebaseAuth` (sign-in or restore); refreshed
    tokens are saved to its ``store`` while the store holds this user's session (a
    refresh never brings back a session signed out, nor overwrites another user's).
    ``clock`` (seconds, ``time.time`` by default) is what token lifetimes are measured
    on; tests move it forward to make a token expire. ``refreshes`` counts the
    refreshes made (the cost of a session in a sync).
    """

    def __init__(
        self,
        api: AuthApi,
        tokens: Tokens,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self.uid = tokens.uid
        self.email = tokens.email
        self.provider = tokens.provider
        self.refreshes = 0
        self.refresh_margin = max(refresh_margin, MIN_VALIDITY)
        self._api = api
        self._store = store
        self._clock = clock
        self._tokens: Tokens | None = tokens
        self._lock = threading.Lock()  # guards _tokens; held through a refresh
        self._generation = 0  # counts refreshes, so waiting forced refreshes can share one

    def __repr__(self) -> str:
        state = "signed in" if self.signed_in else "signed out"
        return f"Session(uid={self.uid!r}, provider={self.provider!r}, {state})"

    @property
    def signed_in(self) -> bool:
        return self._tokens is not None

    @property
    def expires_at(self) -> float | None:
        """When the current ID token expires (on the session's clock); ``None`` once
        signed out."""
        tokens = self._tokens
        return tokens.expires_at if tokens is not None else None

    def id_token(self) -> str:
        """The user's ID token, valid for at least :data:`MIN_VALIDITY` seconds."""
        with self._lock:
            tokens = self._current()
            left = tokens.expires_at - self._clock()
            if left > self.refresh_margin:
                return tokens.id_token
            try:
                return self._refresh(tokens).id_token
            except (OfflineError, TransientError) as exc:
                if left < MIN_VALIDITY:
                    raise
                log.warning(
                    "could not refresh the ID token of user %s ahead of its expiry (%s); "
                    "the current one is valid for %.0f s more",
                    self.uid,
                    type(exc).__name__,
                    left,
                )
                return tokens.id_token

    def refresh_id_token(self) -> str:
        """A new ID token, after a store was told the current one is not valid. Callers
        that were waiting while another thread refreshed get that thread's token."""
        seen = self._generation
        with self._lock:
            tokens = self._current()
            if self._generation != seen:
                return tokens.id_token
            return self._refresh(tokens).id_token

    def sign_out(self, *, forget_local_data: Iterable[LocalData] = ()) -> list[Path]:
        """Forget the tokens (in memory and in the store) and remove the local data the
        app names: database paths or peewee databases (closed first), each with its
        ``-wal``, ``-shm`` and ``-journal`` files. Returns the files removed.

        The tokens go first, so a failure to remove a file leaves the user signed out
        and a :class:`LocalDatabaseError` naming the file; ``remove_local_data`` (or
        ``sign_out`` again) finishes the job. Sign-out is local: the refresh token
        stays valid at Firebase until revoked there (see the threat model in
        docs/concepts/sign-in.md).
        """
        with self._lock:
            self._tokens = None
        log.info("user %s signed out on this device", self.uid)
        store_call("forget the session", self._store.clear)
        return remove_local_data(forget_local_data)

    def _current(self) -> Tokens:
        if self._tokens is None:
            error = AuthError(f"user {self.uid} signed out on this device")
            error.code = "SIGNED_OUT"
            raise error
        return self._tokens

    def _refresh(self, tokens: Tokens) -> Tokens:
        """Refresh with the lock held, then keep the new tokens in the store."""
        started = time.monotonic()
        fresh = self._api.refresh(tokens, now=self._clock())
        self._tokens = fresh
        self._generation += 1
        self.refreshes += 1
        log.debug(
            "refreshed the ID token of user %s in %.0f ms",
            self.uid,
            (time.monotonic() - started) * 1000,
        )
        self._keep(fresh)
        return fresh

    def _keep(self, fresh: Tokens) -> None:
        """Save refreshed tokens, but only over this user's own stored session: a store
        emptied by a sign-out (of another copy of this session) or now holding another
        user's session is left alone, so a refresh never signs anyone back in. A store
        that fails is logged, not raised: the stored refresh token still works."""
        try:
            stored = store_call("load the session", self._store.load)
            if stored is None or stored.uid != self.uid:
                log.debug("the store no longer holds user %s's session; not saved", self.uid)
                return
            store_call("save the refreshed session", self._store.save, fresh)
        except ReplicatorError as exc:
            log.warning("could not save the refreshed session of user %s: %s", self.uid, exc)


# the protocol a session implements, checked by mypy
_is_id_tokens: type[IdTokens] = Session

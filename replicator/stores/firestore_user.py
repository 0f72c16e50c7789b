"""Firestore as a signed-in user: the remote a device uses, so that security rules apply.

Two kinds of Firestore clients exist, for two kinds of programs:

* **devices** use :class:`UserFirestoreRemote`: every call carries the user's
  Firebase ID token (from an :class:`~replicator.stores.base.IdTokens` source,
  a sign-in session of ``replicator.auth``), so Firestore evaluates the
  security rules (``replicator rules`` generates them from the models): the
  device reads and writes only what its user may, under ``users/{uid}``. A
  device holds no service-account key: a stolen device opens one user's data
  only, and only while that user's session lives.
* **servers and admin tools** (the ingest service, ``replicator compact``) use
  :class:`~replicator.stores.firestore.FirestoreRemote` over a
  ``google.cloud.firestore.Client`` built from service-account or
  application-default credentials, which Google's server library runs with
  privileges that **bypass every security rule**. Never ship those credentials
  in an app.

How the token travels. :class:`IdTokenCredentials` is a google-auth credential
whose token is the source's current ID token, asked for before every call (the
source refreshes it before it expires, so a sync that outlives a token goes
on). In production the client's gRPC channel carries it as
``authorization: Bearer <ID token>``, as for any credential. Under
``FIRESTORE_EMULATOR_HOST`` google-cloud-firestore would instead send
``authorization: Bearer owner`` with every call (the emulator's admin, which
bypasses the rules) whatever credentials it was given: :class:`UserClient`
drops that header and gives the emulator the user's token through the same
credential, over a channel of gRPC's local (loopback, plaintext) credentials.
:func:`refuse_admin` refuses any client that would still send a header of its
own, or carries other credentials: a device never reaches Firestore as admin
by mistake.

Errors. An ``UNAUTHENTICATED`` answer makes the remote ask the source for a
fresh token (``refresh_id_token``) once and try the call once more; a second
refusal is an ``AuthError`` (sign in again), never a loop. ``AuthError`` and
``OfflineError`` from the source end the call as they are. A
``PERMISSION_DENIED`` answer is an :class:`~replicator.errors.AccessDeniedError`
naming the call and the root: the rules refused a signed-in user, which
signing in again does not change. Dirty rows stay dirty in every case; an upload
batch refused so is split to find the refused writes, which are set aside
(``sync/isolate.py``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as gexc
from google.auth import credentials as gauth
from google.auth.transport import grpc as gauth_grpc
from google.cloud import firestore
from google.cloud.firestore_v1.services.firestore.transports.grpc import FirestoreGrpcTransport

from ..errors import AccessDeniedError, AuthError, ConfigurationError, ReplicatorError
from ..scopes.members import UID, Membership, parse_membership
from ..scopes.roles import MEMBERS
from .base import DeviceRecord, IdTokens
from .firestore import FirestoreRemote
from .firestore_dial import CHANNEL_OPTIONS

T = TypeVar("T")
log = logging.getLogger(__name__)


class IdTokenCredentials(gauth.Credentials):
    """google-auth credentials whose token is a Firebase user's ID token.

    Before every call the token is asked of ``tokens`` (``IdTokens.id_token()``,
    which refreshes it before it expires); ``expiry`` is the current token's.
    A failure of the source inside gRPC's metadata thread (where it would become
    a bare ``UNAVAILABLE``) is kept in ``failure`` for the remote to raise as it
    is; :meth:`prepare` asks in the caller's thread first, so errors normally
    surface there, typed."""

    def __init__(self, tokens: IdTokens) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.tokens = tokens
        self.failure: ReplicatorError | None = None
        self._lock = threading.Lock()

    def _fetch(self) -> str:
        try:
            token = self.tokens.id_token()
        except ReplicatorError as exc:
            with self._lock:
                self.failure = exc
            raise
        with self._lock:
            if token != self.token:
                self.token, self.expiry = token, _expiry(token)
        return token

    def refresh(self, request: Any) -> None:
        self._fetch()

    def before_request(self, request: Any, method: Any, url: Any, headers: Any) -> None:
        headers["authorization"] = f"Bearer {self._fetch()}"

    def prepare(self) -> None:
        """Ask the source for the token in the calling thread (typed errors), and forget
        an earlier failure."""
        with self._lock:
            self.failure = None
        self._fetch()

    def take_failure(self) -> ReplicatorError | None:
        """The source's failure inside a call, if any (and forget it)."""
        with self._lock:
            failure, self.failure = self.failure, None
        return failure


def _expiry(token: str) -> _dt.datetime | None:
    """The token's ``exp`` as google-auth keeps expiries (naive UTC), or None."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        exp = float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    return _dt.datetime.fromtimestamp(exp, _dt.timezone.utc).replace(tzinfo=None)


class UserClient(firestore.Client):
    """A ``google.cloud.firestore.Client`` that acts as the user of ``tokens``: it sends
    that user's ID token with every call and never the emulator's admin header."""

    def __init__(
        self,
        tokens: IdTokens,
        project: str | None = None,
        *,
        database: str | None = None,
        client_options: Any = None,
    ) -> None:
        self.id_credentials = IdTokenCredentials(tokens)
        super().__init__(
            project=project,
            credentials=self.id_credentials,
            database=database,
            client_options=client_options,
        )

    @property
    def _rpc_metadata(self) -> list[tuple[str, str]]:
        # the resource prefix only: no 'authorization' here (the emulator's admin
        # 'Bearer owner' would be); the token travels as the channel's call credentials
        return [("google-cloud-resource-prefix", self._database_string)]

    def _emulator_channel(self, transport: Any) -> grpc.Channel:
        return self.make_channel(CHANNEL_OPTIONS)

    def make_channel(self, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
        """A new gRPC channel carrying the user's token (``firestore_dial.redial`` uses it)."""
        if self._emulator_host is None:
            channel: grpc.Channel = FirestoreGrpcTransport.create_channel(
                self._target, credentials=self._credentials, options=list(options)
            )
            return channel
        call = grpc.metadata_call_credentials(
            gauth_grpc.AuthMetadataPlugin(self._credentials, None)  # type: ignore[no-untyped-call]
        )
        local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        return grpc.secure_channel(
            self._emulator_host, grpc.composite_channel_credentials(local, call), list(options)
        )


def refuse_admin(client: Any, tokens: IdTokens) -> None:
    """Refuse (``ConfigurationError``) a client that would not act as the user of
    ``tokens``: one that sends an ``authorization`` header of its own with every
    call (google-cloud-firestore's ``Bearer owner`` under the emulator: admin,
    no rules), or whose credentials are not that user's ID token."""
    try:
        metadata = list(client._rpc_metadata)
    except AttributeError:
        metadata = [("authorization", "?")]
    if any(str(k).lower() == "authorization" for k, _ in metadata):
        raise ConfigurationError(
            "this Firestore client sends an 'authorization' header of its own with every"
            " call (under FIRESTORE_EMULATOR_HOST: 'Bearer owner', the emulator's admin,"
            " which bypasses the security rules)",
            hint="let UserFirestoreRemote build its client from the sign-in session",
        )
    credentials = getattr(client, "_credentials", None)
    if not isinstance(credentials, IdTokenCredentials) or credentials.tokens is not tokens:
        raise ConfigurationError(
            "this Firestore client does not carry the signed-in user's ID token"
            f" (its credentials are {type(credentials).__name__})",
            hint="devices reach Firestore as their user: UserFirestoreRemote(session, project=...)",
        )


class UserFirestoreRemote(FirestoreRemote):
    """A :class:`~replicator.stores.firestore.FirestoreRemote` acting as the signed-in
    user of ``tokens``; the remote for devices (see the module's docstring).

    ``root`` defaults to ``users/{uid}``. ``client`` is for sharing one
    :class:`UserClient` between remotes of the same user (refused unless it acts
    as that user). ``refreshes`` counts the tokens refreshed after an
    ``UNAUTHENTICATED`` answer. Its Devices records carry ``owner`` (the uid),
    which the generated rules require.
    """

    def __init__(
        self,
        tokens: IdTokens,
        project: str | None = None,
        *,
        root: str | None = None,
        database: str | None = None,
        client: Any = None,
        timeout: float = 20.0,
        attempts: int = 5,
        settle: float = 2.0,
        owned: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        if client is None:
            client = UserClient(tokens, project, database=database)
        refuse_admin(client, tokens)
        super().__init__(
            client,
            f"users/{tokens.uid}" if root is None else root,
            timeout=timeout,
            attempts=attempts,
            settle=settle,
            owned=owned,
        )
        self.tokens = tokens
        self.credentials: IdTokenCredentials = client._credentials
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"UserFirestoreRemote(uid={self.tokens.uid!r}, root={self.root!r})"

    def _device_fields(self, device: DeviceRecord) -> dict[str, Any]:
        return {**super()._device_fields(device), "owner": self.tokens.uid}

    def memberships(self) -> list[Membership]:
        """Every scope the user is a member of, with its kind and the user's role, in
        scope order: one collection-group query (``members`` where ``uid`` is the
        user's), billed a read per scope (one when none). A member document that is
        not a scope's, or is damaged, is logged and skipped."""
        uid = self.tokens.uid
        query = self.client.collection_group(MEMBERS).where(
            filter=firestore.FieldFilter(UID, "==", uid)
        )
        snaps = self._call(
            "the discovery of the user's scopes", lambda: list(query.stream(**self._opts()))
        )
        self.usage.reads += max(1, len(snaps))
        found: dict[str, Membership] = {}
        for snap in snaps:
            got = parse_membership(snap.reference.path, snap.to_dict() or {}, uid)
            if isinstance(got, str):
                log.warning("a member document skipped: %s", got)
            else:
                found[got.scope] = got
        return [found[k] for k in sorted(found)]

    def _call(self, what: str, fn: Callable[[], T], *, conditional: bool = False) -> T:
        """One call as the user: the token asked for first (typed errors); after an
        ``UNAUTHENTICATED`` answer one refresh and one more try, never more."""
        self.credentials.prepare()
        for attempt in (1, 2):
            if attempt == 2:
                self.refreshes += 1
                self.tokens.refresh_id_token()
            try:
                return super()._call(what, fn, conditional=conditional)
            except ReplicatorError as exc:
                mapped = self._mapped(what, exc)
                if mapped is not exc:
                    raise mapped from exc
                if not _unauthenticated(exc):
                    raise
                if attempt == 2:
                    raise AuthError(
                        f"Firestore refused {self.tokens.uid!r}'s ID token for {what}, also"
                        " after a refresh",
                        orig=exc.orig,
                    ) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _mapped(self, what: str, exc: ReplicatorError) -> ReplicatorError:
        """``exc`` as the caller should see it: the source's own failure inside gRPC
        first; a rules refusal as ``AccessDeniedError``."""
        failure = self.credentials.take_failure()
        if failure is not None:
            return failure
        if isinstance(exc.orig, gexc.PermissionDenied):
            return AccessDeniedError(
                f"Firestore's security rules refused {what} under {self.root!r}"
                f" to user {self.tokens.uid!r}: {exc.orig.message}",
                orig=exc.orig,
            )
        return exc


def _unauthenticated(exc: ReplicatorError) -> bool:
    return isinstance(exc.orig, gexc.Unauthenticated)

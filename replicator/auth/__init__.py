"""Sign-in on a device: the user's Firebase Authentication session and its tokens.

A device acts as its user: it signs in (:class:`FirebaseAuth`), keeps the
:class:`Session` (the refresh token in a :class:`TokenStore` of the app's
choosing; a ``0600`` file by default), and a store acting as that user takes
its ID tokens from the session (``replicator.stores.base.IdTokens``), so
Firestore's security rules apply to everything the device does. Servers and
admin tools (the ingest service, ``replicator compact``) use service-account
credentials instead, never a user's session.

Modules: ``rest`` (the REST calls), ``failures`` (the one mapping of Firebase's
answers to replicator's errors), ``tokens`` (what a session holds and its stored
form), ``storage`` and ``keyring_store`` (where it is kept), ``session``
(refresh, sign-out), ``client`` (sign-in, restore), ``local_data`` (removing a
user's database files at sign-out). For services: ``verify`` (checking a caller's ID
token) and ``accounts`` (whether its user is still allowed in).
"""

from .accounts import AccountStatus
from .client import FirebaseAuth
from .keyring_store import KeyringTokenStore
from .local_data import remove_local_data
from .rest import AuthApi
from .session import MIN_VALIDITY, REFRESH_MARGIN, Session
from .storage import CallbackTokenStore, FileTokenStore, MemoryTokenStore, TokenStore
from .tokens import Tokens
from .verify import IdTokenVerifier

__all__ = [
    "MIN_VALIDITY",
    "REFRESH_MARGIN",
    "AccountStatus",
    "AuthApi",
    "CallbackTokenStore",
    "FileTokenStore",
    "FirebaseAuth",
    "IdTokenVerifier",
    "KeyringTokenStore",
    "MemoryTokenStore",
    "Session",
    "TokenStore",
    "Tokens",
    "remove_local_data",
]

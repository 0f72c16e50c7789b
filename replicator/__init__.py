"""replicator: offline-first multi-device replication for peewee/SQLite apps.

Declare models deriving from :class:`SyncModel`, create a :class:`Replicator`
with a remote store, and call :meth:`Replicator.sync` whenever the device is
online. See docs/getting-started.md for a first use.
"""

import logging

from .auth import (
    CallbackTokenStore,
    FileTokenStore,
    FirebaseAuth,
    KeyringTokenStore,
    MemoryTokenStore,
    Session,
    Tokens,
    TokenStore,
    remove_local_data,
)
from .bundles import Bundles, BundleSink, DeviceTokens, Ingestor
from .engine import Replicator
from .errors import (
    AccessDeniedError,
    AuthError,
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigurationError,
    ConflictError,
    DeliveryRejected,
    DocumentTooLargeError,
    EventError,
    LocalDatabaseError,
    OfflineError,
    PreconditionFailed,
    RemoteDataError,
    RemoteError,
    ReplicatorError,
    SchemaError,
    SnapshotError,
    SnapshotNotFoundError,
    TamperedSnapshotError,
    TransientError,
    TruncatedSnapshotError,
    UnsafeRestoreError,
    UnsupportedSnapshotError,
    UnsupportedValueError,
    WrongDatabaseKeyError,
    WrongKeyError,
)
from .model import SyncModel, new_id
from .outbox import Outbox, OutboxReport, SyncConfiguration, TypeStatus
from .reference import ReferenceFiles, localizations
from .report import Progress, Resolution, RowError, SyncReport
from .scopes.device import ScopeChange, ScopedReplicator, ScopedReport
from .scopes.members import Membership
from .snapshots.crypto import KeyRing, Passphrase, SnapshotKey
from .status import LastError, SyncStatus
from .stores.base import BlobStore, DeviceRecord, RemoteDoc, RemoteStore, Usage, Write
from .stores.directory import DirectoryBlobStore
from .stores.embedded import EmbeddedRemote
from .stores.http import HttpIngest
from .stores.ingest import IngestRequest, IngestResult, StoreIngest
from .strategies.conflict import (
    ClientWins,
    ConflictStrategy,
    FieldMerge,
    LastWriterWins,
    PerCollection,
    ServerWins,
)
from .strategies.snapshot import Always, BigBrother, Never, SnapshotDecision, SnapshotStrategy
from .sync.listeners import Change

__version__ = "0.1.0"

# the library logs through the ``replicator`` logger and its children; it prints nothing
# and, until the app configures logging, says nothing either
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AccessDeniedError",
    "Always",
    "AuthError",
    "BigBrother",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobStore",
    "BundleSink",
    "Bundles",
    "CallbackTokenStore",
    "Change",
    "ClientWins",
    "ConfigurationError",
    "ConflictError",
    "ConflictStrategy",
    "DeliveryRejected",
    "DeviceRecord",
    "DeviceTokens",
    "DirectoryBlobStore",
    "DocumentTooLargeError",
    "EmbeddedRemote",
    "EventError",
    "FieldMerge",
    "FileTokenStore",
    "FirebaseAuth",
    "HttpIngest",
    "IngestRequest",
    "IngestResult",
    "Ingestor",
    "KeyRing",
    "KeyringTokenStore",
    "LastError",
    "LastWriterWins",
    "LocalDatabaseError",
    "Membership",
    "MemoryTokenStore",
    "Never",
    "OfflineError",
    "Outbox",
    "OutboxReport",
    "Passphrase",
    "PerCollection",
    "PreconditionFailed",
    "Progress",
    "ReferenceFiles",
    "RemoteDataError",
    "RemoteDoc",
    "RemoteError",
    "RemoteStore",
    "Replicator",
    "ReplicatorError",
    "Resolution",
    "RowError",
    "SchemaError",
    "ScopeChange",
    "ScopedReplicator",
    "ScopedReport",
    "ServerWins",
    "Session",
    "SnapshotDecision",
    "SnapshotError",
    "SnapshotKey",
    "SnapshotNotFoundError",
    "SnapshotStrategy",
    "StoreIngest",
    "SyncConfiguration",
    "SyncModel",
    "SyncReport",
    "SyncStatus",
    "TamperedSnapshotError",
    "TokenStore",
    "Tokens",
    "TransientError",
    "TruncatedSnapshotError",
    "TypeStatus",
    "UnsafeRestoreError",
    "UnsupportedSnapshotError",
    "UnsupportedValueError",
    "Usage",
    "Write",
    "WrongDatabaseKeyError",
    "WrongKeyError",
    "__version__",
    "localizations",
    "new_id",
    "remove_local_data",
]

"""replicator: offline-first multi-device replication for peewee/SQLite apps.

Declare models deriving from :class:`SyncModel`, create a :class:`Replicator`
with a remote store, and call :meth:`Replicator.sync` whenever the device is
online. See the README for a first use.
"""

from .engine import Replicator
from .errors import (
    ConfigurationError,
    ConflictError,
    DocumentTooLargeError,
    OfflineError,
    PreconditionFailed,
    RemoteDataError,
    RemoteError,
    ReplicatorError,
    SchemaError,
    SnapshotError,
    TransientError,
)
from .model import SyncModel, new_id
from .report import Progress, Resolution, RowError, SyncReport
from .stores.base import DeviceRecord, RemoteDoc, RemoteStore, Usage, Write
from .stores.embedded import EmbeddedRemote
from .strategies.conflict import (
    ClientWins,
    FieldMerge,
    LastWriterWins,
    PerCollection,
    ServerWins,
)

__version__ = "0.1.0"

__all__ = [
    "ClientWins",
    "ConfigurationError",
    "ConflictError",
    "DeviceRecord",
    "DocumentTooLargeError",
    "EmbeddedRemote",
    "FieldMerge",
    "LastWriterWins",
    "OfflineError",
    "PerCollection",
    "PreconditionFailed",
    "Progress",
    "RemoteDataError",
    "RemoteDoc",
    "RemoteError",
    "RemoteStore",
    "Replicator",
    "ReplicatorError",
    "Resolution",
    "RowError",
    "SchemaError",
    "ServerWins",
    "SnapshotError",
    "SyncModel",
    "SyncReport",
    "TransientError",
    "Usage",
    "Write",
    "__version__",
    "new_id",
]

"""The one error tree of replicator.

Every error replicator raises derives from :class:`ReplicatorError`. Errors from
drivers and client libraries (sqlite3, google-cloud-firestore, botocore) are
translated at the store boundary (and SQLite's errors on local files by
``sql.local_error``) with ``raise Mapped(...) from exc``; the
original is kept as ``.orig``. Each error says what happened and, in ``.hint``,
what to do. ``.retryable`` tells a scheduler whether running the same sync
again later can succeed without anyone changing anything.

::

    ReplicatorError
    ├── ConfigurationError        wrong arguments, models or options; a store pointed at
    │                             the wrong place or without credentials
    ├── SchemaError               local tables do not match the models
    ├── LocalDatabaseError        SQLite refused work on a local file: busy (retryable),
    │                             full, damaged, or a path that cannot be opened
    │   └── WrongDatabaseKeyError the key does not open an encrypted database (names it)
    ├── RemoteError               anything the remote store said or did not say
    │   ├── OfflineError          store unreachable (retryable)
    │   ├── TransientError        busy, aborted, timed out (retryable)
    │   ├── PreconditionFailed    a conditional write lost a race (internal, retried)
    │   ├── BlobNotFoundError     no object under that key in a blob store
    │   ├── BlobIntegrityError    a blob's bytes do not hash to what was announced (retryable)
    │   ├── RemoteDataError       a remote document is malformed (names collection/id)
    │   ├── DocumentTooLargeError a row would not fit in one remote document
    │   ├── UnsupportedValueError a row holds a value the store cannot hold
    │   ├── AccessDeniedError     the store's security rules (or S3) refused the caller
    │   └── DeliveryRejected      a sink refused an outbox delivery for good (4xx)
    ├── ConflictError             conflicts kept recurring; sync again (retryable)
    ├── AuthError                 the user must sign in again (refused, revoked, disabled)
    ├── EventError                an outbox event cannot be stored (not JSON, unknown type)
    └── SnapshotError             the local database is untouched in every case
        ├── SnapshotNotFoundError no snapshot (or not the one named) in the blob store
        ├── WrongKeyError         the key or passphrase does not open the snapshot
        ├── TamperedSnapshotError a byte of the snapshot was changed
        ├── TruncatedSnapshotError the snapshot ends early
        ├── UnsupportedSnapshotError not a snapshot, or a newer format version
        └── UnsafeRestoreError    the database holds changes a restore would lose

A failed sync never leaves the local database half-applied: every page of
downloaded changes is applied with its watermark in one transaction, and a row
is marked clean only after the remote confirmed it.
"""

from __future__ import annotations

from collections.abc import Sequence


class ReplicatorError(Exception):
    """Root of every error replicator raises."""

    retryable: bool = False
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, orig: BaseException | None = None):
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.orig = orig
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigurationError(ReplicatorError):
    """Replicator was given arguments it cannot work with, or a store was set up wrong
    (a path in a missing folder, a folder where a file belongs, no credentials): someone
    must change something, so it is never retryable."""


class SchemaError(ReplicatorError):
    """A local table does not match its model, or a model is not a SyncModel."""

    default_hint = "create the tables with database.create_tables(models) or migrate them"


class LocalDatabaseError(ReplicatorError):
    """SQLite refused work on the local database: busy (another writer held it for
    longer than the connection's ``timeout``; ``retryable``), full, damaged, or a path
    it cannot open (a folder, a missing folder). Whatever a sync had committed stays;
    the rest was rolled back."""

    def __init__(self, message: str, *, retryable: bool, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retryable = retryable


class WrongDatabaseKeyError(LocalDatabaseError):
    """The key given for an encrypted database (SQLCipher) does not open it: a wrong key
    or passphrase, a plain SQLite file opened with a key, or a file that is not a
    database at all (SQLCipher cannot tell these apart: every page fails its MAC).
    ``path`` names the file. Nothing was read or written."""

    default_hint = (
        "give the key the database was encrypted with (a passphrase and a raw key are"
        " different keys); a plain database must be encrypted first (replicator.cipher"
        ".encrypt_in_place)"
    )

    def __init__(self, path: str, **kw: object) -> None:
        super().__init__(
            f"the key does not open the encrypted database {path}",
            retryable=False,
            **kw,
        )
        self.path = path


class RemoteError(ReplicatorError):
    """The remote store failed or returned something unusable. ``status`` is the
    HTTP status it answered with, when it answered one over HTTP."""

    status: int | None = None


class OfflineError(RemoteError):
    """The remote store could not be reached. Nothing local was changed."""

    retryable = True
    default_hint = "check the network or the remote's address and sync again; no data was lost"


class TransientError(RemoteError):
    """The remote store was busy, aborted the request or timed out.

    ``retry_after`` is the delay in seconds the server asked for (HTTP
    ``Retry-After``), or ``None`` when it named none."""

    retryable = True
    default_hint = "sync again later; no data was lost"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class PreconditionFailed(RemoteError):
    """A conditional write found the remote document changed since it was read.

    The engine handles this itself (it fetches the remote version, resolves the
    conflict and retries); it reaches callers only from the store API.
    ``keys`` lists the ``(collection, id)`` pairs whose precondition failed, or
    is empty when the store cannot tell which write of the batch failed.
    """

    retryable = True

    def __init__(self, message: str, keys: Sequence[tuple[str, str]] = (), **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.keys = list(keys)


class BlobNotFoundError(RemoteError):
    """The blob store holds no object under that key."""


class BlobIntegrityError(RemoteError):
    """Bytes sent to (or read from) a blob store do not hash to the SHA-256 announced
    with them: damaged on the way. Nothing was stored; sending again can succeed."""

    retryable = True
    default_hint = "send again; if it keeps happening, something on the way alters data"


class RemoteDataError(RemoteError):
    """A remote document cannot be applied locally (malformed or inconsistent)."""

    default_hint = (
        "fix or delete the remote document; pages before it were applied and the "
        "next sync resumes at it"
    )

    def __init__(self, collection: str, doc_id: str, reason: str, **kw: object):
        super().__init__(
            f"remote document {collection}/{doc_id} is malformed: {reason}",
            **kw,  # type: ignore[arg-type]
        )
        self.collection = collection
        self.doc_id = doc_id
        self.reason = reason


class DocumentTooLargeError(RemoteError):
    """A row is larger than the remote store accepts for one document."""

    default_hint = "shrink the row (move large values to a blob); it stays dirty locally"

    def __init__(self, collection: str, doc_id: str, size: int, limit: int):
        super().__init__(
            f"row {collection}/{doc_id} encodes to {size} bytes, over the store's limit of {limit}"
        )
        self.collection = collection
        self.doc_id = doc_id
        self.size = size
        self.limit = limit


class UnsupportedValueError(RemoteError):
    """A row holds a value the remote store cannot represent (e.g. an integer beyond
    64 bits on Firestore). The row is not uploaded and stays dirty."""

    default_hint = "change the value (e.g. store a huge number as text); the row stays dirty"

    def __init__(
        self,
        column: str,
        reason: str,
        collection: str = "",
        doc_id: str = "",
        *,
        hint: str | None = None,
    ):
        where = f"row {collection}/{doc_id} column {column}" if collection else f"column {column}"
        super().__init__(f"{where}: {reason}", hint=hint)
        self.collection = collection
        self.doc_id = doc_id
        self.column = column
        self.reason = reason


class AccessDeniedError(RemoteError):
    """The remote store's security rules refused what a signed-in user asked (a
    ``PERMISSION_DENIED`` answer). Not an ``AuthError``: the user is signed in and
    signing in again changes nothing. The rules deployed are not the ones generated
    for these models (``replicator rules``), or the app wrote what they forbid (a
    column they do not list, another user's data). Not ``retryable``; nothing
    local is lost: dirty rows stay dirty. An upload does not fail on a row the
    rules refuse: that write is set aside with this error as its reason and the
    others go on (``SyncReport.denied``, ``Replicator.denied_rows``); only a refusal
    no row explains (the device's own record, a download) ends the sync. From S3
    (a 403: the credentials have no rights on that key, or are not valid), it names
    the bucket and the key."""

    default_hint = (
        "deploy the rules generated for these models (replicator rules, then firebase"
        " deploy --only firestore:rules); the unsynced changes are kept"
    )


class DeliveryRejected(RemoteError):
    """A sink answered an outbox delivery with a status that retrying cannot change
    (a 4xx other than 408 and 429). The outbox moves the batch to its dead letters,
    where ``replicator outbox requeue`` sends it again once the cause is fixed."""

    default_hint = "fix the endpoint or the events, then requeue the dead letters"

    status: int  # always answered with one

    def __init__(self, status: int, response: str, msg_id: str = "") -> None:
        super().__init__(f"the sink refused message {msg_id or '?'} with HTTP {status}")
        self.status = status
        self.response = response
        self.msg_id = msg_id


class EventError(ReplicatorError):
    """An outbox event cannot be stored: its data is not JSON, or its type has no
    configuration. Nothing was stored."""


class ConflictError(ReplicatorError):
    """Uploads kept meeting fresh remote changes; the rows stay dirty."""

    retryable = True
    default_hint = "another device is writing the same rows right now; sync again"


class AuthError(ReplicatorError):
    """The user must sign in (again): the credentials were refused, the refresh token
    was revoked or expired, or the account was disabled. Not ``retryable``: running the
    same sync later fails the same way until the user signs in. Nothing local is lost:
    dirty rows stay dirty."""

    default_hint = "sign the user in again; their unsynced changes are kept"
    #: Firebase Authentication's error code (``INVALID_PASSWORD``, ``USER_DISABLED``...),
    #: for an app that words the message itself; empty when there is none
    code: str = ""


class SnapshotError(ReplicatorError):
    """Base of the snapshot errors; the local database is untouched."""


class SnapshotNotFoundError(SnapshotError):
    """The blob store holds no snapshot (or not the one asked for)."""

    default_hint = "a device publishes one after a sync; this device will sync from scratch"


class WrongKeyError(SnapshotError):
    """The key or passphrase given does not open this snapshot."""

    default_hint = "use the key (or passphrase) the snapshots were made with"


class TamperedSnapshotError(SnapshotError):
    """The snapshot's bytes fail authentication: it was altered or corrupted."""

    default_hint = "do not use this snapshot; restore an older one or sync from scratch"


class TruncatedSnapshotError(SnapshotError):
    """The snapshot ends before its last chunk: an interrupted upload or download."""

    default_hint = "download it again; if it stays short, restore an older one"


class UnsupportedSnapshotError(SnapshotError):
    """Not a replicator snapshot, or made by a newer version of replicator."""

    default_hint = "upgrade replicator on this device"


class UnsafeRestoreError(SnapshotError):
    """The local database holds rows a restore would overwrite."""

    default_hint = "sync first; a restore only replaces an empty or fully synced database"
    #: the database holds only synced data, which ``force=True`` (``--force``) replaces
    forceable: bool = False

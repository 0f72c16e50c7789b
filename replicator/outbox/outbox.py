"""The event outbox: events saved offline, delivered exactly once.

An app hands events to :meth:`Outbox.save` from any thread; they are committed to
the outbox's own SQLite file (never the app's database) in one short
transaction. Delivery happens in :meth:`Outbox.sync` or on the outbox's
background worker (:meth:`Outbox.start`), never on the thread that saves.

:class:`Outbox` is the public face and only wires its parts: the file
(``store``, its tables in ``schema``, what it tells in ``status``), saving and
the caps (``queue``), delivery (``delivery``, its messages in ``messages``), what
``init`` set up per type (``setup``) and the worker (``worker``), which sees the
delivery side through the small protocol it declares. What each part
guarantees is said in its module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cipher.database import KeySource
from ..errors import ConfigurationError
from ..stores.base import Sink
from .config import Retry, SyncConfiguration, load_configurations
from .delivery import Dispatcher, OutboxReport
from .queue import EventQueue
from .setup import Merge, Setup
from .status import DeadLetter, TypeStatus
from .store import OutboxFile
from .worker import Worker


class Outbox:
    """Events saved offline in their own SQLite file and delivered in the background.

    ``max_pending`` and ``max_pending_bytes`` cap what one type may hold undelivered
    (events waiting plus events in messages). Past a cap the outbox drops the oldest
    event of the lowest priority first (a whole message once no event waits), counts
    the drop in :meth:`status` and logs a warning. ``batch_events`` and
    ``batch_bytes`` bound one message of a batched type. An event larger than
    ``max_pending_bytes`` could never fit and is refused at :meth:`save`.
    ``timeout`` is how long a write waits for another thread or process holding the
    file, and the deadline of each request of the HTTP sinks the outbox makes (for
    the types without a sink of the app's). ``durable=True`` makes each save
    survive a power cut (``synchronous=FULL``); the default survives a crash of the
    process, not of the machine.

    ``key`` encrypts the file with SQLCipher (the ``sqlcipher`` extra), as
    :class:`replicator.cipher.EncryptedDatabase` does the app's database: a
    passphrase, a raw 32-byte key, a callable returning one, or a ``KeyringKey``; a
    wrong key is a ``WrongDatabaseKeyError`` naming the file.

    Several processes may use one file (two apps, an app and ``replicator outbox
    sync``): nothing saved is lost and each message goes under its one ``msg_id``
    (see ``store`` and ``messages``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_pending: int = 100_000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        batch_events: int = 500,
        batch_bytes: int = 1024 * 1024,
        retry: Retry | None = None,
        timeout: float = 30.0,
        durable: bool = False,
        key: KeySource | None = None,
    ) -> None:
        if str(path) == ":memory:":
            raise ConfigurationError(
                "the outbox needs a file: events in memory would be lost with the process"
            )
        for name, value in (
            ("max_pending", max_pending),
            ("max_pending_bytes", max_pending_bytes),
            ("batch_events", batch_events),
            ("batch_bytes", batch_bytes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        self._closed = False
        self._worker: Worker | None = None
        self._file = OutboxFile(Path(path), timeout=timeout, durable=durable, key=key)
        self._setup = Setup(timeout)
        self._setup.replace(self._file.stored_configurations())
        self._queue = EventQueue(
            self._file, max_pending=max_pending, max_pending_bytes=max_pending_bytes
        )
        self._dispatcher = Dispatcher(
            self._file,
            self._setup,
            retry=retry or Retry(),
            batch_events=batch_events,
            batch_bytes=batch_bytes,
        )

    # -- what it was given -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def timeout(self) -> float:
        return self._file.timeout

    @property
    def max_pending(self) -> int:
        return self._queue.max_pending

    @property
    def max_pending_bytes(self) -> int:
        return self._queue.max_pending_bytes

    @property
    def batch_events(self) -> int:
        return self._dispatcher.batch_events

    @property
    def batch_bytes(self) -> int:
        return self._dispatcher.batch_bytes

    @property
    def retry(self) -> Retry:
        """How failures that can pass are retried; may be replaced at any time."""
        return self._dispatcher.retry

    @retry.setter
    def retry(self, retry: Retry) -> None:
        self._dispatcher.retry = retry

    # -- configuration -------------------------------------------------------------------

    def init(
        self,
        configurations: Iterable[Mapping[str, Any] | SyncConfiguration]
        | Mapping[str, Mapping[str, Any]],
        *,
        sinks: Mapping[str, Sink] | None = None,
        merge: Mapping[str, Merge] | None = None,
    ) -> None:
        """Configure the types, replacing earlier ones; they are stored in the file.

        ``sinks`` gives a type a sink of the app's instead of HTTP to its ``api``;
        ``merge`` gives a type a function ``merge(earlier, later)`` that combines two
        waiting events saved under one key (default: the later replaces the earlier).
        """
        configs = load_configurations(configurations)
        Setup.check(configs, sinks, merge)
        self._file.store_configurations(configs)
        self._setup.replace(configs, sinks, merge)
        self._wake()

    @property
    def configurations(self) -> dict[str, SyncConfiguration]:
        return self._setup.configurations

    # -- save ----------------------------------------------------------------------------

    def save(self, type: str, data: Any, *, key: str | None = None, priority: int = 0) -> str:
        """Store one event and return its key.

        ``data`` is a JSON value (a dict, a list, ...) or JSON text (``str`` or
        ``bytes``). Without ``key`` the event gets a new unique one. With a ``key``
        that an undelivered event of this type already has, the two coalesce: the
        later replaces the earlier, or the type's merge function combines them. With
        a merge function, a save under a key merges with whatever is latest for it:
        the waiting event, else the message still waiting for its acknowledgement,
        else the state last acknowledged (kept per key for single-event types), so
        every message of a key carries its full merged state and never goes
        backwards. Higher ``priority`` is sent first.

        An :class:`EventError` (nothing stored): data that is no JSON value, text
        that is not valid Unicode (a lone surrogate), an event larger than
        ``max_pending_bytes``, a wrong key or priority, a type not configured, a
        merge function that failed.
        """
        config = self._setup.config(type)
        key, waiting = self._queue.put(
            type, data, key=key, priority=priority, merge=self._setup.merge(type)
        )
        auto = config.auto_sync
        if auto and auto.threshold and waiting >= auto.threshold:
            self._wake()
        return key

    # -- delivery ------------------------------------------------------------------------

    def sync(self, type: str) -> OutboxReport:
        """Deliver everything of ``type`` now, whatever ``autoSync`` says. Messages go
        highest priority first (one that failed before goes after the others); a
        message that fails in a way that can pass is retried per :attr:`retry`, then
        the error is raised (:class:`OfflineError` when the receiver cannot be
        reached) and everything stays for the next sync. A message the sink refuses
        for good goes to the dead letters and the sync goes on. A message whose sink
        fails otherwise (any other error, any exception of an app's sink) is set
        aside, the sync goes on with the rest and then raises that error; after
        ``retry.attempts`` such failures the message is dead-lettered. Every
        failure is recorded in :meth:`status` with the next attempt."""
        self._setup.config(type)
        return self._dispatcher.deliver(type, automatic=False)

    def request_sync(self, type: str) -> None:
        """Ask the worker to sync ``type`` soon and to keep trying, with backoff,
        until it succeeds; the request survives a restart (one-off work)."""
        self._setup.config(type)
        self._file.request_sync(type)
        self._wake()

    # -- dead letters, status ------------------------------------------------------------

    def dead_letters(self, type: str | None = None) -> list[DeadLetter]:
        """The messages a sink refused, oldest first."""
        return self._file.dead_letters(type)

    def requeue(self, type: str | None = None, msg_ids: Sequence[str] | None = None) -> int:
        """Put dead letters (of one type, or the ``msg_ids`` named, or all) back in
        line, with their ``msg_id``; returns how many messages went back."""
        moved = self._file.requeue(type, msg_ids)
        if moved:
            self._wake()
        return moved

    def status(self, type: str | None = None) -> dict[str, TypeStatus]:
        """Per type (configured, or holding anything): see :class:`TypeStatus`."""
        return self._file.status(type, self._setup.configurations)

    def pending(self, type: str) -> int:
        """Events of ``type`` not yet delivered (waiting or in messages), as this
        process counts them (with what other processes delivered); one row read."""
        return self._dispatcher.pending(type)

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker: automatic syncs per ``autoSync``, requested
        syncs, and the jobs given to :meth:`schedule`. Idempotent."""
        if self._closed:
            raise ConfigurationError("the outbox is closed", hint="open a new Outbox")
        if self._worker is None:
            self._worker = Worker(self._dispatcher)
        if not self._worker.is_alive():
            self._worker.start()

    def schedule(self, job: Callable[[], object], *, every: float, name: str | None = None) -> None:
        """Run ``job`` on the worker every ``every`` minutes (``replicator.sync``, for
        one); a failure that can pass (``retryable``) is retried with the outbox's
        backoff, any other is logged and the job keeps its interval."""
        if not every or every <= 0:
            raise ConfigurationError(f"every must be a positive number of minutes: {every!r}")
        if self._worker is None:
            self._worker = Worker(self._dispatcher)
        label = name or str(getattr(job, "__qualname__", "job"))
        self._worker.add_job(label, job, every * 60.0)

    def _wake(self) -> None:
        """Tell a worker that something may be due."""
        if self._worker is not None:
            self._worker.wake()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after a flush of the automatic types bounded by
        ``timeout`` seconds) and close the file. What is left stays for next time."""
        if self._closed:
            return
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)
        self._setup.close()
        self._closed = True
        self._file.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

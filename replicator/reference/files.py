"""Reference files: map tiles of a boundary, routing data, cached beside the database.

**Reference files** (:class:`ReferenceFiles`): a manifest in a ``BlobStore``
(``{prefix}/{boundary}/manifest.json``, checked as :mod:`.manifest` says) lists
each file's path, size and SHA-256. ``sync(boundary)`` brings the cache
directory to it in two phases, so a boundary switch on a bad network never
leaves a device without maps:

1. *download*: the files whose content the cache does not hold are fetched,
   several at a time, into ``.staging/`` inside the cache (one file per distinct
   content, named by its SHA-256), each checked against the manifest while it is
   written. The installed files are not touched: a sync that fails here (the
   store offline, a file missing from it, a checksum that does not match) leaves
   the old set installed and ``installed()`` saying so; what was verified stays
   staged, and the next sync fetches only the rest.
2. *switch*, once every file is staged and verified: the new manifest is written
   to ``.switch.json`` (from then on the switch is decided), each staged file is
   renamed into place, the manifest is recorded as installed (``.manifest.json``),
   the files it does not list are removed, then the staging folder and the
   journal. A process killed during the switch leaves the journal: the next
   ``sync()`` or ``installed()`` finishes the switch from it (everything it needs
   is staged on the device).

Invariants: a file is installed only once it matches its manifest entry, by an
atomic rename, so a reader never sees a partial or unverified file;
``installed()`` lists only files in place with that content; nothing is written
outside the cache directory (a manifest path cannot leave it, and a link found
inside it is removed, never followed: :mod:`.disk`); a malformed manifest
changes nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import attrs

from ..cipher.database import KeySource
from ..cipher.sealed import derive, seal, unseal
from ..errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigurationError,
    RemoteDataError,
)
from ..stores.base import BlobStore, HashingWriter, TooLong, hash_rest
from .disk import TMP, clear, place, real_dir, regular_file, remove, write_atomic
from .manifest import (
    FILES_FORMAT,
    MAX_MANIFEST_BYTES,
    FileEntry,
    ManifestError,
    check_name,
    decode,
    encode,
    files_of,
    parse_manifest,
)

__all__ = ["FILES_FORMAT", "FileEntry", "FilesReport", "ReferenceFiles", "parse_manifest"]

log = logging.getLogger(__name__)

_LOCAL_MANIFEST = ".manifest.json"
_JOURNAL = ".switch.json"
_STAGING = ".staging"
_OWN = (_LOCAL_MANIFEST, _JOURNAL, _STAGING)
_MANIFEST_HINT = (
    "the installed files are unchanged; the boundary's manifest must be republished"
    " (format, boundary, files with path, size, sha256 and a key under the prefix)"
)


@attrs.frozen
class FilesReport:
    """What ``ReferenceFiles.sync`` did. ``downloaded``: the paths whose content this
    sync fetched; ``resumed``: those installed from what an earlier, failed or
    interrupted sync had fetched and verified; ``kept``: files already in place."""

    boundary: str
    downloaded: tuple[str, ...]
    kept: int
    removed: tuple[str, ...]
    bytes: int
    resumed: tuple[str, ...] = ()


class ReferenceFiles:
    """Files described by a manifest in ``source``, cached under ``cache_dir``.

    ``workers`` files download at once. ``on_progress(done, total)`` is told the
    files fetched so far of those to fetch. The cache directory belongs to this
    object: files in it that the installed manifest does not list are removed,
    and so are links. One process uses a cache directory at a time.

    ``key`` (a database key: raw bytes, a passphrase, a callable, a ``KeyringKey``)
    seals the cache's index (the installed manifest and the switch journal) with
    AES-256-GCM under a key derived from it; a wrong key is a
    ``WrongDatabaseKeyError`` naming the index file. The cached files themselves are
    the store's reference data, as published, and stay as they are.
    """

    def __init__(
        self,
        source: BlobStore,
        cache_dir: str | os.PathLike[str],
        *,
        prefix: str = "reference",
        workers: int = 4,
        on_progress: Callable[[int, int], None] | None = None,
        key: KeySource | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigurationError(f"workers must be at least 1, got {workers}")
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.prefix = prefix
        self.workers = workers
        self.on_progress = on_progress
        #: the index (``.manifest.json``, ``.switch.json``) sealed under this, or plain
        self._index_key = None if key is None else derive(key)
        self._syncing = threading.Lock()  # one sync at a time
        self._switching = threading.Lock()  # a switch, against installed() reading

    def _sealed(self, data: bytes) -> bytes:
        return data if self._index_key is None else seal(self._index_key, data)

    def _read_index(self, name: str) -> bytes:
        """The index file ``name``, unsealed with the key (a wrong key is a
        ``WrongDatabaseKeyError`` naming the file)."""
        data = (self.cache_dir / name).read_bytes()
        if self._index_key is None:
            return data
        return unseal(self._index_key, data, str(self.cache_dir / name))

    def path(self, name: str) -> Path:
        """Where the cached file ``name`` (a manifest path) is."""
        return self.cache_dir / PurePosixPath(name)

    def installed(self) -> tuple[str | None, dict[str, FileEntry]]:
        """The boundary and files of the set installed (None, {} if none): each is in
        place with that content. A switch a killed process left half done is finished
        first. ``ConfigurationError`` if the cache cannot be written to finish it."""
        with self._switching, self._disk_errors():
            self._finish_interrupted()
            return self._recorded()

    def sync(self, boundary: str) -> FilesReport:
        """Bring the cache to the manifest of ``boundary``; see the module's docstring.

        Raises ``RemoteDataError`` for a malformed manifest, ``BlobIntegrityError``
        when a file does not match its manifest entry, ``BlobNotFoundError`` when the
        store lacks a file the manifest lists, ``OfflineError`` when the store cannot
        be reached: in each case the installed files stay as they were (what was
        verified is kept aside; the next sync fetches only the rest).
        ``ConfigurationError`` when the cache directory cannot be written."""
        with self._syncing, self._disk_errors():
            return self._sync(boundary)

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:  # the cache directory: not writable, not a directory, full
            raise ConfigurationError(
                f"cannot write the reference cache {self.cache_dir}: {exc.strerror or exc}",
                hint="check the directory's permissions and free space",
                orig=exc,
            ) from exc

    def _sync(self, boundary: str) -> FilesReport:
        try:
            check_name(boundary)
        except ManifestError as exc:
            raise ConfigurationError(
                f"bad boundary name: {exc}", hint="a boundary is one name, such as 'district-7'"
            ) from None
        wanted = self._manifest(boundary)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._switching:
            self._finish_interrupted()
        _, before = self._recorded()
        held = {e.path for e in wanted.values() if self._holds(e, before.get(e.path))}
        todo = [e for e in wanted.values() if e.path not in held]
        resumed, moved = self._stage(todo)
        with self._switching:
            removed = self._switch(boundary, wanted, held)
        return FilesReport(
            boundary=boundary,
            downloaded=tuple(sorted(e.path for e in todo if e.sha256 not in resumed)),
            kept=len(held),
            removed=tuple(sorted(removed)),
            bytes=moved,
            resumed=tuple(sorted(e.path for e in todo if e.sha256 in resumed)),
        )

    def _manifest(self, boundary: str) -> dict[str, FileEntry]:
        """The manifest of ``boundary``, read (up to a bound) and checked whole."""
        key = f"{self.prefix}/{boundary}/manifest.json"
        buf = io.BytesIO()
        try:
            self.source.get(key, HashingWriter(buf, limit=MAX_MANIFEST_BYTES))  # type: ignore[arg-type]
            return parse_manifest(buf.getvalue(), boundary, self.prefix)
        except TooLong:
            reason = f"it is larger than {MAX_MANIFEST_BYTES} bytes"
        except ManifestError as exc:
            reason = str(exc)
        raise RemoteDataError("reference", key, reason, hint=_MANIFEST_HINT)

    def _recorded(self) -> tuple[str | None, dict[str, FileEntry]]:
        """The installed manifest as recorded (None, {} if none or unreadable)."""
        if regular_file(self.cache_dir, _LOCAL_MANIFEST) is None:
            return None, {}
        try:
            raw = decode(self._read_index(_LOCAL_MANIFEST))
            boundary = raw["boundary"] if isinstance(raw, dict) else None
            if not isinstance(boundary, str):
                return None, {}
            return boundary, files_of(raw, boundary, self.prefix)
        except (OSError, ManifestError):
            return None, {}

    def _holds(self, entry: FileEntry, recorded: FileEntry | None) -> bool:
        """Whether the cache holds ``entry``'s content, as a regular file reached through
        real folders: recorded with the same hash and of the right size, or (not recorded:
        a sync killed part-way) hashing to it."""
        st = regular_file(self.cache_dir, entry.path)
        if st is None or st.st_size != entry.size:
            return False
        if recorded is not None and recorded.sha256 == entry.sha256:
            return True
        with self.path(entry.path).open("rb") as f:
            return bool(hash_rest(f)[0].hexdigest() == entry.sha256)

    # -- phase 1: download beside the installed files -------------------------------------

    def _stage(self, todo: Sequence[FileEntry]) -> tuple[set[str], int]:
        """Fetch what ``todo`` needs into the staging folder, one download per distinct
        content; return the contents found there already verified, and the bytes fetched."""
        staging = real_dir(self.cache_dir, PurePosixPath(_STAGING))
        blobs = {e.sha256: e for e in todo}
        for name in os.listdir(staging):  # partial downloads, contents no longer wanted
            if name not in blobs:
                remove(staging / name)
        resumed = {sha for sha, e in blobs.items() if self._staged(staging, e)}
        fetch = [e for sha, e in blobs.items() if sha not in resumed]
        failures: list[Exception] = []
        moved = done = 0
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._fetch, staging, e): e for e in fetch}
            for future in concurrent.futures.as_completed(futures):
                try:
                    moved += future.result()
                except (BlobIntegrityError, BlobNotFoundError, RemoteDataError) as exc:
                    failures.append(exc)  # the others are still worth staging
                except BaseException:
                    for other in futures:
                        other.cancel()
                    raise
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, len(fetch))
                log.debug("reference file %s staged", futures[future].path)
        if failures:
            raise failures[0]
        return resumed, moved

    @staticmethod
    def _staged(staging: Path, entry: FileEntry) -> bool:
        """Whether an earlier sync left ``entry``'s content staged, intact."""
        st = regular_file(staging, entry.sha256)
        if st is not None and st.st_size == entry.size:
            with open(staging / entry.sha256, "rb") as f:
                if hash_rest(f)[0].hexdigest() == entry.sha256:
                    return True
        remove(staging / entry.sha256)
        return False

    def _fetch(self, staging: Path, entry: FileEntry) -> int:
        fd, tmp = tempfile.mkstemp(dir=staging, prefix=TMP)
        try:
            with os.fdopen(fd, "wb") as out:
                hashing = HashingWriter(out, limit=entry.size)
                try:
                    self.source.get(entry.key, hashing)  # type: ignore[arg-type]
                except TooLong:
                    raise BlobIntegrityError(
                        f"reference file {entry.path} is larger than its {entry.size} bytes"
                    ) from None
                out.flush()
                os.fsync(out.fileno())
            if hashing.size != entry.size or hashing.digest.hexdigest() != entry.sha256:
                raise BlobIntegrityError(
                    f"reference file {entry.path} does not match its manifest entry"
                    f" ({hashing.size} bytes, {hashing.digest.hexdigest()[:12]}…)"
                )
            os.replace(tmp, staging / entry.sha256)
            return hashing.size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- phase 2: the switch ------------------------------------------------------------

    def _switch(self, boundary: str, wanted: dict[str, FileEntry], held: set[str]) -> list[str]:
        """Decide the switch (the journal), then carry it out."""
        write_atomic(self.cache_dir, _JOURNAL, self._sealed(encode(boundary, wanted.values())))
        return self._finish(boundary, wanted, held)

    def _finish_interrupted(self) -> None:
        """Finish the switch a killed process left in its journal, if any."""
        journal = self.cache_dir / _JOURNAL
        if not os.path.lexists(journal):
            return
        boundary, wanted = None, None
        if regular_file(self.cache_dir, _JOURNAL) is not None:
            try:
                raw = decode(self._read_index(_JOURNAL))
                boundary = raw.get("boundary") if isinstance(raw, dict) else None
                if isinstance(boundary, str):
                    wanted = files_of(raw, boundary, self.prefix)
            except ManifestError:
                wanted = None
        if boundary is None or wanted is None:
            remove(journal)  # not one this object wrote: nothing to finish
            return
        log.warning("finishing the switch to reference boundary %s", boundary)
        self._finish(boundary, wanted, held=set())

    def _finish(self, boundary: str, wanted: dict[str, FileEntry], held: set[str]) -> list[str]:
        """Put each staged file in place, record what is installed, remove the rest.
        Idempotent: run again after a crash, it completes what is left."""
        staging = self.cache_dir / _STAGING
        _, before = self._recorded()
        groups: dict[str, list[FileEntry]] = {}
        for e in wanted.values():
            if e.path not in held:
                groups.setdefault(e.sha256, []).append(e)
        missing: set[str] = set()
        for sha, entries in groups.items():
            if regular_file(staging, sha) is not None:
                for i, e in enumerate(entries):  # copies first: the last one takes the file
                    place(staging / sha, self.cache_dir, e.path, move=i == len(entries) - 1)
            else:  # put in place before a crash, or never fetched
                missing |= {e.path for e in entries if not self._holds(e, before.get(e.path))}
        if missing:
            log.warning("reference files missing after a switch: %s", sorted(missing)[:5])
        installed = [e for e in wanted.values() if e.path not in missing]
        write_atomic(self.cache_dir, _LOCAL_MANIFEST, self._sealed(encode(boundary, installed)))
        removed = clear(self.cache_dir, {e.path for e in installed}, _OWN)
        remove(staging)
        remove(self.cache_dir / _JOURNAL)
        return removed

"""A device described in a TOML file, for the command line (``replicator sync``).

::

    # replicator.toml; relative paths are relative to this file
    database = "phone.db"
    models = "notes_app.models"      # a module: its SyncModel classes; or "module:NAME"
    device_name = "phone"            # optional

    [remote]
    embedded = "remote.db"           # or: firestore_root = "users/<uid>"
                                     #     firestore_project = "my-project" (optional)
    [blobs]                          # optional: snapshots
    directory = "blobs"              # or: s3 = "bucket/prefix", endpoint_url = "..."

    [key]                            # needed with [blobs]
    file = "key.hex"                 # or: passphrase_env = "SNAPSHOT_PASSPHRASE"

    [database_key]                   # optional: the database is encrypted (SQLCipher)
    file = "db.key"                  # or: passphrase_env = "DB_PASSPHRASE"

    # a field-campaign device, optional:
    download_only = ["form_schemas"] # tables this device only downloads
    [bundles]                        # upload-only tables, sent as bundles
    collections = ["households"]
    ingest_url = "https://campaign.example/ingest"   # or: ingest_queue = true
    ingest_token_env = "INGEST_TOKEN"                # optional: sent as a bearer token
    directory = "bundles"            # or: s3 = "bucket/prefix", endpoint_url = "..."

The ingest service (``replicator ingest``) reads ``models``, ``[remote]``, and the
collections and bucket of ``[bundles]`` from a file of the same form (it takes
bundles of those collections only); it needs no database. Serving HTTP, it needs
the devices' tokens::

    [service]
    device_tokens = "device-tokens.toml"   # "<installation id>" = "<token>" lines

The directory of the file is put on ``sys.path`` while the models are imported,
so a models module may sit beside it.

:meth:`DeviceConfig.load` checks the whole file before anything is opened: an
unknown key or section (a typo is never ignored) or a value of the wrong type
(``config_shape.py``, by cattrs: every such mistake at once, each with its key and
the type wanted), a missing requirement, or a store named twice or not at all is a
``ConfigurationError`` that names the file and the key.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigurationError
from .config_shape import check_shape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@attrs.frozen
class DeviceConfig:
    """What a config file says; :meth:`replicator` opens the device it describes."""

    path: Path
    database: Path
    models: str
    device_name: str | None
    app_version: str
    remote: Mapping[str, str]
    blobs: Mapping[str, str] | None
    key: Mapping[str, str] | None
    download_only: tuple[str, ...] = ()
    bundles: Mapping[str, Any] | None = None
    service: Mapping[str, str] | None = None
    database_key: Mapping[str, str] | None = None

    @classmethod
    def load(cls, path: str | Path, *, service: bool = False) -> DeviceConfig:
        """Read and check ``path``; ``service``: for ``replicator ingest`` (no database)."""
        path = Path(path)
        raw = _read(path)
        check_shape(path, raw)  # unknown keys, wrong types (config_shape.py)
        if not service and "database" not in raw:
            raise ConfigurationError(f'{path}: database = "..." is required')
        remote = raw.get("remote") or {}
        blobs, key, bundles = raw.get("blobs"), raw.get("key"), raw.get("bundles")
        _check_stores(path, remote, blobs, key)
        if bundles is not None:
            _check_bundles(path, bundles, blobs)
        here = path.resolve().parent
        return cls(
            path=path,
            database=here / raw.get("database", ""),
            models=raw["models"],
            device_name=raw.get("device_name"),
            app_version=raw.get("app_version", ""),
            remote=remote,
            blobs=blobs,
            key=key,
            download_only=tuple(raw.get("download_only", ())),
            bundles=bundles,
            service=raw.get("service"),
            database_key=_database_key(path, raw.get("database_key")),
        )

    def _here(self, name: str) -> Path:
        return self.path.resolve().parent / name

    def load_models(self) -> list[type[Any]]:
        return import_models(self.models, self.path.resolve().parent, str(self.path))

    def open_remote(self, *, create: bool = True) -> Any:
        """The remote store; ``create=False`` refuses an embedded remote file that
        does not exist yet (a command that only reads it)."""
        if "embedded" in self.remote:
            from ..stores.embedded import EmbeddedRemote

            where = self._here(self.remote["embedded"])
            if not create and not where.is_file():
                raise ConfigurationError(
                    f"no embedded remote at {where}", hint="check remote.embedded in the config"
                )
            return EmbeddedRemote(where, create=create)
        client = firestore_client(self.remote.get("firestore_project"))
        from ..stores.firestore import FirestoreRemote

        return FirestoreRemote(client, root=self.remote["firestore_root"])

    def open_blobs(self, where: Mapping[str, Any] | None = None) -> Any:
        """The blob store of ``[blobs]`` (or of ``where``, a section naming one)."""
        where = self.blobs if where is None else where
        if where is None:
            return None
        if "directory" in where:
            from ..stores.directory import DirectoryBlobStore

            return DirectoryBlobStore(self._here(where["directory"]))
        from ..stores.s3 import S3BlobStore

        bucket, _, prefix = where["s3"].partition("/")
        return S3BlobStore(bucket, prefix, endpoint_url=where.get("endpoint_url"))

    def bundle_blobs(self) -> Any:
        """Where bundles go: ``[bundles]``'s own bucket, else ``[blobs]``."""
        section = self.bundles or {}
        if "directory" in section or "s3" in section:
            return self.open_blobs(section)
        if self.blobs is None:
            raise ConfigurationError(
                f"{self.path}: name the bundles' bucket in [bundles] (directory or s3)"
            )
        return self.open_blobs()

    def pick(self, models: list[type[Any]], names: Any, what: str) -> list[type[Any]]:
        """The models whose tables ``names`` lists; a name that is none of them is an error."""
        by_name = {m._meta.table_name: m for m in models}
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            raise ConfigurationError(
                f"{self.path}: {what} names {unknown}, not tables of {self.models}",
                hint=f"tables: {sorted(by_name)}",
            )
        return [by_name[n] for n in names]

    def open_bundles(self, models: list[type[Any]], remote: Any) -> Any:
        if self.bundles is None:
            return None
        from ..bundles.send import Bundles
        from ..stores.http import HttpIngest
        from ..stores.ingest import StoreIngest

        section = self.bundles
        if section.get("ingest_queue"):
            service: Any = StoreIngest(remote)
        else:
            headers = {}
            if "ingest_token_env" in section:
                token = os.environ.get(section["ingest_token_env"])
                if not token:
                    raise ConfigurationError(
                        f"${section['ingest_token_env']} is empty",
                        hint="export the ingest service's token",
                    )
                headers["Authorization"] = f"Bearer {token}"
            service = HttpIngest(section["ingest_url"], headers=headers)
        chosen = self.pick(models, section["collections"], "[bundles] collections")
        return Bundles(self.bundle_blobs(), service, chosen)

    def user_remotes(self) -> Any:
        """For signed-in devices: a function from a user's id to the remote store of that
        user's root, where the user's devices sync (``users/<uid>`` of the Firestore
        database, the path the generated rules guard; an embedded remote keeps each
        user's root in a file of its own, ``<name>-users/<uid>.db`` beside it)."""
        if "embedded" in self.remote:
            from ..stores.embedded import EmbeddedRemote

            where = self._here(self.remote["embedded"])
            folder = where.with_name(f"{where.stem}-users")
            folder.mkdir(exist_ok=True)
            return lambda uid: EmbeddedRemote(folder / f"{uid}.db")
        from ..stores.firestore import FirestoreRemote

        client = firestore_client(self.remote.get("firestore_project"))
        return lambda uid: FirestoreRemote(client, root=f"users/{uid}")

    def ingest_collections(self, models: list[type[Any]]) -> list[type[Any]]:
        """The models the ingest service takes bundles of: ``[bundles] collections``."""
        if self.bundles is None:
            raise ConfigurationError(
                f"{self.path}: the ingest service needs [bundles]: the collections it takes"
                " (collections = [...]) and the bundles' bucket"
            )
        return self.pick(models, self.bundles["collections"], "[bundles] collections")

    def device_tokens(self) -> Any:
        """The devices' tokens of ``[service] device_tokens`` (a ``DeviceTokens``), or
        None when the file names none."""
        if not self.service or "device_tokens" not in self.service:
            return None
        from ..bundles.auth import DeviceTokens

        return DeviceTokens.from_file(self._here(self.service["device_tokens"]))

    def read_key(self) -> Any:
        from ..snapshots.crypto import Passphrase, SnapshotKey

        if self.key is None:
            return None
        if "file" in self.key:
            from ..snapshots.crypto import key_from_file

            key_path = self._here(self.key["file"])
            try:
                data = key_path.read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"cannot read the key file {key_path}: {exc}") from exc
            return SnapshotKey(key_from_file(data, key_path))
        value = os.environ.get(self.key["passphrase_env"])
        if not value:
            raise ConfigurationError(
                f"${self.key['passphrase_env']} is empty", hint="export the snapshot passphrase"
            )
        return Passphrase(value)

    def replicator(self, **kw: Any) -> Any:
        """The device the file describes (``kw`` go to ``Replicator``)."""
        from ..cipher.keyfiles import cli_database
        from ..engine import Replicator

        db = cli_database(
            self.database,
            self.database_key,
            self.path.parent,
            pragmas={"foreign_keys": 1},
            timeout=30,
        )
        models = self.load_models()
        remote = self.open_remote()
        return Replicator(
            db,
            models,
            remote,
            self.open_blobs() if self.key is not None else None,
            self.read_key(),
            device_name=self.device_name,
            app_version=self.app_version,
            bundles=self.open_bundles(models, remote),
            download_only=self.pick(models, self.download_only, "download_only"),
            **kw,
        )


def _database_key(path: Path, section: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """``[database_key]`` names exactly one of ``file`` and ``passphrase_env``."""
    if section is not None and ("file" in section) == ("passphrase_env" in section):
        raise ConfigurationError(
            f"{path}: [database_key] needs exactly one of file or passphrase_env"
        )
    return section


def import_models(spec: str, folder: Path, where: str) -> list[type[Any]]:
    """The SyncModel classes ``spec`` names: those a module defines (``"module"``) or
    the list it names (``"module:NAME"``), imported with ``folder`` on ``sys.path``.
    Any failure is a ConfigurationError; ``where`` (the config file, or the option
    that named the module) begins its message."""
    from ..model import SyncModel

    module_name, _, attr = spec.partition(":")
    module = _import_module(module_name, folder, where)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, list | tuple):
            raise ConfigurationError(
                f"{spec}: {attr} is not a list of SyncModel classes ({found!r})",
                hint=f"define {attr} = [Model, ...] in {module_name}",
            )
        models = list(found)
        wrong = [m for m in models if not (isinstance(m, type) and issubclass(m, SyncModel))]
        if wrong:
            raise ConfigurationError(
                f"{spec} lists {', '.join(map(repr, wrong))}: not SyncModel classes",
                hint=f"list only the SyncModel classes to sync in {attr}",
            )
    else:
        models = [
            v
            for v in vars(module).values()
            if isinstance(v, type)
            and issubclass(v, SyncModel)
            and v is not SyncModel
            and v.__module__ == module.__name__
        ]
    if not models:
        raise ConfigurationError(f"{spec} defines no SyncModel")
    return models


def import_object(spec: str, folder: Path, where: str) -> Any:
    """What ``spec`` (``"module:NAME"``) names, the module imported with ``folder`` on
    ``sys.path``; any failure, a missing ``:NAME`` included, is a ConfigurationError."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"{where}: {spec!r} is not 'module:NAME'")
    found = getattr(_import_module(module_name, folder, where), attr, None)
    if found is None:
        raise ConfigurationError(f"{where}: {module_name} has no {attr}")
    return found


def _import_module(name: str, folder: Path, where: str) -> Any:
    """The models module, imported with ``folder`` on ``sys.path``; a module that
    cannot be found, raises or does not parse is a ConfigurationError."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name != name:  # found, but something it imports is missing
            raise ConfigurationError(
                f"{where}: the models module {name!r} failed to import: {exc}",
                hint="install what it imports, or fix the import",
            ) from exc
        raise ConfigurationError(
            f"{where}: cannot import the models module {name!r}: {exc}",
            hint="put it beside the config file or on PYTHONPATH",
        ) from exc
    except Exception as exc:  # the module's own code raised, or it does not parse
        raise ConfigurationError(
            f"{where}: the models module {name!r} failed to import: {type(exc).__name__}: {exc}",
            hint=f"fix the module (python -c 'import {name}' shows the traceback)",
        ) from exc
    finally:
        sys.path.pop(0)


def firestore_client(project: str | None) -> Any:
    """A Firestore client with the environment's credentials (the emulator's with
    ``FIRESTORE_EMULATOR_HOST``); none found, or no project, is a ConfigurationError."""
    try:
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import firestore
    except ImportError as exc:
        raise ConfigurationError(
            "a Firestore remote needs: pip install 'replicator[firestore]'"
        ) from exc
    try:
        return firestore.Client(project=project)
    except (GoogleAuthError, OSError) as exc:  # no credentials; no project found
        raise ConfigurationError(
            f"cannot use Firestore as set up: {exc}",
            hint="give credentials (GOOGLE_APPLICATION_CREDENTIALS, or gcloud auth"
            " application-default login) and the project; FIRESTORE_EMULATOR_HOST for the"
            " emulator",
            orig=exc,
        ) from exc


def _read(path: Path) -> dict[str, Any]:
    """The TOML of ``path``; a file that cannot be read or parsed is a ConfigurationError."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    return raw


def _check_stores(
    path: Path,
    remote: Mapping[str, Any],
    blobs: Mapping[str, Any] | None,
    key: Mapping[str, Any] | None,
) -> None:
    """Exactly one remote; a blob store names exactly one place and comes with exactly
    one way to the key."""
    if ("embedded" in remote) == ("firestore_root" in remote):
        raise ConfigurationError(
            f"{path}: [remote] names exactly one of embedded or firestore_root"
        )
    if blobs is not None and ("directory" in blobs) == ("s3" in blobs):
        raise ConfigurationError(f"{path}: [blobs] names exactly one of directory or s3")
    if blobs is not None and (not key or ("file" in key) == ("passphrase_env" in key)):
        raise ConfigurationError(
            f"{path}: [blobs] needs [key] with exactly one of file or passphrase_env"
        )


def _check_bundles(path: Path, bundles: Mapping[str, Any], blobs: Mapping[str, Any] | None) -> None:
    """``[bundles]`` names its collections, exactly one way to the ingest service, and
    a bucket (its own, or else ``[blobs]``)."""
    if not bundles.get("collections"):
        raise ConfigurationError(f"{path}: [bundles] needs collections = [...]")
    if ("ingest_url" in bundles) == bool(bundles.get("ingest_queue")):
        raise ConfigurationError(
            f"{path}: [bundles] names exactly one of ingest_url or ingest_queue = true"
        )
    if ("directory" in bundles) == ("s3" in bundles) and blobs is None:
        raise ConfigurationError(
            f"{path}: [bundles] names exactly one of directory or s3 (or [blobs] does)"
        )

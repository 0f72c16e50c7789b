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

The directory of the file is put on ``sys.path`` while the models are imported,
so a models module may sit beside it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import peewee

from .errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOP = {"database", "models", "device_name", "app_version", "remote", "blobs", "key"}
_SECTIONS = {
    "remote": {"embedded", "firestore_root", "firestore_project"},
    "blobs": {"directory", "s3", "endpoint_url"},
    "key": {"file", "passphrase_env"},
}


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

    @classmethod
    def load(cls, path: str | Path) -> DeviceConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
        unknown = set(raw) - _TOP
        if unknown:
            raise ConfigurationError(
                f"{path}: unknown key(s) {sorted(unknown)}", hint=f"known: {sorted(_TOP)}"
            )
        for section, keys in _SECTIONS.items():
            value = raw.get(section)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigurationError(f"{path}: [{section}] must be a table")
            extra = set(value) - keys
            if extra:
                raise ConfigurationError(
                    f"{path}: unknown key(s) in [{section}]: {sorted(extra)}",
                    hint=f"known: {sorted(keys)}",
                )
            for name, item in value.items():
                if not isinstance(item, str) or not item:
                    raise ConfigurationError(f"{path}: {section}.{name} must be a non-empty string")
        for name in ("database", "models"):
            if not isinstance(raw.get(name), str) or not raw[name]:
                raise ConfigurationError(f'{path}: {name} = "..." is required')
        for name in ("device_name", "app_version"):
            if name in raw and not isinstance(raw[name], str):
                raise ConfigurationError(f"{path}: {name} must be a string")
        remote = raw.get("remote") or {}
        if ("embedded" in remote) == ("firestore_root" in remote):
            raise ConfigurationError(
                f"{path}: [remote] names exactly one of embedded or firestore_root"
            )
        blobs = raw.get("blobs")
        if blobs is not None and ("directory" in blobs) == ("s3" in blobs):
            raise ConfigurationError(f"{path}: [blobs] names exactly one of directory or s3")
        key = raw.get("key")
        if blobs is not None and (not key or ("file" in key) == ("passphrase_env" in key)):
            raise ConfigurationError(
                f"{path}: [blobs] needs [key] with exactly one of file or passphrase_env"
            )
        here = path.resolve().parent
        return cls(
            path=path,
            database=here / raw["database"],
            models=raw["models"],
            device_name=raw.get("device_name"),
            app_version=raw.get("app_version", ""),
            remote=remote,
            blobs=blobs,
            key=key,
        )

    def _here(self, name: str) -> Path:
        return self.path.resolve().parent / name

    def load_models(self) -> list[type[Any]]:
        from .model import SyncModel

        module_name, _, attr = self.models.partition(":")
        sys.path.insert(0, str(self.path.resolve().parent))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"{self.path}: cannot import the models module {module_name!r}: {exc}",
                hint="put it beside the config file or on PYTHONPATH",
            ) from exc
        finally:
            sys.path.pop(0)
        if attr:
            found = getattr(module, attr, None)
            if not isinstance(found, list | tuple):
                raise ConfigurationError(f"{self.models}: {attr} is not a list of models")
            models = list(found)
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
            raise ConfigurationError(f"{self.models} defines no SyncModel")
        return models

    def open_remote(self, *, create: bool = True) -> Any:
        """The remote store; ``create=False`` refuses an embedded remote file that
        does not exist yet (a command that only reads it)."""
        if "embedded" in self.remote:
            from .stores.embedded import EmbeddedRemote

            where = self._here(self.remote["embedded"])
            if not create and not where.is_file():
                raise ConfigurationError(
                    f"no embedded remote at {where}", hint="check remote.embedded in the config"
                )
            return EmbeddedRemote(where, create=create)
        try:
            from google.cloud import firestore

            from .stores.firestore import FirestoreRemote
        except ImportError as exc:
            raise ConfigurationError(
                "a Firestore remote needs: pip install 'replicator[firestore]'"
            ) from exc
        client = firestore.Client(project=self.remote.get("firestore_project"))
        return FirestoreRemote(client, root=self.remote["firestore_root"])

    def open_blobs(self) -> Any:
        if self.blobs is None:
            return None
        if "directory" in self.blobs:
            from .stores.directory import DirectoryBlobStore

            return DirectoryBlobStore(self._here(self.blobs["directory"]))
        from .stores.s3 import S3BlobStore

        bucket, _, prefix = self.blobs["s3"].partition("/")
        return S3BlobStore(bucket, prefix, endpoint_url=self.blobs.get("endpoint_url"))

    def read_key(self) -> Any:
        from .crypto import Passphrase, SnapshotKey

        if self.key is None:
            return None
        if "file" in self.key:
            from .crypto import key_from_file

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
        from .engine import Replicator

        db = peewee.SqliteDatabase(str(self.database), pragmas={"foreign_keys": 1}, timeout=30)
        return Replicator(
            db,
            self.load_models(),
            self.open_remote(),
            self.open_blobs(),
            self.read_key(),
            device_name=self.device_name,
            app_version=self.app_version,
            **kw,
        )

"""Where a session's tokens are kept between runs of the app: the app chooses.

A :class:`TokenStore` has three calls: ``load()`` (the stored :class:`Tokens` or
``None``), ``save(tokens)`` and ``clear()``. Provided here:

* :class:`FileTokenStore`, the default: one JSON file readable and writable only
  by the user (mode ``0600``, in a folder made ``0700`` when it has to be made),
  written atomically (a temporary file in the same folder, flushed to disk, then
  renamed over the old one), so a crash leaves the old session or the new one,
  never half of one;
* :class:`KeyringTokenStore`: the OS keyring (Keychain, Windows Credential
  Locker, Secret Service) through the ``keyring`` package (``pip install
  'replicator[keyring]'``);
* :class:`CallbackTokenStore`: a pair of the app's own functions (a mobile
  keystore, an encrypted preference file...), given the stored text;
* :class:`MemoryTokenStore`: nothing survives the process (kiosks, tests).

What is stored is the refresh token (the user's long-lived credential), the
current ID token and its expiry. None of it is in the app's database, so none of
it is in a snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..errors import ConfigurationError
from .tokens import Tokens

log = logging.getLogger(__name__)


class TokenStore(Protocol):
    """Keeps one session's tokens. ``load()`` returns ``None`` when nothing (readable)
    is stored; ``clear()`` of an empty store does nothing. Errors are replicator's
    (the session wraps anything else in a :class:`ConfigurationError`)."""

    def load(self) -> Tokens | None:
        """The stored tokens, or ``None`` when nothing readable is stored."""
        ...

    def save(self, tokens: Tokens) -> None:
        """Replace what is stored with ``tokens``."""
        ...

    def clear(self) -> None:
        """Forget the stored tokens; nothing stored is no error."""
        ...


def default_folder() -> Path:
    """The user's folder for application state: ``%LOCALAPPDATA%`` on Windows,
    ``~/Library/Application Support`` on macOS, ``$XDG_STATE_HOME`` (else
    ``~/.local/state``) elsewhere; with ``replicator`` appended."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "replicator"


class FileTokenStore:
    """The tokens in one file only its user can read (``0600``), replaced atomically.

    On Windows the mode bits mean little; the default folder is in the user's own
    profile, which other users cannot read. A file found readable by others (copied
    in by hand, say) is narrowed to ``0600`` when loaded.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    def load(self) -> Tokens | None:
        try:
            text = self.path.read_text(encoding="utf-8")
            self._narrow()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error("read", exc) from exc
        tokens = Tokens.from_text(text)
        if tokens is None:
            log.warning("the session file %s is not readable; the user must sign in", self.path)
        return tokens

    def save(self, tokens: Tokens) -> None:
        data = tokens.to_text().encode("utf-8")
        folder = self.path.parent
        try:
            if not folder.exists():
                folder.mkdir(parents=True, mode=0o700)
            # mkstemp creates the file 0600 and opens it exclusively
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            sync_folder(folder)
        except OSError as exc:
            raise self._error("write", exc) from exc

    def clear(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("remove", exc) from exc

    def _narrow(self) -> None:
        if sys.platform != "win32" and stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            log.warning("the session file %s was readable by others; made it 0600", self.path)
            self.path.chmod(0o600)

    def _error(self, verb: str, exc: BaseException) -> ConfigurationError:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return ConfigurationError(
            f"cannot {verb} the session file {self.path}: {reason}",
            hint="give a path in a folder this user can write to, or another TokenStore",
            orig=exc,
        )


def sync_folder(folder: Path) -> None:
    """Flush a rename in ``folder`` to disk (POSIX; Windows has no folder handles)."""
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on folders
            os.fsync(fd)
    finally:
        os.close(fd)


class CallbackTokenStore:
    """The tokens kept by the app's own pair of functions: ``load()`` returns the text
    last saved (or ``None``), ``save(text)`` keeps it, ``save(None)`` forgets it. The
    text holds the refresh token: keep it where only this user can read it."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str | None], None]):
        self._load = load
        self._save = save

    def __repr__(self) -> str:
        return "CallbackTokenStore()"

    def load(self) -> Tokens | None:
        text = self._load()
        return Tokens.from_text(text) if text else None

    def save(self, tokens: Tokens) -> None:
        self._save(tokens.to_text())

    def clear(self) -> None:
        self._save(None)


class MemoryTokenStore:
    """Tokens kept in memory only: the user signs in again in every process."""

    def __init__(self) -> None:
        self._tokens: Tokens | None = None

    def __repr__(self) -> str:
        return "MemoryTokenStore()"

    def load(self) -> Tokens | None:
        return self._tokens

    def save(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def clear(self) -> None:
        self._tokens = None


# the protocol each store implements, checked by mypy
_is_file_store: type[TokenStore] = FileTokenStore
_is_callback_store: type[TokenStore] = CallbackTokenStore
_is_memory_store: type[TokenStore] = MemoryTokenStore

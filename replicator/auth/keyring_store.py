"""KeyringTokenStore: a session's tokens in the OS keyring (optional ``keyring`` extra).

The ``keyring`` package reaches macOS Keychain, Windows Credential Locker and the
freedesktop Secret Service (GNOME Keyring, KWallet). A machine without a usable
backend (a headless server) answers with a :class:`ConfigurationError`, never
with a silent fallback to something less safe.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import ConfigurationError
from .storage import TokenStore
from .tokens import Tokens

NO_BACKEND_HINT = (
    "this machine has no usable OS keyring (on Linux, a Secret Service such as GNOME "
    "Keyring); use a FileTokenStore instead"
)


def keyring_module() -> ModuleType:
    """The ``keyring`` package, or a :class:`ConfigurationError` saying how to get it."""
    try:
        import keyring
    except ImportError as exc:
        raise ConfigurationError(
            "KeyringTokenStore needs the keyring package",
            hint="pip install 'replicator[keyring]'",
            orig=exc,
        ) from exc
    return keyring


class KeyringTokenStore:
    """The tokens as one secret of the OS keyring, under ``service`` and ``username``
    (pick names that tell the user which app the secret belongs to)."""

    def __init__(self, service: str = "replicator", username: str = "session") -> None:
        self._keyring = keyring_module()
        self.service = service
        self.username = username

    def __repr__(self) -> str:
        return f"KeyringTokenStore({self.service!r}, {self.username!r})"

    def load(self) -> Tokens | None:
        text = self._call("read", self._keyring.get_password, self.service, self.username)
        return Tokens.from_text(text) if isinstance(text, str) and text else None

    def save(self, tokens: Tokens) -> None:
        self._call(
            "write", self._keyring.set_password, self.service, self.username, tokens.to_text()
        )

    def clear(self) -> None:
        errors: Any = self._keyring.errors
        try:
            self._call("remove", self._keyring.delete_password, self.service, self.username)
        except ConfigurationError as exc:
            if not isinstance(exc.orig, errors.PasswordDeleteError):
                raise

    def _call(self, verb: str, call: Any, *args: str) -> Any:
        errors: Any = self._keyring.errors
        try:
            return call(*args)
        except errors.KeyringError as exc:
            # the exception's text is the backend's, never the secret
            raise ConfigurationError(
                f"cannot {verb} the session in the OS keyring: {type(exc).__name__}: {exc}",
                hint=NO_BACKEND_HINT,
                orig=exc,
            ) from exc


# the protocol this store implements, checked by mypy
_is_token_store: type[TokenStore] = KeyringTokenStore

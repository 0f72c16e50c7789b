"""Who is asking: the ingest service's authenticators.

An :class:`Authenticator` maps an HTTP request's headers to the :class:`Caller` it
comes from, or to a :class:`Refused` saying why not (or ``None``: not authenticated;
both are a 401). The service then holds the caller to its own data: a request must
name the caller's device (``service.py``), and the ingestor takes bundles only from
that device's folder and lets it write only rows it created (``rows.py``); a caller
who is a signed-in user is held to that user's folder of the bucket and root of the
remote store besides (``Ingestor.for_user``).

:class:`SignedInCallers` is the devices' authenticator: the user's Firebase ID token,
verified on every request, and the device's installation id. :class:`DeviceTokens`
(one bearer token per device, from a file the campaign's operator keeps) is the
operators' option: for their own programs and tools that sign in as no user.
"""

from __future__ import annotations

import hmac
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs

from ..auth.verify import IdTokenVerifier
from ..codec import names_a_document
from ..errors import ConfigurationError
from ..stores.http import header_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the header naming the calling device's installation id (signed-in callers)
DEVICE_HEADER = "x-replicator-device"
#: fewest characters of a device token (a guessable token identifies no one)
MIN_TOKEN = 16


@attrs.frozen
class Caller:
    """Whom a request comes from: the device's installation id, and once devices sign
    in, the user."""

    device: str
    user: str | None = None


@attrs.frozen
class Refused:
    """Headers that prove no identity, and why (the text of the 401 answer)."""

    reason: str


class Authenticator(Protocol):
    """Maps a request's headers (case-insensitive names) to its caller, or to
    :class:`Refused` (or ``None``) when they prove no identity. It must not raise for
    any headers a client sends, except ``TransientError`` when the identity cannot be
    checked now (answered 503). It may block: the service calls it on a worker thread."""

    def __call__(self, headers: Mapping[str, str]) -> Caller | Refused | None: ...


def bearer(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ``""``."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_device_name(name: str) -> bool:
    """Whether ``name`` can be a device's installation id: 1 to 64 printable
    characters, without ``/`` (it names the device's folder of the bucket)."""
    return len(name) <= 64 and name.isprintable() and names_a_document(name)


class DeviceTokens:
    """One bearer token per device: ``tokens`` maps each device's installation id to
    its token. A request's token is compared with every device's, each in constant time
    (``hmac.compare_digest``), so neither the answer's time nor its content tells an
    attacker how much of a token was right, or whose it was close to."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        seen: set[str] = set()
        self._tokens: list[tuple[bytes, str]] = []
        for device, token in tokens.items():
            if not isinstance(device, str) or not is_device_name(device):
                raise ConfigurationError(f"{str(device)[:40]!r} is not a device's installation id")
            if not isinstance(token, str) or len(token) < MIN_TOKEN or not token.isprintable():
                raise ConfigurationError(
                    f"the token of {device} is not a string of at least {MIN_TOKEN} printable"
                    " characters",
                    hint="make one with:"
                    " python -c 'import secrets; print(secrets.token_urlsafe())'",
                )
            if token in seen:
                raise ConfigurationError(
                    f"the token of {device} is another device's too: a token names one device"
                )
            seen.add(token)
            self._tokens.append((token.encode(), device))

    def __repr__(self) -> str:
        return f"DeviceTokens({len(self._tokens)} devices)"

    def __call__(self, headers: Mapping[str, str]) -> Caller | None:
        given = bearer(headers).encode("utf-8", "replace")
        found = None
        for token, device in self._tokens:  # every one compared: the time tells nothing
            if hmac.compare_digest(given, token):
                found = device
        return Caller(found) if found and given else None

    @classmethod
    def from_file(cls, path: str | Path) -> DeviceTokens:
        """Tokens from a TOML file of ``"<installation id>" = "<token>"`` lines; a file
        that cannot be read, or a line that is not such a pair, is a ConfigurationError."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read the device tokens {path}: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
        if not raw:
            raise ConfigurationError(
                f"{path} lists no device", hint='add a line "<installation id>" = "<token>"'
            )
        try:
            return cls(raw)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc.message}", hint=exc.hint) from exc


class SignedInCallers:
    """The authenticator for signed-in devices: the caller's user from the request's
    ``Authorization: Bearer <Firebase ID token>`` (checked by ``verifier`` on every
    request), its device from the ``X-Replicator-Device`` header. The device is the
    caller's word: the service holds it to the user's own folder and rows, so a
    device can speak only for its own user. A refusal says why (no device header, no
    token, another project's, expired, a disabled user with the verifier's account
    check), never whose token it was."""

    def __init__(self, verifier: IdTokenVerifier) -> None:
        self.verifier = verifier

    def __repr__(self) -> str:
        return f"SignedInCallers({self.verifier!r})"

    def __call__(self, headers: Mapping[str, str]) -> Caller | Refused:
        device = header_text(headers.get(DEVICE_HEADER) or "")
        if not is_device_name(device):
            return Refused(
                "no X-Replicator-Device header naming the calling device's installation id"
                " (1 to 64 printable characters, without '/')"
            )
        user, why = self.verifier.identify(bearer(headers))
        return Caller(device, user) if user else Refused(why)


class FirstOf:
    """Several authenticators: the caller the first one identifies, else the last
    refusal (``replicator ingest`` serves the operators' tokens and signed-in devices
    this way: the operators' tokens are tried first, in constant time)."""

    def __init__(self, *authenticators: Authenticator) -> None:
        self.authenticators = authenticators

    def __repr__(self) -> str:
        return f"FirstOf{self.authenticators!r}"

    def __call__(self, headers: Mapping[str, str]) -> Caller | Refused | None:
        found: Caller | Refused | None = None
        for authenticate in self.authenticators:
            found = authenticate(headers)
            if isinstance(found, Caller):
                return found
        return found

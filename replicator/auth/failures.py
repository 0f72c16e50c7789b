"""The one place where what Firebase Authentication answers becomes replicator's errors.

* no answer (refused, reset, DNS, timed out): :class:`OfflineError`, as the
  ``IdTokens`` seam promises (a sync treats it like any unreachable store);
* ``429``, ``5xx``, ``TOO_MANY_ATTEMPTS_TRY_LATER``, ``QUOTA_EXCEEDED``:
  :class:`TransientError`, with the ``Retry-After`` delay when one was given;
* a sign-in provider that is not enabled, a missing or wrong API key, an address
  that is not Firebase Authentication (no Firebase error, or ``404``):
  :class:`ConfigurationError` (the app's
  developer must change something);
* every other refusal (a wrong password, an unknown email, a revoked or expired
  refresh token, a disabled or deleted user, a bad custom token...):
  :class:`AuthError` with a hint the app can show, and the Firebase code in
  ``.code`` so it can say it in its own words. Not retryable: the user must act.

No message built here contains a token: Firebase's error answers carry none, and
request bodies are never quoted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from ..errors import AuthError, ConfigurationError, OfflineError, RemoteError, TransientError
from ..stores.http import retry_after

SIGN_IN_AGAIN = "sign the user in again; their unsynced changes are kept"
#: what to tell the user per Firebase error code (the code's first word)
HINTS = {
    "INVALID_PASSWORD": "check the email and password and try again",
    "EMAIL_NOT_FOUND": "check the email and password and try again",
    "INVALID_LOGIN_CREDENTIALS": "check the email and password and try again",
    "INVALID_EMAIL": "check the email address",
    "MISSING_EMAIL": "give an email address",
    "MISSING_PASSWORD": "give a password",
    "WEAK_PASSWORD": "choose a longer password (at least 6 characters)",
    "EMAIL_EXISTS": "an account with this email exists: sign in instead",
    "USER_DISABLED": "this account is disabled: ask the app's administrator; "
    "unsynced changes are kept",
    "USER_NOT_FOUND": "the account was deleted or the session revoked: " + SIGN_IN_AGAIN,
    "TOKEN_EXPIRED": "the session expired or was revoked: " + SIGN_IN_AGAIN,
    "INVALID_REFRESH_TOKEN": "the session was revoked or is not valid: " + SIGN_IN_AGAIN,
    "CREDENTIAL_TOO_OLD_LOGIN_AGAIN": SIGN_IN_AGAIN,
    "INVALID_ID_TOKEN": SIGN_IN_AGAIN,
    "INVALID_CUSTOM_TOKEN": "mint a new custom token on the app's backend (with this "
    "project's service account) and sign in with it",
    "CREDENTIAL_MISMATCH": "the custom token was minted for another Firebase project",
}
#: codes that mean the app's setup must change, not the user's input
CONFIGURATION = {
    "OPERATION_NOT_ALLOWED": "enable this sign-in provider in the Firebase console "
    "(Authentication > Sign-in method)",
    "PASSWORD_LOGIN_DISABLED": "enable Email/Password in the Firebase console "
    "(Authentication > Sign-in method)",
    "ADMIN_ONLY_OPERATION": "enable sign-up in the Firebase console (Authentication > "
    "Settings > User actions) or create the users from the backend",
    "CONFIGURATION_NOT_FOUND": "enable Firebase Authentication for this project",
    "PROJECT_NOT_FOUND": "use the Web API key of an existing Firebase project",
}
THROTTLED = {"TOO_MANY_ATTEMPTS_TRY_LATER", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"}
API_KEY_HINT = "use the Web API key of your Firebase project (Project settings > General)"


@contextlib.contextmanager
def transport_failures(what: str) -> Iterator[None]:
    """No answer from the token service: :class:`OfflineError`, for a timeout too (the
    ``IdTokens`` seam names one error for "the token service cannot be reached")."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise OfflineError(f"{what}: no answer in time", orig=exc) from exc
    except httpx.TransportError as exc:
        raise OfflineError(f"{what}: could not reach the server ({exc})", orig=exc) from exc


def error_code(response: httpx.Response) -> str | None:
    """Firebase's error code (``INVALID_PASSWORD``), or the whole message when it is a
    sentence (``API key not valid...``); ``None`` when the body is not Firebase's."""
    try:
        body: Any = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        return None
    return message


def refusal(what: str, response: httpx.Response) -> Exception:
    """The error for a non-2xx answer (the caller raises it)."""
    status = response.status_code
    after = retry_after(response.headers.get("Retry-After"))
    message = error_code(response)
    if status == 429 or status >= 500:
        return TransientError(f"{what}: the server answered HTTP {status}", retry_after=after)
    if message is None or status in (404, 405):
        return ConfigurationError(
            f"{what}: HTTP {status} from a server that is not Firebase Authentication",
            hint="check the emulator host or base URL the session was given",
        )
    code = message.split(":", 1)[0].split(" ", 1)[0].strip()
    if code in THROTTLED:
        return TransientError(f"{what}: {code}", retry_after=after)
    if code in CONFIGURATION:
        return ConfigurationError(f"{what}: {code}", hint=CONFIGURATION[code])
    if "API key" in message or code.startswith("API_KEY"):
        return ConfigurationError(f"{what}: {message}", hint=API_KEY_HINT)
    error = AuthError(f"{what}: {message}", hint=HINTS.get(code, SIGN_IN_AGAIN))
    error.code = code
    return error


def answer(what: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; otherwise the mapped refusal is raised."""
    if not 200 <= response.status_code < 300:
        raise refusal(what, response)
    try:
        body: Any = response.json()
    except ValueError as exc:
        raise RemoteError(f"{what}: the answer is not JSON", orig=exc) from exc
    if not isinstance(body, dict):
        raise RemoteError(f"{what}: the answer is not a JSON object")
    return body


def field(what: str, body: dict[str, Any], *names: str) -> str:
    """The first of ``names`` present in ``body`` as a non-empty string (the sign-in
    and the refresh answers spell the same thing differently)."""
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    raise RemoteError(
        f"{what}: the answer has no {names[0]}",
        hint="the server is not Firebase Authentication or changed its API",
    )

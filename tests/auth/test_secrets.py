"""The refresh token (the user's long-lived credential) and the ID token never reach a
log record, at any level from any logger (httpx's included), nor a repr, str or error."""

from __future__ import annotations

import logging

import pytest

from replicator import AuthError, OfflineError


class Everything(logging.Handler):
    """Keeps every record, formatted with its exception, from every logger."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def every_log_record():
    handler, root = Everything(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.texts
    root.removeHandler(handler)
    root.setLevel(level)


def test_tokens_never_appear_in_logs_reprs_or_errors(
    make_auth, emulator, clock, proxy, every_log_record
):
    auth = make_auth("device", host=proxy.host)
    session = auth.sign_up("ada@example.com", "correct horse")
    secrets = []

    def remember():
        tokens = session._tokens
        secrets.extend([tokens.refresh_token, tokens.id_token])

    remember()
    clock.advance(3600)
    session.id_token()  # a refresh
    remember()
    restored = make_auth("device", host=proxy.host).restore()
    proxy.mode = "refuse"
    proxy.reset_all()
    clock.advance(3600)
    errors = []
    with pytest.raises(OfflineError) as offline:
        session.id_token()
    errors.append(offline.value)
    proxy.mode = "pass"
    emulator.disable_user(session.uid)
    with pytest.raises(AuthError) as refused:
        session.refresh_id_token()
    errors.append(refused.value)
    session.sign_out()

    assert any("replicator.auth" in text for text in every_log_record)
    assert any("httpx" in text for text in every_log_record)  # the HTTP client logged too
    shown = [*every_log_record, repr(session), str(session), repr(restored), repr(auth)]
    shown += [repr(restored._tokens), str(restored._tokens), repr(auth.store), repr(auth.api)]
    shown += [str(e) for e in errors] + [repr(e) for e in errors] + [e.hint for e in errors]
    for secret in secrets:
        assert len(secret) > 20
        leaks = [text for text in shown if secret in text]
        assert leaks == []

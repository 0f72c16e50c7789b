"""ID tokens expire, get refused and get revoked: a sync refreshes, retries once, or stops
with ``AuthError``, and never loses a dirty row.

The calls go through the TokenGate, which refuses expired tokens with
``UNAUTHENTICATED`` as production does (the emulator alone would take them).
"""

from __future__ import annotations

import threading
import time

import peewee
import pytest

from replicator import AuthError, OfflineError, Replicator
from tests.helpers import snapshot_rows
from tests.models import MODELS, Note


def _device(tmp_path, name, remote, **kw):
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, device_name=name, **kw)


def _dirty_device(tmp_path, users, tokens, notes=3):
    device = _device(tmp_path, "d", users.remote(tokens.uid, tokens=tokens, attempts=2))
    device.sync()
    with device.bound():
        for i in range(notes):
            Note.create(title=f"unsynced {i}")
    return device


def test_a_sync_that_outlives_its_id_token_completes(tmp_path, as_users):
    users = as_users()
    writer = _device(tmp_path, "writer", users.remote("alice"))
    with writer.bound():
        for i in range(120):
            Note.create(title=f"n{i}")
    writer.sync()
    tokens = users.tokens("alice", lifetime=2.0, margin=0.5)
    reader = _device(tmp_path, "reader", users.remote("alice", tokens=tokens), page_size=10)
    users.gate.delay = 0.15  # a slow network: the sync lasts several token lifetimes
    started = time.monotonic()
    reader.sync()
    took = time.monotonic() - started
    assert took > 1.5 * tokens.lifetime
    assert snapshot_rows(reader) == snapshot_rows(writer)
    assert tokens.minted >= 3 and tokens.forced == 0  # refreshed ahead of expiry
    assert users.gate.refused == {} and users.gate.expired_tokens == []


def test_an_unauthenticated_answer_refreshes_the_token_once_and_retries(tmp_path, as_users):
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens)
    users.gate.refuse_next(1)  # the server stopped accepting the token it holds
    device.sync()
    assert tokens.forced == 1 and device.remote.refreshes == 1
    assert sum(users.gate.refused.values()) == 1
    assert sum(device.dirty_counts().values()) == 0


def test_a_token_refused_again_after_a_refresh_ends_in_auth_error_not_a_loop(tmp_path, as_users):
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens)
    calls = users.gate.calls
    users.gate.refuse_next(100)  # a disabled account: every token is refused
    with pytest.raises(AuthError) as info:
        device.sync()
    assert not info.value.retryable and "after a refresh" in info.value.message
    assert tokens.forced == 1 and users.gate.calls - calls == 2  # one refresh, one retry
    assert device.dirty_counts()["note"] == 3  # nothing local lost
    users.gate.refuse_next(0)
    device.sync()  # signed in again (here: the server accepts tokens again)
    assert device.dirty_counts()["note"] == 0


def test_a_revoked_session_ends_the_sync_with_auth_error_and_keeps_dirty_rows(tmp_path, as_users):
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens)
    before = snapshot_rows(device)
    calls = users.gate.calls
    tokens.revoked = True
    with pytest.raises(AuthError):
        device.sync()
    assert users.gate.calls == calls  # no call went out without a token
    assert device.dirty_counts()["note"] == 3 and snapshot_rows(device) == before


def test_a_refresh_refused_by_the_token_service_is_auth_error(tmp_path, as_users, monkeypatch):
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens)

    def revoked() -> str:
        raise AuthError("the refresh token was revoked")

    monkeypatch.setattr(tokens, "refresh_id_token", revoked)
    users.gate.refuse_next(1)
    with pytest.raises(AuthError, match="revoked"):
        device.sync()
    assert device.dirty_counts()["note"] == 3


def test_a_token_service_out_of_reach_is_offline_and_retryable(tmp_path, as_users, monkeypatch):
    users = as_users()
    tokens = users.tokens("alice", lifetime=3600)
    device = _dirty_device(tmp_path, users, tokens)

    def unreachable() -> str:
        raise OfflineError("securetoken.googleapis.com did not answer")

    monkeypatch.setattr(tokens, "id_token", unreachable)
    with pytest.raises(OfflineError) as info:
        device.sync()
    assert info.value.retryable and device.dirty_counts()["note"] == 3


def test_a_token_failing_inside_grpc_comes_out_typed(tmp_path, as_users, monkeypatch):
    """The token is asked for again in gRPC's own thread for each call; should the source
    fail there (revoked between the two), the error comes out as the source raised it,
    not as the UNAVAILABLE gRPC makes of a failed credential."""
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens)
    real = tokens.id_token

    def revoked_off_the_main_thread() -> str:
        if threading.current_thread() is not threading.main_thread():
            raise AuthError("revoked a moment ago")
        return real()

    monkeypatch.setattr(tokens, "id_token", revoked_off_the_main_thread)
    with pytest.raises(AuthError, match="a moment ago"):
        device.sync()
    assert device.dirty_counts()["note"] == 3


def test_what_a_refresh_costs_a_sync(tmp_path, as_users):
    """Measured, not timed: a refresh after an UNAUTHENTICATED answer costs the refused
    call, one token from the source and the call again; printed for the record."""
    users = as_users()
    tokens = users.tokens("alice")
    device = _dirty_device(tmp_path, users, tokens, notes=0)
    costs = []
    for refuse in (0, 1):
        with device.bound():
            Note.create(title=f"refuse {refuse}")
        calls, minted = users.gate.calls, tokens.minted
        users.gate.refuse_next(refuse)
        started = time.perf_counter()
        device.sync()
        took = time.perf_counter() - started
        costs.append((took, users.gate.calls - calls, tokens.minted - minted))
    (plain_s, plain_calls, plain_tokens), (refresh_s, refresh_calls, refresh_tokens) = costs
    print(
        f"\nsync without a refresh: {plain_s * 1000:.1f} ms, {plain_calls} calls, {plain_tokens}"
        f" tokens; with one: {refresh_s * 1000:.1f} ms, {refresh_calls} calls,"
        f" {refresh_tokens} tokens"
    )
    assert refresh_calls == plain_calls + 1 and refresh_tokens == plain_tokens + 1

"""ID tokens under real use: refreshed ahead of expiry (also in the middle of a long
sync), one refresh for many threads, offline and revoked sessions. The emulator issues
hour-long tokens; the session's clock is moved instead of waiting."""

from __future__ import annotations

import threading

import pytest

from replicator import AuthError, OfflineError
from replicator.auth import MIN_VALIDITY, REFRESH_MARGIN


@pytest.fixture
def session(make_auth):
    return make_auth().sign_up("ada@example.com", "correct horse")


def test_a_fresh_token_is_handed_out_without_a_refresh(session):
    first = session.id_token()
    assert session.id_token() == first
    assert session.refreshes == 0


def test_the_token_is_refreshed_ahead_of_its_expiry(session, clock):
    old_expiry = session.expires_at
    clock.advance(3600 - REFRESH_MARGIN + 10)  # still valid, but inside the margin
    session.id_token()
    assert session.refreshes == 1
    assert session.expires_at > old_expiry + 3000  # the new token counts from now


def test_a_sync_that_outlives_its_token_gets_fresh_ones_all_along(session, clock):
    # a long sync asks for a token before each request; three hours pass
    for _ in range(36):
        clock.advance(300)
        session.id_token()
        assert session.expires_at - clock() >= MIN_VALIDITY
    assert 3 <= session.refreshes <= 4  # about one an hour, not one per request


def test_many_threads_asking_at_expiry_cause_one_refresh(make_auth, proxy, clock):
    session = make_auth(host=proxy.host).sign_up("ada@example.com", "correct horse")
    clock.advance(3600)
    proxy.latency = 0.3  # the refresh takes a while: every thread arrives during it
    barrier, tokens = threading.Barrier(8), []

    def ask():
        barrier.wait()
        tokens.append(session.id_token())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session.refreshes == 1
    assert len(set(tokens)) == 1 and len(tokens) == 8


def test_threads_forcing_a_refresh_together_share_one(make_auth, proxy):
    # each thread's request was refused (401); they all force a refresh at once
    session = make_auth(host=proxy.host).sign_up("ada@example.com", "correct horse")
    proxy.latency = 0.5
    barrier, tokens = threading.Barrier(6), []

    def force():
        barrier.wait()
        tokens.append(session.refresh_id_token())

    threads = [threading.Thread(target=force) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session.refreshes == 1 and len(set(tokens)) == 1


def test_offline_a_refresh_is_an_offline_error_and_the_session_survives(make_auth, proxy, clock):
    session = make_auth(host=proxy.host).sign_up("ada@example.com", "correct horse")
    clock.advance(3600)
    proxy.mode = "refuse"  # the network goes: open connections too
    proxy.reset_all()
    with pytest.raises(OfflineError) as caught:
        session.id_token()
    assert caught.value.retryable is True
    proxy.mode = "pass"  # back online: the same session goes on
    assert session.id_token() and session.refreshes == 1


def test_a_closed_port_is_an_offline_error(make_auth, proxy, clock):
    session = make_auth(host=proxy.host).sign_up("ada@example.com", "correct horse")
    proxy.stop()  # nothing listens there any more
    with pytest.raises(OfflineError):
        session.refresh_id_token()


def test_a_token_service_that_never_answers_is_offline_in_bounded_time(make_auth, proxy, clock):
    session = make_auth(host=proxy.host, timeout=1.0).sign_up("ada@example.com", "correct horse")
    proxy.mode = "blackhole"
    with pytest.raises(OfflineError, match="no answer in time"):
        session.refresh_id_token()


def test_offline_inside_the_margin_the_current_token_is_still_used(make_auth, proxy, clock):
    session = make_auth(host=proxy.host).sign_up("ada@example.com", "correct horse")
    token = session.id_token()
    proxy.mode = "refuse"  # the network goes: open connections too
    proxy.reset_all()
    clock.advance(3600 - 120)  # two minutes left: an early refresh is attempted and fails
    assert session.id_token() == token
    clock.advance(90)  # thirty seconds left: too little to hand out
    with pytest.raises(OfflineError):
        session.id_token()


def test_a_disabled_user_gets_an_auth_error_that_is_not_retryable(session, emulator, clock):
    emulator.disable_user(session.uid)
    clock.advance(3600)
    with pytest.raises(AuthError) as caught:
        session.id_token()
    assert caught.value.code == "USER_DISABLED" and caught.value.retryable is False
    assert "unsynced changes are kept" in caught.value.hint
    emulator.disable_user(session.uid, disabled=False)  # re-enabled: the session works again
    assert session.id_token()


def test_a_revoked_session_gets_an_auth_error(session, emulator):
    emulator.delete_user(session.uid)  # its refresh tokens stop working
    with pytest.raises(AuthError) as caught:
        session.refresh_id_token()
    assert caught.value.code == "INVALID_REFRESH_TOKEN" and not caught.value.retryable
    assert "sign the user in again" in caught.value.hint


def test_a_refresh_saves_the_new_tokens_for_the_next_run(make_auth, clock):
    auth = make_auth("device")
    session = auth.sign_up("ada@example.com", "correct horse")
    clock.advance(3600)
    session.id_token()
    restored = make_auth("device").restore()
    assert restored is not None and restored.expires_at == session.expires_at

"""Each way of signing in, on the real Firebase Authentication emulator, and what a
refused sign-in says."""

from __future__ import annotations

import pytest

from replicator import AuthError, ConfigurationError
from replicator.auth import FirebaseAuth, MemoryTokenStore


def test_sign_up_then_sign_in_with_password_is_the_same_user(make_auth):
    auth = make_auth()
    created = auth.sign_up("ada@example.com", "correct horse")
    again = auth.sign_in_with_password("ada@example.com", "correct horse")
    assert created.uid == again.uid and created.uid
    assert again.email == "ada@example.com" and again.provider == "password"
    assert again.id_token().count(".") == 2  # a JWT


def test_anonymous_sign_in_gets_a_uid_of_its_own(make_auth):
    auth = make_auth()
    first, second = auth.sign_in_anonymously(), auth.sign_in_anonymously()
    assert first.uid != second.uid
    assert first.provider == "anonymous" and first.email is None
    assert first.id_token() and second.id_token()


def test_a_custom_token_signs_in_the_uid_the_backend_named(make_auth, emulator):
    session = make_auth().sign_in_with_custom_token(emulator.custom_token("backend-user-7"))
    assert session.uid == "backend-user-7" and session.provider == "custom"
    assert session.id_token()


@pytest.mark.parametrize(
    ("email", "password", "code"),
    [
        ("ada@example.com", "wrong password", "INVALID_PASSWORD"),
        ("nobody@example.com", "correct horse", "EMAIL_NOT_FOUND"),
    ],
)
def test_refused_credentials_are_an_auth_error_with_a_hint(make_auth, email, password, code):
    auth = make_auth()
    auth.sign_up("ada@example.com", "correct horse")
    with pytest.raises(AuthError) as caught:
        auth.sign_in_with_password(email, password)
    assert caught.value.code == code
    assert caught.value.retryable is False
    assert "email and password" in caught.value.hint


def test_signing_up_with_a_taken_email_says_to_sign_in_instead(make_auth):
    auth = make_auth()
    auth.sign_up("ada@example.com", "correct horse")
    with pytest.raises(AuthError, match="EMAIL_EXISTS") as caught:
        auth.sign_up("ada@example.com", "another one")
    assert "sign in instead" in caught.value.hint


def test_a_weak_password_is_refused_with_what_to_do(make_auth):
    with pytest.raises(AuthError) as caught:
        make_auth().sign_up("ada@example.com", "123")
    assert caught.value.code == "WEAK_PASSWORD" and "6 characters" in caught.value.hint


def test_a_forged_custom_token_is_refused(make_auth):
    with pytest.raises(AuthError) as caught:
        make_auth().sign_in_with_custom_token("not-a-token")
    assert caught.value.code == "INVALID_CUSTOM_TOKEN"
    assert "backend" in caught.value.hint


def test_a_refused_sign_in_stores_nothing(make_auth, tmp_path):
    auth = make_auth("refused")
    with pytest.raises(AuthError):
        auth.sign_in_with_password("nobody@example.com", "correct horse")
    assert not (tmp_path / "refused.session.json").exists()
    assert auth.restore() is None


def test_two_devices_of_one_user_sign_in_independently(make_auth, emulator, clock):
    make_auth("setup").sign_up("ada@example.com", "correct horse")
    laptop = make_auth("laptop").sign_in_with_password("ada@example.com", "correct horse")
    phone = make_auth("phone").sign_in_with_password("ada@example.com", "correct horse")
    assert laptop.uid == phone.uid
    clock.advance(3600)  # both ID tokens expired: each device refreshes its own session
    assert laptop.id_token() and phone.id_token()
    assert laptop.refreshes == phone.refreshes == 1
    laptop.sign_out()
    with pytest.raises(AuthError):
        laptop.id_token()
    clock.advance(3600)
    assert phone.id_token() and phone.refreshes == 2  # the other device is unaffected


def test_production_needs_the_projects_api_key(monkeypatch):
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="Web API key") as caught:
        FirebaseAuth(store=MemoryTokenStore())
    assert "api_key=" in caught.value.hint
    auth = FirebaseAuth("AIza-test-key", store=MemoryTokenStore())
    assert auth.api.identity_url == "https://identitytoolkit.googleapis.com/v1"
    assert auth.api.token_url == "https://securetoken.googleapis.com/v1/token"
    auth.close()


def test_the_emulator_variable_points_every_call_at_the_emulator(monkeypatch, emulator):
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", emulator.host)
    auth = FirebaseAuth(store=MemoryTokenStore())  # no key needed under the emulator
    assert auth.api.identity_url == f"http://{emulator.host}/identitytoolkit.googleapis.com/v1"
    assert auth.sign_in_anonymously().uid
    auth.close()

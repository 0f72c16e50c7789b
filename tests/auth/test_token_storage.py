"""Where sessions are kept between runs: a 0600 file written atomically (the default),
the OS keyring, or the app's own callbacks; restored without a network."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from replicator import ConfigurationError
from replicator.auth import CallbackTokenStore, FileTokenStore, KeyringTokenStore, Tokens


def test_tokens_are_stored_readable_by_the_user_only_and_restored(make_auth, tmp_path, proxy):
    auth = make_auth("device", host=proxy.host)
    session = auth.sign_up("ada@example.com", "correct horse")
    path = tmp_path / "device.session.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if "session" in p.name] == [path.name]  # no temp
    proxy.stop()  # the next run of the app starts offline
    restored = make_auth("device", host=proxy.host).restore()
    assert restored is not None
    assert (restored.uid, restored.email, restored.provider) == (
        session.uid,
        "ada@example.com",
        "password",
    )
    assert restored.id_token() == session.id_token()  # still valid: no network needed


def test_a_missing_folder_is_made_private(make_auth, tmp_path):
    path = tmp_path / "state" / "app" / "session.json"
    make_auth(store=path).sign_in_anonymously()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_stored_restores_nothing(make_auth):
    assert make_auth("fresh").restore() is None


def test_a_damaged_session_file_means_signing_in_again(make_auth, tmp_path, caplog):
    (tmp_path / "device.session.json").write_text('{"format": 1, "uid": "x"')
    with caplog.at_level(logging.WARNING, logger="replicator"):
        assert make_auth("device").restore() is None
    assert "not readable" in caplog.text


def test_a_session_file_others_can_read_is_narrowed_to_the_user(make_auth, tmp_path):
    make_auth("device").sign_in_anonymously()
    path = tmp_path / "device.session.json"
    path.chmod(0o644)
    assert make_auth("device").restore() is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_session_file_that_cannot_be_written_is_a_configuration_error(make_auth, tmp_path):
    (tmp_path / "a-file").write_text("")
    auth = make_auth(store=tmp_path / "a-file" / "session.json")  # a folder that is a file
    with pytest.raises(ConfigurationError, match="cannot write the session file") as caught:
        auth.sign_in_anonymously()
    assert "folder this user can write to" in caught.value.hint


def test_the_apps_callbacks_keep_the_session(make_auth):
    kept: dict[str, str | None] = {"text": None}
    store = CallbackTokenStore(lambda: kept["text"], lambda text: kept.update(text=text))
    session = make_auth(store=store).sign_in_anonymously()
    assert kept["text"] is not None and session.uid in kept["text"]
    restored = make_auth(store=store).restore()
    assert restored is not None and restored.uid == session.uid
    session.sign_out()
    assert kept["text"] is None


def test_callbacks_that_fail_are_a_configuration_error(make_auth):
    def broken_save(text):
        raise OSError("the keystore is locked")

    store = CallbackTokenStore(lambda: None, broken_save)
    with pytest.raises(ConfigurationError, match="token store failed to save") as caught:
        make_auth(store=store).sign_in_anonymously()
    assert isinstance(caught.value.orig, OSError)


@pytest.fixture
def keyring_backend():
    keyring = pytest.importorskip("keyring", reason="the keyring extra is not installed")
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordDeleteError

    class InMemory(KeyringBackend):
        """A real keyring backend that keeps its secrets in this process."""

        priority = 1  # type: ignore[assignment]

        def __init__(self):
            super().__init__()
            self.secrets = {}

        def get_password(self, service, username):
            return self.secrets.get((service, username))

        def set_password(self, service, username, password):
            self.secrets[(service, username)] = password

        def delete_password(self, service, username):
            if self.secrets.pop((service, username), None) is None:
                raise PasswordDeleteError("no such secret")

    previous = keyring.get_keyring()
    backend = InMemory()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_the_os_keyring_keeps_the_session(make_auth, keyring_backend):
    store = KeyringTokenStore("replicator-tests", "ada")
    session = make_auth(store=store).sign_in_anonymously()
    assert session.uid in keyring_backend.secrets[("replicator-tests", "ada")]
    restored = make_auth(store=store).restore()
    assert restored is not None and restored.uid == session.uid
    session.sign_out()
    assert keyring_backend.secrets == {}
    session.sign_out()  # signing out twice is fine


def test_a_machine_without_a_keyring_says_so(make_auth):
    keyring = pytest.importorskip("keyring", reason="the keyring extra is not installed")
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(ConfigurationError, match="OS keyring") as caught:
            make_auth(store=KeyringTokenStore()).sign_in_anonymously()
        assert "FileTokenStore" in caught.value.hint
    finally:
        keyring.set_keyring(previous)


def test_stored_text_from_elsewhere_is_not_trusted():
    assert Tokens.from_text("not json") is None
    assert Tokens.from_text('{"format": 2}') is None  # a newer version's
    assert (
        Tokens.from_text(
            '{"format": 1, "uid": "u", "idToken": "", "refreshToken": "r", "expiresAt": 1}'
        )
        is None
    )
    good = Tokens("u", "i", "r", 12.0, email=None, provider="custom")
    assert Tokens.from_text(good.to_text()) == good


def test_the_default_session_file_is_in_the_users_state_folder(monkeypatch, tmp_path, emulator):
    from replicator.auth import FirebaseAuth

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("sys.platform", "linux")
    auth = FirebaseAuth(emulator_host=emulator.host)
    assert isinstance(auth.store, FileTokenStore)
    assert auth.store.path.parent == tmp_path / "state" / "replicator"
    other = FirebaseAuth("another-project-key", emulator_host=emulator.host)
    assert other.store.path != auth.store.path  # one file per project
    auth.sign_in_anonymously()
    assert oct(stat.S_IMODE(os.stat(auth.store.path).st_mode)) == oct(0o600)
    auth.close()
    other.close()

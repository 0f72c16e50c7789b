"""The service's check of Firebase ID tokens: a valid token of the project names its
user; anything else (another project, expired, issued in the future, a forged
subject, garbage) names no one. Tokens come from the Auth emulator and from
``mock_id_token``, shaped as the emulator shapes them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from replicator.auth.verify import IdTokenVerifier
from replicator.bundles.auth import DEVICE_HEADER, Caller, Refused, SignedInCallers
from replicator.testing import mock_id_token

PROJECT = "demo-replicator"


def forged(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "alice",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    part = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{part}."


def test_a_valid_token_names_its_user() -> None:
    verify = IdTokenVerifier(PROJECT, emulator=True)
    assert verify(mock_id_token("alice", PROJECT)) == "alice"
    assert verify(forged()) == "alice"


@pytest.mark.parametrize(
    "token",
    [
        forged(aud="another-project"),
        forged(iss="https://securetoken.google.com/another-project"),
        forged(exp=int(time.time()) - 60),
        forged(iat=int(time.time()) + 600),
        forged(sub=""),
        forged(sub="a/../b"),
        forged(sub=".."),
        forged(sub="."),
        forged(sub="x" * 129),
        forged(sub=7),
        forged(exp="soon"),
        "",
        "owner",
        "a.b.c",
        "a.b",
        "é.ü.ß",
        "x" * 10_000,
    ],
)
def test_anything_else_names_no_one(token: str) -> None:
    assert IdTokenVerifier(PROJECT, emulator=True)(token) is None


def test_the_callers_are_the_user_and_the_named_device() -> None:
    callers = SignedInCallers(IdTokenVerifier(PROJECT, emulator=True))
    token = mock_id_token("alice", PROJECT)
    caller = callers({"authorization": f"Bearer {token}", DEVICE_HEADER: "phone-1"})
    assert isinstance(caller, Caller) and (caller.user, caller.device) == ("alice", "phone-1")
    for headers, says in (
        ({"authorization": f"Bearer {token}"}, "no X-Replicator-Device header"),
        ({"authorization": f"Bearer {token}", DEVICE_HEADER: "a/b"}, "no X-Replicator-Device"),
        ({DEVICE_HEADER: "phone-1"}, "no ID token"),
        ({"authorization": "Bearer owner", DEVICE_HEADER: "phone-1"}, "not an ID token"),
        (
            {"authorization": f"Bearer {forged(aud='x', iss='y')}", DEVICE_HEADER: "p"},
            f"not one of project {PROJECT}",
        ),
        (
            {"authorization": f"Bearer {forged(exp=int(time.time()) - 60)}", DEVICE_HEADER: "p"},
            "expired",
        ),
    ):
        refused = callers(headers)
        assert isinstance(refused, Refused) and says in refused.reason, (headers, refused)


def test_a_token_the_auth_emulator_issued_verifies(auth_emulator: Any) -> None:
    from replicator.auth import FirebaseAuth, MemoryTokenStore

    auth = FirebaseAuth(emulator_host=auth_emulator.host, store=MemoryTokenStore())
    session = auth.sign_up(f"v{time.time_ns()}@example.org", "a-long-password")
    try:
        assert IdTokenVerifier(auth_emulator.project)(session.id_token()) == session.uid
    finally:
        auth.close()
